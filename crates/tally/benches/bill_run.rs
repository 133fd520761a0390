//! Bill-run throughput on SQLite, as a ratio against a baseline measured in the same process.
//!
//! Workload (targets.md): N active monthly contracts with 3 features each (a flat fee, a per-unit
//! price, usage with usage recorded on every tenth contract), all due at the same instant; each
//! renewal writes an invoice, its lines, an event, and advances the contract.
//! Baseline: the same number of rows (one invoice, three lines, one event, one contract update
//! per contract) written with plain batched inserts (1000 contracts per transaction) and no
//! billing logic, on the same schema with the same SQLite settings (WAL, synchronous FULL).
//!
//! Run: `cargo bench -p tally --bench bill_run -- [N]` (default 20000). Prints rows/s of both,
//! the ratio, and the peak resident memory of the process.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tally_app::Tally;
use tally_app::catalog_file::CatalogFile;
use tally_app::store::Commit;
use tally_core::prelude::*;

const CATALOG: &str = r#"{
  "features": [{"slug": "platform", "kind": "flat"}, {"slug": "seats", "kind": "per_unit"},
               {"slug": "api_calls", "kind": "usage"}],
  "plans": [{"slug": "basic", "pricings": [{"slug": "v1", "published_at": "2020-01-01T00:00:00Z",
    "prices": [{"currency": "usd", "cycle": "month", "features": {
      "platform": {"flat_fee": "10.00"}, "seats": {"price": "5.00"}, "api_calls": {"price": "0.001"}}}]}]}],
  "customers": [{"slug": "acme"}]
}"#;

struct Fixed(Timestamp);

impl tally_app::Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

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

async fn baseline(n: usize, dir: &std::path::Path) -> f64 {
    let url = format!("sqlite://{}/baseline.db", dir.display());
    tally_store_sqlite::SqliteStore::connect(&url)
        .await
        .unwrap();
    let opts: SqliteConnectOptions = url
        .parse::<SqliteConnectOptions>()
        .unwrap()
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let body = "{}".repeat(200);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = pool.begin().await.unwrap();
        for i in chunk {
            sqlx::query("INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, created_seq, body) VALUES ('t', ?, 'c', 'active', 1, 1, ?, ?)")
                .bind(format!("c{i}")).bind(*i as i64).bind(&body).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let start = Instant::now();
    let mut rows = 0u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = pool.begin().await.unwrap();
        for i in chunk {
            let inv = format!("i{i}");
            sqlx::query("INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body) VALUES ('t', ?, ?, ?, ?, 'c', 1, 'open', ?, ?)")
                .bind(&inv).bind(*i as i64).bind(format!("2024-{i:06}")).bind(format!("c{i}")).bind(format!("k{i}")).bind(&body)
                .execute(&mut *tx).await.unwrap();
            for l in 0..3 {
                sqlx::query("INSERT INTO invoice_lines (tenant_id, invoice_id, idx, kind, feature_slug, description, quantity, unit_amount, amount, period_start, period_end) VALUES ('t', ?, ?, 'charge', 'f', 'd', '1', '10.00', '10.00', 1, 2)")
                    .bind(&inv).bind(l).execute(&mut *tx).await.unwrap();
            }
            sqlx::query("INSERT INTO events (tenant_id, id, seq, contract_id, body) VALUES ('t', ?, ?, ?, '{}')")
                .bind(format!("e{i}")).bind(*i as i64).bind(format!("c{i}")).execute(&mut *tx).await.unwrap();
            sqlx::query("UPDATE contracts SET next_due = 2, version = version + 1, body = ? WHERE tenant_id = 't' AND id = ?")
                .bind(&body).bind(format!("c{i}")).execute(&mut *tx).await.unwrap();
            rows += 6;
        }
        tx.commit().await.unwrap();
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

async fn bill_run(n: usize, dir: &std::path::Path) -> (f64, f64, usize) {
    let url = format!("sqlite://{}/bill.db", dir.display());
    let clock = Arc::new(Fixed("2024-01-15T00:00:00Z".parse().unwrap()));
    let tally = Tally {
        store: tally::open(&url).await.unwrap(),
        clock: clock.clone(),
    };
    let (tenant, _) = tally.create_tenant("bench", false).await.unwrap();
    let file = CatalogFile::from_json(CATALOG).unwrap();
    let (tenant, catalog) = tally.apply_catalog(&tenant, &file).await.unwrap();
    let customer = tally
        .store
        .customer(&tenant.id, "acme")
        .await
        .unwrap()
        .unwrap();
    let cx = BillingContext::new(&catalog, &tenant.settings).unwrap();
    let start_at: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
    let mut batch = Vec::new();
    for i in 0..n {
        let req = SignupRequest::new(
            &tally_app::ids::new_id("Cont"),
            &customer.id,
            "basic",
            Currency::Usd,
            Cycle::Month,
        )
        .seats("seats", 3);
        let out = subscribe(&req, &cx, start_at).unwrap();
        if i % 10 == 0 {
            let usage = UsageRecord {
                feature_slug: "api_calls".into(),
                units: Decimal::from(1000 + i as i64),
                timestamp: "2024-01-10T00:00:00Z".parse().unwrap(),
                is_absolute: false,
            };
            tally
                .store
                .record_usage(&tenant.id, &out.contract.id, &[usage])
                .await
                .unwrap();
        }
        batch.push(Commit {
            contract: Some((out.contract, 0)),
            invoices: out.invoices,
            events: vec![],
        });
        if batch.len() == 1000 || i + 1 == n {
            for c in batch.drain(..) {
                tally.store.commit(&tenant.id, c).await.unwrap();
            }
        }
    }
    let until: Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
    let start = Instant::now();
    let issued = tally.bill_run(until, 1000).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(issued, n, "every contract renewed once");
    assert_eq!(
        tally.bill_run(until, 1000).await.unwrap(),
        0,
        "a second run writes nothing"
    );
    // Per contract: the invoice, three lines (usage on a tenth: four), one event, the contract.
    let rows = (n * 6 + n / 10) as f64;
    (rows / secs, n as f64 / secs, issued)
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
        let base = baseline(n, &dir).await;
        let (rows, contracts, _) = bill_run(n, &dir).await;
        println!("contracts: {n}");
        println!("baseline (plain batched inserts): {base:.0} rows/s");
        println!("bill run: {rows:.0} rows/s, {contracts:.0} contracts/s");
        println!("ratio bill run / baseline: {:.2}", rows / base);
        println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
