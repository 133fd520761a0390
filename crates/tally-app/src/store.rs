//! The storage port: the records Tally keeps and one tenant-scoped interface with coarse atomic
//! operations, implemented in memory (tests, `simulate`) and over SQL databases.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_core::prelude::*;

pub use crate::webhooks::{Delivery, DeliveryJob, DeliveryStatus, WebhookEndpoint};

/// A tenant: one company billing its customers with Tally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// `Ten_<uuid>`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Test mode: time comes from the tenant's test clock.
    pub test_mode: bool,
    /// Billing settings.
    pub settings: Settings,
    /// The test clock's instant (test mode only).
    pub clock: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A customer of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// `Cust_<uuid>`.
    pub id: String,
    /// Optional slug (from a catalog file), accepted wherever the id is.
    pub slug: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Email addresses (free-form object, as Wingback).
    pub emails: serde_json::Value,
    /// The tenant's own reference.
    pub customer_reference: Option<String>,
    /// Postal address (free-form object).
    pub address: Option<serde_json::Value>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Notes.
    pub notes: Option<String>,
    /// Tax rate in percent; the tenant's when absent.
    pub tax_rate: Option<Decimal>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A contract as stored: the core's state plus its optimistic-concurrency version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContract {
    /// The contract.
    pub contract: Contract,
    /// Incremented by every write; a write naming an older version loses.
    pub version: i64,
}

/// A contract with everything its billing reads ([`Store::billing_state`]).
#[derive(Debug, Clone)]
pub struct BillingState {
    /// The contract (shared: a store may hand out the same parsed contract while it is current).
    pub contract: Arc<Contract>,
    /// Its version: a write naming an older one loses.
    pub version: i64,
    /// Its usage since [`usage_since`].
    pub usage: Vec<UsageRecord>,
    /// Its customer (none only if the customer row is gone).
    pub customer: Option<Customer>,
    /// The customer's credit balances.
    pub balances: BTreeMap<Currency, Decimal>,
    /// The tenant's catalog.
    pub catalog: Arc<Catalog>,
}

/// The instant from which a contract's usage can still be billed: the start of its current
/// period, or its signature before it has one.
pub fn usage_since(c: &Contract) -> Timestamp {
    c.period.as_ref().map_or(c.created_at, |p| p.start)
}

/// Payment state of an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Issued and owed (or nothing due).
    Open,
    /// Marked paid.
    Paid,
    /// Voided.
    Void,
}

/// An issued invoice: the core's draft with its id and gapless number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// `Inv_<uuid>`.
    pub id: String,
    /// Gapless per tenant: `YYYY-NNNNNN`.
    pub number: String,
    /// Payment state.
    pub status: InvoiceStatus,
    /// The computed invoice.
    #[serde(flatten)]
    pub draft: InvoiceDraft,
}

/// A contract event: every mutation, with who made it and in which request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `Evt_<uuid>`.
    pub id: String,
    /// Event type (`v1.contract.signature.completed`, `v1.invoice.created`, ...).
    pub kind: String,
    /// The contract concerned.
    pub contract_id: Option<String>,
    /// When (tenant time).
    pub at: Timestamp,
    /// Who: `api` or `bill_run`.
    pub actor: String,
    /// The request id, when made through the API.
    pub request_id: Option<String>,
    /// Details.
    pub data: EventData,
}

/// An event's details: JSON written once, straight from the values it is made of, and kept as
/// that text (no tree is built to make it, store it or read it back).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventData(Box<serde_json::value::RawValue>);

impl EventData {
    /// The JSON of `v`. A value JSON cannot hold (a map keyed by something other than
    /// strings) is recorded as `null` rather than failing the change it describes.
    pub fn of(v: &impl Serialize) -> EventData {
        match serde_json::value::to_raw_value(v) {
            Ok(raw) => EventData(raw),
            Err(_) => EventData(serde_json::value::RawValue::NULL.to_owned()),
        }
    }

