//! The PostgreSQL [`Store`]: Tally's production database, with its migrations embedded, for any
//! number of `tally` processes. Contracts are stored whole (JSON) beside the indexed columns the
//! bill run and lists need; a commit is one transaction: the contract's version check, then the
//! tenant's invoice counter (a row lock that serializes numbering, so numbers are gapless under
//! concurrent writers), the invoices, balances and events.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use tally_app::store::*;
use tally_core::prelude::*;

/// A Tally store in a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    catalogs: std::sync::Arc<CatalogCache>,
    contracts: std::sync::Arc<ContractCache>,
}

/// Parsed contracts kept for reads that bill (previews and changes), as the SQLite store keeps
/// them: a few KB each.
const CACHED_CONTRACTS: usize = 4_096;

/// A contract's billing state but its usage, in one statement (one snapshot, one round trip):
/// its version; its body unless it is at version `$3` (the one already parsed here); its
/// customer; the customer's balances; the tenant's catalog.
const BILLING_STATE: &str = "SELECT c.version,
        CASE WHEN c.version = $3 THEN NULL ELSE c.body END AS body,
        (SELECT body FROM customers WHERE tenant_id = $1 AND id = c.customer_id) AS customer,
        ARRAY(SELECT currency FROM balances WHERE tenant_id = $1 AND customer_id = c.customer_id
              ORDER BY currency) AS currencies,
        ARRAY(SELECT amount FROM balances WHERE tenant_id = $1 AND customer_id = c.customer_id
              ORDER BY currency) AS amounts,
        (SELECT catalog FROM tenants WHERE id = $1) AS catalog
     FROM contracts c WHERE c.tenant_id = $1 AND c.id = $2";

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

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host/db`) and migrates it.
    ///
    /// # Errors
    /// The server cannot be reached or the migration fails.
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        PgStore::connect_in_schema(url, None).await
    }

    /// Connects with the tables in `schema` (created if missing), so several Tally databases can
    /// share one PostgreSQL database; `None` is the server's default search path.
    ///
    /// # Errors
    /// The server cannot be reached, the schema cannot be created, or the migration fails.
    pub async fn connect_in_schema(url: &str, schema: Option<&str>) -> StoreResult<PgStore> {
        let mut opts = PgConnectOptions::from_str(url).map_err(be)?;
        if let Some(schema) = schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::Backend(format!(
                    "invalid schema name `{schema}`"
                )));
            }
            let setup = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await
                .map_err(be)?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&setup)
                .await
                .map_err(be)?;
            setup.close().await;
            opts = opts.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(be)?;
        let store = PgStore {
            pool,
            catalogs: std::sync::Arc::new(CatalogCache::default()),
            contracts: std::sync::Arc::new(ContractCache::new(CACHED_CONTRACTS)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Drops a schema and everything in it (test databases).
    ///
    /// # Errors
    /// The statement fails.
    pub async fn drop_schema(url: &str, schema: &str) -> StoreResult<()> {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Backend(format!(
                "invalid schema name `{schema}`"
            )));
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(be)?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await
            .map_err(be)?;
        pool.close().await;
        Ok(())
    }

    /// Applies the embedded migrations that have not run yet.
    ///
    /// # Errors
    /// A migration fails.
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(be)
    }

    async fn read_invoice(
        &self,
        tenant: &str,
        row: &sqlx::postgres::PgRow,
    ) -> StoreResult<Invoice> {
        let _ = tenant;
        Ok(Invoice {
            id: row.get("id"),
            number: row.get("number"),
            status: parse_status(row.get::<String, _>("status").as_str()),
            draft: invoice_from_stored(
                row.get("contract_id"),
                row.get("customer_id"),
                row.get("step_key"),
                row.get::<&str, _>("body"),
            )?,
        })
    }
}

/// Inserts usage records of one contract.
async fn insert_usage(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &str,
    contract_id: &str,
    records: &[UsageRecord],
) -> StoreResult<()> {
    for r in records {
        sqlx::query("INSERT INTO usage_records (tenant_id, contract_id, feature_slug, units, ts, is_absolute) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(tenant)
            .bind(contract_id)
            .bind(&r.feature_slug)
            .bind(r.units.to_string())
            .bind(micros(r.timestamp))
            .bind(r.is_absolute)
            .execute(&mut **tx)
            .await
            .map_err(be)?;
    }
    Ok(())
}
/// Writes an order unless one with its id exists and is no longer open; answers whether it
/// was written.
async fn upsert_order<'e, E>(ex: E, tenant: &str, o: &Order) -> StoreResult<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let status = serde_json::to_value(o.status).map_err(be)?;
    let done = sqlx::query(
        "INSERT INTO orders (tenant_id, id, contract_id, status, body) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, id) DO UPDATE
         SET contract_id = excluded.contract_id, status = excluded.status, body = excluded.body
         WHERE orders.status = 'open'",
    )
    .bind(tenant)
    .bind(&o.id)
    .bind(&o.contract_id)
    .bind(status.as_str().unwrap_or("open"))
    .bind(to_json(o)?)
    .execute(ex)
    .await
    .map_err(be)?;
    Ok(done.rows_affected() == 1)
}

/// Writes one commit inside an open transaction: the contract's version check first (a lost race
/// returns [`StoreError::Conflict`] having written nothing), then invoices, balances and events.
async fn write_commit(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &str,
    commit: Commit,
) -> StoreResult<Committed> {
    let mut version = 0;
    // The first statement writes, so the transaction holds the write lock from here on.
    if let Some(o) = &commit.order
        && !upsert_order(&mut **tx, tenant, o).await?
    {
        return Err(StoreError::Conflict);
    }
    if !commit.usage.is_empty() {
        let Some((c, _)) = &commit.contract else {
            return Err(StoreError::Backend(
                "usage in a write needs its contract".into(),
            ));
        };
        insert_usage(tx, tenant, &c.id, &commit.usage).await?;
    }
    if let Some((c, expected)) = &commit.contract {
        let body = to_json(c)?;
        let due = next_due(c).map(micros);
        let status = serde_json::to_value(c.status).map_err(be)?;
        let status = status.as_str().unwrap_or("active").to_string();
        if *expected == 0 {
            sqlx::query(
                "INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, body)
                 VALUES ($1, $2, $3, $4, $5, 1, $6)",
            )
            .bind(tenant)
            .bind(&c.id)
            .bind(&c.customer_id)
            .bind(&status)
            .bind(due)
            .bind(&body)
            .execute(&mut **tx)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(format!("contract {}", c.id)),
                other => be(other),
            })?;
            version = 1;
        } else {
            let done = sqlx::query(
                "UPDATE contracts SET status = $1, next_due = $2, version = version + 1, body = $3
                 WHERE tenant_id = $4 AND id = $5 AND version = $6",
            )
            .bind(&status)
            .bind(due)
            .bind(&body)
            .bind(tenant)
            .bind(&c.id)
            .bind(expected)
            .execute(&mut **tx)
            .await
            .map_err(be)?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict);
            }
            version = expected + 1;
        }
    }
    let mut issued = Vec::new();
    for draft in commit.invoices {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM invoices WHERE tenant_id = $1 AND step_key = $2")
                .bind(tenant)
                .bind(&draft.step_key)
                .fetch_optional(&mut **tx)
                .await
                .map_err(be)?;
        if exists.is_some() {
            continue;
        }
        let seq: i64 = sqlx::query_scalar(
            "UPDATE tenants SET invoice_seq = invoice_seq + 1 WHERE id = $1 RETURNING invoice_seq",
        )
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await
        .map_err(be)?;
        let inv = Invoice {
            id: tally_app::ids::new_id("Inv"),
            number: invoice_number(draft.issued_at, seq),
            status: InvoiceStatus::Open,
            draft,
        };
        let d = &inv.draft;
        sqlx::query(
            "INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9)",
        )
        .bind(tenant)
        .bind(&inv.id)
        .bind(seq)
        .bind(&inv.number)
        .bind(&d.contract_id)
        .bind(&d.customer_id)
        .bind(micros(d.issued_at))
        .bind(&d.step_key)
        .bind(invoice_body(d)?)
        .execute(&mut **tx)
        .await
        .map_err(be)?;
        add_balance(tx, tenant, d).await?;
        issued.push(inv);
    }
    let events: Vec<&Event> = commit.events.iter().collect();
    insert_events(tx, tenant, &events).await?;
    write_deliveries(tx, tenant, &events).await?;
    Ok(Committed {
        invoices: issued,
        version,
    })
}

/// Rows per multi-row statement: far below PostgreSQL's limit of 65,535 bound values per statement.
const ROWS_PER_STATEMENT: usize = 200;

/// Writes a bill-run batch inside an open transaction with a few multi-row statements instead of
/// one statement per row. Only batches of existing contracts qualify; `Ok(None)` means the batch
/// does not (or one of its contracts lost a race) and the caller must roll back and write the
/// commits one by one, which tells each commit's outcome apart.
async fn write_batch(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &str,
    batch: &[Encoded],
) -> StoreResult<Option<Vec<Committed>>> {
    let commits: Vec<&Commit> = batch.iter().map(|e| &e.commit).collect();
    if commits.iter().any(|c| {
        c.order.is_some() || !c.usage.is_empty() || c.contract.as_ref().is_none_or(|(_, v)| *v == 0)
    }) {
        return Ok(None);
    }
    // Contracts first, each guarded by its version: this takes the write lock.
    let mut updated = 0;
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let mut rows = Vec::with_capacity(chunk.len());
        for Encoded { commit, bodies } in chunk {
            if let (Some((c, expected)), Some(body)) = (&commit.contract, &bodies.contract) {
                let status = serde_json::to_value(c.status).map_err(be)?;
                let status = status.as_str().unwrap_or("active").to_string();
                rows.push((
                    &c.id,
                    status,
                    next_due(c).map(micros),
                    body.whole(c)?,
                    *expected,
                ));
            }
        }
        let mut q = sqlx::QueryBuilder::new("WITH v (id, status, due, body, expected) AS (");
        q.push_values(&rows, |mut b, (id, status, due, body, expected)| {
            b.push_bind(*id)
                .push_bind(status)
                .push_bind(*due)
                .push_bind(body)
                .push_bind(*expected);
        });
        q.push(
            ") UPDATE contracts SET status = v.status, next_due = v.due, version = contracts.version + 1, body = v.body
             FROM v WHERE contracts.tenant_id = ",
        )
        .push_bind(tenant)
        .push(" AND contracts.id = v.id AND contracts.version = v.expected");
        updated += q
            .build()
            .execute(&mut **tx)
            .await
            .map_err(be)?
            .rows_affected();
    }
    if updated != commits.len() as u64 {
        return Ok(None);
    }
    // Invoices already issued for their step (a re-run) are skipped.
    let keys: Vec<&str> = commits
        .iter()
        .flat_map(|c| c.invoices.iter().map(|d| d.step_key.as_str()))
        .collect();
    let mut issued_keys = std::collections::BTreeSet::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT * 4) {
        let mut q = sqlx::QueryBuilder::new("SELECT step_key FROM invoices WHERE tenant_id = ");
        q.push_bind(tenant).push(" AND step_key IN (");
        let mut sep = q.separated(", ");
        for k in chunk {
            sep.push_bind(*k);
        }
        q.push(")");
        for r in q.build().fetch_all(&mut **tx).await.map_err(be)? {
            issued_keys.insert(r.get::<String, _>(0));
        }
    }
    let fresh = commits
        .iter()
        .flat_map(|c| &c.invoices)
        .filter(|d| !issued_keys.contains(&d.step_key))
        .count() as i64;
    let mut seq = 0;
    if fresh > 0 {
        let last: i64 = sqlx::query_scalar(
            "UPDATE tenants SET invoice_seq = invoice_seq + $1 WHERE id = $2 RETURNING invoice_seq",
        )
        .bind(fresh)
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await
        .map_err(be)?;
        seq = last - fresh;
    }
    let mut out = Vec::with_capacity(commits.len());
    let mut invoices: Vec<(i64, Invoice, &String)> = Vec::new();
    for Encoded { commit, bodies } in batch {
        let mut done = Committed {
            invoices: Vec::new(),
            version: commit.contract.as_ref().map_or(0, |(_, v)| v + 1),
        };
        for (draft, body) in commit.invoices.iter().zip(&bodies.invoices) {
            if issued_keys.contains(&draft.step_key) {
                continue;
            }
            seq += 1;
            let inv = Invoice {
                id: tally_app::ids::new_id("Inv"),
                number: invoice_number(draft.issued_at, seq),
                status: InvoiceStatus::Open,
                draft: draft.clone(),
            };
            invoices.push((seq, inv.clone(), body));
            done.invoices.push(inv);
        }
        out.push(done);
    }
    for chunk in invoices.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO invoices (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body) ",
        );
        q.push_values(chunk, |mut b, (seq, inv, body)| {
            let d = &inv.draft;
            b.push_bind(tenant)
                .push_bind(&inv.id)
                .push_bind(*seq)
                .push_bind(&inv.number)
                .push_bind(&d.contract_id)
                .push_bind(&d.customer_id)
                .push_bind(micros(d.issued_at))
                .push_bind("open")
                .push_bind(&d.step_key)
                .push_bind(body);
        });
        q.build().execute(&mut **tx).await.map_err(be)?;
    }
    for (_, inv, _) in &invoices {
        add_balance(tx, tenant, &inv.draft).await?;
    }
    let events: Vec<&Event> = commits.iter().flat_map(|c| &c.events).collect();
    let texts = batch.iter().flat_map(|e| &e.bodies.events);
    let rows: Vec<(&Event, &String)> = events.iter().copied().zip(texts).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            sqlx::QueryBuilder::new("INSERT INTO events (tenant_id, id, contract_id, body) ");
        q.push_values(chunk, |mut b, (e, body)| {
            b.push_bind(tenant)
                .push_bind(&e.id)
                .push_bind(&e.contract_id)
                .push_bind(body);
        });
        q.build().execute(&mut **tx).await.map_err(be)?;
    }
    write_deliveries(tx, tenant, &events).await?;
    Ok(Some(out))
}

/// Moves the customer's credit balance by what an invoice added and applied.
async fn add_balance(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &str,
    d: &InvoiceDraft,
) -> StoreResult<()> {
    let delta = d.credit_added - d.credit_applied;
    if delta.is_zero() {
        return Ok(());
    }
    let current: Option<String> = sqlx::query_scalar(
        "SELECT amount FROM balances WHERE tenant_id = $1 AND customer_id = $2 AND currency = $3",
    )
    .bind(tenant)
    .bind(&d.customer_id)
    .bind(d.currency.code())
    .fetch_optional(&mut **tx)
    .await
    .map_err(be)?;
    let now = current
        .map(|s| Decimal::from_str(&s).map_err(be))
        .transpose()?
        .unwrap_or_default()
        + delta;
    sqlx::query(
        "INSERT INTO balances (tenant_id, customer_id, currency, amount) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, customer_id, currency) DO UPDATE SET amount = excluded.amount",
    )
    .bind(tenant)
    .bind(&d.customer_id)
    .bind(d.currency.code())
    .bind(now.to_string())
    .execute(&mut **tx)
    .await
    .map_err(be)?;
    Ok(())
}

/// Inserts events one statement each (a commit writes few).
async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &str,
    events: &[&Event],
) -> StoreResult<()> {
    for e in events {
        sqlx::query(
            "INSERT INTO events (tenant_id, id, contract_id, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant)
        .bind(&e.id)
        .bind(&e.contract_id)
        .bind(e.stored_body()?)
        .execute(&mut **tx)
        .await
        .map_err(be)?;
    }
    Ok(())
}

/// Writes the deliveries `events` make for the tenant's webhook endpoints (none when it has
/// none), inside the transaction that writes the events: the outbox.
async fn write_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &str,
    events: &[&Event],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY seq")
            .bind(tenant)
            .fetch_all(&mut **tx)
            .await
            .map_err(be)?;
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
        rows.push((d, to_json(d)?));
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event_id, status, next_attempt_at, body) ",
        );
        q.push_values(chunk, |mut b, (d, body)| {
            b.push_bind(tenant)
                .push_bind(&d.id)
                .push_bind(&d.endpoint_id)
                .push_bind(&d.event_id)
                .push_bind(d.status.as_str())
                .push_bind(d.next_attempt_at.map(micros))
                .push_bind(body);
        });
        q.build().execute(&mut **tx).await.map_err(be)?;
    }
    Ok(())
}

/// Claims due pending deliveries across tenants (bound: lease end, now, now, limit); rows
/// another worker is claiming are skipped.
const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET claimed_until = $1
     WHERE seq IN (
         SELECT seq FROM webhook_deliveries
         WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)
           AND (claimed_until IS NULL OR claimed_until < $3)
         ORDER BY next_attempt_at NULLS FIRST LIMIT $4
         FOR UPDATE SKIP LOCKED)
     RETURNING tenant_id, body";

#[async_trait]
impl Store for PgStore {
    async fn create_tenant(&self, tenant: &Tenant, key_hash: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(be)?;
        sqlx::query("INSERT INTO tenants (id, name, test_mode, settings, clock, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(tenant.test_mode)
            .bind(to_json(&tenant.settings)?)
            .bind(tenant.clock.map(micros))
            .bind(micros(tenant.created_at))
            .execute(&mut *tx)
            .await
            .map_err(be)?;
        sqlx::query("INSERT INTO api_keys (key_hash, tenant_id) VALUES ($1, $2)")
            .bind(key_hash)
            .bind(&tenant.id)
            .execute(&mut *tx)
            .await
            .map_err(|_| StoreError::Duplicate("api key".into()))?;
        tx.commit().await.map_err(be)
    }

    async fn tenant_by_key(&self, key_hash: &str) -> StoreResult<Option<Tenant>> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_hash = $1")
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(be)?;
        match id {
            Some(id) => self.tenant(&id).await,
            None => Ok(None),
        }
    }

    async fn tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        let row = sqlx::query(
            "SELECT id, name, test_mode, settings, clock, created_at FROM tenants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(be)?;
        row.map(|r| {
            Ok(Tenant {
                id: r.get("id"),
                name: r.get("name"),
                test_mode: r.get("test_mode"),
                settings: from_json(r.get::<String, _>("settings").as_str())?,
                clock: r.get::<Option<i64>, _>("clock").map(from_micros),
                created_at: from_micros(r.get("created_at")),
            })
        })
        .transpose()
    }

    async fn tenant_ids(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(be)
    }

    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        sqlx::query("UPDATE tenants SET name = $1, settings = $2, clock = $3 WHERE id = $4")
            .bind(&tenant.name)
            .bind(to_json(&tenant.settings)?)
            .bind(tenant.clock.map(micros))
            .bind(&tenant.id)
            .execute(&self.pool)
            .await
            .map_err(be)?;
        Ok(())
    }

    async fn catalog(&self, tenant: &str) -> StoreResult<std::sync::Arc<Catalog>> {
        let body: Option<Option<String>> =
            sqlx::query_scalar("SELECT catalog FROM tenants WHERE id = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(be)?;
        self.catalogs.get(tenant, body.flatten())
    }

    async fn save_catalog(&self, tenant: &str, catalog: &Catalog) -> StoreResult<()> {
        sqlx::query("UPDATE tenants SET catalog = $1 WHERE id = $2")
            .bind(to_json(catalog)?)
            .bind(tenant)
            .execute(&self.pool)
            .await
            .map_err(be)?;
        Ok(())
    }

    async fn save_customer(
        &self,
        tenant: &str,
        c: &Customer,
        event: Option<&Event>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(be)?;
        sqlx::query(
            "INSERT INTO customers (tenant_id, id, slug, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, id) DO UPDATE SET slug = excluded.slug, body = excluded.body",
        )
        .bind(tenant)
        .bind(&c.id)
        .bind(&c.slug)
        .bind(to_json(c)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Duplicate("customer slug".into())
            }
            other => be(other),
        })?;
        if let Some(event) = event {
            insert_events(&mut tx, tenant, &[event]).await?;
            write_deliveries(&mut tx, tenant, &[event]).await?;
        }
        tx.commit().await.map_err(be)?;
        Ok(())
    }

    async fn customer(&self, tenant: &str, id_or_slug: &str) -> StoreResult<Option<Customer>> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM customers WHERE tenant_id = $1 AND (id = $2 OR slug = $3)",
        )
        .bind(tenant)
        .bind(id_or_slug)
        .bind(id_or_slug)
        .fetch_optional(&self.pool)
        .await
        .map_err(be)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn balances(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> StoreResult<BTreeMap<Currency, Decimal>> {
        let rows = sqlx::query(
            "SELECT currency, amount FROM balances WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(tenant)
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        let mut out = BTreeMap::new();
        for r in rows {
            let cur = Currency::from_str(r.get::<String, _>("currency").as_str()).map_err(be)?;
            let amt = Decimal::from_str(r.get::<String, _>("amount").as_str()).map_err(be)?;
            out.insert(cur, amt);
        }
        Ok(out)
    }

    async fn customers_by_ids(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<Customer>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
            let mut q = sqlx::QueryBuilder::new("SELECT body FROM customers WHERE tenant_id = ");
            q.push_bind(tenant).push(" AND id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id);
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await.map_err(be)? {
                out.push(from_json(r.get::<String, _>(0).as_str())?);
            }
        }
        Ok(out)
    }

    async fn balances_of(
        &self,
        tenant: &str,
        customer_ids: &[String],
    ) -> StoreResult<BTreeMap<String, BTreeMap<Currency, Decimal>>> {
        let mut out: BTreeMap<String, BTreeMap<Currency, Decimal>> = BTreeMap::new();
        for chunk in customer_ids.chunks(ROWS_PER_STATEMENT * 4) {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT customer_id, currency, amount FROM balances WHERE tenant_id = ",
            );
            q.push_bind(tenant).push(" AND customer_id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id);
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await.map_err(be)? {
                let cur = Currency::from_str(r.get::<String, _>(1).as_str()).map_err(be)?;
                let amt = Decimal::from_str(r.get::<String, _>(2).as_str()).map_err(be)?;
                out.entry(r.get(0)).or_default().insert(cur, amt);
            }
        }
        Ok(out)
    }

    async fn contract(&self, tenant: &str, id: &str) -> StoreResult<Option<StoredContract>> {
        let row =
            sqlx::query("SELECT body, version FROM contracts WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(be)?;
        row.map(|r| {
            Ok(StoredContract {
                contract: from_json(r.get::<String, _>("body").as_str())?,
                version: r.get("version"),
            })
        })
        .transpose()
    }

    async fn billing_state(
        &self,
        tenant: &str,
        contract_id: &str,
    ) -> StoreResult<Option<BillingState>> {
        // Two round trips instead of five: the contract with its customer, balances and catalog
        // in one statement, then the usage since the instant the contract's billing reads from.
        let cached = self.contracts.latest(tenant, contract_id);
        let Some(row) = sqlx::query(BILLING_STATE)
            .bind(tenant)
            .bind(contract_id)
            .bind(cached.as_ref().map_or(-1, |(v, _)| *v))
            .fetch_optional(&self.pool)
            .await
            .map_err(be)?
        else {
            return Ok(None);
        };
        let version: i64 = row.get("version");
        let contract = match (row.get::<Option<String>, _>("body"), cached) {
            (Some(body), _) => {
                let parsed = std::sync::Arc::new(from_json::<Contract>(&body)?);
                self.contracts.put(tenant, version, parsed.clone());
                parsed
            }
            // The body was left out because this version is the one parsed here.
            (None, Some((_, parsed))) => parsed,
            (None, None) => return Err(be("a contract was read without its body")),
        };
        let currencies: Vec<String> = row.get("currencies");
        let amounts: Vec<String> = row.get("amounts");
        let balances = currencies
            .iter()
            .zip(&amounts)
            .map(|(c, a)| {
                Ok((
                    Currency::from_str(c).map_err(be)?,
                    Decimal::from_str(a).map_err(be)?,
                ))
            })
            .collect::<StoreResult<_>>()?;
        let customer = row
            .get::<Option<String>, _>("customer")
            .map(|b| from_json(&b))
            .transpose()?;
        let catalog = self.catalogs.get(tenant, row.get("catalog"))?;
        let usage = self
            .usage(tenant, &contract.id, usage_since(&contract))
            .await?;
        Ok(Some(BillingState {
            contract,
            version,
            usage,
            customer,
            balances,
            catalog,
        }))
    }

    async fn contracts(
        &self,
        tenant: &str,
        customer_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<(Vec<StoredContract>, u64)> {
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM contracts WHERE tenant_id = $1 AND ($2::TEXT IS NULL OR customer_id = $3)",
        )
        .bind(tenant)
        .bind(customer_id)
        .bind(customer_id)
        .fetch_one(&self.pool)
        .await
        .map_err(be)?;
        let rows = sqlx::query(
            "SELECT body, version FROM contracts WHERE tenant_id = $1 AND ($2::TEXT IS NULL OR customer_id = $3)
             ORDER BY created_seq LIMIT $4 OFFSET $5",
        )
        .bind(tenant)
        .bind(customer_id)
        .bind(customer_id)
        .bind(page.limit.min(i64::MAX as u64) as i64)
        .bind(page.offset.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        let list = rows
            .iter()
            .map(|r| {
                Ok(StoredContract {
                    contract: from_json(r.get::<String, _>("body").as_str())?,
                    version: r.get("version"),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((list, total as u64))
    }

    async fn due_contracts(
        &self,
        tenant: &str,
        until: Timestamp,
        limit: u64,
    ) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM contracts WHERE tenant_id = $1 AND next_due IS NOT NULL AND next_due <= $2
             ORDER BY next_due, id LIMIT $3",
        )
        .bind(tenant)
        .bind(micros(until))
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(be)
    }

    async fn claim_due(
        &self,
        tenant: &str,
        until: Timestamp,
        limit: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<String>> {
        // Rows another worker is claiming right now are skipped, not waited for.
        let mut rows: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE contracts SET claimed_until = $1
             WHERE tenant_id = $2 AND id IN (
                 SELECT id FROM contracts
                 WHERE tenant_id = $2 AND next_due IS NOT NULL AND next_due <= $3
                   AND (claimed_until IS NULL OR claimed_until < $4)
                 ORDER BY next_due LIMIT $5
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, next_due",
        )
        .bind(micros(lease_until))
        .bind(tenant)
        .bind(micros(until))
        .bind(micros(now))
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        // RETURNING does not keep the subquery's order: put them back in due order.
        rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    async fn commit(&self, tenant: &str, commit: Commit) -> StoreResult<Committed> {
        let mut tx = self.pool.begin().await.map_err(be)?;
        let done = write_commit(&mut tx, tenant, commit).await?;
        tx.commit().await.map_err(be)?;
        Ok(done)
    }

    async fn commit_batch(
        &self,
        tenant: &str,
        commits: Vec<Encoded>,
    ) -> StoreResult<Vec<StoreResult<Committed>>> {
        let mut tx = self.pool.begin().await.map_err(be)?;
        if let Some(done) = write_batch(&mut tx, tenant, &commits).await? {
            tx.commit().await.map_err(be)?;
            return Ok(done.into_iter().map(Ok).collect());
        }
        tx.rollback().await.map_err(be)?;
        let mut tx = self.pool.begin().await.map_err(be)?;
        let mut out = Vec::with_capacity(commits.len());
        for Encoded { commit, .. } in commits {
            match write_commit(&mut tx, tenant, commit).await {
                Err(StoreError::Conflict) => out.push(Err(StoreError::Conflict)),
                Err(e) => return Err(e),
                Ok(done) => out.push(Ok(done)),
            }
        }
        tx.commit().await.map_err(be)?;
        Ok(out)
    }

    async fn contracts_by_ids(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<Vec<StoredContract>> {
        let rows = sqlx::query(
            "SELECT body, version FROM contracts WHERE tenant_id = $1 AND id = ANY($2)",
        )
        .bind(tenant)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        rows.iter()
            .map(|r| {
                Ok(StoredContract {
                    contract: from_json(r.get::<String, _>("body").as_str())?,
                    version: r.get("version"),
                })
            })
            .collect()
    }

    async fn usage_of(
        &self,
        tenant: &str,
        contract_ids: &[String],
        since: Timestamp,
    ) -> StoreResult<BTreeMap<String, Vec<UsageRecord>>> {
        let rows = sqlx::query(
            "SELECT contract_id, feature_slug, units, ts, is_absolute FROM usage_records
             WHERE tenant_id = $1 AND ts >= $2 AND contract_id = ANY($3) ORDER BY seq",
        )
        .bind(tenant)
        .bind(micros(since))
        .bind(contract_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        let mut out: BTreeMap<String, Vec<UsageRecord>> = BTreeMap::new();
        for r in rows {
            out.entry(r.get("contract_id"))
                .or_default()
                .push(UsageRecord {
                    feature_slug: r.get("feature_slug"),
                    units: Decimal::from_str(r.get::<String, _>("units").as_str()).map_err(be)?,
                    timestamp: from_micros(r.get("ts")),
                    is_absolute: r.get("is_absolute"),
                });
        }
        Ok(out)
    }

    async fn record_usage(
        &self,
        tenant: &str,
        contract_id: &str,
        records: &[UsageRecord],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(be)?;
        insert_usage(&mut tx, tenant, contract_id, records).await?;
        tx.commit().await.map_err(be)
    }

    async fn usage(
        &self,
        tenant: &str,
        contract_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<UsageRecord>> {
        let rows = sqlx::query(
            "SELECT feature_slug, units, ts, is_absolute FROM usage_records
             WHERE tenant_id = $1 AND contract_id = $2 AND ts >= $3 ORDER BY seq",
        )
        .bind(tenant)
        .bind(contract_id)
        .bind(micros(since))
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        rows.iter()
            .map(|r| {
                Ok(UsageRecord {
                    feature_slug: r.get("feature_slug"),
                    units: Decimal::from_str(r.get::<String, _>("units").as_str()).map_err(be)?,
                    timestamp: from_micros(r.get("ts")),
                    is_absolute: r.get("is_absolute"),
                })
            })
            .collect()
    }

    async fn invoices(
        &self,
        tenant: &str,
        f: &InvoiceFilter,
        page: &Page,
    ) -> StoreResult<(Vec<Invoice>, u64)> {
        // Only the filters given are written into the query, so that the planner picks the
        // index that serves them (a generic plan of `$2 IS NULL OR ...` would not): a
        // contract's invoices come from `invoices_contract` in `seq` order; a customer's through
        // its contracts (an invoice's customer is its contract's).
        let query = |head: &str| {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(head);
            q.push(" FROM invoices WHERE tenant_id = ")
                .push_bind(tenant);
            if let Some(customer) = &f.customer_id {
                q.push(" AND contract_id IN (SELECT id FROM contracts WHERE tenant_id = ")
                    .push_bind(tenant)
                    .push(" AND customer_id = ")
                    .push_bind(customer)
                    .push(")");
            }
            if let Some(contract) = &f.contract_id {
                q.push(" AND contract_id = ").push_bind(contract);
            }
            if let Some(after) = f.date_after {
                q.push(" AND issued_at >= ").push_bind(micros(after));
            }
            if let Some(before) = f.date_before {
                q.push(" AND issued_at < ").push_bind(micros(before));
            }
            q
        };
        let total: i64 = query("SELECT COUNT(*)")
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(be)?;
        let mut q = query("SELECT id, number, status, contract_id, customer_id, step_key, body");
        q.push(" ORDER BY seq LIMIT ")
            .push_bind(page.limit.min(i64::MAX as u64) as i64)
            .push(" OFFSET ")
            .push_bind(page.offset.min(i64::MAX as u64) as i64);
        let rows = q.build().fetch_all(&self.pool).await.map_err(be)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.read_invoice(tenant, r).await?);
        }
        Ok((out, total as u64))
    }

    async fn invoice(&self, tenant: &str, id: &str) -> StoreResult<Option<Invoice>> {
        let row = sqlx::query("SELECT id, number, status, contract_id, customer_id, step_key, body FROM invoices WHERE tenant_id = $1 AND (id = $2 OR number = $3)")
            .bind(tenant)
            .bind(id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(be)?;
        match row {
            Some(r) => Ok(Some(self.read_invoice(tenant, &r).await?)),
            None => Ok(None),
        }
    }

    async fn set_invoice_status(
        &self,
        tenant: &str,
        id: &str,
        status: InvoiceStatus,
        events: &[Event],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(be)?;
        let moved = sqlx::query(
            "UPDATE invoices SET status = $1 WHERE tenant_id = $2 AND id = $3 AND status = 'open'",
        )
        .bind(status_str(status))
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(be)?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await.map_err(be)?;
            return Ok(false);
        }
        let events: Vec<&Event> = events.iter().collect();
        insert_events(&mut tx, tenant, &events).await?;
        write_deliveries(&mut tx, tenant, &events).await?;
        tx.commit().await.map_err(be)?;
        Ok(true)
    }

    async fn events(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Event>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, body FROM events WHERE tenant_id = $1 AND contract_id = $2 ORDER BY seq",
        )
        .bind(tenant)
        .bind(contract_id)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        rows.into_iter()
            .map(|(id, body)| Event::from_stored(id, Some(contract_id.to_string()), &body))
            .collect()
    }

    async fn idempotent(&self, tenant: &str, key: &str) -> StoreResult<Option<IdempotentResponse>> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM idempotency WHERE tenant_id = $1 AND key = $2")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(be)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn save_idempotent(
        &self,
        tenant: &str,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO idempotency (tenant_id, key, body) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .bind(tenant)
        .bind(key)
        .bind(to_json(response)?)
        .execute(&self.pool)
        .await
        .map_err(be)?;
        Ok(())
    }

    async fn save_order(&self, tenant: &str, order: &Order) -> StoreResult<bool> {
        upsert_order(&self.pool, tenant, order).await
    }

    async fn order(&self, tenant: &str, id: &str) -> StoreResult<Option<Order>> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM orders WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(be)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn orders(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Order>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM orders WHERE tenant_id = $1 AND contract_id = $2 ORDER BY seq",
        )
        .bind(tenant)
        .bind(contract_id)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        rows.iter().map(|b| from_json(b)).collect()
    }

    async fn save_webhook(&self, tenant: &str, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (tenant_id, id, body) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, id) DO UPDATE SET body = excluded.body",
        )
        .bind(tenant)
        .bind(&endpoint.id)
        .bind(to_json(endpoint)?)
        .execute(&self.pool)
        .await
        .map_err(be)?;
        Ok(())
    }

    async fn webhook(&self, tenant: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(be)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn webhooks(
        &self,
        tenant: &str,
        page: &Page,
    ) -> StoreResult<(Vec<WebhookEndpoint>, u64)> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY seq LIMIT $2 OFFSET $3",
        )
        .bind(tenant)
        .bind(page.limit.min(i64::MAX as u64) as i64)
        .bind(page.offset.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await
                .map_err(be)?;
        let rows = rows
            .iter()
            .map(|b| from_json(b))
            .collect::<StoreResult<_>>()?;
        Ok((rows, total as u64))
    }

    async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(be)?;
        let gone = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(be)?
            .rows_affected();
        sqlx::query("DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(be)?;
        tx.commit().await.map_err(be)?;
        Ok(gone > 0)
    }

    async fn claim_deliveries(
        &self,
        limit: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let claimed: Vec<(String, String)> = sqlx::query_as(CLAIM_DELIVERIES)
            .bind(micros(lease_until))
            .bind(micros(now))
            .bind(micros(now))
            .bind(limit.min(i64::MAX as u64) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(be)?;
        let mut jobs = Vec::with_capacity(claimed.len());
        for (tenant_id, body) in claimed {
            let delivery: Delivery = from_json(&body)?;
            let row: Option<(String, Option<String>, String)> = sqlx::query_as(
                "SELECT w.body, e.contract_id, e.body FROM webhook_endpoints w, events e
                 WHERE w.tenant_id = $1 AND w.id = $2 AND e.tenant_id = $3 AND e.id = $4",
            )
            .bind(&tenant_id)
            .bind(&delivery.endpoint_id)
            .bind(&tenant_id)
            .bind(&delivery.event_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(be)?;
            let Some((endpoint, contract_id, event)) = row else {
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
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, claimed_until = NULL, body = $3
             WHERE tenant_id = $4 AND id = $5",
        )
        .bind(delivery.status.as_str())
        .bind(delivery.next_attempt_at.map(micros))
        .bind(to_json(delivery)?)
        .bind(tenant)
        .bind(&delivery.id)
        .execute(&self.pool)
        .await
        .map_err(be)?;
        Ok(())
    }

    async fn delivery(&self, tenant: &str, id: &str) -> StoreResult<Option<Delivery>> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(be)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        page: &Page,
    ) -> StoreResult<(Vec<Delivery>, u64)> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2
             ORDER BY seq DESC LIMIT $3 OFFSET $4",
        )
        .bind(tenant)
        .bind(endpoint_id)
        .bind(page.limit.min(i64::MAX as u64) as i64)
        .bind(page.offset.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2",
        )
        .bind(tenant)
        .bind(endpoint_id)
        .fetch_one(&self.pool)
        .await
        .map_err(be)?;
        let rows = rows
            .iter()
            .map(|b| from_json(b))
            .collect::<StoreResult<_>>()?;
        Ok((rows, total as u64))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(be)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Runs the storage suite against the PostgreSQL at `TALLY_TEST_POSTGRES_URL`, in a schema of
    /// its own; without the variable it says so and skips (CI always sets it).
    #[tokio::test]
    async fn the_postgres_store_passes_the_storage_suite() {
        let Ok(url) = std::env::var("TALLY_TEST_POSTGRES_URL") else {
            eprintln!(
                "skipped: TALLY_TEST_POSTGRES_URL is not set, so the PostgreSQL store suite did not run"
            );
            return;
        };
        let schema = format!("tally_test_{}", std::process::id());
        let store = super::PgStore::connect_in_schema(&url, Some(&schema))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} must be reachable: {e}"));
        tally_app::testkit::run_all(std::sync::Arc::new(store)).await;
        super::PgStore::drop_schema(&url, &schema).await.unwrap();
    }
}
