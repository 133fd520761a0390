//! The SQLite [`Store`]: Tally's default, embedded database (WAL, synchronous FULL), with its
//! migrations embedded. Contracts are stored whole (JSON) beside the indexed columns the bill run
//! and lists need; a commit is one write transaction that starts with the contract's version
//! check, so it takes the write lock first and numbers invoices gaplessly. Tables refer to a
//! tenant by its integer key (`tenants.key`), looked up once per process, not by its public id.
//!
//! Statements run on rusqlite connections with cached prepared statements: reads on a pool of
//! reader connections, directly on the calling task (a point read takes microseconds), and
//! writes on the one writer connection in a blocking task (SQLite has one writer at a time, and a
//! commit waits for its fsync). sqlx's migrator keeps the migrations.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use rust_decimal::Decimal;
use tally_app::store::*;
use tally_core::contract::join_stored_parts;
use tally_core::prelude::*;

/// Reader connections: enough for every runtime thread and the blocking tasks that read.
const READERS: u32 = 8;

/// The page size of a new database file, in bytes.
const PAGE_SIZE: i64 = 4_096;

/// How often the checkpointer looks for writes to copy back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// How many rows the writer changes between two checkpoints, at least: a bill run's few
/// batches, or a few thousand API writes. Checkpointing after every few small transactions
/// would sync the database file as often, beside their own syncs.
const CHECKPOINT_ROWS: u64 = 16_384;

/// A tenant's integer key in this database (`tenants.key`): every other table refers to the
/// tenant by it, not by its 40-character public id, which would lead every key and index entry.
type Key = i64;

/// The key no tenant has (keys start at 1): reads for a tenant this database does not hold find
/// nothing.
const NO_TENANT: Key = 0;

/// A Tally store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// Reader connections of a database file; `None` for an in-memory database, which exists
    /// only on the writer connection.
    readers: Option<r2d2::Pool<SqliteConnectionManager>>,
    writer: Arc<Mutex<Connection>>,
    /// Counts write transactions for the checkpointer of a database file; dropping the last
    /// clone of the store stops it.
    checkpoints: Option<Arc<Checkpointer>>,
    url: String,
    catalogs: Arc<CatalogCache>,
    contracts: Arc<ContractCache>,
    /// Tenants' keys by public id, read once per process: a tenant's key never changes.
    keys: Arc<RwLock<HashMap<String, Key>>>,
}

/// Parsed contracts the store keeps for reads that bill (previews and changes): a few KB each,
/// so at most some tens of MB; the bill run reads its batches without it.
const CACHED_CONTRACTS: usize = 4_096;

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn from_micros(v: i64) -> Timestamp {
    Timestamp::from_microsecond(v).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(be)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(be)
}

fn decimal(s: &str) -> StoreResult<Decimal> {
    Decimal::from_str(s).map_err(be)
}

fn limit(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn status_str(s: InvoiceStatus) -> &'static str {
    match s {
        InvoiceStatus::Open => "open",
        InvoiceStatus::Paid => "paid",
        InvoiceStatus::Void => "void",
    }
}

fn parse_status(s: &str) -> InvoiceStatus {
    match s {
        "paid" => InvoiceStatus::Paid,
        "void" => InvoiceStatus::Void,
        _ => InvoiceStatus::Open,
    }
}

/// The file path of a `sqlite://PATH` (or `sqlite:PATH`) URL; `None` for an in-memory database.
fn file_of(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// Applies the connection settings every connection uses.
fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_secs(10))?;
    // A new database is made with 4 KiB pages (an existing one keeps its own). 16 KiB pages
    // made a bill-run batch ~10% faster (a quarter as many log frames) but every small API
    // write ~40% slower, each commit logging whole pages four times the size.
    c.pragma_update(None, "page_size", PAGE_SIZE)?;
    c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.pragma_update(None, "cache_size", -16384)?;
    // The log is copied back into the database by the store's checkpointer thread, off the
    // writer; a commit does it only if the log has grown this far (64 MiB) anyway, as when the
    // checkpointer cannot keep up.
    c.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    c.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// An immediate transaction: it takes the write lock at once.
fn immediate(c: &mut Connection) -> StoreResult<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(be)
}

/// Runs `f` in an immediate transaction on `c`: commits when it succeeds, rolls back when it
/// fails.
fn transact<T>(
    c: &mut Connection,
    f: impl FnOnce(&Transaction) -> StoreResult<T>,
) -> StoreResult<T> {
    let tx = immediate(c)?;
    let out = f(&tx)?;
    tx.commit().map_err(be)?;
    Ok(out)
}

/// `VALUES (?, ...), (...)` for `rows` rows of `cols` columns.
fn values_sql(cols: usize, rows: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    format!("VALUES {}", vec![one; rows].join(", "))
}

/// `?, ?, ...` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Copies the write-ahead log back into the database file on a thread of its own, with its
/// own connection, once the writer has changed [`CHECKPOINT_ROWS`] rows since the last time:
/// a checkpoint copies and syncs tens of MB, which inside a commit held up the writer and the
/// bill run waiting on it. The checkpoint is passive: it never blocks the writer or a reader.
struct Checkpointer {
    /// Rows the writer connection has changed so far.
    writes: Arc<AtomicU64>,
    /// Dropped with the store: the thread then stops.
    _stop: std::sync::mpsc::Sender<()>,
}

impl Checkpointer {
    fn start(path: &std::path::Path) -> StoreResult<Checkpointer> {
        let c = Connection::open(path).map_err(be)?;
        configure(&c).map_err(be)?;
        let writes = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let seen = Arc::clone(&writes);
        std::thread::Builder::new()
            .name("tally-checkpoint".into())
            .spawn(move || {
                let mut done = 0;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let now = seen.load(Ordering::Relaxed);
                    if now.saturating_sub(done) < CHECKPOINT_ROWS {
                        continue;
                    }
                    done = now;
                    if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "checkpoint failed");
                    }
                }
            })
            .map_err(be)?;
        Ok(Checkpointer {
            writes,
            _stop: stop,
        })
    }

    /// Notes how many rows the writer connection has changed so far.
    fn written(&self, rows: u64) {
        self.writes.store(rows, Ordering::Relaxed);
    }
}

impl SqliteStore {
    /// Opens (creating the file if needed) and migrates the database at `url`
    /// (`sqlite://tally.db`, `sqlite::memory:`).
    ///
    /// # Errors
    /// The file cannot be opened or migrated.
    pub async fn connect(url: &str) -> StoreResult<SqliteStore> {
        let (writer, readers) = match file_of(url) {
            Some(path) => {
                let writer = Connection::open(&path).map_err(be)?;
                let manager = SqliteConnectionManager::file(&path).with_init(|c| configure(c));
                let readers = r2d2::Pool::builder()
                    .max_size(READERS)
                    .min_idle(Some(1))
                    .connection_timeout(Duration::from_secs(30))
                    .build(manager)
                    .map_err(be)?;
                (writer, Some(readers))
            }
            None => (Connection::open_in_memory().map_err(be)?, None),
        };
        configure(&writer).map_err(be)?;
        let checkpoints = match file_of(url) {
            Some(path) => Some(Arc::new(Checkpointer::start(&path)?)),
            None => None,
        };
        let store = SqliteStore {
            readers,
            writer: Arc::new(Mutex::new(writer)),
            checkpoints,
            url: url.to_string(),
            catalogs: Arc::new(CatalogCache::default()),
            contracts: Arc::new(ContractCache::new(CACHED_CONTRACTS)),
            keys: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded migrations that have not run yet.
    ///
    /// # Errors
    /// A migration fails.
    pub async fn migrate(&self) -> StoreResult<()> {
        match file_of(&self.url) {
            Some(path) => {
                use sqlx::sqlite::SqliteConnectOptions;
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .busy_timeout(Duration::from_secs(10));
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .map_err(be)?;
                let done = sqlx::migrate!("./migrations").run(&pool).await.map_err(be);
                pool.close().await;
                done
            }
            // An in-memory database is new: run every migration's script on the writer.
            None => {
                let c = self.writer.lock().map_err(be)?;
                for m in sqlx::migrate!("./migrations").iter() {
                    c.execute_batch(&m.sql).map_err(be)?;
                }
                Ok(())
            }
        }
    }

    /// The tenant's key; [`NO_TENANT`] for a tenant this database does not hold.
    fn key(&self, tenant: &str) -> StoreResult<Key> {
        if let Some(k) = self.keys.read().map_err(be)?.get(tenant) {
            return Ok(*k);
        }
        let k: Option<Key> = self.read(|c| {
            c.prepare_cached("SELECT key FROM tenants WHERE id = ?")
                .map_err(be)?
                .query_row(params![tenant], |r| r.get(0))
                .optional()
                .map_err(be)
        })?;
        let Some(k) = k else {
            return Ok(NO_TENANT);
        };
        self.remember(tenant, k)?;
        Ok(k)
    }

    /// Notes a tenant's key.
    fn remember(&self, tenant: &str, key: Key) -> StoreResult<()> {
        self.keys
            .write()
            .map_err(be)?
            .insert(tenant.to_string(), key);
        Ok(())
    }

    /// The key of the tenant a write is for: a write for a tenant this database does not hold
    /// fails rather than leave rows that no tenant reads.
    fn known(&self, tenant: &str) -> StoreResult<Key> {
        match self.key(tenant)? {
            NO_TENANT => Err(StoreError::Backend(format!("no tenant {tenant}"))),
            k => Ok(k),
        }
    }

    /// Runs `f` on a reader connection, on the calling task.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        match &self.readers {
            Some(pool) => {
                let c = pool.get().map_err(be)?;
                f(&c)
            }
            None => {
                let c = self
                    .writer
                    .lock()
                    .map_err(|_| be("the writer connection is poisoned"))?;
                f(&c)
            }
        }
    }

