//! The API targets of `targets.md`, measured against the real `tally serve` binary on SQLite in
//! another process, each as a ratio against a baseline run in the same process:
//!
//! 1. startup: a fresh database file to the first `200` from `/readyz` (five runs);
//! 2. preview throughput: closed loop over C keep-alive connections for S seconds, the
//!    `upgrade_estimate` of a contract against `GET /healthz` (the bare endpoint of the same
//!    binary), same client, same connections;
//! 3. preview latency: open loop at a fixed 5,000 requests/s spread over the C connections,
//!    latency measured from each request's scheduled instant (no coordinated omission), with
//!    the bare endpoint's latency at the same rate as the harness's floor;
//! 4. writes: signups (`POST /v1/c/contract`, each one transaction with its invoice and event)
//!    over 8 connections, against raw one-row transactions on a SQLite file with the same
//!    settings (WAL, synchronous FULL) from 8 tasks in this process.
//!
//! The load generator is a raw hyper HTTP/1.1 client (one task per connection) sharing the 2
//! cores with the server, for baseline and workload alike.
//!
//! `cargo bench -p tally --bench api -- [SECONDS] [CONNECTIONS]` (defaults 5 and 64).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

type Sender = SendRequest<Full<Bytes>>;

/// A request the load generator repeats.
#[derive(Clone)]
struct Req {
    method: hyper::Method,
    path: String,
    body: Bytes,
    key: String,
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(db: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db,
            "--bill-run-interval",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child, port }
}

