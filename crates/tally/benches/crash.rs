//! Crash harness at the scale of targets.md: `tally bill-run` over N contracts (default 100,000)
//! for three monthly renewals, killed with SIGKILL K times (default 20) at points spread over the
//! work, restarted each time, then checked by SQL: every contract billed exactly once per period,
//! no step billed twice, invoice numbers gapless.
//!
//! Run: `cargo bench -p tally --bench crash -- [N] [K]`. Prints where each round stopped and the
//! counts checked; panics on any violation.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "../tests/support/crash.rs"]
mod crash;
#[path = "common/sqlite.rs"]
mod sqlite;

use std::sync::Arc;
use std::time::Instant;

use tally_app::Tally;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let n = args.next().unwrap_or(100_000);
    let kills = args.next().unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("tally-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("crash.db");
    let url = format!("sqlite://{}", db.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tenant = rt.block_on(async {
        let tally = Tally {
            store: tally::open(&url).await.unwrap(),
            clock: Arc::new(sqlite::Fixed("2024-01-15T00:00:00Z".parse().unwrap())),
        };
        sqlite::seed(&tally, &url, n as usize).await
    });
    // Three renewals per contract (Feb 1, Mar 1, Apr 1): kills spread from the first invoice
    // to the last.
    let plan = crash::Plan {
        bin: env!("CARGO_BIN_EXE_tally"),
        db: &db,
        tenant: &tenant.id,
        until: "2024-04-01T00:00:00Z",
        batch_size: 1000,
        kills,
        from: 0,
        to: 3 * n,
    };
    let start = Instant::now();
    let out = crash::kill_and_restart(&plan);
    let secs = start.elapsed().as_secs_f64();
    println!("contracts: {n}, renewals due: {}", 3 * n);
    println!(
        "runs killed mid-work: {} of {kills} planned, then one run to the end ({secs:.1} s in all)",
        out.kills
    );
    println!("invoices after each round: {:?}", out.after_round);
    let invoices = crash::verify(&db, &tenant.id, n, 3);
    println!(
        "checked: {n} contracts with exactly 3 invoices each, {invoices} invoices, {invoices} distinct steps, numbers 1..={invoices} with no gap"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