    /// Runs `f` on the writer connection, in a blocking task.
    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let writer = self.writer.clone();
        let checkpoints = self.checkpoints.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = writer
                .lock()
                .map_err(|_| be("the writer connection is poisoned"))?;
            let out = f(&mut c);
            if let Some(k) = checkpoints {
                k.written(c.total_changes());
            }
            out
        })
        .await
        .map_err(be)?
    }

    /// Runs `f` in an immediate write transaction on the writer connection, in a blocking task;
    /// commits when `f` succeeds, rolls back when it fails.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.with_writer(move |c| transact(c, f)).await
    }

    /// Runs `f` as [`SqliteStore::write`] does, but commits without waiting for the disk: for
    /// bill-run claims, which are leases. The log is appended in order, so the next commit that
    /// does wait (synchronous FULL) makes this one durable too; what a power loss could take is
    /// a lease whose holder died with it.
    async fn write_unsynced<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.with_writer(move |c| {
            c.pragma_update(None, "synchronous", "NORMAL").map_err(be)?;
            let out = transact(c, f);
            c.pragma_update(None, "synchronous", "FULL").map_err(be)?;
            out
        })
        .await
    }
}

/// The columns an invoice is read from, after `SELECT`.
const INVOICE_COLUMNS: &str = "id, number, status, contract_id, customer_id, step_key, body";

/// An invoice's row read by [`INVOICE_COLUMNS`].
type InvoiceRow = (String, String, String, String, String, String, String);

fn read_invoice(r: &Row) -> rusqlite::Result<InvoiceRow> {
    InvoiceRow::try_from(r)
}

fn invoice_of(
    (id, number, status, contract_id, customer_id, step_key, body): InvoiceRow,
) -> StoreResult<Invoice> {
    Ok(Invoice {
        id,
        number,
        status: parse_status(&status),
        draft: invoice_from_stored(contract_id, customer_id, step_key, &body)?,
    })
}

fn usage_of_row(r: &Row, offset: usize) -> rusqlite::Result<(String, String, i64, bool)> {
    Ok((
        r.get(offset)?,
        r.get(offset + 1)?,
        r.get(offset + 2)?,
        r.get(offset + 3)?,
    ))
}

fn usage_record(
    (feature_slug, units, ts, is_absolute): (String, String, i64, bool),
) -> StoreResult<UsageRecord> {
    Ok(UsageRecord {
        feature_slug,
        units: decimal(&units)?,
        timestamp: from_micros(ts),
        is_absolute,
    })
}

/// Inserts usage records of one contract.
fn insert_usage(
    tx: &Connection,
    tenant: Key,
    contract_id: &str,
    records: &[UsageRecord],
) -> StoreResult<()> {
    let mut st = tx
        .prepare_cached("INSERT INTO usage_records (tenant_id, contract_id, feature_slug, units, ts, is_absolute) VALUES (?, ?, ?, ?, ?, ?)")
        .map_err(be)?;
    for r in records {
        st.execute(params![
            tenant,
            contract_id,
            r.feature_slug,
            r.units.to_string(),
            micros(r.timestamp),
            r.is_absolute
        ])
        .map_err(be)?;
    }
    Ok(())
}

/// Writes an order unless one with its id exists and is no longer open; answers whether it
/// was written.
fn upsert_order(c: &Connection, tenant: Key, o: &Order) -> StoreResult<bool> {
    let status = serde_json::to_value(o.status).map_err(be)?;
    let n = c
        .prepare_cached(
            "INSERT INTO orders (tenant_id, id, contract_id, status, body) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, id) DO UPDATE
             SET contract_id = excluded.contract_id, status = excluded.status, body = excluded.body
             WHERE orders.status = 'open'",
        )
        .map_err(be)?
        .execute(params![
            tenant,
            o.id,
            o.contract_id,
            status.as_str().unwrap_or("open"),
            to_json(o)?
        ])
        .map_err(be)?;
    Ok(n == 1)
}

fn status_of(c: &Contract) -> StoreResult<String> {
    let status = serde_json::to_value(c.status).map_err(be)?;
    Ok(status.as_str().unwrap_or("active").to_string())
}

/// Writes one commit inside an open transaction: the contract's version check first (a lost race
/// returns [`StoreError::Conflict`] having written nothing), then invoices, balances and events.
fn write_commit(
    tx: &Connection,
    tenant: Key,
    commit: Commit,
    bodies: &Bodies,
) -> StoreResult<Committed> {
    let mut version = 0;
    if let Some(o) = &commit.order
        && !upsert_order(tx, tenant, o)?
    {
        return Err(StoreError::Conflict);
    }
    if !commit.usage.is_empty() {
        let Some((c, _)) = &commit.contract else {
            return Err(StoreError::Backend(
                "usage in a write needs its contract".into(),
            ));
        };
        insert_usage(tx, tenant, &c.id, &commit.usage)?;
    }
    if let Some((c, expected)) = &commit.contract {
        let Some(body) = &bodies.contract else {
            return Err(StoreError::Backend(
                "a contract write needs its body".into(),
            ));
        };
        let due = next_due(c).map(micros);
        let status = status_of(c)?;
        if *expected == 0 {
            let Some(terms) = &body.terms else {
                return Err(StoreError::Backend("a new contract needs its terms".into()));
            };
            tx.prepare_cached("INSERT INTO contract_terms (body) VALUES (?)")
                .map_err(be)?
                .execute(params![terms])
                .map_err(be)?;
            let terms_id = tx.last_insert_rowid();
            tx.prepare_cached(
                "INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, created_seq, terms_id, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM contracts WHERE tenant_id = ?1), ?6, ?7)",
            )
            .map_err(be)?
            .execute(params![tenant, c.id, c.customer_id, status, due, terms_id, body.progress])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate(format!("contract {}", c.id))
                } else {
                    be(e)
                }
            })?;
            version = 1;
        } else {
            let terms_id: Option<i64> = tx
                .prepare_cached(
                    "UPDATE contracts SET status = ?, next_due = ?, version = version + 1, body = ?
                     WHERE tenant_id = ? AND id = ? AND version = ? RETURNING terms_id",
                )
                .map_err(be)?
                .query_row(
                    params![status, due, body.progress, tenant, c.id, expected],
                    |r| r.get(0),
                )
                .optional()
                .map_err(be)?;
            let Some(terms_id) = terms_id else {
                return Err(StoreError::Conflict);
            };
            if let Some(terms) = &body.terms {
                write_terms(tx, terms_id, terms)?;
            }
            version = expected + 1;
        }
    }
    let mut issued = Vec::new();
    for (draft, body) in commit.invoices.into_iter().zip(&bodies.invoices) {
        let exists: Option<i64> = tx
            .prepare_cached("SELECT 1 FROM invoices WHERE tenant_id = ? AND step_key = ?")
            .map_err(be)?
            .query_row(params![tenant, draft.step_key], |r| r.get(0))
            .optional()
            .map_err(be)?;
        if exists.is_some() {
            continue;
        }
        let seq: i64 = tx
            .prepare_cached(
                "UPDATE tenants SET invoice_seq = invoice_seq + 1 WHERE key = ? RETURNING invoice_seq",
            )
            .map_err(be)?
            .query_row(params![tenant], |r| r.get(0))
            .map_err(be)?;
        let inv = Invoice {
            id: tally_app::ids::new_id("Inv"),
            number: invoice_number(draft.issued_at, seq),
            status: InvoiceStatus::Open,
            draft,
        };
        let d = &inv.draft;
        tx.prepare_cached(
            "INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
        )
        .map_err(be)?
        .execute(params![
            tenant,
            inv.id,
            seq,
            inv.number,
            d.contract_id,
            d.customer_id,
            micros(d.issued_at),
            d.step_key,
            body
        ])
        .map_err(be)?;
        add_balance(tx, tenant, d)?;
        issued.push(inv);
    }
    for (e, body) in commit.events.iter().zip(&bodies.events) {
        insert_event(tx, tenant, e, body)?;
    }
    write_deliveries(tx, tenant, &commit.events.iter().collect::<Vec<_>>())?;
    Ok(Committed {
        invoices: issued,
        version,
    })
}

/// Rewrites a contract's terms.
fn write_terms(tx: &Connection, terms_id: i64, body: &str) -> StoreResult<()> {
    let n = tx
        .prepare_cached("UPDATE contract_terms SET body = ? WHERE id = ?")
        .map_err(be)?
        .execute(params![body, terms_id])
        .map_err(be)?;
    if n != 1 {
        return Err(StoreError::Backend(format!(
            "contract terms {terms_id} missing"
        )));
    }
    Ok(())
}

fn insert_event(tx: &Connection, tenant: Key, e: &Event, body: &str) -> StoreResult<()> {
    tx.prepare_cached("INSERT INTO events (tenant_id, id, contract_id, body) VALUES (?, ?, ?, ?)")
        .map_err(be)?
        .execute(params![tenant, e.id, e.contract_id, body])
        .map_err(be)?;
    Ok(())
}

/// The status of a new invoice.
const OPEN: &str = "open";