async fn connect(port: u16) -> Sender {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one request on a connection; answers the status and the body.
async fn send(s: &mut Sender, port: u16, r: &Req) -> (u16, Bytes) {
    s.ready().await.unwrap();
    let req = hyper::Request::builder()
        .method(r.method.clone())
        .uri(&r.path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("wb-key", &r.key)
        .header("content-type", "application/json")
        .body(Full::new(r.body.clone()))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Startup: a fresh database to the first ready answer, in milliseconds.
async fn startup(dir: &Path, runs: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..runs {
        let db = format!("sqlite://{}/startup-{i}.db", dir.display());
        let started = Instant::now();
        let server = spawn(&db);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{}/readyz", server.port))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

/// Closed loop: `conns` connections each sending `r` back to back for `secs`; answers
/// requests per second (every answer must be 2xx).
async fn closed_loop(port: u16, conns: usize, secs: f64, r: &Req) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(connect(port).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            let (done, stop, r) = (done.clone(), stop.clone(), r.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = send(&mut s, port, &r).await;
                    assert!(
                        (200..300).contains(&status),
                        "{} {}: {status} {}",
                        r.method,
                        r.path,
                        String::from_utf8_lossy(&body)
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Open loop at `rate` requests/s over `conns` connections for `secs`: latencies in
/// microseconds, each from the request's scheduled instant. A pacer thread sleeps to each
/// instant with the kernel's high-resolution timers (tokio's timer wheel ticks in whole
/// milliseconds, which would add up to a millisecond of the client's own lag) and hands the
/// instant to its connection; a connection still busy with an earlier answer queues it, so
/// the wait counts (no coordinated omission).
async fn open_loop(port: u16, conns: usize, secs: f64, rate: f64, r: &Req) -> Vec<u64> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = (secs * rate) as usize;
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut s = connect(port).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        queues.push(tx);
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Some(due) = rx.recv().await {
                let (status, _) = send(&mut s, port, &r).await;
                assert!((200..300).contains(&status));
                lat.push(due.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let pacer = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(50);
        for k in 0..count {
            let due = start + interval * k as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            queues[k % queues.len()].send(due).unwrap();
        }
    });
    tokio::task::spawn_blocking(move || pacer.join().unwrap())
        .await
        .unwrap();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Raw one-row transactions from `tasks` tasks on a SQLite file with the server's settings.
async fn raw_transactions(dir: &Path, tasks: usize, secs: f64) -> f64 {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    use std::str::FromStr;
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}/raw.db", dir.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("wal_autocheckpoint", "8192")
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (pool, done, stop) = (pool.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("INSERT INTO rows (body) VALUES (?)")
                        .bind("a contract-sized row of text")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let conns: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let dir = std::env::temp_dir().join(format!("tally-api-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let boot = startup(&dir, 5).await;
    let mut sorted = boot.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "startup to ready (fresh SQLite file): min {:.0} ms, median {:.0} ms, max {:.0} ms (target < 300 ms)",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );

    // A test tenant with the example catalog and one contract, at mid-period.
    let db = format!("sqlite://{}/tally.db", dir.display());
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "tenant",
            "create",
            "--name",
            "bench",
            "--test-mode",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = tenant["api_key"].as_str().unwrap().to_string();
    let server = spawn(&db);
    let port = server.port;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let catalog = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/catalog.yaml"
    ))
    .unwrap();
    let post = |path: &str, body: Vec<u8>, ct: &str| {
        client
            .post(format!("{base}{path}"))
            .header("wb-key", &key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert!(
        post("/v1/c/catalog", catalog, "application/yaml")
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let advance = |to: &str| {
        post(
            "/v1/c/test_clock/advance",
            format!(r#"{{"to": "{to}"}}"#).into_bytes(),
            "application/json",
        )
    };
    advance("2030-01-01T00:00:00Z").await.unwrap();
    let signup = br#"{"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month", "unit_count_configuration": {"seats": "5"}}"#;
    let id: String = post("/v1/c/contract", signup.to_vec(), "application/json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    advance("2030-01-16T00:00:00Z").await.unwrap();

    let bare = Req {
        method: hyper::Method::GET,
        path: "/healthz".into(),
        body: Bytes::new(),
        key: key.clone(),
    };
    let estimate = Req {
        method: hyper::Method::POST,
        path: format!("/v1/c/contract/{id}/upgrade_estimate"),
        body: Bytes::from_static(
            br#"{"upgrade_configuration": {"upgrade_strategy": "change_unit_count", "activation": {"type": "date", "upgrade_date": "2030-01-16T00:00:00Z"}, "unit_count_configuration": {"seats": "8"}}}"#,
        ),
        key: key.clone(),
    };
    // Warm up both paths, then measure baseline, workload, baseline again.
    closed_loop(port, conns, 1.0, &bare).await;
    closed_loop(port, conns, 1.0, &estimate).await;
    let base1 = closed_loop(port, conns, secs, &bare).await;
    let est = closed_loop(port, conns, secs, &estimate).await;
    let base2 = closed_loop(port, conns, secs, &bare).await;
    let base_rps = (base1 + base2) / 2.0;
    println!(
        "preview throughput, {conns} connections: bare /healthz {base1:.0} and {base2:.0} req/s, upgrade_estimate {est:.0} req/s: ratio {:.2} (target >= 0.40)",
        est / base_rps
    );

    let floor = open_loop(port, conns, secs, 5000.0, &bare).await;
    println!(
        "bare /healthz at 5000 req/s open loop: p50 {} us, p99 {} us",
        pct(&floor, 0.50),
        pct(&floor, 0.99)
    );
    let lat = open_loop(port, conns, secs, 5000.0, &estimate).await;
    println!(
        "preview latency at 5000 req/s open loop ({} requests): p50 {} us, p99 {} us, max {} us (target p99 <= 2000 us)",
        lat.len(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );

    let raw = raw_transactions(&dir, 8, secs).await;
    let writes = Req {
        method: hyper::Method::POST,
        path: "/v1/c/contract".into(),
        body: Bytes::from_static(signup),
        key,
    };
    let signups = closed_loop(port, 8, secs, &writes).await;
    println!(
        "writes, 8 connections: signups {signups:.0}/s, raw one-row transactions {raw:.0}/s: ratio {:.2} (target >= 0.50)",
        signups / raw
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