    /// `{}`: an event with no details.
    pub fn empty() -> EventData {
        EventData::of(&serde_json::Map::new())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &EventData) -> bool {
        self.get() == other.get()
    }
}

impl Eq for EventData {}

/// How an event is stored: its body without the id and contract, which the store keeps in
/// their own columns, and without an absent request id.
#[derive(Serialize)]
struct StoredEvent<'a> {
    kind: &'a str,
    at: Timestamp,
    actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: &'a Option<String>,
    data: &'a EventData,
}

/// A stored event body as read back (older bodies also hold `id` and `contract_id`, ignored).
#[derive(Deserialize)]
struct EventBody {
    kind: String,
    at: Timestamp,
    actor: String,
    #[serde(default)]
    request_id: Option<String>,
    data: EventData,
}

/// How an invoice draft is stored: without its contract, customer and step key, which the
/// store keeps in their own columns beside the body. Written with the draft's lines borrowed,
/// read with them owned (older bodies also hold the columns' fields, ignored).
#[derive(Serialize, Deserialize)]
struct InvoiceBody<L> {
    currency: Currency,
    issued_at: Timestamp,
    reason: InvoiceReason,
    lines: L,
    net: Decimal,
    tax_rate: Decimal,
    tax: Decimal,
    gross: Decimal,
    credit_applied: Decimal,
    amount_due: Decimal,
    credit_added: Decimal,
}

/// The body a store keeps for an invoice draft, beside its contract, customer and step key in
/// columns.
pub fn invoice_body(d: &InvoiceDraft) -> StoreResult<String> {
    json(&InvoiceBody {
        currency: d.currency,
        issued_at: d.issued_at,
        reason: d.reason,
        lines: d.lines.as_slice(),
        net: d.net,
        tax_rate: d.tax_rate,
        tax: d.tax,
        gross: d.gross,
        credit_applied: d.credit_applied,
        amount_due: d.amount_due,
        credit_added: d.credit_added,
    })
}

/// The invoice draft of an [`invoice_body`] and its contract, customer and step key columns.
pub fn invoice_from_stored(
    contract_id: String,
    customer_id: String,
    step_key: String,
    body: &str,
) -> StoreResult<InvoiceDraft> {
    let b: InvoiceBody<Vec<InvoiceLine>> =
        serde_json::from_str(body).map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(InvoiceDraft {
        contract_id,
        customer_id,
        currency: b.currency,
        issued_at: b.issued_at,
        reason: b.reason,
        step_key,
        lines: b.lines,
        net: b.net,
        tax_rate: b.tax_rate,
        tax: b.tax,
        gross: b.gross,
        credit_applied: b.credit_applied,
        amount_due: b.amount_due,
        credit_added: b.credit_added,
    })
}

impl Event {
    /// The body a store keeps for the event, beside its id and contract in columns.
    pub fn stored_body(&self) -> StoreResult<String> {
        json(&StoredEvent {
            kind: &self.kind,
            at: self.at,
            actor: &self.actor,
            request_id: &self.request_id,
            data: &self.data,
        })
    }

    /// The event of a [`Event::stored_body`] and its id and contract columns.
    pub fn from_stored(id: String, contract_id: Option<String>, body: &str) -> StoreResult<Event> {
        let b: EventBody =
            serde_json::from_str(body).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Event {
            id,
            kind: b.kind,
            contract_id,
            at: b.at,
            actor: b.actor,
            request_id: b.request_id,
            data: b.data,
        })
    }
}

/// One atomic write: the contract's new state (guarded by its version), the invoices to number
/// and store, the credit balance changes they imply, and the events.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// New contract state and the version it was read at (0 = a new contract).
    pub contract: Option<(Contract, i64)>,
    /// Invoices to issue, in order. An invoice whose `step_key` was already issued is skipped,
    /// which makes billing steps idempotent.
    pub invoices: Vec<InvoiceDraft>,
    /// Events to record; each makes a delivery for every webhook endpoint that accepts it,
    /// in the same transaction.
    pub events: Vec<Event>,
    /// An open order this write carries out, stored as given (committed) only if it is still
    /// open; otherwise the whole write is a conflict, so an order is never applied twice.
    pub order: Option<Order>,
    /// Usage records for the contract of this write (a dialect order's), stored with it.
    pub usage: Vec<UsageRecord>,
}

