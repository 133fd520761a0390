//! Bill-run throughput on SQLite, as a ratio against a baseline measured in the same process.
//!
//! Workload (targets.md): N active monthly contracts with 3 features each (a flat fee, a per-unit
//! price, usage with usage recorded on every tenth contract), all due at the same instant; each
//! renewal writes an invoice (its lines inside), two events, and advances the contract.
//! Baseline: the same rows (one invoice, two events, one contract update per contract) written with plain batched inserts (1000 contracts per transaction, multi-row
//! statements through rusqlite with cached statements, the store's own driver) and no billing
//! logic, on the same schema with the same SQLite settings (WAL, synchronous FULL).
//!
//! Run: `cargo bench -p tally --bench bill_run -- [N]` (default 20000). Prints rows/s of both,
//! the ratio, and the peak resident memory of the process.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "common/sqlite.rs"]
mod sqlite;

use std::sync::Arc;
use std::time::Instant;

use common::ROWS;
use jiff::Timestamp;
use rusqlite::types::ToSql;
use sqlx::QueryBuilder;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tally_app::Tally;

/// The allocator the `tally` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time this process has used (user and system, all threads), from `/proc/self/stat`: on
/// this noisy machine a steadier measure of the work a run does than its wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

type ContractRow = (i64, String, String, String, Option<i64>, i64, i64, String);
type InvoiceRow = (
    i64,
    String,
    i64,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
);
type EventRow = (i64, String, i64, Option<String>, String);

/// Runs `head VALUES (...), ... tail` for `rows` rows of `cols` columns with `values`.
fn run(
    tx: &rusqlite::Connection,
    head: &str,
    cols: usize,
    rows: usize,
    tail: &str,
    values: &[&dyn ToSql],
) {
    let one = format!("({})", vec!["?"; cols].join(", "));
    let sql = format!("{head} VALUES {} {tail}", vec![one; rows].join(", "));
    tx.prepare_cached(&sql).unwrap().execute(values).unwrap();
}

/// Writes exactly the rows the bill run wrote (read back from its database, untimed) into a
/// fresh database with the same schema and settings, with plain multi-row statements and no
/// logic: per batch of 1000 contracts one transaction updating the contracts and inserting
/// their invoices (with their lines) and events. Returns rows/s of the timed writes.
async fn baseline(n: usize, dir: &std::path::Path) -> (f64, u64) {
    let from = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            format!("sqlite://{}/bill.db", dir.display())
                .parse::<SqliteConnectOptions>()
                .unwrap(),
        )
        .await
        .unwrap();
    let url = format!("sqlite://{}/baseline.db", dir.display());
    tally_store_sqlite::SqliteStore::connect(&url)
        .await
        .unwrap();
    let opts: SqliteConnectOptions = url
        .parse::<SqliteConnectOptions>()
        .unwrap()
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("cache_size", "-16384");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let tenant: i64 = sqlx::query_scalar("SELECT key FROM tenants")
        .fetch_one(&from)
        .await
        .unwrap();
    // First the contracts as they were before the run (untimed), all of them, as in the bill
    // run's database; then the timed writes, batch by batch.
    for first in (0..n as i64).step_by(1000) {
        let contracts: Vec<ContractRow> = sqlx::query_as(
            "SELECT tenant_id, id, customer_id, status, next_due, version, created_seq, body
             FROM contracts WHERE tenant_id = ?3 AND created_seq > ?1 AND created_seq <= ?2",
        )
        .bind(first)
        .bind(first + 1000)
        .bind(tenant)
        .fetch_all(&from)
        .await
        .unwrap();
        let mut tx = pool.begin().await.unwrap();
        for part in contracts.chunks(ROWS) {
            let mut q = QueryBuilder::new(
                "INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, created_seq, body) ",
            );
            q.push_values(part, |mut b, c| {
                b.push_bind(c.0)
                    .push_bind(&c.1)
                    .push_bind(&c.2)
                    .push_bind(&c.3)
                    .push_bind(c.4)
                    .push_bind(c.5 - 1)
                    .push_bind(c.6)
                    .push_bind(&c.7);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    pool.close().await;
    // The timed writes go through rusqlite with cached statements, as the store's do.
    let mut raw = rusqlite::Connection::open(dir.join("baseline.db")).unwrap();
    raw.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
        .unwrap();
    raw.pragma_update(None, "synchronous", "FULL").unwrap();
    raw.pragma_update(None, "cache_size", -16384).unwrap();
    // A plain writer checkpoints inside its commits, every 32 MiB of log: as the store did
    // before its checkpoints moved to a thread of their own.
    let page: i64 = raw.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    raw.pragma_update(None, "wal_autocheckpoint", (32 << 20) / page)
        .unwrap();
    let mut timed = std::time::Duration::ZERO;
    let mut rows = 0u64;
    for first in (0..n as i64).step_by(1000) {
        let range =
            "FROM contracts WHERE tenant_id = ?3 AND created_seq > ?1 AND created_seq <= ?2";
        let contracts: Vec<ContractRow> = sqlx::query_as(&format!(
            "SELECT tenant_id, id, customer_id, status, next_due, version, created_seq, body {range}"
        ))
        .bind(first).bind(first + 1000).bind(tenant).fetch_all(&from).await.unwrap();
        let invoices: Vec<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body
             FROM invoices WHERE tenant_id = ?3 AND contract_id IN (SELECT id {range})"
        ))
        .bind(first).bind(first + 1000).bind(tenant).fetch_all(&from).await.unwrap();
        let events: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT tenant_id, id, seq, contract_id, body FROM events WHERE tenant_id = ?3 AND contract_id IN (SELECT id {range})"
        ))
        .bind(first).bind(first + 1000).bind(tenant).fetch_all(&from).await.unwrap();
        let start = Instant::now();
        let tx = raw.transaction().unwrap();
        for part in contracts.chunks(ROWS) {
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(part.len() * 4 + 1);
            for c in part {
                values.extend([&c.1 as &dyn ToSql, &c.3, &c.4, &c.7]);
            }
            values.push(&contracts[0].0);
            run(
                &tx,
                "WITH v (id, status, due, body) AS (",
                4,
                part.len(),
                ") UPDATE contracts SET status = v.status, next_due = v.due, version = contracts.version + 1, body = v.body FROM v WHERE contracts.tenant_id = ? AND contracts.id = v.id",
                &values,
            );
        }
        for part in invoices.chunks(ROWS) {
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(part.len() * 10);
            for r in part {
                values.extend([
                    &r.0 as &dyn ToSql,
                    &r.1,
                    &r.2,
                    &r.3,
                    &r.4,
                    &r.5,
                    &r.6,
                    &r.7,
                    &r.8,
                    &r.9,
                ]);
            }
            run(
                &tx,
                "INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body)",
                10,
                part.len(),
                "",
                &values,
            );
        }
        for part in events.chunks(ROWS) {
            let mut values: Vec<&dyn ToSql> = Vec::with_capacity(part.len() * 5);
            for r in part {
                values.extend([&r.0 as &dyn ToSql, &r.1, &r.2, &r.3, &r.4]);
            }
            run(
                &tx,
                "INSERT INTO events (tenant_id, id, seq, contract_id, body)",
                5,
                part.len(),
                "",
                &values,
            );
        }
        tx.commit().unwrap();
        timed += start.elapsed();
        rows += (contracts.len() + invoices.len() + events.len()) as u64;
    }
    (rows as f64 / timed.as_secs_f64(), rows)
}

