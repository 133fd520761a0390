//! Seeding an SQLite store with the workload's due contracts, shared by the SQLite benches.

use sqlx::QueryBuilder;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tally_app::Tally;
use tally_app::store::Tenant;
use tally_core::prelude::*;

use crate::common::{ROWS, USED_AT, sign_up, tenant_with_customers};

/// A clock that stays at one instant: the bill run's time is passed in.
pub struct Fixed(pub jiff::Timestamp);

impl tally_app::Clock for Fixed {
    fn now(&self) -> jiff::Timestamp {
        self.0
    }
}

/// A tenant with `n` contracts signed up on Jan 1 and due on Feb 1, with usage on every tenth,
/// written with multi-row inserts straight into the store's tables at `url` as signup would have
/// left them (no signup invoices). Returns the tenant.
pub async fn seed(tally: &Tally, url: &str, n: usize) -> Tenant {
    let (tenant, catalog, customers) = tenant_with_customers(tally, n).await;
    let opts: SqliteConnectOptions = url.parse::<SqliteConnectOptions>().unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let cx = BillingContext::new(&catalog, &tenant.settings).unwrap();
    let used_at: jiff::Timestamp = USED_AT.parse().unwrap();
    let ids: Vec<usize> = (0..n).collect();
    // The store keeps a contract's terms in their own table, apart from its progress.
    // The store's tables refer to the tenant by its integer key.
    let key: i64 = sqlx::query_scalar("SELECT key FROM tenants WHERE id = ?")
        .bind(&tenant.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let terms_base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM contract_terms")
        .fetch_one(&pool)
        .await
        .unwrap();
    for chunk in ids.chunks(1000) {
        let (contracts, usage) = sign_up(chunk, &customers, &cx);
        let mut tx = pool.begin().await.unwrap();
        for rows in contracts.chunks(ROWS) {
            let mut q = QueryBuilder::new("INSERT INTO contract_terms (id, body) ");
            q.push_values(rows, |mut b, s| {
                b.push_bind(terms_base + s.seq)
                    .push_bind(serde_json::to_string(&s.contract.terms()).unwrap());
            });
            q.build().execute(&mut *tx).await.unwrap();
            let mut q = QueryBuilder::new(
                "INSERT INTO contracts (tenant_id, id, customer_id, status, next_due, version, created_seq, terms_id, body) ",
            );
            q.push_values(rows, |mut b, s| {
                b.push_bind(key)
                    .push_bind(&s.contract.id)
                    .push_bind(&s.contract.customer_id)
                    .push_bind("active")
                    .push_bind(s.due)
                    .push_bind(1i64)
                    .push_bind(s.seq)
                    .push_bind(terms_base + s.seq)
                    .push_bind(serde_json::to_string(&s.contract.progress()).unwrap());
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        for rows in usage.chunks(ROWS) {
            let mut q = QueryBuilder::new(
                "INSERT INTO usage_records (tenant_id, contract_id, feature_slug, units, ts, is_absolute) ",
            );
            q.push_values(rows, |mut b, (id, units)| {
                b.push_bind(key)
                    .push_bind(id)
                    .push_bind("api_calls")
                    .push_bind(units.to_string())
                    .push_bind(used_at.as_microsecond())
                    .push_bind(0i64);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    pool.close().await;
    tenant
}