/// A commit's JSON bodies (the contract, its invoice drafts, its events), serialized ahead of
/// the write: no lock is held while they are made, and the bill run makes a batch's while the
/// previous batch is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bodies {
    /// The contract's body, if the commit writes one.
    pub contract: Option<ContractBody>,
    /// One per invoice draft, in order.
    pub invoices: Vec<String>,
    /// One per event, in order.
    pub events: Vec<String>,
}

/// A contract's stored JSON in its two parts ([`Contract::terms`], [`Contract::progress`]): a
/// store may keep them apart and rewrite the terms only when they changed, or keep them joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractBody {
    /// The terms' JSON object; `None` when they are those of the contract as it was read at the
    /// commit's expected version (a renewal): not even serialized, as nothing needs to write them.
    pub terms: Option<String>,
    /// The progress' JSON object.
    pub progress: String,
}

impl ContractBody {
    /// The contract's two parts.
    pub fn of(c: &Contract) -> StoreResult<ContractBody> {
        Ok(ContractBody {
            terms: Some(json(&c.terms())?),
            progress: json(&c.progress())?,
        })
    }

    /// The whole JSON of `c`, the contract these are the parts of (for a store keeping them
    /// joined): the two parts in one object, or `c` serialized whole when its terms were left
    /// out.
    pub fn whole(&self, c: &Contract) -> StoreResult<String> {
        match &self.terms {
            Some(terms) => Ok(tally_core::contract::join_stored_parts(
                terms,
                &self.progress,
            )),
            None => json(c),
        }
    }
}

fn json<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

impl Bodies {
    /// Serializes a commit's bodies.
    pub fn of(c: &Commit) -> StoreResult<Bodies> {
        let contract = c.contract.as_ref().map(|(c, _)| ContractBody::of(c));
        Bodies::with_contract(c, contract.transpose()?)
    }

    /// The commit's invoice and event bodies serialized, beside the contract's given.
    fn with_contract(c: &Commit, contract: Option<ContractBody>) -> StoreResult<Bodies> {
        Ok(Bodies {
            contract,
            invoices: c
                .invoices
                .iter()
                .map(invoice_body)
                .collect::<StoreResult<_>>()?,
            events: c
                .events
                .iter()
                .map(Event::stored_body)
                .collect::<StoreResult<_>>()?,
        })
    }
}

/// A commit with its bodies serialized, as [`Store::commit_batch`] takes it.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// What to write.
    pub commit: Commit,
    /// Its bodies, [`Bodies::of`] the commit.
    pub bodies: Bodies,
}

impl Encoded {
    /// Serializes a commit's bodies and keeps them with it.
    pub fn new(commit: Commit) -> StoreResult<Encoded> {
        let bodies = Bodies::of(&commit)?;
        Ok(Encoded { commit, bodies })
    }

    /// As [`Encoded::new`], for a commit of `read` (the contract as read at the commit's
    /// expected version) moved forward: its terms are left out when they equal `read`'s, as
    /// after a renewal.
    pub fn moved_from(commit: Commit, read: &Contract) -> StoreResult<Encoded> {
        let contract = match &commit.contract {
            Some((c, _)) if c.terms() == read.terms() => Some(ContractBody {
                terms: None,
                progress: json(&c.progress())?,
            }),
            Some((c, _)) => Some(ContractBody::of(c)?),
            None => None,
        };
        let bodies = Bodies::with_contract(&commit, contract)?;
        Ok(Encoded { commit, bodies })
    }
}

/// Where a dialect's order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Priced, waiting to be committed (billwerk) or started (Salesbricks).
    Open,
    /// Carried out.
    Committed,
    /// Discarded before it was carried out.
    Deleted,
}

