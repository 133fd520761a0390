//! What both bill-run benches share: the workload's catalog, its tenant and customers, and the
//! signed-up contracts and usage of each batch, computed by the core.

use jiff::Timestamp;
use tally_app::Tally;
use tally_app::catalog_file::CatalogFile;
use tally_app::store::{Customer, Tenant, next_due};
use tally_core::prelude::*;

/// Rows per multi-row statement, as the stores use.
pub const ROWS: usize = 200;

/// When the usage of every tenth contract was recorded (inside the first period).
pub const USED_AT: &str = "2024-01-10T00:00:00Z";

const CATALOG: &str = r#"{
  "features": [{"slug": "platform", "kind": "flat"}, {"slug": "seats", "kind": "per_unit"},
               {"slug": "api_calls", "kind": "usage"}],
  "plans": [{"slug": "basic", "pricings": [{"slug": "v1", "published_at": "2020-01-01T00:00:00Z",
    "prices": [{"currency": "usd", "cycle": "month", "features": {
      "platform": {"flat_fee": "10.00"}, "seats": {"price": "5.00"}, "api_calls": {"price": "0.001"}}}]}]}]
}"#;

/// A live tenant with the workload's catalog and one customer per 1000 of `n` contracts (each
/// batch spans many customers); returns the tenant, its catalog and the customer ids.
pub async fn tenant_with_customers(tally: &Tally, n: usize) -> (Tenant, Catalog, Vec<String>) {
    let (tenant, _) = tally.create_tenant("bench", false).await.unwrap();
    let file = CatalogFile::from_json(CATALOG).unwrap();
    let (tenant, catalog) = tally.apply_catalog(&tenant, &file).await.unwrap();
    let mut customers = Vec::new();
    for i in 0..n.div_ceil(1000).max(1) {
        let c = Customer {
            id: tally_app::ids::new_id("Cust"),
            slug: Some(format!("customer-{i}")),
            name: Some(format!("Customer {i}")),
            emails: serde_json::json!({"main": format!("billing{i}@example.com")}),
            customer_reference: None,
            address: None,
            metadata: Default::default(),
            notes: None,
            tax_rate: None,
            created_at: "2024-01-01T00:00:00Z".parse().unwrap(),
        };
        tally
            .store
            .save_customer(&tenant.id, &c, None)
            .await
            .unwrap();
        customers.push(c.id);
    }
    (tenant, catalog, customers)
}

/// A contract signed up on Jan 1 (3 seats, monthly), as the store keeps it.
pub struct Signed {
    /// Its place in the workload, from 1.
    pub seq: i64,
    /// When its next billing step is due, in microseconds.
    pub due: Option<i64>,
    /// The contract.
    pub contract: Contract,
}

/// The contracts with the workload indexes `chunk` sign up, and the usage of every tenth
/// (contract id, units).
pub fn sign_up(
    chunk: &[usize],
    customers: &[String],
    cx: &BillingContext,
) -> (Vec<Signed>, Vec<(String, i64)>) {
    let start_at: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
    let mut contracts = Vec::with_capacity(chunk.len());
    let mut usage = Vec::new();
    for i in chunk {
        let req = SignupRequest::new(
            &tally_app::ids::new_id("Cont"),
            &customers[i % customers.len()],
            "basic",
            Currency::Usd,
            Cycle::Month,
        )
        .seats("seats", 3);
        let c = subscribe(&req, cx, start_at).unwrap().contract;
        if i % 10 == 0 {
            usage.push((c.id.clone(), 1000 + *i as i64));
        }
        contracts.push(Signed {
            seq: *i as i64 + 1,
            due: next_due(&c).map(|t| t.as_microsecond()),
            contract: c,
        });
    }
    (contracts, usage)
}