/// Rows per multi-row statement: far below SQLite's limit of 32,766 bound values per statement.
const ROWS_PER_STATEMENT: usize = 200;

/// Runs a multi-row statement: `head` then `VALUES` for `rows` rows of `cols` columns, then
/// `tail`, with `values` bound in order.
fn execute_rows(
    tx: &Connection,
    head: &str,
    cols: usize,
    rows: usize,
    tail: &str,
    values: &[&dyn ToSql],
) -> StoreResult<usize> {
    let sql = format!("{head} {} {tail}", values_sql(cols, rows));
    tx.prepare_cached(&sql)
        .map_err(be)?
        .execute(values)
        .map_err(be)
}

/// Writes a bill-run batch inside an open transaction with a few multi-row statements instead of
/// one statement per row. Only batches of existing contracts qualify; `Ok(None)` means the batch
/// does not (or one of its contracts lost a race) and the caller must roll back and write the
/// commits one by one, which tells each commit's outcome apart.
fn write_batch(
    tx: &Connection,
    tenant: Key,
    commits: &mut [Commit],
    bodies: &[Bodies],
) -> StoreResult<Option<Vec<Committed>>> {
    if commits.iter().any(|c| {
        c.order.is_some() || !c.usage.is_empty() || c.contract.as_ref().is_none_or(|(_, v)| *v == 0)
    }) {
        return Ok(None);
    }
    // Contracts first, each guarded by its version: this takes the write lock.
    let mut updated = 0;
    for (chunk, texts) in commits
        .chunks(ROWS_PER_STATEMENT)
        .zip(bodies.chunks(ROWS_PER_STATEMENT))
    {
        let mut rows = Vec::with_capacity(chunk.len());
        for (commit, text) in chunk.iter().zip(texts) {
            if let (Some((c, expected)), Some(body)) = (&commit.contract, &text.contract) {
                rows.push((
                    c.id.as_str(),
                    status_of(c)?,
                    next_due(c).map(micros),
                    &body.progress,
                    *expected,
                ));
            }
        }
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(rows.len() * 5 + 1);
        for (id, status, due, body, expected) in &rows {
            values.extend([id as &dyn ToSql, status, due, body, expected]);
        }
        values.push(&tenant);
        updated += execute_rows(
            tx,
            "WITH v (id, status, due, body, expected) AS (",
            5,
            rows.len(),
            ") UPDATE contracts SET status = v.status, next_due = v.due, version = contracts.version + 1, body = v.body
             FROM v WHERE contracts.tenant_id = ? AND contracts.id = v.id AND contracts.version = v.expected",
            &values,
        )?;
    }
    if updated != commits.len() {
        return Ok(None);
    }
    // Terms are rewritten only where they changed (a renewal leaves them).
    for (commit, text) in commits.iter().zip(bodies) {
        if let (Some((c, _)), Some(body)) = (&commit.contract, &text.contract)
            && let Some(terms) = &body.terms
        {
            let n = tx
                .prepare_cached(
                    "UPDATE contract_terms SET body = ?
                     WHERE id = (SELECT terms_id FROM contracts WHERE tenant_id = ? AND id = ?)",
                )
                .map_err(be)?
                .execute(params![terms, tenant, c.id])
                .map_err(be)?;
            if n != 1 {
                return Err(StoreError::Backend(format!(
                    "terms of contract {} missing",
                    c.id
                )));
            }
        }
    }
    // Invoices already issued for their step (a re-run) are skipped.
    let keys: Vec<&str> = commits
        .iter()
        .flat_map(|c| c.invoices.iter().map(|d| d.step_key.as_str()))
        .collect();
    let mut issued_keys = std::collections::BTreeSet::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT * 4) {
        let sql = format!(
            "SELECT step_key FROM invoices WHERE tenant_id = ? AND step_key IN ({})",
            marks(chunk.len())
        );
        let mut values: Vec<&dyn ToSql> = vec![&tenant];
        values.extend(chunk.iter().map(|k| k as &dyn ToSql));
        let mut st = tx.prepare_cached(&sql).map_err(be)?;
        let found = st
            .query_map(values.as_slice(), |r| r.get::<_, String>(0))
            .map_err(be)?;
        for k in found {
            issued_keys.insert(k.map_err(be)?);
        }
    }
    let fresh = commits
        .iter()
        .flat_map(|c| &c.invoices)
        .filter(|d| !issued_keys.contains(&d.step_key))
        .count() as i64;
    let mut seq = 0;
    if fresh > 0 {
        let last: i64 = tx
            .prepare_cached(
                "UPDATE tenants SET invoice_seq = invoice_seq + ? WHERE key = ? RETURNING invoice_seq",
            )
            .map_err(be)?
            .query_row(params![fresh, tenant], |r| r.get(0))
            .map_err(be)?;
        seq = last - fresh;
    }
    // From here on the batch is written whole (or fails whole): the drafts move into the
    // invoices answered, rather than being copied.
    let mut out = Vec::with_capacity(commits.len());
    let mut texts: Vec<(i64, &String)> = Vec::with_capacity(fresh as usize);
    for (commit, text) in commits.iter_mut().zip(bodies) {
        let mut done = Committed {
            invoices: Vec::with_capacity(commit.invoices.len()),
            version: commit.contract.as_ref().map_or(0, |(_, v)| v + 1),
        };
        for (draft, body) in std::mem::take(&mut commit.invoices)
            .into_iter()
            .zip(&text.invoices)
        {
            if issued_keys.contains(&draft.step_key) {
                continue;
            }
            seq += 1;
            texts.push((seq, body));
            done.invoices.push(Invoice {
                id: tally_app::ids::new_id("Inv"),
                number: invoice_number(draft.issued_at, seq),
                status: InvoiceStatus::Open,
                draft,
            });
        }
        out.push(done);
    }
    let answered: Vec<&Invoice> = out.iter().flat_map(|d| &d.invoices).collect();
    let invoices: Vec<(i64, &Invoice, &String)> = texts
        .into_iter()
        .zip(&answered)
        .map(|((seq, body), inv)| (seq, *inv, body))
        .collect();
    for chunk in invoices.chunks(ROWS_PER_STATEMENT) {
        let issued: Vec<i64> = chunk
            .iter()
            .map(|(_, inv, _)| micros(inv.draft.issued_at))
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 10);
        for ((seq, inv, body), at) in chunk.iter().zip(&issued) {
            let d = &inv.draft;
            values.extend([
                &tenant as &dyn ToSql,
                &inv.id,
                seq,
                &inv.number,
                &d.contract_id,
                &d.customer_id,
                at,
                &d.step_key,
                body,
                &OPEN,
            ]);
        }
        execute_rows(
            tx,
            "INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, step_key, body, status)",
            10,
            chunk.len(),
            "",
            &values,
        )?;
    }
    for (_, inv, _) in &invoices {
        add_balance(tx, tenant, &inv.draft)?;
    }
    let events: Vec<&Event> = commits.iter().flat_map(|c| &c.events).collect();
    // Each event takes the next key of the table (its sequence number) as it is inserted.
    let texts: Vec<&String> = bodies.iter().flat_map(|b| &b.events).collect();
    let rows: Vec<(&Event, &String)> = events.iter().copied().zip(texts).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 4);
        for (e, body) in chunk {
            values.extend([&tenant as &dyn ToSql, &e.id, &e.contract_id, body]);
        }
        execute_rows(
            tx,
            "INSERT INTO events (tenant_id, id, contract_id, body)",
            4,
            chunk.len(),
            "",
            &values,
        )?;
    }
    write_deliveries(tx, tenant, &events)?;
    Ok(Some(out))
}

/// Moves the customer's credit balance by what an invoice added and applied.
fn add_balance(tx: &Connection, tenant: Key, d: &InvoiceDraft) -> StoreResult<()> {
    let delta = d.credit_added - d.credit_applied;
    if delta.is_zero() {
        return Ok(());
    }
    let current: Option<String> = tx
        .prepare_cached(
            "SELECT amount FROM balances WHERE tenant_id = ? AND customer_id = ? AND currency = ?",
        )
        .map_err(be)?
        .query_row(params![tenant, d.customer_id, d.currency.code()], |r| {
            r.get(0)
        })
        .optional()
        .map_err(be)?;
    let now = current
        .map(|s| decimal(&s))
        .transpose()?
        .unwrap_or_default()
        + delta;
    tx.prepare_cached(
        "INSERT INTO balances (tenant_id, customer_id, currency, amount) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant_id, customer_id, currency) DO UPDATE SET amount = excluded.amount",
    )
    .map_err(be)?
    .execute(params![
        tenant,
        d.customer_id,
        d.currency.code(),
        now.to_string()
    ])
    .map_err(be)?;
    Ok(())
}

/// Writes the deliveries `events` make for the tenant's webhook endpoints (none when it has
/// none), inside the transaction that writes the events: the outbox.
fn write_deliveries(tx: &Connection, tenant: Key, events: &[&Event]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let bodies: Vec<String> = {
        let mut st = tx
            .prepare_cached("SELECT body FROM webhook_endpoints WHERE tenant_id = ? ORDER BY seq")
            .map_err(be)?;
        st.query_map(params![tenant], |r| r.get(0))
            .map_err(be)?
            .collect::<rusqlite::Result<_>>()
            .map_err(be)?
    };
    if bodies.is_empty() {
        return Ok(());
    }
    let endpoints = bodies
        .iter()
        .map(|b| from_json(b))
        .collect::<StoreResult<Vec<WebhookEndpoint>>>()?;
    let made = Delivery::fan_out(&endpoints, events);
    let mut rows = Vec::with_capacity(made.len());
    for d in &made {
        rows.push((
            d,
            d.status.as_str(),
            d.next_attempt_at.map(micros),
            to_json(d)?,
        ));
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 7);
        for (d, status, next, body) in chunk {
            values.extend([
                &tenant as &dyn ToSql,
                &d.id,
                &d.endpoint_id,
                &d.event_id,
                status,
                next,
                body,
            ]);
        }
        execute_rows(
            tx,
            "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event_id, status, next_attempt_at, body)",
            7,
            chunk.len(),
            "",
            &values,
        )?;
    }
    Ok(())
}