/// A change asked for now and carried out later by a second call: billwerk's orders and
/// Salesbricks' upgrade orders. The dialect's request is kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// `Ord_<uuid>`.
    pub id: String,
    /// The dialect that made it (`billwerk`, `salesbricks`).
    pub dialect: String,
    /// What it does, in the dialect's words (`Signup`, `Upgrade`, ...).
    pub kind: String,
    /// The contract it changes, or the id a signup order's contract will get.
    pub contract_id: String,
    /// The customer.
    pub customer_id: String,
    /// Where it is.
    pub status: OrderStatus,
    /// The dialect's request body.
    pub request: serde_json::Value,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was carried out or discarded.
    pub closed_at: Option<Timestamp>,
}

/// What a commit wrote.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The invoices issued (skipped duplicates are not listed).
    pub invoices: Vec<Invoice>,
    /// The contract's new version.
    pub version: i64,
}

/// A page request over a list ordered by creation.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// How many rows to skip.
    pub offset: u64,
    /// How many rows at most.
    pub limit: u64,
}

/// Invoice list filters.
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    /// Only this customer's.
    pub customer_id: Option<String>,
    /// Only this contract's.
    pub contract_id: Option<String>,
    /// Issued at or after.
    pub date_after: Option<Timestamp>,
    /// Issued before.
    pub date_before: Option<Timestamp>,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The contract changed since it was read.
    #[error("the contract was changed by another request; retry")]
    Conflict,
    /// A unique value is taken.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The database failed.
    #[error("storage failure: {0}")]
    Backend(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A cached idempotent response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentResponse {
    /// Hash of the request (method, path, body) that produced it.
    pub request_hash: String,
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
    /// When it was stored.
    pub created_at: Timestamp,
}

/// Everything Tally stores, scoped by tenant: every call takes the tenant first.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a tenant with the hash of its API key.
    async fn create_tenant(&self, tenant: &Tenant, key_hash: &str) -> StoreResult<()>;
    /// The tenant an API key hash belongs to.
    async fn tenant_by_key(&self, key_hash: &str) -> StoreResult<Option<Tenant>>;
    /// A tenant by id.
    async fn tenant(&self, id: &str) -> StoreResult<Option<Tenant>>;
    /// Every tenant id (for the bill run).
    async fn tenant_ids(&self) -> StoreResult<Vec<String>>;
    /// Updates settings and test clock.
    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<()>;

    /// The tenant's catalog.
    async fn catalog(&self, tenant: &str) -> StoreResult<Arc<Catalog>>;
    /// Replaces the tenant's catalog.
    async fn save_catalog(&self, tenant: &str, catalog: &Catalog) -> StoreResult<()>;

    /// Creates or replaces a customer, writing `event` (`v1.customer.created` or `.updated`)
    /// and its webhook deliveries in the same transaction.
    async fn save_customer(
        &self,
        tenant: &str,
        customer: &Customer,
        event: Option<&Event>,
    ) -> StoreResult<()>;
    /// A customer by id or slug.
    async fn customer(&self, tenant: &str, id_or_slug: &str) -> StoreResult<Option<Customer>>;
    /// The customer's credit balance per currency.
    async fn balances(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> StoreResult<BTreeMap<Currency, Decimal>>;

    /// Several customers by id, in no particular order (unknown ids are left out). The bill run
    /// reads a batch's customers with it; the default asks for each in turn.
    async fn customers_by_ids(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<Customer>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = self.customer(tenant, id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }
    /// The credit balances of several customers, by customer id (customers without a balance
    /// are left out). The default asks for each in turn.
    async fn balances_of(
        &self,
        tenant: &str,
        customer_ids: &[String],
    ) -> StoreResult<BTreeMap<String, BTreeMap<Currency, Decimal>>> {
        let mut out = BTreeMap::new();
        for id in customer_ids {
            let b = self.balances(tenant, id).await?;
            if !b.is_empty() {
                out.insert(id.clone(), b);
            }
        }
        Ok(out)
    }

    /// A contract by id.
    async fn contract(&self, tenant: &str, id: &str) -> StoreResult<Option<StoredContract>>;
    /// A contract with everything its billing reads: its usage since [`usage_since`], its
    /// customer, the customer's credit balances and the catalog. A store that can reads them
    /// in one snapshot; this default reads them one after another.
    async fn billing_state(
        &self,
        tenant: &str,
        contract_id: &str,
    ) -> StoreResult<Option<BillingState>> {
        let Some(StoredContract { contract, version }) = self.contract(tenant, contract_id).await?
        else {
            return Ok(None);
        };
        let c = &contract;
        let usage = self.usage(tenant, &c.id, usage_since(c)).await?;
        let customer = self.customer(tenant, &c.customer_id).await?;
        let balances = self.balances(tenant, &c.customer_id).await?;
        let catalog = self.catalog(tenant).await?;
        Ok(Some(BillingState {
            contract: Arc::new(contract),
            version,
            usage,
            customer,
            balances,
            catalog,
        }))
    }
    /// Contracts, optionally of one customer, in creation order.
    async fn contracts(
        &self,
        tenant: &str,
        customer_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<(Vec<StoredContract>, u64)>;
    /// Ids of contracts with a billing step due at or before `until`, at most `limit`.
    async fn due_contracts(
        &self,
        tenant: &str,
        until: Timestamp,
        limit: u64,
    ) -> StoreResult<Vec<String>>;

    /// Claims up to `limit` contracts due at or before `until` that no other worker holds at
    /// `now`, holding them until `lease_until`; returns their ids in due order. Several workers
    /// (and processes) calling it at once get disjoint sets.
    async fn claim_due(
        &self,
        tenant: &str,
        until: Timestamp,
        limit: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<String>>;

    /// Writes a contract, its invoices (numbered gaplessly), balance changes and events in one
    /// transaction.
    async fn commit(&self, tenant: &str, commit: Commit) -> StoreResult<Committed>;

    /// Writes several commits in one transaction (the bill run's batches). Each is all or
    /// nothing: one that lost its race comes back as [`StoreError::Conflict`] having written
    /// nothing, and the others are written. Only for contracts that already exist. The bodies
    /// come serialized ([`Encoded`]), so a batch's are made while the previous one is written.
    async fn commit_batch(
        &self,
        tenant: &str,
        commits: Vec<Encoded>,
    ) -> StoreResult<Vec<StoreResult<Committed>>>;

    /// Several contracts by id, in no particular order (unknown ids are left out).
    async fn contracts_by_ids(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> StoreResult<Vec<StoredContract>>;

    /// The usage of several contracts at or after `since`, by contract id.
    async fn usage_of(
        &self,
        tenant: &str,
        contract_ids: &[String],
        since: Timestamp,
    ) -> StoreResult<BTreeMap<String, Vec<UsageRecord>>>;

    /// Records usage of a contract.
    async fn record_usage(
        &self,
        tenant: &str,
        contract_id: &str,
        records: &[UsageRecord],
    ) -> StoreResult<()>;
    /// A contract's usage at or after `since`.
    async fn usage(
        &self,
        tenant: &str,
        contract_id: &str,
        since: Timestamp,
    ) -> StoreResult<Vec<UsageRecord>>;

    /// Invoices, newest last, with the total count.
    async fn invoices(
        &self,
        tenant: &str,
        filter: &InvoiceFilter,
        page: &Page,
    ) -> StoreResult<(Vec<Invoice>, u64)>;
    /// One invoice.
    async fn invoice(&self, tenant: &str, id: &str) -> StoreResult<Option<Invoice>>;
    /// Moves an open invoice to `status` (paid or void), writing `events` and their webhook
    /// deliveries in the same transaction; false, with nothing written, when the invoice is not
    /// open any more (a concurrent request moved it first).
    async fn set_invoice_status(
        &self,
        tenant: &str,
        id: &str,
        status: InvoiceStatus,
        events: &[Event],
    ) -> StoreResult<bool>;

    /// A contract's events in order.
    async fn events(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Event>>;

    /// A stored idempotent response.
    async fn idempotent(&self, tenant: &str, key: &str) -> StoreResult<Option<IdempotentResponse>>;
    /// Stores an idempotent response (first writer wins).
    async fn save_idempotent(
        &self,
        tenant: &str,
        key: &str,
        response: &IdempotentResponse,
    ) -> StoreResult<()>;

    /// Creates or replaces a webhook endpoint. Commits written after it make deliveries for it.
    async fn save_webhook(&self, tenant: &str, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    /// A webhook endpoint by id.
    async fn webhook(&self, tenant: &str, id: &str) -> StoreResult<Option<WebhookEndpoint>>;
    /// The tenant's webhook endpoints in creation order, and how many there are.
    async fn webhooks(&self, tenant: &str, page: &Page)
    -> StoreResult<(Vec<WebhookEndpoint>, u64)>;
    /// Deletes an endpoint and its delivery log; false when there was none.
    async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    /// Claims up to `limit` pending deliveries due at `now` (every tenant) that no other worker
    /// holds, until `lease_until`, with what sending them needs.
    async fn claim_deliveries(
        &self,
        limit: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<DeliveryJob>>;
    /// Stores a delivery's new state (after an attempt, or a retry request).
    async fn save_delivery(&self, tenant: &str, delivery: &Delivery) -> StoreResult<()>;
    /// A delivery by id.
    async fn delivery(&self, tenant: &str, id: &str) -> StoreResult<Option<Delivery>>;
    /// An endpoint's deliveries, newest first, and how many there are.
    async fn deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        page: &Page,
    ) -> StoreResult<(Vec<Delivery>, u64)>;

    /// Stores an order (new, or an open one updated or discarded); answers false, writing
    /// nothing, when an order with this id exists and is no longer open.
    async fn save_order(&self, tenant: &str, order: &Order) -> StoreResult<bool>;
    /// An order by id.
    async fn order(&self, tenant: &str, id: &str) -> StoreResult<Option<Order>>;
    /// The orders of a contract, oldest first.
    async fn orders(&self, tenant: &str, contract_id: &str) -> StoreResult<Vec<Order>>;

    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// Parsed catalogs by tenant, each with the stored text it was parsed from: a store reads the
/// current text on every call (so another process's change is seen at once) and parses it only
/// when it changed.
#[derive(Debug, Default)]
pub struct CatalogCache {
    parsed: Mutex<HashMap<String, (String, Arc<Catalog>)>>,
}

impl CatalogCache {
    /// The catalog stored as `text` for `tenant` (empty when there is none).
    ///
    /// # Errors
    /// The text is not a catalog.
    pub fn get(&self, tenant: &str, text: Option<String>) -> StoreResult<Arc<Catalog>> {
        let Some(text) = text else {
            return Ok(Arc::new(Catalog::default()));
        };
        if let Ok(map) = self.parsed.lock()
            && let Some((seen, catalog)) = map.get(tenant)
            && *seen == text
        {
            return Ok(catalog.clone());
        }
        let catalog: Arc<Catalog> =
            Arc::new(serde_json::from_str(&text).map_err(|e| StoreError::Backend(e.to_string()))?);
        if let Ok(mut map) = self.parsed.lock() {
            map.insert(tenant.to_string(), (text, catalog.clone()));
        }
        Ok(catalog)
    }
}

/// Parsed contracts by tenant and id, each with the version it was parsed at: a store reads a
/// contract's version on every call (so another process's write is seen at once) and parses its
/// body only when the version changed. Bounded, so a run over every contract does not grow it.
pub struct ContractCache {
    parsed: quick_cache::sync::Cache<(String, String), (i64, Arc<Contract>)>,
}

/// A borrowed `(tenant, id)` key: hashes as the owned tuple does, so lookups allocate nothing.
#[derive(Hash)]
struct ContractKey<'a>(&'a str, &'a str);

impl quick_cache::Equivalent<(String, String)> for ContractKey<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl std::fmt::Debug for ContractCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractCache")
            .field("len", &self.parsed.len())
            .finish()
    }
}

impl ContractCache {
    /// A cache of at most `capacity` contracts.
    pub fn new(capacity: usize) -> Self {
        ContractCache {
            parsed: quick_cache::sync::Cache::new(capacity),
        }
    }

    /// The contract `tenant`/`id` at `version`, if it was parsed at that version.
    pub fn get(&self, tenant: &str, id: &str, version: i64) -> Option<Arc<Contract>> {
        match self.parsed.get(&ContractKey(tenant, id)) {
            Some((v, c)) if v == version => Some(c),
            _ => None,
        }
    }

    /// The contract `tenant`/`id` as last parsed, with its version (which may be old).
    pub fn latest(&self, tenant: &str, id: &str) -> Option<(i64, Arc<Contract>)> {
        self.parsed.get(&ContractKey(tenant, id))
    }

    /// Keeps `contract` as parsed at `version`.
    pub fn put(&self, tenant: &str, version: i64, contract: Arc<Contract>) {
        self.parsed.insert(
            (tenant.to_string(), contract.id.clone()),
            (version, contract),
        );
    }
}

/// The instant a contract's next billing step is due, for indexing.
pub fn next_due(c: &Contract) -> Option<Timestamp> {
    next_step(c).map(|(t, _)| t)
}

/// Formats an invoice number: year of issue and a per-tenant sequence.
pub fn invoice_number(issued_at: Timestamp, seq: i64) -> String {
    let year = issued_at.to_zoned(jiff::tz::TimeZone::UTC).year();
    format!("{year}-{seq:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(request_id: Option<&str>) -> Event {
        Event {
            id: "Evt_1".into(),
            kind: "v1.invoice.created".into(),
            contract_id: Some("Cont_1".into()),
            at: "2024-03-01T00:00:00Z".parse().unwrap(),
            actor: "api".into(),
            request_id: request_id.map(str::to_string),
            data: EventData::of(&serde_json::json!({ "gross": "10.00", "n": [1, 2] })),
        }
    }

    #[test]
    fn a_stored_event_leaves_its_columns_out_and_reads_back_whole() {
        for e in [event(None), event(Some("req_1"))] {
            let body = e.stored_body().unwrap();
            // The id and contract live in their own columns; an absent request id is left out.
            assert!(
                !body.contains("Evt_1") && !body.contains("Cont_1"),
                "{body}"
            );
            assert_eq!(
                body.contains("request_id"),
                e.request_id.is_some(),
                "{body}"
            );
            let back = Event::from_stored("Evt_1".into(), Some("Cont_1".into()), &body).unwrap();
            assert_eq!(back, e);
            // The details are kept as the text they were written as.
            assert_eq!(back.data.get(), r#"{"gross":"10.00","n":[1,2]}"#);
        }
    }

    #[test]
    fn an_event_stored_whole_by_an_earlier_version_still_reads() {
        let e = event(Some("req_1"));
        let whole = serde_json::to_string(&e).unwrap();
        let back = Event::from_stored("Evt_1".into(), Some("Cont_1".into()), &whole).unwrap();
        assert_eq!(back, e);
        let e = event(None);
        let whole = serde_json::to_string(&e).unwrap();
        assert!(whole.contains(r#""request_id":null"#));
        assert_eq!(
            Event::from_stored("Evt_1".into(), Some("Cont_1".into()), &whole).unwrap(),
            e
        );
    }

    fn draft() -> InvoiceDraft {
        let (catalog, settings) = tally_core::examples::basic_catalog();
        let cx = BillingContext::new(&catalog, &settings).unwrap();
        let req = SignupRequest::new("Cont_a", "Cust_a", "basic", Currency::Usd, Cycle::Month);
        let out = subscribe(&req, &cx, "2024-03-01T00:00:00.123456789Z".parse().unwrap()).unwrap();
        out.invoices.into_iter().next().unwrap()
    }

    #[test]
    fn a_stored_invoice_leaves_its_columns_out_and_reads_back_whole() {
        let d = draft();
        assert!(!d.lines.is_empty());
        let body = invoice_body(&d).unwrap();
        for column in ["Cont_a", "Cust_a", "step_key"] {
            assert!(!body.contains(column), "{column} in {body}");
        }
        // The instant stays in the body: the column holds microseconds, the draft nanoseconds.
        assert!(body.contains("2024-03-01T00:00:00.123456789Z"), "{body}");
        let read_back = |body: &str| {
            invoice_from_stored(
                d.contract_id.clone(),
                d.customer_id.clone(),
                d.step_key.clone(),
                body,
            )
            .unwrap()
        };
        assert_eq!(read_back(&body), d);
        // A body stored whole by an earlier version reads the same.
        assert_eq!(read_back(&serde_json::to_string(&d).unwrap()), d);
    }

    #[test]
    fn event_data_is_json_written_once_and_compared_as_text() {
        assert_eq!(EventData::empty().get(), "{}");
        // A map keyed by numbers is not JSON: it is recorded as null instead of failing.
        let odd: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(EventData::of(&odd).get(), "null");
        let a = EventData::of(&serde_json::json!({ "a": 1 }));
        assert_eq!(a, EventData::of(&serde_json::json!({ "a": 1 })));
        assert_ne!(a, EventData::of(&serde_json::json!({ "a": 2 })));
    }

    #[test]
    fn the_contract_cache_answers_only_the_version_it_holds() {
        let cache = ContractCache::new(2);
        let (catalog, settings) = tally_core::examples::basic_catalog();
        let cx = BillingContext::new(&catalog, &settings).unwrap();
        let req = SignupRequest::new("Cont_a", "Cust_a", "basic", Currency::Usd, Cycle::Month);
        let c = Arc::new(
            subscribe(&req, &cx, "2024-03-01T00:00:00Z".parse().unwrap())
                .unwrap()
                .contract,
        );
        cache.put("t1", 3, c.clone());
        assert!(Arc::ptr_eq(&cache.get("t1", "Cont_a", 3).unwrap(), &c));
        // Another version, tenant or id is a miss.
        assert!(cache.get("t1", "Cont_a", 4).is_none());
        assert!(cache.get("t2", "Cont_a", 3).is_none());
        assert!(cache.get("t1", "Cont_b", 3).is_none());
        // A newer version replaces the old one.
        cache.put("t1", 4, c.clone());
        assert!(cache.get("t1", "Cont_a", 3).is_none());
        assert!(cache.get("t1", "Cont_a", 4).is_some());
        // Bounded: many more contracts than its capacity keep it at about that size.
        for i in 0..100 {
            let mut other = (*c).clone();
            other.id = format!("Cont_{i}");
            cache.put("t1", 1, Arc::new(other));
        }
        assert!(cache.parsed.len() <= 4, "{}", cache.parsed.len());
    }

    #[test]
    fn the_catalog_cache_parses_only_changed_text() {
        let cache = CatalogCache::default();
        let (a, _) = tally_core::examples::basic_catalog();
        let text = serde_json::to_string(&a).unwrap();
        let first = cache.get("t1", Some(text.clone())).unwrap();
        let again = cache.get("t1", Some(text.clone())).unwrap();
        assert_eq!(*first, a);
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same text is not parsed again"
        );
        // Another tenant with the same text has its own entry; a changed text is parsed anew.
        let other = cache.get("t2", Some(text)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        let changed = cache
            .get(
                "t1",
                Some(serde_json::to_string(&Catalog::default()).unwrap()),
            )
            .unwrap();
        assert_eq!(*changed, Catalog::default());
        assert_eq!(*cache.get("t3", None).unwrap(), Catalog::default());
        assert!(cache.get("t4", Some("not json".into())).is_err());
    }
}