/// Sets up N due contracts (untimed), then times one bill run over them and checks that every
/// contract was renewed once and that a second run writes nothing. Returns seconds, CPU seconds
/// and invoices.
async fn bill_run(n: usize, dir: &std::path::Path) -> (f64, f64, usize) {
    let url = format!("sqlite://{}/bill.db", dir.display());
    let clock = Arc::new(sqlite::Fixed("2024-01-15T00:00:00Z".parse().unwrap()));
    let tally = Tally {
        store: tally::open(&url).await.unwrap(),
        clock: clock.clone(),
    };
    // Setup (not timed) writes the signed-up contracts and the usage straight into the store's
    // tables, as signup would have left them.
    sqlite::seed(&tally, &url, n).await;
    let until: Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let issued = tally.bill_run(until, 1000).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    assert_eq!(issued, n, "every contract renewed once");
    assert_eq!(
        tally.bill_run(until, 1000).await.unwrap(),
        0,
        "a second run writes nothing"
    );
    (secs, cpu, issued)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tally-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    rt.block_on(async {
        let (secs, cpu, issued) = bill_run(n, &dir).await;
        let rss = peak_rss_kib() / 1024;
        let (base, rows) = baseline(n, &dir).await;
        let bill = rows as f64 / secs;
        println!("contracts: {n} (invoices issued: {issued})");
        println!(
            "rows written per run: {rows} ({:.1} per contract)",
            rows as f64 / n as f64
        );
        println!("baseline (the same rows, plain multi-row statements): {base:.0} rows/s");
        println!(
            "bill run: {bill:.0} rows/s, {:.0} contracts/s, {secs:.1} s",
            n as f64 / secs
        );
        println!("ratio bill run / baseline: {:.2}", bill / base);
        println!(
            "CPU of the bill run (all threads, user and system): {cpu:.2} s, {:.1} us per contract",
            cpu * 1e6 / n as f64
        );
        println!("peak RSS of the bill run (setup included): {rss} MiB");
    });
    // TALLY_BENCH_KEEP=1 keeps both databases for inspection.
    if std::env::var_os("TALLY_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("databases kept in {}", dir.display());
    }
}
