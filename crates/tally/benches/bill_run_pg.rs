//! Bill-run throughput on PostgreSQL with several `tally bill-run` processes, as a ratio against a
//! baseline measured in the same run.
//!
//! Workload: as `bill_run.rs` (N due monthly contracts, 3 features, usage on every tenth, one
//! customer per 1000 contracts), in a fresh database. W worker processes of the real binary
//! (`tally bill-run --until ...`) run at once and the wall time from their start to the last
//! exit is timed; then every contract must have exactly one renewal invoice, numbers must be
//! gapless, and one more run must write nothing.
//! Baseline: exactly the rows the run wrote, read back (untimed) and written into a second fresh
//! database by one connection with plain multi-row statements, 1000 contracts per transaction.
//!
//! Run: `TALLY_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p tally --bench bill_run_pg -- [N] [W]` (defaults 20000 and 2). The URL names
//! a database to connect to for creating and dropping the two bench databases.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{ROWS, USED_AT, sign_up, tenant_with_customers};
use jiff::Timestamp;
use sqlx::{PgPool, QueryBuilder};
use tally_app::Tally;
use tally_core::prelude::*;

/// The allocator the `tally` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type ContractRow = (
    String,
    String,
    String,
    String,
    Option<i64>,
    i64,
    i64,
    String,
);
type InvoiceRow = (
    String,
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
type EventRow = (String, String, Option<String>, String);

fn db_url(admin: &str, name: &str) -> String {
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

async fn setup(url: &str, n: usize) -> String {
    let tally = Tally::new(tally::open(url).await.unwrap());
    let (tenant, catalog, customers) = tenant_with_customers(&tally, n).await;
    let pool = PgPool::connect(url).await.unwrap();
    let cx = BillingContext::new(&catalog, &tenant.settings).unwrap();
    let used_at: i64 = USED_AT.parse::<Timestamp>().unwrap().as_microsecond();
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(1000) {
        let (contracts, usage) = sign_up(chunk, &customers, &cx);
        let mut tx = pool.begin().await.unwrap();
        for rows in contracts.chunks(ROWS) {
            let mut q = QueryBuilder::new(
                "INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, created_seq, body)
                 OVERRIDING SYSTEM VALUE ",
            );
            q.push_values(rows, |mut b, s| {
                b.push_bind(&tenant.id)
                    .push_bind(&s.contract.id)
                    .push_bind(&s.contract.customer_id)
                    .push_bind("active")
                    .push_bind(s.due)
                    .push_bind(1i64)
                    .push_bind(s.seq)
                    .push_bind(serde_json::to_string(&s.contract).unwrap());
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        for rows in usage.chunks(ROWS) {
            let mut q = QueryBuilder::new(
                "INSERT INTO usage_records (tenant_id, contract_id, feature_slug, units, ts, is_absolute) ",
            );
            q.push_values(rows, |mut b, (id, units)| {
                b.push_bind(&tenant.id)
                    .push_bind(id)
                    .push_bind("api_calls")
                    .push_bind(units.to_string())
                    .push_bind(used_at)
                    .push_bind(false);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    pool.close().await;
    tenant.id
}

/// Runs `workers` bill-run processes at once; returns the wall time and what each printed.
fn run_workers(url: &str, workers: usize) -> (f64, Vec<String>) {
    let start = Instant::now();
    let children: Vec<_> = (0..workers)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
                .args([
                    "bill-run",
                    "--database",
                    url,
                    "--until",
                    "2024-02-01T00:00:00Z",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "a worker failed");
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    (start.elapsed().as_secs_f64(), outputs)
}

async fn baseline(from_url: &str, to_url: &str, tenant: &str, n: usize) -> (f64, u64) {
    let from = PgPool::connect(from_url).await.unwrap();
    tally::open(to_url).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(to_url)
        .await
        .unwrap();
    let contracts_of = "SELECT id FROM contracts WHERE tenant_id = $3 AND id IN (SELECT id FROM contracts WHERE tenant_id = $3 ORDER BY created_seq OFFSET $1 LIMIT $2)";
    let mut chunks = Vec::new();
    for first in (0..n as i64).step_by(1000) {
        let contracts: Vec<ContractRow> = sqlx::query_as(
            "SELECT tenant_id, id, customer_id, status, next_due, version, created_seq, body
             FROM contracts WHERE tenant_id = $3 ORDER BY created_seq OFFSET $1 LIMIT $2",
        )
        .bind(first)
        .bind(1000i64)
        .bind(tenant)
        .fetch_all(&from)
        .await
        .unwrap();
        let mut tx = pool.begin().await.unwrap();
        for part in contracts.chunks(ROWS) {
            let mut q = QueryBuilder::new(
                "INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, body) ",
            );
            q.push_values(part, |mut b, c| {
                b.push_bind(&c.0)
                    .push_bind(&c.1)
                    .push_bind(&c.2)
                    .push_bind(&c.3)
                    .push_bind(c.4)
                    .push_bind(c.5 - 1)
                    .push_bind(&c.7);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        chunks.push(first);
    }
    let mut timed = Duration::ZERO;
    let mut rows = 0u64;
    for first in chunks {
        let contracts: Vec<ContractRow> = sqlx::query_as(
            "SELECT tenant_id, id, customer_id, status, next_due, version, created_seq, body
             FROM contracts WHERE tenant_id = $3 ORDER BY created_seq OFFSET $1 LIMIT $2",
        )
        .bind(first)
        .bind(1000i64)
        .bind(tenant)
        .fetch_all(&from)
        .await
        .unwrap();
        let invoices: Vec<InvoiceRow> = sqlx::query_as(&format!(
            "SELECT tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body
             FROM invoices WHERE tenant_id = $3 AND contract_id IN ({contracts_of})"
        ))
        .bind(first)
        .bind(1000i64)
        .bind(tenant)
        .fetch_all(&from)
        .await
        .unwrap();
        let events: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT tenant_id, id, contract_id, body FROM events
             WHERE tenant_id = $3 AND contract_id IN ({contracts_of})"
        ))
        .bind(first)
        .bind(1000i64)
        .bind(tenant)
        .fetch_all(&from)
        .await
        .unwrap();
        let start = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        for part in contracts.chunks(ROWS) {
            let mut q = QueryBuilder::new("WITH v (id, status, due, body) AS (");
            q.push_values(part, |mut b, c| {
                b.push_bind(&c.1)
                    .push_bind(&c.3)
                    .push_bind(c.4)
                    .push_bind(&c.7);
            });
            q.push(") UPDATE contracts SET status = v.status, next_due = v.due, version = contracts.version + 1, body = v.body FROM v WHERE contracts.tenant_id = ")
                .push_bind(tenant)
                .push(" AND contracts.id = v.id");
            q.build().execute(&mut *tx).await.unwrap();
        }
        for part in invoices.chunks(ROWS) {
            let mut q = QueryBuilder::new(
                "INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body) ",
            );
            q.push_values(part, |mut b, r| {
                b.push_bind(&r.0)
                    .push_bind(&r.1)
                    .push_bind(r.2)
                    .push_bind(&r.3)
                    .push_bind(&r.4)
                    .push_bind(&r.5)
                    .push_bind(r.6)
                    .push_bind(&r.7)
                    .push_bind(&r.8)
                    .push_bind(&r.9);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        for part in events.chunks(ROWS) {
            let mut q = QueryBuilder::new("INSERT INTO events (tenant_id, id, contract_id, body) ");
            q.push_values(part, |mut b, r| {
                b.push_bind(&r.0)
                    .push_bind(&r.1)
                    .push_bind(&r.2)
                    .push_bind(&r.3);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        timed += start.elapsed();
        rows += (contracts.len() + invoices.len() + events.len()) as u64;
    }
    (rows as f64 / timed.as_secs_f64(), rows)
}

fn main() {
    let Ok(admin) = std::env::var("TALLY_BENCH_POSTGRES_URL") else {
        eprintln!(
            "set TALLY_BENCH_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
        );
        std::process::exit(2);
    };
    let mut nums = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let n = nums.next().unwrap_or(20_000);
    let workers = nums.next().unwrap_or(2).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tag = std::process::id();
    let run_db = format!("tally_bench_run_{tag}");
    let base_db = format!("tally_bench_base_{tag}");
    rt.block_on(async {
        let admin_pool = PgPool::connect(&admin).await.unwrap();
        for db in [&run_db, &base_db] {
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin_pool)
                .await
                .unwrap();
        }
        let run_url = db_url(&admin, &run_db);
        let tenant = setup(&run_url, n).await;
        let (secs, outputs) = run_workers(&run_url, workers);
        let pool = PgPool::connect(&run_url).await.unwrap();
        let (count, max): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MAX(seq) FROM invoices WHERE tenant_id = $1")
                .bind(&tenant)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            count as usize, n,
            "every contract renewed once: {outputs:?}"
        );
        assert_eq!(max, Some(count), "numbers gapless");
        let (_, again) = run_workers(&run_url, 1);
        assert!(
            again[0].contains("\"invoices\":0"),
            "a second run writes nothing: {again:?}"
        );
        pool.close().await;
        let (base, rows) = baseline(&run_url, &db_url(&admin, &base_db), &tenant, n).await;
        let bill = rows as f64 / secs;
        println!("contracts: {n}, worker processes: {workers}");
        println!(
            "rows written per run: {rows} ({:.1} per contract)",
            rows as f64 / n as f64
        );
        println!(
            "baseline (the same rows, one connection, multi-row statements): {base:.0} rows/s"
        );
        println!(
            "bill run: {bill:.0} rows/s, {:.0} contracts/s, {secs:.1} s (process start included)",
            n as f64 / secs
        );
        println!("ratio bill run / baseline: {:.2}", bill / base);
        for db in [&run_db, &base_db] {
            sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
                .execute(&admin_pool)
                .await
                .unwrap();
        }
    });
}
