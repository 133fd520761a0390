//! The crash harness, shared by the crash test and the crash bench: `tally bill-run` runs as a
//! child process over an SQLite database, is killed (SIGKILL) at points spread over the work, and
//! is restarted until it finishes; then the database itself is checked by SQL, beside the
//! store's own code: every contract billed exactly once per period, invoice numbers gapless.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How the bill run is driven and where it is killed.
pub struct Plan<'a> {
    /// The `tally` binary.
    pub bin: &'a str,
    /// The SQLite database file.
    pub db: &'a Path,
    /// The tenant whose invoices are counted.
    pub tenant: &'a str,
    /// `--until` of every run.
    pub until: &'a str,
    /// `--batch-size` of every run.
    pub batch_size: usize,
    /// How many runs are killed.
    pub kills: u64,
    /// The invoice count before the first kill and after the last: the kill points are spread
    /// evenly between them, each delayed by a pseudo-random 0-30 ms (fixed seed) so that kills
    /// also land inside transactions, not only between them.
    pub from: u64,
    /// See `from`.
    pub to: u64,
}

/// What the rounds did.
pub struct Outcome {
    /// Runs killed while still working (a run that finished before its kill point is not).
    pub kills: u64,
    /// The invoice count after each killed or finished round.
    pub after_round: Vec<u64>,
}

/// Lease of a run's claims: a killed run's claims run out after it.
const LEASE_SECONDS: u64 = 1;

fn spawn(plan: &Plan<'_>) -> Child {
    let url = format!("sqlite://{}", plan.db.display());
    Command::new(plan.bin)
        .args([
            "bill-run",
            "--until",
            plan.until,
            "--lease-seconds",
            &LEASE_SECONDS.to_string(),
            "--batch-size",
            &plan.batch_size.to_string(),
            "--database",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The tenant's committed invoice count: its invoice counter moves in the same transaction as
/// the invoices, so reading it is cheap however many invoices there are.
fn issued(c: &rusqlite::Connection, tenant: &str) -> u64 {
    c.query_row(
        "SELECT invoice_seq FROM tenants WHERE id = ?",
        [tenant],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

/// Runs `plan.kills` killed rounds, then one more run to the end, which must exit successfully.
pub fn kill_and_restart(plan: &Plan<'_>) -> Outcome {
    let db = rusqlite::Connection::open(plan.db).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut seed: u64 = 0x5eed_1234;
    let mut out = Outcome {
        kills: 0,
        after_round: Vec::new(),
    };
    for round in 1..=plan.kills {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let target = plan.from + (plan.to - plan.from) * round / (plan.kills + 1);
        let jitter = Duration::from_millis((seed >> 33) % 30);
        let mut child = spawn(plan);
        while child.try_wait().unwrap().is_none() {
            if issued(&db, plan.tenant) >= target {
                std::thread::sleep(jitter);
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap();
                    out.kills += 1;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.wait().unwrap();
        out.after_round.push(issued(&db, plan.tenant));
        std::thread::sleep(Duration::from_millis(LEASE_SECONDS * 1000 + 100));
    }
    let status = spawn(plan).wait().unwrap();
    assert!(status.success(), "the last run failed: {status}");
    out.after_round.push(issued(&db, plan.tenant));
    out
}

/// Checks the database after the runs: the tenant has `contracts` contracts, each with exactly
/// `per_contract` invoices, no step billed twice, and invoice numbers 1..=count with no gap
/// (the counter agrees). Returns the invoice count.
pub fn verify(db: &Path, tenant: &str, contracts: u64, per_contract: u64) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    // Tables refer to the tenant by its integer key.
    let key: i64 = c
        .query_row("SELECT key FROM tenants WHERE id = ?", [tenant], |r| {
            r.get(0)
        })
        .unwrap();
    let one = |sql: &str| -> i64 { c.query_row(sql, [key], |r| r.get(0)).unwrap() };
    let found = one("SELECT COUNT(*) FROM contracts WHERE tenant_id = ?1") as u64;
    assert_eq!(found, contracts, "contracts of the tenant");
    let wrong = one(&format!(
        "SELECT COUNT(*) FROM contracts c WHERE c.tenant_id = ?1 AND
           (SELECT COUNT(*) FROM invoices i WHERE i.tenant_id = ?1 AND i.contract_id = c.id)
           != {per_contract}"
    ));
    assert_eq!(
        wrong, 0,
        "contracts without exactly {per_contract} invoices"
    );
    let count = one("SELECT COUNT(*) FROM invoices WHERE tenant_id = ?1") as u64;
    assert_eq!(count, contracts * per_contract, "invoices");
    for (what, sql) in [
        (
            "steps",
            "SELECT COUNT(DISTINCT step_key) FROM invoices WHERE tenant_id = ?1",
        ),
        (
            "sequence numbers",
            "SELECT COUNT(DISTINCT seq) FROM invoices WHERE tenant_id = ?1",
        ),
        (
            "invoice numbers",
            "SELECT COUNT(DISTINCT number) FROM invoices WHERE tenant_id = ?1",
        ),
        (
            "highest sequence number",
            "SELECT MAX(seq) FROM invoices WHERE tenant_id = ?1",
        ),
        (
            "the tenant's counter",
            "SELECT invoice_seq FROM tenants WHERE key = ?1",
        ),
    ] {
        assert_eq!(one(sql) as u64, count, "{what}");
    }
    assert_eq!(
        one("SELECT MIN(seq) FROM invoices WHERE tenant_id = ?1"),
        1,
        "lowest sequence number"
    );
    count
}
