//! An in-memory [`Store`] for tests and `tally simulate`: the same semantics as the SQL stores
//! (versions, gapless numbers, step-key idempotency), behind one mutex.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use tally_core::prelude::*;

use crate::store::*;

#[derive(Default)]
struct TenantData {
    tenant: Option<Tenant>,
    catalog: Catalog,
    customers: Vec<Customer>,
    balances: HashMap<(String, Currency), Decimal>,
    contracts: Vec<StoredContract>,
    claims: HashMap<String, Timestamp>,
    usage: HashMap<String, Vec<UsageRecord>>,
    invoices: Vec<Invoice>,
    step_keys: std::collections::HashSet<String>,
    next_number: i64,
    events: Vec<Event>,
    idempotency: HashMap<String, IdempotentResponse>,
    webhooks: Vec<WebhookEndpoint>,
    deliveries: Vec<(Delivery, Option<Timestamp>)>,
    orders: Vec<Order>,
}

/// Everything in process memory; lost when the process ends.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, String>,
    tenants: BTreeMap<String, TenantData>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> StoreResult<T>) -> StoreResult<T> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store poisoned".into()))?;
        f(&mut g)
    }
}

impl TenantData {
    /// Records events with the deliveries they make for the tenant's webhook endpoints.
    fn record(&mut self, events: Vec<Event>) {
        let made = Delivery::fan_out(&self.webhooks, &events.iter().collect::<Vec<_>>());
        self.deliveries.extend(made.into_iter().map(|x| (x, None)));
        self.events.extend(events);
    }
}