/// Claims due pending deliveries across tenants (bound: lease end, now, now, limit).
const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET claimed_until = ?1
     WHERE seq IN (
         SELECT seq FROM webhook_deliveries
         WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?2)
           AND (claimed_until IS NULL OR claimed_until < ?3)
         ORDER BY next_attempt_at LIMIT ?4)
     RETURNING tenant_id, body";

/// Reads every row of a one-column query of strings.
fn strings(c: &Connection, sql: &str, values: &[&dyn ToSql]) -> StoreResult<Vec<String>> {
    let mut st = c.prepare_cached(sql).map_err(be)?;
    st.query_map(values, |r| r.get(0))
        .map_err(be)?
        .collect::<rusqlite::Result<_>>()
        .map_err(be)
}

/// Reads an optional string of a one-row query.
fn string(c: &Connection, sql: &str, values: &[&dyn ToSql]) -> StoreResult<Option<String>> {
    c.prepare_cached(sql)
        .map_err(be)?
        .query_row(values, |r| r.get(0))
        .optional()
        .map_err(be)
}

fn count(c: &Connection, sql: &str, values: &[&dyn ToSql]) -> StoreResult<u64> {
    let n: i64 = c
        .prepare_cached(sql)
        .map_err(be)?
        .query_row(values, |r| r.get(0))
        .map_err(be)?;
    Ok(n.max(0) as u64)
}

type TenantRow = (String, String, bool, String, Option<i64>, i64);

fn tenant_row(r: &Row) -> rusqlite::Result<TenantRow> {
    TenantRow::try_from(r)
}

fn tenant_of((id, name, test_mode, settings, clock, created_at): TenantRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id,
        name,
        test_mode,
        settings: from_json(&settings)?,
        clock: clock.map(from_micros),
        created_at: from_micros(created_at),
    })
}

/// The columns a contract is read from, after `SELECT`: its terms, its progress, its version.
const CONTRACT_COLUMNS: &str =
    "t.body, c.body, c.version FROM contracts c JOIN contract_terms t ON t.id = c.terms_id";

/// A contract's row read by [`CONTRACT_COLUMNS`]: its stored JSON, terms and progress joined
/// straight from the row's text, and its version.
type ContractRow = (String, i64);

fn stored_contract(r: &Row) -> rusqlite::Result<ContractRow> {
    let terms = r.get_ref(0)?.as_str()?;
    let progress = r.get_ref(1)?.as_str()?;
    Ok((join_stored_parts(terms, progress), r.get(2)?))
}

fn contract_of((body, version): ContractRow) -> StoreResult<StoredContract> {
    Ok(StoredContract {
        contract: from_json(&body)?,
        version,
    })
}

/// A contract by id, on `c`.
fn contract_on(c: &Connection, tenant: Key, id: &str) -> StoreResult<Option<StoredContract>> {
    c.prepare_cached(&format!(
        "SELECT {CONTRACT_COLUMNS} WHERE c.tenant_id = ? AND c.id = ?"
    ))
    .map_err(be)?
    .query_row(params![tenant, id], stored_contract)
    .optional()
    .map_err(be)?
    .map(contract_of)
    .transpose()
}

/// A contract by id and its version, on `c`, parsed only when `cache` does not hold that version.
fn contract_cached_on(
    c: &Connection,
    cache: &ContractCache,
    (key, tenant): (Key, &str),
    id: &str,
) -> StoreResult<Option<(Arc<Contract>, i64)>> {
    let mut st = c
        .prepare_cached(
            "SELECT version, terms_id, body FROM contracts WHERE tenant_id = ? AND id = ?",
        )
        .map_err(be)?;
    let mut rows = st.query(params![key, id]).map_err(be)?;
    let Some(row) = rows.next().map_err(be)? else {
        return Ok(None);
    };
    let version: i64 = row.get(0).map_err(be)?;
    if let Some(parsed) = cache.get(tenant, id, version) {
        return Ok(Some((parsed, version)));
    }
    let terms_id: i64 = row.get(1).map_err(be)?;
    let progress = row.get_ref(2).map_err(be)?.as_str().map_err(be)?;
    let terms: String = c
        .prepare_cached("SELECT body FROM contract_terms WHERE id = ?")
        .map_err(be)?
        .query_row(params![terms_id], |r| r.get(0))
        .map_err(be)?;
    let parsed = Arc::new(from_json::<Contract>(&join_stored_parts(&terms, progress))?);
    cache.put(tenant, version, parsed.clone());
    Ok(Some((parsed, version)))
}

/// A contract's usage at or after `since`, on `c`.
fn usage_on(
    c: &Connection,
    tenant: Key,
    contract_id: &str,
    since: Timestamp,
) -> StoreResult<Vec<UsageRecord>> {
    let mut st = c
        .prepare_cached(
            "SELECT feature_slug, units, ts, is_absolute FROM usage_records
             WHERE tenant_id = ? AND contract_id = ? AND ts >= ? ORDER BY seq",
        )
        .map_err(be)?;
    let rows: Vec<(String, String, i64, bool)> = st
        .query_map(params![tenant, contract_id, micros(since)], |r| {
            usage_of_row(r, 0)
        })
        .map_err(be)?
        .collect::<rusqlite::Result<_>>()
        .map_err(be)?;
    rows.into_iter().map(usage_record).collect()
}

/// A customer by id or slug, on `c`.
fn customer_on(c: &Connection, tenant: Key, id_or_slug: &str) -> StoreResult<Option<Customer>> {
    let body = string(
        c,
        "SELECT body FROM customers WHERE tenant_id = ?1 AND (id = ?2 OR slug = ?2)",
        &[&tenant, &id_or_slug],
    )?;
    body.map(|b| from_json(&b)).transpose()
}