fn data<'a>(inner: &'a mut Inner, tenant: &str) -> &'a mut TenantData {
    inner.tenants.entry(tenant.to_string()).or_default()
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_tenant(&self, tenant: &Tenant, key_hash: &str) -> StoreResult<()> {
        self.with(|i| {
            if i.keys.contains_key(key_hash) {
                return Err(StoreError::Duplicate("api key".into()));
            }
            i.keys.insert(key_hash.to_string(), tenant.id.clone());
            data(i, &tenant.id).tenant = Some(tenant.clone());
            Ok(())
        })
    }

    async fn tenant_by_key(&self, key_hash: &str) -> StoreResult<Option<Tenant>> {
        self.with(|i| {
            let Some(id) = i.keys.get(key_hash).cloned() else {
                return Ok(None);
            };
            Ok(i.tenants.get(&id).and_then(|d| d.tenant.clone()))
        })
    }

    async fn tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        self.with(|i| Ok(i.tenants.get(id).and_then(|d| d.tenant.clone())))
    }

    async fn tenant_ids(&self) -> StoreResult<Vec<String>> {
        self.with(|i| Ok(i.tenants.keys().cloned().collect()))
    }

    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        self.with(|i| {
            data(i, &tenant.id).tenant = Some(tenant.clone());
            Ok(())
        })
    }

    async fn catalog(&self, tenant: &str) -> StoreResult<std::sync::Arc<Catalog>> {
        self.with(|i| Ok(std::sync::Arc::new(data(i, tenant).catalog.clone())))
    }

    async fn save_catalog(&self, tenant: &str, catalog: &Catalog) -> StoreResult<()> {
        self.with(|i| {
            data(i, tenant).catalog = catalog.clone();
            Ok(())
        })
    }

    async fn save_customer(
        &self,
        tenant: &str,
        customer: &Customer,
        event: Option<&Event>,
    ) -> StoreResult<()> {
        self.with(|i| {
            let d = data(i, tenant);
            if let Some(slug) = &customer.slug
                && d.customers
                    .iter()
                    .any(|c| c.id != customer.id && c.slug.as_ref() == Some(slug))
            {
                return Err(StoreError::Duplicate("customer slug".into()));
            }
            match d.customers.iter_mut().find(|c| c.id == customer.id) {
                Some(c) => *c = customer.clone(),
                None => d.customers.push(customer.clone()),
            }
            d.record(event.into_iter().cloned().collect());
            Ok(())
        })
    }

    async fn customer(&self, tenant: &str, id_or_slug: &str) -> StoreResult<Option<Customer>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .customers
                .iter()
                .find(|c| c.id == id_or_slug || c.slug.as_deref() == Some(id_or_slug))
                .cloned())
        })
    }

    async fn balances(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> StoreResult<BTreeMap<Currency, Decimal>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .balances
                .iter()
                .filter(|((c, _), _)| c == customer_id)
                .map(|((_, cur), v)| (*cur, *v))
                .collect())
        })
    }

    async fn contract(&self, tenant: &str, id: &str) -> StoreResult<Option<StoredContract>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .contracts
                .iter()
                .find(|c| c.contract.id == id)
                .cloned())
        })
    }

    async fn contracts(
        &self,
        tenant: &str,
        customer_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<(Vec<StoredContract>, u64)> {
        self.with(|i| {
            let all: Vec<&StoredContract> = data(i, tenant)
                .contracts
                .iter()
                .filter(|c| customer_id.is_none_or(|id| c.contract.customer_id == id))
                .collect();
            let total = all.len() as u64;
            let rows = all
                .into_iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .cloned()
                .collect();
            Ok((rows, total))
        })
    }

    async fn due_contracts(
        &self,
        tenant: &str,
        until: Timestamp,
        limit: u64,
    ) -> StoreResult<Vec<String>> {
        self.with(|i| {
            let mut due: Vec<(Timestamp, String)> = data(i, tenant)
                .contracts
                .iter()
                .filter_map(|c| {
                    next_due(&c.contract)
                        .filter(|t| *t <= until)
                        .map(|t| (t, c.contract.id.clone()))
                })
                .collect();
            due.sort();
            Ok(due
                .into_iter()
                .take(limit as usize)
                .map(|(_, id)| id)
                .collect())
        })
    }

    async fn claim_due(
        &self,
        tenant: &str,
        until: Timestamp,
        limit: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<String>> {
        self.with(|i| {
            let d = data(i, tenant);
            let mut due: Vec<(Timestamp, String)> = d
                .contracts
                .iter()
                .filter(|c| d.claims.get(&c.contract.id).is_none_or(|t| *t < now))
                .filter_map(|c| {
                    next_due(&c.contract)
                        .filter(|t| *t <= until)
                        .map(|t| (t, c.contract.id.clone()))
                })
                .collect();
            due.sort();
            let ids: Vec<String> = due
                .into_iter()
                .take(limit as usize)
                .map(|(_, id)| id)
                .collect();
            for id in &ids {
                d.claims.insert(id.clone(), lease_until);
            }
            Ok(ids)
        })
    }

    async fn commit(&self, tenant: &str, commit: Commit) -> StoreResult<Committed> {
        self.with(|i| {
            let d = data(i, tenant);
            let mut version = 0;
            // Check everything before writing anything.
            if let Some(o) = &commit.order
                && d.orders
                    .iter()
                    .any(|x| x.id == o.id && x.status != OrderStatus::Open)
            {
                return Err(StoreError::Conflict);
            }
            if let Some((c, expected)) = &commit.contract {
                let current = d
                    .contracts
                    .iter()
                    .find(|s| s.contract.id == c.id)
                    .map(|s| s.version);
                match (current, *expected) {
                    (None, 0) => {}
                    (Some(v), e) if v == e => {}
                    (None, _) => return Err(StoreError::Conflict),
                    (Some(_), 0) => {
                        return Err(StoreError::Duplicate(format!("contract {}", c.id)));
                    }
                    _ => return Err(StoreError::Conflict),
                }
                version = expected + 1;
            }
            if let Some((c, _)) = &commit.contract
                && !commit.usage.is_empty()
            {
                d.usage
                    .entry(c.id.clone())
                    .or_default()
                    .extend(commit.usage.iter().cloned());
            }
            if let Some(o) = commit.order {
                match d.orders.iter_mut().find(|x| x.id == o.id) {
                    Some(x) => *x = o,
                    None => d.orders.push(o),
                }
            }
            if let Some((c, _)) = commit.contract {
                match d.contracts.iter_mut().find(|s| s.contract.id == c.id) {
                    Some(s) => {
                        s.contract = c;
                        s.version = version;
                    }
                    None => d.contracts.push(StoredContract {
                        contract: c,
                        version,
                    }),
                }
            }
            let mut issued = Vec::new();
            for draft in commit.invoices {
                if !d.step_keys.insert(draft.step_key.clone()) {
                    continue;
                }
                d.next_number += 1;
                let delta = draft.credit_added - draft.credit_applied;
                if !delta.is_zero() {
                    *d.balances
                        .entry((draft.customer_id.clone(), draft.currency))
                        .or_default() += delta;
                }
                let inv = Invoice {
                    id: crate::ids::new_id("Inv"),
                    number: invoice_number(draft.issued_at, d.next_number),
                    status: InvoiceStatus::Open,
                    draft,
                };
                d.invoices.push(inv.clone());
                issued.push(inv);
            }
            d.record(commit.events);
            Ok(Committed {
                invoices: issued,
                version,
            })
        })
    }

    async fn commit_batch(
        &self,
        tenant: &str,
        commits: Vec<Encoded>,
    ) -> StoreResult<Vec<StoreResult<Committed>>> {
        let mut out = Vec::with_capacity(commits.len());
        for c in commits {
            match self.commit(tenant, c.commit).await {
                Err(StoreError::Conflict) => out.push(Err(StoreError::Conflict)),
                Err(e) => return Err(e),
                Ok(d) => out.push(Ok(d)),
            }
        }
        Ok(out)
    }

    async fn contracts_by_ids(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<Vec<StoredContract>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .contracts
                .iter()
                .filter(|c| ids.contains(&c.contract.id))
                .cloned()
                .collect())
        })
    }

    async fn usage_of(
        &self,
        tenant: &str,
        contract_ids: &[String],
        since: Timestamp,
    ) -> StoreResult<BTreeMap<String, Vec<UsageRecord>>> {
        self.with(|i| {
            let d = data(i, tenant);
            Ok(contract_ids
                .iter()
                .filter_map(|id| {
                    d.usage.get(id).map(|v| {
                        (
                            id.clone(),
                            v.iter().filter(|r| r.timestamp >= since).cloned().collect(),
                        )
                    })
                })
                .collect())
        })
    }

    async fn record_usage(
        &self,
        tenant: &str,
        contract_id: &str,
        records: &[UsageRecord],
    ) -> StoreResult<()> {
        self.with(|i| {
            data(i, tenant)
                .usage
                .entry(contract_id.to_string())
                .or_default()
                .extend_from_slice(records);
            Ok(())
        })
    }

    async fn usage(
        &self,
        tenant: &str,
        contract_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<UsageRecord>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .usage
                .get(contract_id)
                .map(|v| v.iter().filter(|r| r.timestamp >= since).cloned().collect())
                .unwrap_or_default())
        })
    }

    async fn invoices(
        &self,
        tenant: &str,
        filter: &InvoiceFilter,
        page: &Page,
    ) -> StoreResult<(Vec<Invoice>, u64)> {
        self.with(|i| {
            let all: Vec<&Invoice> = data(i, tenant)
                .invoices
                .iter()
                .filter(|inv| {
                    filter
                        .customer_id
                        .as_ref()
                        .is_none_or(|c| &inv.draft.customer_id == c)
                        && filter
                            .contract_id
                            .as_ref()
                            .is_none_or(|c| &inv.draft.contract_id == c)
                        && filter.date_after.is_none_or(|t| inv.draft.issued_at >= t)
                        && filter.date_before.is_none_or(|t| inv.draft.issued_at < t)
                })
                .collect();
            let total = all.len() as u64;
            Ok((
                all.into_iter()
                    .skip(page.offset as usize)
                    .take(page.limit as usize)
                    .cloned()
                    .collect(),
                total,
            ))
        })
    }

    async fn invoice(&self, tenant: &str, id: &str) -> StoreResult<Option<Invoice>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .invoices
                .iter()
                .find(|inv| inv.id == id || inv.number == id)
                .cloned())
        })
    }

    async fn set_invoice_status(
        &self,
        tenant: &str,
        id: &str,
        status: InvoiceStatus,
        events: &[Event],
    ) -> StoreResult<bool> {
        self.with(|i| {
            let d = data(i, tenant);
            let Some(inv) = d.invoices.iter_mut().find(|inv| inv.id == id) else {
                return Ok(false);
            };
            if inv.status != InvoiceStatus::Open {
                return Ok(false);
            }
            inv.status = status;
            d.record(events.to_vec());
            Ok(true)
        })
    }

    async fn events(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Event>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .events
                .iter()
                .filter(|e| e.contract_id.as_deref() == Some(contract_id))
                .cloned()
                .collect())
        })
    }

    async fn idempotent(&self, tenant: &str, key: &str) -> StoreResult<Option<IdempotentResponse>> {
        self.with(|i| Ok(data(i, tenant).idempotency.get(key).cloned()))
    }

    async fn save_idempotent(
        &self,
        tenant: &str,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()> {
        self.with(|i| {
            data(i, tenant)
                .idempotency
                .entry(key.to_string())
                .or_insert_with(|| response.clone());
            Ok(())
        })
    }

    async fn save_order(&self, tenant: &str, order: &Order) -> StoreResult<bool> {
        self.with(|i| {
            let d = data(i, tenant);
            match d.orders.iter_mut().find(|o| o.id == order.id) {
                Some(o) if o.status != OrderStatus::Open => Ok(false),
                Some(o) => {
                    *o = order.clone();
                    Ok(true)
                }
                None => {
                    d.orders.push(order.clone());
                    Ok(true)
                }
            }
        })
    }

    async fn order(&self, tenant: &str, id: &str) -> StoreResult<Option<Order>> {
        self.with(|i| Ok(data(i, tenant).orders.iter().find(|o| o.id == id).cloned()))
    }

    async fn orders(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Order>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .orders
                .iter()
                .filter(|o| o.contract_id == contract_id)
                .cloned()
                .collect())
        })
    }

    async fn save_webhook(&self, tenant: &str, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        self.with(|i| {
            let d = data(i, tenant);
            match d.webhooks.iter_mut().find(|w| w.id == endpoint.id) {
                Some(w) => *w = endpoint.clone(),
                None => d.webhooks.push(endpoint.clone()),
            }
            Ok(())
        })
    }

    async fn webhook(&self, tenant: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .webhooks
                .iter()
                .find(|w| w.id == id)
                .cloned())
        })
    }

    async fn webhooks(
        &self,
        tenant: &str,
        page: &Page,
    ) -> StoreResult<(Vec<WebhookEndpoint>, u64)> {
        self.with(|i| {
            let d = data(i, tenant);
            let rows = d
                .webhooks
                .iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .cloned()
                .collect();
            Ok((rows, d.webhooks.len() as u64))
        })
    }

    async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        self.with(|i| {
            let d = data(i, tenant);
            let before = d.webhooks.len();
            d.webhooks.retain(|w| w.id != id);
            d.deliveries.retain(|(x, _)| x.endpoint_id != id);
            Ok(d.webhooks.len() != before)
        })
    }

    async fn claim_deliveries(
        &self,
        limit: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<DeliveryJob>> {
        self.with(|i| {
            let mut out = Vec::new();
            for (tid, d) in i.tenants.iter_mut() {
                for (x, claimed) in d.deliveries.iter_mut() {
                    if out.len() as u64 >= limit {
                        return Ok(out);
                    }
                    let due = x.status == DeliveryStatus::Pending
                        && x.next_attempt_at.is_none_or(|t| t <= now)
                        && claimed.is_none_or(|c| c < now);
                    if !due {
                        continue;
                    }
                    let endpoint = d.webhooks.iter().find(|w| w.id == x.endpoint_id);
                    let event = d.events.iter().find(|e| e.id == x.event_id);
                    if let (Some(w), Some(e)) = (endpoint, event) {
                        *claimed = Some(lease_until);
                        out.push(DeliveryJob {
                            tenant_id: tid.clone(),
                            delivery: x.clone(),
                            url: w.url.clone(),
                            secret: w.secret.clone(),
                            event: e.clone(),
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    async fn save_delivery(&self, tenant: &str, delivery: &Delivery) -> StoreResult<()> {
        self.with(|i| {
            if let Some((x, claimed)) = data(i, tenant)
                .deliveries
                .iter_mut()
                .find(|(x, _)| x.id == delivery.id)
            {
                *x = delivery.clone();
                *claimed = None;
            }
            Ok(())
        })
    }

    async fn delivery(&self, tenant: &str, id: &str) -> StoreResult<Option<Delivery>> {
        self.with(|i| {
            Ok(data(i, tenant)
                .deliveries
                .iter()
                .find(|(x, _)| x.id == id)
                .map(|(x, _)| x.clone()))
        })
    }

    async fn deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        page: &Page,
    ) -> StoreResult<(Vec<Delivery>, u64)> {
        self.with(|i| {
            let all: Vec<&Delivery> = data(i, tenant)
                .deliveries
                .iter()
                .rev()
                .map(|(x, _)| x)
                .filter(|x| x.endpoint_id == endpoint_id)
                .collect();
            let rows = all
                .iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .map(|x| (*x).clone())
                .collect();
            Ok((rows, all.len() as u64))
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_memory_store_passes_the_storage_suite() {
        crate::testkit::run_all(std::sync::Arc::new(super::MemoryStore::new())).await;
    }
}