/// A customer's credit balances, on `c`.
fn balances_on(
    c: &Connection,
    tenant: Key,
    customer_id: &str,
) -> StoreResult<BTreeMap<Currency, Decimal>> {
    let mut st = c
        .prepare_cached(
            "SELECT currency, amount FROM balances WHERE tenant_id = ? AND customer_id = ?",
        )
        .map_err(be)?;
    let rows: Vec<(String, String)> = st
        .query_map(params![tenant, customer_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(be)?
        .collect::<rusqlite::Result<_>>()
        .map_err(be)?;
    let mut out = BTreeMap::new();
    for (cur, amt) in rows {
        out.insert(Currency::from_str(&cur).map_err(be)?, decimal(&amt)?);
    }
    Ok(out)
}

/// The stored text of a tenant's catalog, on `c`.
fn catalog_text(c: &Connection, tenant: &str) -> StoreResult<Option<String>> {
    let text: Option<Option<String>> = c
        .prepare_cached("SELECT catalog FROM tenants WHERE id = ?")
        .map_err(be)?
        .query_row(params![tenant], |r| r.get(0))
        .optional()
        .map_err(be)?;
    Ok(text.flatten())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, tenant: &Tenant, key_hash: &str) -> StoreResult<()> {
        let t = tenant.clone();
        let key_hash = key_hash.to_string();
        let settings = to_json(&tenant.settings)?;
        let key = self
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO tenants (id, name, test_mode, settings, clock, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    params![t.id, t.name, t.test_mode, settings, t.clock.map(micros), micros(t.created_at)],
                )
                .map_err(be)?;
                let key = tx.last_insert_rowid();
                tx.execute(
                    "INSERT INTO api_keys (key_hash, tenant_id) VALUES (?, ?)",
                    params![key_hash, key],
                )
                .map_err(|_| StoreError::Duplicate("api key".into()))?;
                Ok(key)
            })
            .await?;
        self.remember(&tenant.id, key)
    }

    async fn tenant_by_key(&self, key_hash: &str) -> StoreResult<Option<Tenant>> {
        let row = self.read(|c| {
            c.prepare_cached(
                "SELECT t.id, t.name, t.test_mode, t.settings, t.clock, t.created_at
                 FROM api_keys k JOIN tenants t ON t.key = k.tenant_id WHERE k.key_hash = ?",
            )
            .map_err(be)?
            .query_row(params![key_hash], tenant_row)
            .optional()
            .map_err(be)
        })?;
        row.map(tenant_of).transpose()
    }

    async fn tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        let row = self.read(|c| {
            c.prepare_cached(
                "SELECT id, name, test_mode, settings, clock, created_at FROM tenants WHERE id = ?",
            )
            .map_err(be)?
            .query_row(params![id], tenant_row)
            .optional()
            .map_err(be)
        })?;
        row.map(tenant_of).transpose()
    }

    async fn tenant_ids(&self) -> StoreResult<Vec<String>> {
        self.read(|c| strings(c, "SELECT id FROM tenants ORDER BY id", &[]))
    }

    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let t = tenant.clone();
        let settings = to_json(&tenant.settings)?;
        self.write(move |tx| {
            tx.prepare_cached("UPDATE tenants SET name = ?, settings = ?, clock = ? WHERE id = ?")
                .map_err(be)?
                .execute(params![t.name, settings, t.clock.map(micros), t.id])
                .map_err(be)?;
            Ok(())
        })
        .await
    }

    async fn catalog(&self, tenant: &str) -> StoreResult<Arc<Catalog>> {
        let text = self.read(|c| catalog_text(c, tenant))?;
        self.catalogs.get(tenant, text)
    }

    async fn save_catalog(&self, tenant: &str, catalog: &Catalog) -> StoreResult<()> {
        let body = to_json(catalog)?;
        let tenant = tenant.to_string();
        self.write(move |tx| {
            tx.execute(
                "UPDATE tenants SET catalog = ? WHERE id = ?",
                params![body, tenant],
            )
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    async fn save_customer(
        &self,
        tenant: &str,
        c: &Customer,
        event: Option<&Event>,
    ) -> StoreResult<()> {
        let body = to_json(c)?;
        let event = event
            .map(|e| Ok::<_, StoreError>((e.clone(), e.stored_body()?)))
            .transpose()?;
        let (tenant, id, slug) = (self.known(tenant)?, c.id.clone(), c.slug.clone());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO customers (tenant_id, id, slug, body) VALUES (?, ?, ?, ?)
                 ON CONFLICT (tenant_id, id) DO UPDATE SET slug = excluded.slug, body = excluded.body",
            )
            .map_err(be)?
            .execute(params![tenant, id, slug, body])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate("customer slug".into())
                } else {
                    be(e)
                }
            })?;
            if let Some((event, body)) = &event {
                insert_event(tx, tenant, event, body)?;
                write_deliveries(tx, tenant, &[event])?;
            }
            Ok(())
        })
        .await
    }

    async fn customer(&self, tenant: &str, id_or_slug: &str) -> StoreResult<Option<Customer>> {
        let tenant = self.key(tenant)?;
        self.read(|c| customer_on(c, tenant, id_or_slug))
    }

    async fn balances(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> StoreResult<BTreeMap<Currency, Decimal>> {
        let tenant = self.key(tenant)?;
        self.read(|c| balances_on(c, tenant, customer_id))
    }

    async fn customers_by_ids(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<Customer>> {
        let tenant = self.key(tenant)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
            let sql = format!(
                "SELECT body FROM customers WHERE tenant_id = ? AND id IN ({})",
                marks(chunk.len())
            );
            let mut values: Vec<&dyn ToSql> = vec![&tenant];
            values.extend(chunk.iter().map(|k| k as &dyn ToSql));
            for b in self.read(|c| strings(c, &sql, &values))? {
                out.push(from_json(&b)?);
            }
        }
        Ok(out)
    }

    async fn balances_of(
        &self,
        tenant: &str,
        customer_ids: &[String],
    ) -> StoreResult<BTreeMap<String, BTreeMap<Currency, Decimal>>> {
        let tenant = self.key(tenant)?;
        let mut out: BTreeMap<String, BTreeMap<Currency, Decimal>> = BTreeMap::new();
        for chunk in customer_ids.chunks(ROWS_PER_STATEMENT * 4) {
            let sql = format!(
                "SELECT customer_id, currency, amount FROM balances WHERE tenant_id = ? AND customer_id IN ({})",
                marks(chunk.len())
            );
            let mut values: Vec<&dyn ToSql> = vec![&tenant];
            values.extend(chunk.iter().map(|k| k as &dyn ToSql));
            let rows: Vec<(String, String, String)> = self.read(|c| {
                let mut st = c.prepare_cached(&sql).map_err(be)?;
                st.query_map(values.as_slice(), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(be)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(be)
            })?;
            for (customer, cur, amt) in rows {
                out.entry(customer)
                    .or_default()
                    .insert(Currency::from_str(&cur).map_err(be)?, decimal(&amt)?);
            }
        }
        Ok(out)
    }

    async fn contract(&self, tenant: &str, id: &str) -> StoreResult<Option<StoredContract>> {
        let tenant = self.key(tenant)?;
        self.read(|c| contract_on(c, tenant, id))
    }

    async fn billing_state(
        &self,
        tenant: &str,
        contract_id: &str,
    ) -> StoreResult<Option<BillingState>> {
        let key = self.key(tenant)?;
        // One read transaction: one snapshot, one pooled connection, one WAL read lock.
        self.read(|c| {
            let tx = c.unchecked_transaction().map_err(be)?;
            let Some((k, version)) =
                contract_cached_on(&tx, &self.contracts, (key, tenant), contract_id)?
            else {
                return Ok(None);
            };
            Ok(Some(BillingState {
                usage: usage_on(&tx, key, &k.id, usage_since(&k))?,
                customer: customer_on(&tx, key, &k.customer_id)?,
                balances: balances_on(&tx, key, &k.customer_id)?,
                catalog: self.catalogs.get(tenant, catalog_text(&tx, tenant)?)?,
                contract: k,
                version,
            }))
        })
    }

    async fn contracts(
        &self,
        tenant: &str,
        customer_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<(Vec<StoredContract>, u64)> {
        let tenant = self.key(tenant)?;
        let (total, rows) = self.read(|c| {
            let total = count(
                c,
                "SELECT COUNT(*) FROM contracts WHERE tenant_id = ?1 AND (?2 IS NULL OR customer_id = ?2)",
                &[&tenant, &customer_id],
            )?;
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {CONTRACT_COLUMNS} WHERE c.tenant_id = ?1 AND (?2 IS NULL OR c.customer_id = ?2)
                     ORDER BY c.created_seq LIMIT ?3 OFFSET ?4"
                ))
                .map_err(be)?;
            let rows: Vec<ContractRow> = st
                .query_map(
                    params![tenant, customer_id, limit(page.limit), limit(page.offset)],
                    stored_contract,
                )
                .map_err(be)?
                .collect::<rusqlite::Result<_>>()
                .map_err(be)?;
            Ok((total, rows))
        })?;
        let list = rows
            .into_iter()
            .map(contract_of)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((list, total))
    }

    async fn due_contracts(
        &self,
        tenant: &str,
        until: Timestamp,
        max: u64,
    ) -> StoreResult<Vec<String>> {
        let tenant = self.key(tenant)?;
        self.read(|c| {
            strings(
                c,
                "SELECT id FROM contracts WHERE tenant_id = ? AND next_due IS NOT NULL AND next_due <= ?
                 ORDER BY next_due, id LIMIT ?",
                &[&tenant, &micros(until), &limit(max)],
            )
        })
    }

    async fn claim_due(
        &self,
        tenant: &str,
        until: Timestamp,
        max: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<String>> {
        let tenant = self.key(tenant)?;
        let mut rows: Vec<(String, i64)> = self
            .write_unsynced(move |tx| {
                // SQLite has one writer at a time: the INSERT ... SELECT ... RETURNING is the
                // claim, written to the narrow claims table (an expired claim is taken over in
                // place).
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO claims (tenant_id, contract_id, due, claimed_until)
                         SELECT c.tenant_id, c.id, c.next_due, ? FROM contracts c
                         LEFT JOIN claims k ON k.tenant_id = c.tenant_id AND k.contract_id = c.id
                         WHERE c.tenant_id = ? AND c.next_due IS NOT NULL AND c.next_due <= ?
                           AND (k.claimed_until IS NULL OR k.claimed_until < ?)
                         ORDER BY c.next_due LIMIT ?
                         ON CONFLICT (tenant_id, contract_id)
                         DO UPDATE SET due = excluded.due, claimed_until = excluded.claimed_until
                         RETURNING contract_id, due",
                    )
                    .map_err(be)?;
                st.query_map(
                    params![
                        micros(lease_until),
                        tenant,
                        micros(until),
                        micros(now),
                        limit(max)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(be)?
                .collect::<rusqlite::Result<_>>()
                .map_err(be)
            })
            .await?;
        // RETURNING does not keep the query's order: put them back in due order.
        rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    async fn commit(&self, tenant: &str, commit: Commit) -> StoreResult<Committed> {
        let tenant = self.known(tenant)?;
        let bodies = Bodies::of(&commit)?;
        self.write(move |tx| write_commit(tx, tenant, commit, &bodies))
            .await
    }

    async fn commit_batch(
        &self,
        tenant: &str,
        commits: Vec<Encoded>,
    ) -> StoreResult<Vec<StoreResult<Committed>>> {
        let tenant = self.known(tenant)?;
        let (mut commits, bodies): (Vec<Commit>, Vec<Bodies>) =
            commits.into_iter().map(|e| (e.commit, e.bodies)).unzip();
        // What the batch leaves (its contracts, events and bodies) is freed on the writer's
        // thread, after the commit: the thread that reads and computes the next batch has
        // the more work.
        self.with_writer(move |c| {
            let tx = immediate(c)?;
            if let Some(done) = write_batch(&tx, tenant, &mut commits, &bodies)? {
                tx.commit().map_err(be)?;
                return Ok(done.into_iter().map(Ok).collect());
            }
            tx.rollback().map_err(be)?;
            let mut tx = immediate(c)?;
            let mut out = Vec::with_capacity(commits.len());
            for (commit, bodies) in commits.into_iter().zip(&bodies) {
                // Each commit in its own savepoint: a conflict leaves nothing of it behind.
                let sp = tx.savepoint().map_err(be)?;
                match write_commit(&sp, tenant, commit, bodies) {
                    Err(StoreError::Conflict) => {
                        // Dropping the savepoint rolls it back.
                        drop(sp);
                        out.push(Err(StoreError::Conflict));
                    }
                    Err(e) => return Err(e),
                    Ok(done) => {
                        sp.commit().map_err(be)?;
                        out.push(Ok(done));
                    }
                }
            }
            tx.commit().map_err(be)?;
            Ok(out)
        })
        .await
    }

    async fn contracts_by_ids(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<Vec<StoredContract>> {
        let tenant = self.key(tenant)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {CONTRACT_COLUMNS} WHERE c.tenant_id = ? AND c.id IN ({})",
                marks(chunk.len())
            );
            let mut values: Vec<&dyn ToSql> = vec![&tenant];
            values.extend(chunk.iter().map(|k| k as &dyn ToSql));
            let rows: Vec<ContractRow> = self.read(|c| {
                let mut st = c.prepare_cached(&sql).map_err(be)?;
                st.query_map(values.as_slice(), stored_contract)
                    .map_err(be)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(be)
            })?;
            for r in rows {
                out.push(contract_of(r)?);
            }
        }
        Ok(out)
    }

    async fn usage_of(
        &self,
        tenant: &str,
        contract_ids: &[String],
        since: Timestamp,
    ) -> StoreResult<BTreeMap<String, Vec<UsageRecord>>> {
        let tenant = self.key(tenant)?;
        let mut out: BTreeMap<String, Vec<UsageRecord>> = BTreeMap::new();
        let since = micros(since);
        for chunk in contract_ids.chunks(500) {
            let sql = format!(
                "SELECT contract_id, feature_slug, units, ts, is_absolute FROM usage_records
                 WHERE tenant_id = ? AND ts >= ? AND contract_id IN ({}) ORDER BY seq",
                marks(chunk.len())
            );
            let mut values: Vec<&dyn ToSql> = vec![&tenant, &since];
            values.extend(chunk.iter().map(|k| k as &dyn ToSql));
            let rows: Vec<(String, (String, String, i64, bool))> = self.read(|c| {
                let mut st = c.prepare_cached(&sql).map_err(be)?;
                st.query_map(values.as_slice(), |r| Ok((r.get(0)?, usage_of_row(r, 1)?)))
                    .map_err(be)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(be)
            })?;
            for (contract, u) in rows {
                out.entry(contract).or_default().push(usage_record(u)?);
            }
        }
        Ok(out)
    }

    async fn record_usage(
        &self,
        tenant: &str,
        contract_id: &str,
        records: &[UsageRecord],
    ) -> StoreResult<()> {
        let (tenant, contract_id, records) = (
            self.known(tenant)?,
            contract_id.to_string(),
            records.to_vec(),
        );
        self.write(move |tx| insert_usage(tx, tenant, &contract_id, &records))
            .await
    }

    async fn usage(
        &self,
        tenant: &str,
        contract_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<UsageRecord>> {
        let tenant = self.key(tenant)?;
        self.read(|c| usage_on(c, tenant, contract_id, since))
    }

    async fn invoices(
        &self,
        tenant: &str,
        f: &InvoiceFilter,
        page: &Page,
    ) -> StoreResult<(Vec<Invoice>, u64)> {
        // Only the filters given are written into the query, and a customer's or contract's
        // invoices are read through `invoices_contract` (named, since without statistics SQLite
        // would rather walk the tenant's `seq` order and filter): a customer's through its
        // contracts, as an invoice's customer is its contract's.
        let tenant = self.key(tenant)?;
        let after = f.date_after.map(micros);
        let before = f.date_before.map(micros);
        let by_contract = f.customer_id.is_some() || f.contract_id.is_some();
        let mut from = String::from(if by_contract {
            "invoices INDEXED BY invoices_contract WHERE tenant_id = ?"
        } else {
            "invoices WHERE tenant_id = ?"
        });
        let mut values: Vec<&dyn ToSql> = vec![&tenant];
        if let Some(customer) = &f.customer_id {
            from.push_str(
                " AND contract_id IN (SELECT id FROM contracts WHERE tenant_id = ? AND customer_id = ?)",
            );
            values.extend([&tenant as &dyn ToSql, customer]);
        }
        if let Some(contract) = &f.contract_id {
            from.push_str(" AND contract_id = ?");
            values.push(contract);
        }
        if let Some(after) = &after {
            from.push_str(" AND issued_at >= ?");
            values.push(after);
        }
        if let Some(before) = &before {
            from.push_str(" AND issued_at < ?");
            values.push(before);
        }
        let (take, skip) = (limit(page.limit), limit(page.offset));
        let (total, rows) = self.read(|c| {
            let total = count(c, &format!("SELECT COUNT(*) FROM {from}"), &values)?;
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {INVOICE_COLUMNS} FROM {from} ORDER BY seq LIMIT ? OFFSET ?"
                ))
                .map_err(be)?;
            let mut all = values.clone();
            all.extend([&take as &dyn ToSql, &skip]);
            let rows: Vec<InvoiceRow> = st
                .query_map(all.as_slice(), read_invoice)
                .map_err(be)?
                .collect::<rusqlite::Result<_>>()
                .map_err(be)?;
            Ok((total, rows))
        })?;
        let out = rows
            .into_iter()
            .map(invoice_of)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((out, total))
    }

    async fn invoice(&self, tenant: &str, id: &str) -> StoreResult<Option<Invoice>> {
        let tenant = self.key(tenant)?;
        let row = self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {INVOICE_COLUMNS} FROM invoices WHERE tenant_id = ?1 AND (id = ?2 OR number = ?2)"
            ))
            .map_err(be)?
            .query_row(params![tenant, id], read_invoice)
            .optional()
            .map_err(be)
        })?;
        row.map(invoice_of).transpose()
    }

    async fn set_invoice_status(
        &self,
        tenant: &str,
        id: &str,
        status: InvoiceStatus,
        events: &[Event],
    ) -> StoreResult<bool> {
        let bodies = events
            .iter()
            .map(Event::stored_body)
            .collect::<StoreResult<Vec<_>>>()?;
        let (tenant, id, events) = (self.known(tenant)?, id.to_string(), events.to_vec());
        self.with_writer(move |c| {
            let tx = immediate(c)?;
            let moved = tx
                .execute(
                    "UPDATE invoices SET status = ? WHERE tenant_id = ? AND id = ? AND status = 'open'",
                    params![status_str(status), tenant, id],
                )
                .map_err(be)?;
            if moved == 0 {
                tx.rollback().map_err(be)?;
                return Ok(false);
            }
            for (event, body) in events.iter().zip(&bodies) {
                insert_event(&tx, tenant, event, body)?;
            }
            write_deliveries(&tx, tenant, &events.iter().collect::<Vec<_>>())?;
            tx.commit().map_err(be)?;
            Ok(true)
        })
        .await
    }

    async fn events(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Event>> {
        let tenant = self.key(tenant)?;
        let rows: Vec<(String, String)> = self.read(|c| {
            c.prepare_cached(
                "SELECT id, body FROM events WHERE tenant_id = ? AND contract_id = ? ORDER BY seq",
            )
            .map_err(be)?
            .query_map(params![tenant, contract_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(be)?
            .collect::<rusqlite::Result<_>>()
            .map_err(be)
        })?;
        rows.into_iter()
            .map(|(id, body)| Event::from_stored(id, Some(contract_id.to_string()), &body))
            .collect()
    }

    async fn idempotent(&self, tenant: &str, key: &str) -> StoreResult<Option<IdempotentResponse>> {
        let tenant = self.key(tenant)?;
        let body = self.read(|c| {
            string(
                c,
                "SELECT body FROM idempotency WHERE tenant_id = ? AND key = ?",
                &[&tenant, &key],
            )
        })?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn save_idempotent(
        &self,
        tenant: &str,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        let (tenant, key, body) = (self.known(tenant)?, key.to_string(), to_json(response)?);
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO idempotency (tenant_id, key, body) VALUES (?, ?, ?)
                 ON CONFLICT (tenant_id, key) DO NOTHING",
            )
            .map_err(be)?
            .execute(params![tenant, key, body])
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    async fn save_order(&self, tenant: &str, order: &Order) -> StoreResult<bool> {
        let (tenant, order) = (self.known(tenant)?, order.clone());
        self.write(move |tx| upsert_order(tx, tenant, &order)).await
    }

    async fn order(&self, tenant: &str, id: &str) -> StoreResult<Option<Order>> {
        let tenant = self.key(tenant)?;
        let body = self.read(|c| {
            string(
                c,
                "SELECT body FROM orders WHERE tenant_id = ? AND id = ?",
                &[&tenant, &id],
            )
        })?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn orders(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Order>> {
        let tenant = self.key(tenant)?;
        let rows = self.read(|c| {
            strings(
                c,
                "SELECT body FROM orders WHERE tenant_id = ? AND contract_id = ? ORDER BY seq",
                &[&tenant, &contract_id],
            )
        })?;
        rows.iter().map(|b| from_json(b)).collect()
    }

    async fn save_webhook(&self, tenant: &str, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let (tenant, id, body) = (self.known(tenant)?, endpoint.id.clone(), to_json(endpoint)?);
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO webhook_endpoints (tenant_id, id, body) VALUES (?, ?, ?)
                 ON CONFLICT (tenant_id, id) DO UPDATE SET body = excluded.body",
                params![tenant, id, body],
            )
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    async fn webhook(&self, tenant: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        let tenant = self.key(tenant)?;
        let body = self.read(|c| {
            string(
                c,
                "SELECT body FROM webhook_endpoints WHERE tenant_id = ? AND id = ?",
                &[&tenant, &id],
            )
        })?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn webhooks(
        &self,
        tenant: &str,
        page: &Page,
    ) -> StoreResult<(Vec<WebhookEndpoint>, u64)> {
        let tenant = self.key(tenant)?;
        let (rows, total) = self.read(|c| {
            let rows = strings(
                c,
                "SELECT body FROM webhook_endpoints WHERE tenant_id = ? ORDER BY seq LIMIT ? OFFSET ?",
                &[&tenant, &limit(page.limit), &limit(page.offset)],
            )?;
            let total = count(
                c,
                "SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = ?",
                &[&tenant],
            )?;
            Ok((rows, total))
        })?;
        let rows = rows
            .iter()
            .map(|b| from_json(b))
            .collect::<StoreResult<_>>()?;
        Ok((rows, total))
    }

    async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (self.key(tenant)?, id.to_string());
        self.write(move |tx| {
            let gone = tx
                .execute(
                    "DELETE FROM webhook_endpoints WHERE tenant_id = ? AND id = ?",
                    params![tenant, id],
                )
                .map_err(be)?;
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE tenant_id = ? AND endpoint_id = ?",
                params![tenant, id],
            )
            .map_err(be)?;
            Ok(gone > 0)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        max: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let claimed: Vec<(Key, String)> = self
            .write(move |tx| {
                let mut st = tx.prepare_cached(CLAIM_DELIVERIES).map_err(be)?;
                st.query_map(
                    params![micros(lease_until), micros(now), micros(now), limit(max)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(be)?
                .collect::<rusqlite::Result<_>>()
                .map_err(be)
            })
            .await?;
        let mut jobs = Vec::with_capacity(claimed.len());
        for (key, body) in claimed {
            let delivery: Delivery = from_json(&body)?;
            let row: Option<(String, String, Option<String>, String)> = self.read(|c| {
                c.prepare_cached(
                    "SELECT t.id, w.body, e.contract_id, e.body FROM tenants t, webhook_endpoints w, events e
                     WHERE t.key = ?1 AND w.tenant_id = ?1 AND w.id = ?2 AND e.tenant_id = ?1 AND e.id = ?3",
                )
                .map_err(be)?
                .query_row(
                    params![key, delivery.endpoint_id, delivery.event_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(be)
            })?;
            let Some((tenant_id, endpoint, contract_id, event)) = row else {
                continue;
            };
            let endpoint: WebhookEndpoint = from_json(&endpoint)?;
            let event = Event::from_stored(delivery.event_id.clone(), contract_id, &event)?;
            jobs.push(DeliveryJob {
                tenant_id,
                delivery,
                url: endpoint.url,
                secret: endpoint.secret,
                event,
            });
        }
        Ok(jobs)
    }

    async fn save_delivery(&self, tenant: &str, delivery: &Delivery) -> StoreResult<()> {
        let (tenant, d, body) = (self.key(tenant)?, delivery.clone(), to_json(delivery)?);
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, claimed_until = NULL, body = ?
                 WHERE tenant_id = ? AND id = ?",
            )
            .map_err(be)?
            .execute(params![
                d.status.as_str(),
                d.next_attempt_at.map(micros),
                body,
                tenant,
                d.id
            ])
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    async fn delivery(&self, tenant: &str, id: &str) -> StoreResult<Option<Delivery>> {
        let tenant = self.key(tenant)?;
        let body = self.read(|c| {
            string(
                c,
                "SELECT body FROM webhook_deliveries WHERE tenant_id = ? AND id = ?",
                &[&tenant, &id],
            )
        })?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        page: &Page,
    ) -> StoreResult<(Vec<Delivery>, u64)> {
        let tenant = self.key(tenant)?;
        let (rows, total) = self.read(|c| {
            let rows = strings(
                c,
                "SELECT body FROM webhook_deliveries WHERE tenant_id = ? AND endpoint_id = ?
                 ORDER BY seq DESC LIMIT ? OFFSET ?",
                &[
                    &tenant,
                    &endpoint_id,
                    &limit(page.limit),
                    &limit(page.offset),
                ],
            )?;
            let total = count(
                c,
                "SELECT COUNT(*) FROM webhook_deliveries WHERE tenant_id = ? AND endpoint_id = ?",
                &[&tenant, &endpoint_id],
            )?;
            Ok((rows, total))
        })?;
        let rows = rows
            .iter()
            .map(|b| from_json(b))
            .collect::<StoreResult<_>>()?;
        Ok((rows, total))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(be)
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    /// A database file in the temporary directory, removed with its log files when dropped
    /// (a failed test included).
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new() -> TempDb {
            let name = format!("tally-store-{}.db", tally_app::ids::new_id("t"));
            TempDb(std::env::temp_dir().join(name))
        }

        async fn open(&self) -> super::SqliteStore {
            super::SqliteStore::connect(&format!("sqlite://{}", self.0.display()))
                .await
                .unwrap()
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }

    #[tokio::test]
    async fn the_sqlite_store_passes_the_storage_suite() {
        let db = TempDb::new();
        tally_app::testkit::run_all(std::sync::Arc::new(db.open().await)).await;
    }

    #[tokio::test]
    async fn an_in_memory_store_passes_the_storage_suite() {
        let store = super::SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap();
        tally_app::testkit::run_all(std::sync::Arc::new(store)).await;
    }

    /// A new database file is made with 4 KiB pages, and the log its writes leave is copied
    /// back into it by the store's checkpointer thread, not by a commit, once enough rows were
    /// written: the database file grows (the tables' pages arrive in it) without anything
    /// else checkpointing, and not before.
    #[tokio::test]
    async fn a_new_database_has_small_pages_and_its_log_is_checkpointed_by_a_thread() {
        use tally_app::store::{Store, Tenant};
        let db = TempDb::new();
        let store = db.open().await;
        let page: i64 = rusqlite::Connection::open(&db.0)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, 4_096);
        let size = || std::fs::metadata(&db.0).unwrap().len();
        let before = size();
        let at = "2024-01-01T00:00:00Z".parse().unwrap();
        let tenant = Tenant {
            id: tally_app::ids::new_id("Ten"),
            name: "checkpoint".into(),
            test_mode: true,
            settings: Default::default(),
            clock: Some(at),
            created_at: at,
        };
        store.create_tenant(&tenant, "hash").await.unwrap();
        // Two rows are too few to checkpoint for.
        tokio::time::sleep(super::CHECKPOINT_EVERY * 3).await;
        assert_eq!(size(), before);
        let rows = i64::try_from(super::CHECKPOINT_ROWS).unwrap();
        store
            .write(move |tx| {
                tx.execute_batch("CREATE TABLE scratch (n INTEGER)")
                    .map_err(super::be)?;
                tx.execute(
                    "WITH RECURSIVE k (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?)
                     INSERT INTO scratch SELECT n FROM k",
                    [rows],
                )
                .map_err(super::be)
            })
            .await
            .unwrap();
        // The checkpointer looks every 200 ms; a loaded machine gets ten seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            size() > before,
            "the database file is still {before} bytes: nothing was checkpointed"
        );
    }

    /// Contracts stored whole before the terms moved to their own table are split by the
    /// migration and read back exactly.
    #[test]
    fn the_migration_splits_stored_contracts_into_terms_and_progress() {
        use tally_core::prelude::*;
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let migrator = sqlx::migrate!("./migrations");
        let (before, after): (Vec<&sqlx::migrate::Migration>, Vec<_>) = migrator
            .iter()
            .filter(|m| m.version <= 9)
            .partition(|m| m.version < 9);
        for m in before {
            c.execute_batch(&m.sql).unwrap();
        }
        let (catalog, settings) = tally_core::examples::basic_catalog();
        let cx = BillingContext::new(&catalog, &settings).unwrap();
        let req = SignupRequest::new("Cont_m", "Cust_m", "basic", Currency::Usd, Cycle::Month)
            .seats("seats", 2);
        let at: jiff::Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let mut contract = subscribe(&req, &cx, at).unwrap().contract;
        contract.cancel_at_period_end = true;
        let whole = serde_json::to_string(&contract).unwrap();
        c.execute(
            "INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, created_seq, body)
             VALUES ('Tnt_m', 'Cont_m', 'Cust_m', 'active', 0, 4, 1, ?)",
            [&whole],
        )
        .unwrap();
        for m in after {
            c.execute_batch(&m.sql).unwrap();
        }
        let (terms, progress, version): (String, String, i64) = c
            .query_row(
                &format!("SELECT {} WHERE c.id = 'Cont_m'", super::CONTRACT_COLUMNS),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(version, 4);
        assert_eq!(terms, serde_json::to_string(&contract.terms()).unwrap());
        assert_eq!(
            progress,
            serde_json::to_string(&contract.progress()).unwrap()
        );
        let joined = super::join_stored_parts(&terms, &progress);
        assert_eq!(serde_json::from_str::<Contract>(&joined).unwrap(), contract);
    }

    #[test]
    fn the_migration_keys_events_by_one_sequence_keeping_each_tenants_order() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let migrator = sqlx::migrate!("./migrations");
        let (before, after): (Vec<&sqlx::migrate::Migration>, Vec<_>) = migrator
            .iter()
            .filter(|m| m.version <= 10)
            .partition(|m| m.version < 10);
        for m in before {
            c.execute_batch(&m.sql).unwrap();
        }
        // Before: numbered per tenant, so both tenants have a 1 and a 2.
        for (tenant, id, seq) in [
            ("Ten_b", "Evt_b1", 1),
            ("Ten_a", "Evt_a1", 1),
            ("Ten_b", "Evt_b2", 2),
            ("Ten_a", "Evt_a2", 2),
        ] {
            c.execute(
                "INSERT INTO events (tenant_id, id, seq, contract_id, body) VALUES (?, ?, ?, 'Cont_x', '{}')",
                rusqlite::params![tenant, id, seq],
            )
            .unwrap();
        }
        for m in after {
            c.execute_batch(&m.sql).unwrap();
        }
        let order = |tenant: &str| -> Vec<String> {
            let mut st = c
                .prepare("SELECT id FROM events WHERE tenant_id = ? AND contract_id = 'Cont_x' ORDER BY seq")
                .unwrap();
            st.query_map([tenant], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(order("Ten_a"), ["Evt_a1", "Evt_a2"]);
        assert_eq!(order("Ten_b"), ["Evt_b1", "Evt_b2"]);
        // A new event takes the next key of the whole table: after the four, the fifth.
        c.execute(
            "INSERT INTO events (tenant_id, id, contract_id, body) VALUES ('Ten_a', 'Evt_a3', 'Cont_x', '{}')",
            [],
        )
        .unwrap();
        let seq: i64 = c
            .query_row("SELECT seq FROM events WHERE id = 'Evt_a3'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(seq, 5);
        assert_eq!(order("Ten_a"), ["Evt_a1", "Evt_a2", "Evt_a3"]);
        // An event id stays unique within its tenant.
        assert!(
            c.execute(
                "INSERT INTO events (tenant_id, id, contract_id, body) VALUES ('Ten_a', 'Evt_a3', NULL, '{}')",
                [],
            )
            .is_err()
        );
    }

    /// Migration 0011 moves every table from the tenant's public id to its integer key: each row
    /// keeps its tenant, keys, order and sequences, and a row of no tenant is left behind.
    #[test]
    fn the_migration_refers_to_tenants_by_their_integer_keys() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        let migrator = sqlx::migrate!("./migrations");
        let (before, after): (Vec<&sqlx::migrate::Migration>, Vec<_>) = migrator
            .iter()
            .filter(|m| m.version <= 11)
            .partition(|m| m.version < 11);
        for m in before {
            c.execute_batch(&m.sql).unwrap();
        }
        c.execute_batch(
            "INSERT INTO tenants (id, name, test_mode, settings, created_at, invoice_seq)
                 VALUES ('Ten_b', 'b', 0, '{}', 1, 7), ('Ten_a', 'a', 1, '{}', 2, 3);
             INSERT INTO api_keys (key_hash, tenant_id) VALUES ('hash_a', 'Ten_a'), ('hash_b', 'Ten_b');
             INSERT INTO customers (tenant_id, id, slug, body) VALUES ('Ten_a', 'Cust_1', 'acme', '{}');
             INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, created_seq, body, terms_id)
                 VALUES ('Ten_a', 'Cont_1', 'Cust_1', 'active', 5, 2, 1, '{}', 1),
                        ('Ten_b', 'Cont_2', 'Cust_2', 'active', 5, 1, 1, '{}', 2),
                        ('Ten_gone', 'Cont_3', 'Cust_3', 'active', 5, 1, 1, '{}', 3);
             INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body)
                 VALUES ('Ten_a', 'Inv_1', 3, 'A-3', 'Cont_1', 'Cust_1', 5, 'open', 'k1', '{}');
             INSERT INTO usage_records (tenant_id, contract_id, feature_slug, units, ts, is_absolute)
                 VALUES ('Ten_a', 'Cont_1', 'api', '1', 1, 0), ('Ten_b', 'Cont_2', 'api', '2', 2, 0);
             INSERT INTO events (tenant_id, id, contract_id, body)
                 VALUES ('Ten_a', 'Evt_1', 'Cont_1', '{}'), ('Ten_b', 'Evt_2', 'Cont_2', '{}');
             INSERT INTO claims (tenant_id, contract_id, due, claimed_until) VALUES ('Ten_b', 'Cont_2', 5, 9);",
        )
        .unwrap();
        for m in after {
            c.execute_batch(&m.sql).unwrap();
        }
        // Keys follow the tenants' creation order: b first, then a.
        let key = |id: &str| -> i64 {
            c.query_row("SELECT key FROM tenants WHERE id = ?", [id], |r| r.get(0))
                .unwrap()
        };
        assert_eq!((key("Ten_b"), key("Ten_a")), (1, 2));
        let seq: i64 = c
            .query_row("SELECT invoice_seq FROM tenants WHERE key = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(seq, 7);
        // Each row now names its tenant by key; the contract of no tenant is not carried over.
        let rows = |sql: &str| -> Vec<(i64, String)> {
            let mut st = c.prepare(sql).unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(
            rows("SELECT tenant_id, id FROM contracts ORDER BY id"),
            [(2, "Cont_1".to_string()), (1, "Cont_2".to_string())]
        );
        assert_eq!(
            rows("SELECT tenant_id, key_hash FROM api_keys ORDER BY key_hash"),
            [(2, "hash_a".to_string()), (1, "hash_b".to_string())]
        );
        assert_eq!(
            rows("SELECT tenant_id, id FROM customers"),
            [(2, "Cust_1".to_string())]
        );
        assert_eq!(
            rows("SELECT tenant_id, number FROM invoices"),
            [(2, "A-3".to_string())]
        );
        assert_eq!(
            rows("SELECT tenant_id, id FROM events ORDER BY seq"),
            [(2, "Evt_1".to_string()), (1, "Evt_2".to_string())]
        );
        assert_eq!(
            rows("SELECT tenant_id, contract_id FROM claims"),
            [(1, "Cont_2".to_string())]
        );
        assert_eq!(
            rows("SELECT tenant_id, units FROM usage_records ORDER BY seq"),
            [(2, "1".to_string()), (1, "2".to_string())]
        );
        // A key finds its tenant as authentication reads it.
        let name: String = c
            .query_row(
                "SELECT t.name FROM api_keys k JOIN tenants t ON t.key = k.tenant_id WHERE k.key_hash = 'hash_a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(name, "a");
        // Sequences go on after the rows carried over: the third usage record is 3.
        c.execute(
            "INSERT INTO usage_records (tenant_id, contract_id, feature_slug, units, ts, is_absolute)
             VALUES (2, 'Cont_1', 'api', '3', 3, 0)",
            [],
        )
        .unwrap();
        assert_eq!(c.last_insert_rowid(), 3);
        // The indexes are back: an invoice's step key stays unique within its tenant.
        assert!(
            c.execute(
                "INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body)
                 VALUES (2, 'Inv_2', 4, 'A-4', 'Cont_1', 'Cust_1', 6, 'open', 'k1', '{}')",
                [],
            )
            .is_err()
        );
        // A key of a tenant that does not exist is refused.
        assert!(
            c.execute(
                "INSERT INTO api_keys (key_hash, tenant_id) VALUES ('hash_x', 9)",
                []
            )
            .is_err()
        );
    }

    /// The writer's `synchronous` level (0 off, 1 normal, 2 full).
    fn synchronous(store: &super::SqliteStore) -> i64 {
        let c = store.writer.lock().unwrap();
        c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap()
    }

    /// A read for a tenant the database does not hold finds nothing, and a write for one fails
    /// and leaves nothing behind (no tenant could read it); once the tenant exists, both work.
    #[tokio::test]
    async fn a_tenant_the_database_does_not_hold_is_read_as_empty_and_never_written() {
        use tally_app::store::{IdempotentResponse, Store};
        let db = TempDb::new();
        let store = db.open().await;
        let saved = IdempotentResponse {
            request_hash: "h".into(),
            status: 200,
            body: "\"ok\"".into(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let id = tally_app::ids::new_id("Ten");
        assert_eq!(store.idempotent(&id, "k").await.unwrap(), None);
        assert!(store.save_idempotent(&id, "k", &saved).await.is_err());
        let rows: i64 = store
            .writer
            .lock()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM idempotency", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
        // The tenant made after those calls is found by them: an unknown id is not remembered.
        let tenant = tally_app::store::Tenant {
            id: id.clone(),
            name: "late".into(),
            test_mode: true,
            settings: Default::default(),
            clock: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
        };
        store.create_tenant(&tenant, "hash_late").await.unwrap();
        store.save_idempotent(&id, "k", &saved).await.unwrap();
        assert_eq!(store.idempotent(&id, "k").await.unwrap(), Some(saved));
    }

    #[tokio::test]
    async fn only_claims_commit_without_waiting_for_the_disk() {
        use tally_app::store::Store;
        let db = TempDb::new();
        let store = db.open().await;
        assert_eq!(synchronous(&store), 2, "every commit waits for the disk");
        let t = jiff::Timestamp::UNIX_EPOCH;
        // A claim that finds nothing and one on an unknown tenant alike leave the writer as it
        // was: the next write (an invoice, a renewal) waits for the disk again.
        store.claim_due("Ten_none", t, 10, t, t).await.unwrap();
        assert_eq!(synchronous(&store), 2);
        // A claim whose transaction fails does too.
        store
            .writer
            .lock()
            .unwrap()
            .execute_batch("DROP TABLE claims")
            .unwrap();
        assert!(store.claim_due("Ten_none", t, 10, t, t).await.is_err());
        assert_eq!(synchronous(&store), 2);
    }
}
