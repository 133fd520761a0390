//! The use cases: every operation a client or the bill run performs, as calls on [`Tally`].
//!
//! Each mutation reads the contract, first runs the billing steps that fell due (so a request
//! never works on a stale period), computes the outcome with the core, and writes it in one
//! atomic commit guarded by the contract's version; a lost race is retried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use tally_core::prelude::*;

use crate::ids::{hash_key, new_api_key, new_id};
use crate::store::*;

/// Where "now" comes from for live-mode tenants.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The billing rules refused it.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Something referenced does not exist (or belongs to another tenant).
    #[error("no {kind} `{id}`")]
    NotFound {
        /// What kind of object.
        kind: &'static str,
        /// Which request field named it.
        param: String,
        /// The id given.
        id: String,
    },
    /// Bad input outside the core's rules.
    #[error("{param}: {detail}")]
    Invalid {
        /// Which request field.
        param: String,
        /// What is wrong.
        detail: String,
    },
    /// The contract kept changing under the request.
    #[error("the contract was changed by concurrent requests; retry")]
    Conflict,
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => AppError::Conflict,
            other => AppError::Store(other),
        }
    }
}

/// Result of a use case.
pub type AppResult<T> = Result<T, AppError>;

/// How many times a write that lost a race is retried before answering 409.
const RETRIES: usize = 8;

/// Who performs an operation and in which request, for the event log.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `api`, `bill_run`, `test_clock`.
    pub name: String,
    /// Request id.
    pub request_id: Option<String>,
}

impl Actor {
    /// A new event of `kind` made by this actor at `at`.
    pub fn event(
        &self,
        kind: &str,
        contract_id: Option<String>,
        at: Timestamp,
        data: impl Serialize,
    ) -> Event {
        self.event_of(kind, contract_id, at, EventData::of(&data))
    }

    /// [`Actor::event`] with its details already written.
    pub fn event_of(
        &self,
        kind: &str,
        contract_id: Option<String>,
        at: Timestamp,
        data: EventData,
    ) -> Event {
        Event {
            id: new_id("Evt"),
            kind: kind.into(),
            contract_id,
            at,
            actor: self.name.clone(),
            request_id: self.request_id.clone(),
            data,
        }
    }

    /// The bill run.
    pub fn bill_run() -> Actor {
        Actor {
            name: "bill_run".into(),
            request_id: None,
        }
    }
}

/// The result of a change (or its preview).
#[derive(Debug, Clone)]
pub struct ChangeResult {
    /// The core's outcome: the contract after the change and the invoice it issues.
    pub outcome: ChangeOutcome,
    /// The stored invoice, for an execution that issued one.
    pub invoice: Option<Invoice>,
    /// The catalog the change was computed against (it names the contract's plan).
    pub catalog: Arc<Catalog>,
}

/// What a contract mutation made: the invoices stored, the mutation's own answer (which holds
/// the contract after it), and the catalog it ran against.
struct Mutated<T> {
    invoices: Vec<Invoice>,
    answer: T,
    catalog: Arc<Catalog>,
}

/// What a dialect's order adds to the write that carries it out: the order itself (marked
/// committed, only if still open) and usage to record with it.
#[derive(Debug, Clone, Default)]
pub struct OrderWrite {
    /// The order, as it is once carried out.
    pub order: Option<crate::store::Order>,
    /// Usage reported with the order, for the contract it changes.
    pub usage: Vec<UsageRecord>,
}

impl BillingState {
    /// The core's context for billing this state: the customer's tax rate (or the tenant's).
    fn context<'a>(&'a self, tenant: &'a Tenant) -> AppResult<BillingContext<'a>> {
        let tax_rate = self
            .customer
            .as_ref()
            .and_then(|cu| cu.tax_rate)
            .unwrap_or(tenant.settings.tax_rate);
        Ok(BillingContext::new(&self.catalog, &tenant.settings)?
            .with_usage(&self.usage)
            .with_tax_rate(tax_rate)
            .with_balances(self.balances.clone()))
    }
}

/// Tally's application: the store and the clock, and every use case.
#[derive(Clone)]
pub struct Tally {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Wall clock for live tenants.
    pub clock: Arc<dyn Clock>,
}

/// A mutation's computed answer, from which its write takes the contract after it and the
/// invoices it issues (borrowed, so a preview copies neither).
trait Planned {
    /// The contract after the mutation.
    fn contract(&self) -> &Contract;
    /// The invoices it issues, in order.
    fn invoices(&self) -> &[InvoiceDraft];
}

impl Planned for ChangeOutcome {
    fn contract(&self) -> &Contract {
        &self.contract
    }
    fn invoices(&self) -> &[InvoiceDraft] {
        self.invoice.as_slice()
    }
}

impl Planned for CancelOutcome {
    fn contract(&self) -> &Contract {
        &self.contract
    }
    fn invoices(&self) -> &[InvoiceDraft] {
        self.invoice.as_slice()
    }
}

impl Planned for SignupOutcome {
    fn contract(&self) -> &Contract {
        &self.contract
    }
    fn invoices(&self) -> &[InvoiceDraft] {
        &self.invoices
    }
}

impl Planned for Contract {
    fn contract(&self) -> &Contract {
        self
    }
    fn invoices(&self) -> &[InvoiceDraft] {
        &[]
    }
}

fn events_for(
    c: &Contract,
    kind: &str,
    at: Timestamp,
    actor: &Actor,
    data: impl Serialize,
) -> Event {
    actor.event(kind, Some(c.id.clone()), at, data)
}

/// The contract, invoices and events of the billing steps an advance ran; the invoices move out
/// of the outcome rather than being copied.
fn step_records(out: AdvanceOutcome, actor: &Actor) -> (Contract, Vec<InvoiceDraft>, Vec<Event>) {
    let AdvanceOutcome { contract, steps } = out;
    let mut invoices = Vec::with_capacity(steps.len());
    let mut marks = Vec::with_capacity(steps.len());
    for s in steps {
        let kind = match &s.kind {
            StepKind::Activation => "v1.contract.signature.completed",
            StepKind::ScheduledChange { .. } => "v1.contract.change.applied",
            StepKind::Cancellation => "v1.contract.cancellation.completed",
            StepKind::TrialEnd => "v1.contract.trial.ended",
            StepKind::Renewal => "v1.contract.renewed",
        };
        let data = EventData::of(&StepData {
            dropped: &s.dropped,
            step: &s.kind,
        });
        marks.push((kind, s.at, data));
        invoices.extend(s.invoices);
    }
    // The invoices' events first, then the steps': ids are made in the order events are kept.
    let mut events = invoice_events(&contract, &invoices, actor);
    for (kind, at, data) in marks {
        events.push(actor.event_of(kind, Some(contract.id.clone()), at, data));
    }
    (contract, invoices, events)
}

/// The details of a billing step's event.
#[derive(Serialize)]
struct StepData<'a> {
    dropped: &'a Option<String>,
    step: &'a StepKind,
}

/// The details of `v1.invoice.created`.
#[derive(Serialize)]
struct InvoiceData<'a> {
    gross: Decimal,
    reason: InvoiceReason,
    step_key: &'a str,
}

fn invoice_events(c: &Contract, invoices: &[InvoiceDraft], actor: &Actor) -> Vec<Event> {
    invoices
        .iter()
        .map(|i| {
            events_for(
                c,
                "v1.invoice.created",
                i.issued_at,
                actor,
                InvoiceData {
                    gross: i.gross,
                    reason: i.reason,
                    step_key: &i.step_key,
                },
            )
        })
        .collect()
}

impl Tally {
    /// An application over a store, with the wall clock.
    pub fn new(store: Arc<dyn Store>) -> Tally {
        Tally {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// "Now" for a tenant: its test clock in test mode, else the wall clock.
    pub fn now(&self, tenant: &Tenant) -> Timestamp {
        match (tenant.test_mode, tenant.clock) {
            (true, Some(t)) => t,
            _ => self.clock.now(),
        }
    }

    /// Creates a tenant and returns it with its API key (shown once; only its hash is stored).
    pub async fn create_tenant(&self, name: &str, test_mode: bool) -> AppResult<(Tenant, String)> {
        let now = self.clock.now();
        let tenant = Tenant {
            id: new_id("Ten"),
            name: name.into(),
            test_mode,
            settings: Settings::default(),
            clock: test_mode.then_some(now),
            created_at: now,
        };
        let key = new_api_key(test_mode);
        self.store.create_tenant(&tenant, &hash_key(&key)).await?;
        Ok((tenant, key))
    }

    /// The tenant of an API key, if the key is valid.
    pub async fn authenticate(&self, key: &str) -> AppResult<Option<Tenant>> {
        Ok(self.store.tenant_by_key(&hash_key(key)).await?)
    }

    /// Applies a catalog file to a tenant: catalog merged, settings replaced when given,
    /// customers created or updated by slug. Returns the tenant as it is after.
    pub async fn apply_catalog(
        &self,
        tenant: &Tenant,
        file: &crate::catalog_file::CatalogFile,
    ) -> AppResult<(Tenant, Catalog)> {
        let current = self.store.catalog(&tenant.id).await?;
        let merged = file.merge_into(&current).map_err(|e| AppError::Invalid {
            param: e.path,
            detail: e.message,
        })?;
        let mut existing = Vec::new();
        for c in &file.customers {
            existing.push(self.store.customer(&tenant.id, &c.slug).await?);
        }
        let now = self.now(tenant);
        let known: Vec<String> = existing.iter().flatten().map(|c| c.id.clone()).collect();
        let actor = Actor {
            name: "catalog_apply".into(),
            request_id: None,
        };
        for c in file.customers(&existing, now) {
            let created = !known.contains(&c.id);
            self.save_customer(tenant, &c, created, &actor).await?;
        }
        if merged != *current {
            self.store.save_catalog(&tenant.id, &merged).await?;
        }
        let mut t = tenant.clone();
        if let Some(s) = &file.settings
            && *s != t.settings
        {
            t.settings = s.clone();
            self.store.update_tenant(&t).await?;
        }
        Ok((t, merged))
    }

    /// Creates (`created`) or updates a customer, with its `v1.customer.created` or
    /// `v1.customer.updated` event (payload: the customer id, as Wingback sends it) written in
    /// the same transaction. A slug another customer holds is a conflict.
    pub async fn save_customer(
        &self,
        tenant: &Tenant,
        customer: &Customer,
        created: bool,
        actor: &Actor,
    ) -> AppResult<()> {
        let kind = if created {
            "v1.customer.created"
        } else {
            "v1.customer.updated"
        };
        let data = json!({ "customer_id": customer.id });
        let event = actor.event(kind, None, self.now(tenant), data);
        self.store
            .save_customer(&tenant.id, customer, Some(&event))
            .await?;
        Ok(())
    }

    /// A customer by id or slug.
    pub async fn customer(&self, tenant: &Tenant, id: &str, param: &str) -> AppResult<Customer> {
        self.store
            .customer(&tenant.id, id)
            .await?
            .ok_or_else(|| AppError::NotFound {
                kind: "customer",
                param: param.into(),
                id: id.into(),
            })
    }

    /// A contract by id.
    pub async fn contract(&self, tenant: &Tenant, id: &str) -> AppResult<StoredContract> {
        self.store
            .contract(&tenant.id, id)
            .await?
            .ok_or_else(|| AppError::NotFound {
                kind: "contract",
                param: "contract_id".into(),
                id: id.into(),
            })
    }

    /// Reads a contract with everything its billing needs.
    async fn load(&self, tenant: &Tenant, contract_id: &str) -> AppResult<BillingState> {
        self.store
            .billing_state(&tenant.id, contract_id)
            .await?
            .ok_or_else(|| AppError::NotFound {
                kind: "contract",
                param: "contract_id".into(),
                id: contract_id.into(),
            })
    }

    /// Subscribes a customer (seed 004) and returns the new contract and its invoices.
    pub async fn subscribe(
        &self,
        tenant: &Tenant,
        req: SignupRequest,
        actor: &Actor,
    ) -> AppResult<(Contract, Vec<Invoice>)> {
        let (c, _, invoices) = self
            .subscribe_with(tenant, req, false, &OrderWrite::default(), actor)
            .await?;
        Ok((c, invoices))
    }

    /// Subscribes a customer, or with `preview` only computes it; `extra` carries a dialect's
    /// order out in the same write. Answers the contract, the invoices computed, and the
    /// invoices stored (none for a preview). An empty `contract_id` gets a new id.
    pub async fn subscribe_with(
        &self,
        tenant: &Tenant,
        mut req: SignupRequest,
        preview: bool,
        extra: &OrderWrite,
        actor: &Actor,
    ) -> AppResult<(Contract, Vec<InvoiceDraft>, Vec<Invoice>)> {
        let customer = self.customer(tenant, &req.customer_id, "customer").await?;
        req.customer_id = customer.id.clone();
        if req.contract_id.is_empty() {
            req.contract_id = new_id("Cont");
        }
        let now = self.now(tenant);
        let catalog = self.store.catalog(&tenant.id).await?;
        let balances = self.store.balances(&tenant.id, &customer.id).await?;
        let cx = BillingContext::new(&catalog, &tenant.settings)?
            .with_tax_rate(customer.tax_rate.unwrap_or(tenant.settings.tax_rate))
            .with_balances(balances);
        let out = subscribe(&req, &cx, now)?;
        let c = out.contract;
        let kind = match c.status {
            ContractStatus::Active => "v1.contract.signature.completed",
            _ => "v1.contract.signature.scheduled",
        };
        let mut events = vec![events_for(
            &c,
            kind,
            now,
            actor,
            json!({ "status": c.status }),
        )];
        if preview {
            return Ok((c, out.invoices, Vec::new()));
        }
        events.extend(invoice_events(&c, &out.invoices, actor));
        let committed = self
            .store
            .commit(
                &tenant.id,
                Commit {
                    contract: Some((c.clone(), 0)),
                    invoices: out.invoices.clone(),
                    events,
                    order: extra.order.clone(),
                    usage: extra.usage.clone(),
                },
            )
            .await?;
        Ok((c, out.invoices, committed.invoices))
    }

    /// Runs a contract mutation with catch-up and retries: `f` gets the contract brought up to
    /// `now` and a context, and answers its outcome (the new contract and the invoices to issue)
    /// with the events to record.
    async fn mutate<T: Planned>(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        actor: &Actor,
        write: bool,
        extra: &OrderWrite,
        f: impl Fn(&Contract, &BillingContext, Timestamp) -> AppResult<(T, Vec<Event>)>,
    ) -> AppResult<Mutated<T>> {
        for _ in 0..RETRIES {
            let mut loaded = self.load(tenant, contract_id).await?;
            loaded.usage.extend(extra.usage.iter().cloned());
            let now = self.now(tenant);
            let cx = loaded.context(tenant)?;
            let caught_up = advance(&loaded.contract, &cx, now)?;
            let mut invoices: Vec<InvoiceDraft> = caught_up.invoices().cloned().collect();
            let cx2 = cx
                .clone()
                .with_balances(caught_up.balances_after(&cx.balances));
            let (answer, mut events) = f(&caught_up.contract, &cx2, now)?;
            if !write {
                return Ok(Mutated {
                    invoices: Vec::new(),
                    answer,
                    catalog: loaded.catalog,
                });
            }
            let (c, more) = (answer.contract(), answer.invoices());
            let mut all_events = invoice_events(&caught_up.contract, &invoices, actor);
            all_events.extend(invoice_events(c, more, actor));
            invoices.extend_from_slice(more);
            all_events.append(&mut events);
            match self
                .store
                .commit(
                    &tenant.id,
                    Commit {
                        contract: Some((c.clone(), loaded.version)),
                        invoices,
                        events: all_events,
                        order: extra.order.clone(),
                        usage: extra.usage.clone(),
                    },
                )
                .await
            {
                Ok(done) => {
                    return Ok(Mutated {
                        invoices: done.invoices,
                        answer,
                        catalog: loaded.catalog,
                    });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Conflict)
    }

    /// Plans a change and, unless `preview`, executes it. The preview and the execution run the
    /// same computation on the same state, so the preview's invoice is the one executed.
    pub async fn change(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        req: &ChangeRequest,
        preview: bool,
        actor: &Actor,
    ) -> AppResult<ChangeResult> {
        self.change_with(
            tenant,
            contract_id,
            req,
            preview,
            &OrderWrite::default(),
            actor,
        )
        .await
    }

    /// [`Tally::change`] that also carries out a dialect's order (and records its usage) in the
    /// same write; the usage is seen by the change's own billing.
    pub async fn change_with(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        req: &ChangeRequest,
        preview: bool,
        extra: &OrderWrite,
        actor: &Actor,
    ) -> AppResult<ChangeResult> {
        let change_id = new_id("Chg");
        let Mutated {
            invoices,
            answer: outcome,
            catalog,
            ..
        } = self
            .mutate(tenant, contract_id, actor, !preview, extra, |c, cx, now| {
                let out = plan_change(c, req, cx, now, &change_id)?;
                let kind = if out.scheduled {
                    "v1.contract.change.scheduled"
                } else {
                    "v1.contract.signature.completed"
                };
                let ev = events_for(
                    &out.contract,
                    kind,
                    now,
                    actor,
                    json!({ "effective_at": out.effective_at, "scheduled_change_id": out.scheduled_change_id }),
                );
                Ok((out, vec![ev]))
            })
            .await?;
        let invoice = outcome.invoice.as_ref().and_then(|d| {
            invoices
                .iter()
                .find(|i| i.draft.step_key == d.step_key)
                .cloned()
        });
        Ok(ChangeResult {
            outcome,
            invoice,
            catalog,
        })
    }

    /// Carries out a dialect order that changes nothing but records usage: the usage and the
    /// order are written together with the contract's version, so a concurrent change or a
    /// second carry-out is a conflict, never a double recording.
    pub async fn carry_out_order(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        extra: &OrderWrite,
    ) -> AppResult<Contract> {
        for _ in 0..RETRIES {
            let stored = self.contract(tenant, contract_id).await?;
            match self
                .store
                .commit(
                    &tenant.id,
                    Commit {
                        contract: Some((stored.contract.clone(), stored.version)),
                        order: extra.order.clone(),
                        usage: extra.usage.clone(),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) => return Ok(stored.contract),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Conflict)
    }

    /// Cancels a contract.
    pub async fn cancel(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        mode: CancelMode,
        actor: &Actor,
    ) -> AppResult<(Contract, Option<Invoice>)> {
        let Mutated {
            answer, invoices, ..
        } = self
            .mutate(
                tenant,
                contract_id,
                actor,
                true,
                &OrderWrite::default(),
                |c, cx, now| {
                    let out = cancel(c, mode, cx, now)?;
                    let kind = if out.contract.status == ContractStatus::Canceled {
                        "v1.contract.cancellation.completed"
                    } else {
                        "v1.contract.cancellation.scheduled"
                    };
                    let ev = events_for(
                        &out.contract,
                        kind,
                        now,
                        actor,
                        json!({ "effective_at": out.effective_at }),
                    );
                    Ok((out, vec![ev]))
                },
            )
            .await?;
        let inv = invoices
            .into_iter()
            .find(|i| i.draft.reason == InvoiceReason::Cancellation);
        Ok((answer.contract, inv))
    }

    /// Activates a pending contract now.
    pub async fn activate(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        actor: &Actor,
    ) -> AppResult<(Contract, Vec<Invoice>)> {
        let Mutated {
            answer, invoices, ..
        } = self
            .mutate(
                tenant,
                contract_id,
                actor,
                true,
                &OrderWrite::default(),
                |c, cx, now| {
                    let out = activate(c, cx, now)?;
                    let ev = events_for(
                        &out.contract,
                        "v1.contract.signature.completed",
                        now,
                        actor,
                        json!({}),
                    );
                    Ok((out, vec![ev]))
                },
            )
            .await?;
        Ok((answer.contract, invoices))
    }

    /// Removes a scheduled change.
    pub async fn cancel_scheduled_change(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        change_id: &str,
        actor: &Actor,
    ) -> AppResult<Contract> {
        let Mutated { answer, .. } = self
            .mutate(
                tenant,
                contract_id,
                actor,
                true,
                &OrderWrite::default(),
                |c, _cx, now| {
                    let out = cancel_scheduled_change(c, change_id)?;
                    let ev = events_for(
                        &out,
                        "v1.contract.change.canceled",
                        now,
                        actor,
                        json!({ "scheduled_change_id": change_id }),
                    );
                    Ok((out, vec![ev]))
                },
            )
            .await?;
        Ok(answer)
    }

    /// Records usage for a customer's feature on the contract that has the feature.
    pub async fn record_usage(
        &self,
        tenant: &Tenant,
        customer_id: &str,
        record: UsageRecord,
    ) -> AppResult<String> {
        let customer = self.customer(tenant, customer_id, "customer_id").await?;
        let (contracts, _) = self
            .store
            .contracts(
                &tenant.id,
                Some(&customer.id),
                &Page {
                    offset: 0,
                    limit: 10_000,
                },
            )
            .await?;
        let target = contracts
            .iter()
            .rev()
            .find(|s| {
                s.contract.status != ContractStatus::Canceled
                    && s.contract
                        .config
                        .features
                        .get(&record.feature_slug)
                        .is_some_and(|f| f.kind == FeatureKind::Usage)
            })
            .ok_or_else(|| AppError::Invalid {
                param: "feature_slug".into(),
                detail: format!(
                    "the customer has no active contract with the usage feature `{}`",
                    record.feature_slug
                ),
            })?;
        if record.units < Decimal::ZERO {
            return Err(CoreError::Negative {
                param: "units".into(),
                value: record.units.to_string(),
            }
            .into());
        }
        self.store
            .record_usage(
                &tenant.id,
                &target.contract.id,
                std::slice::from_ref(&record),
            )
            .await?;
        Ok(target.contract.id.clone())
    }

    /// Runs every billing step of one contract due at or before `until`; returns the invoices.
    pub async fn bill_contract(
        &self,
        tenant: &Tenant,
        contract_id: &str,
        until: Timestamp,
        actor: &Actor,
    ) -> AppResult<Vec<Invoice>> {
        for _ in 0..RETRIES {
            let loaded = self.load(tenant, contract_id).await?;
            let cx = loaded.context(tenant)?;
            let out = advance(&loaded.contract, &cx, until)?;
            if out.steps.is_empty() {
                return Ok(Vec::new());
            }
            let (contract, invoices, events) = step_records(out, actor);
            match self
                .store
                .commit(
                    &tenant.id,
                    Commit {
                        contract: Some((contract, loaded.version)),
                        invoices,
                        events,
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(done) => return Ok(done.invoices),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Conflict)
    }

    /// Moves a test-mode tenant's clock to `to`, running every due billing step in time order
    /// across its contracts.
    pub async fn advance_clock(
        &self,
        tenant: &Tenant,
        to: Timestamp,
        actor: &Actor,
    ) -> AppResult<(Tenant, Vec<Invoice>)> {
        if !tenant.test_mode {
            return Err(AppError::Invalid {
                param: "wb-key".into(),
                detail: "only test-mode tenants have a test clock".into(),
            });
        }
        let now = self.now(tenant);
        if to < now {
            return Err(AppError::Invalid {
                param: "to".into(),
                detail: format!("a test clock only moves forward; it is at {now}"),
            });
        }
        let mut issued = Vec::new();
        loop {
            // The earliest due step across the tenant's contracts runs first.
            let due = self.store.due_contracts(&tenant.id, to, u64::MAX).await?;
            let mut best: Option<(Timestamp, String)> = None;
            for id in due {
                if let Some(s) = self.store.contract(&tenant.id, &id).await?
                    && let Some(t) = next_due(&s.contract)
                    && best.as_ref().is_none_or(|(bt, _)| t < *bt)
                {
                    best = Some((t, id));
                }
            }
            let Some((t, id)) = best else { break };
            let mut clocked = tenant.clone();
            clocked.clock = Some(t);
            self.store.update_tenant(&clocked).await?;
            issued.extend(self.bill_contract(&clocked, &id, t, actor).await?);
        }
        let mut moved = tenant.clone();
        moved.clock = Some(to);
        self.store.update_tenant(&moved).await?;
        Ok((moved, issued))
    }

    /// Runs the bill run for every live tenant up to `until`: claims due contracts in batches
    /// (so memory does not grow with their number, and several workers share the work), runs
    /// each one's due steps and commits them. Returns how many invoices were issued.
    pub async fn bill_run(&self, until: Timestamp, batch: u64) -> AppResult<usize> {
        self.bill_run_leased(until, batch, DEFAULT_LEASE_SECONDS)
            .await
    }

    /// [`Tally::bill_run`] holding claims for `lease_seconds`: how long contracts claimed by a
    /// worker that died stay untouched before another worker takes them over.
    pub async fn bill_run_leased(
        &self,
        until: Timestamp,
        batch: u64,
        lease_seconds: i64,
    ) -> AppResult<usize> {
        let mut count = 0;
        for tid in self.store.tenant_ids().await? {
            let Some(tenant) = self.store.tenant(&tid).await? else {
                continue;
            };
            if tenant.test_mode {
                continue;
            }
            // Two batches in flight: while one is written, the next is read and computed.
            // Claims take several batches at once: a claim is a write, so while it runs the
            // worker has nothing to compute.
            let mut pending: Option<Prepared> = None;
            let size = usize::try_from(batch.max(1)).unwrap_or(usize::MAX);
            loop {
                let now = self.clock.now();
                let lease = now
                    .checked_add(jiff::SignedDuration::from_secs(lease_seconds))
                    .unwrap_or(now);
                let claimed = self
                    .store
                    .claim_due(&tid, until, batch.saturating_mul(CLAIM_BATCHES), now, lease)
                    .await?;
                if claimed.is_empty() {
                    if let Some(last) = pending.take() {
                        count += self.finish_batch(&tenant, last, until).await?;
                    }
                    break;
                }
                for ids in claimed.chunks(size) {
                    pending = Some(match pending.take() {
                        None => {
                            self.prepare_batch(&tenant, ids, until, &BTreeSet::new())
                                .await?
                        }
                        Some(prev) => {
                            // The batch being written may move some customers' credit
                            // balances: their contracts in the next one wait until it is
                            // written.
                            let busy = prev.moved.clone();
                            let (written, next) = tokio::join!(
                                self.finish_batch(&tenant, prev, until),
                                self.prepare_batch(&tenant, ids, until, &busy)
                            );
                            count += written?;
                            next?
                        }
                    });
                }
            }
        }
        Ok(count)
    }
}

/// How many batches the bill run claims at once.
const CLAIM_BATCHES: u64 = 4;

impl Tally {
    /// Reads and computes one claimed batch: the contracts, their usage, customers and balances
    /// read in a few queries and every due step computed. Contracts after the first of a
    /// customer whose credit balance the batch moves, and every contract of a customer in
    /// `busy` (whose balance a batch still being written moves), are left to be billed one by
    /// one once the batch is written.
    async fn prepare_batch(
        &self,
        tenant: &Tenant,
        ids: &[String],
        until: Timestamp,
        busy: &BTreeSet<String>,
    ) -> AppResult<Prepared> {
        let actor = Actor::bill_run();
        let catalog = self.store.catalog(&tenant.id).await?;
        let contracts = self.store.contracts_by_ids(&tenant.id, ids).await?;
        let since = contracts
            .iter()
            .map(|s| crate::store::usage_since(&s.contract))
            .min()
            .unwrap_or(until);
        let usage = self.store.usage_of(&tenant.id, ids, since).await?;
        // Per customer: tax rate, credit balances, and whether this batch already moved them.
        let mut customer_ids: Vec<String> = contracts
            .iter()
            .map(|s| s.contract.customer_id.clone())
            .collect();
        customer_ids.sort_unstable();
        customer_ids.dedup();
        let taxes: BTreeMap<String, Option<Decimal>> = self
            .store
            .customers_by_ids(&tenant.id, &customer_ids)
            .await?
            .into_iter()
            .map(|c| (c.id, c.tax_rate))
            .collect();
        let mut balances = self.store.balances_of(&tenant.id, &customer_ids).await?;
        let mut customers: BTreeMap<String, (Decimal, BTreeMap<Currency, Decimal>, bool)> =
            customer_ids
                .into_iter()
                .map(|id| {
                    let tax = taxes
                        .get(&id)
                        .copied()
                        .flatten()
                        .unwrap_or(tenant.settings.tax_rate);
                    let b = balances.remove(&id).unwrap_or_default();
                    let held = busy.contains(&id);
                    (id, (tax, b, held))
                })
                .collect();
        let base = BillingContext::new(&catalog, &tenant.settings)?;
        let mut commits = Vec::with_capacity(contracts.len());
        let mut committed_ids = Vec::with_capacity(contracts.len());
        let mut alone = Vec::new();
        for stored in contracts {
            let c = &stored.contract;
            let Some((tax, balances, moved)) = customers.get_mut(&c.customer_id) else {
                continue;
            };
            if *moved {
                alone.push(c.id.clone());
                continue;
            }
            let records = usage.get(&c.id).map_or(&[][..], Vec::as_slice);
            let cx = base
                .clone()
                .with_usage(records)
                .with_tax_rate(*tax)
                .with_balances(balances.clone());
            let out = match advance(c, &cx, until) {
                Ok(out) => out,
                Err(e) => {
                    // One contract that cannot be billed must not stop the others: its claim
                    // runs out and a later run tries again.
                    tracing::warn!(contract = %c.id, error = %e, "contract could not be billed");
                    continue;
                }
            };
            if out.steps.is_empty() {
                continue;
            }
            *moved = out
                .invoices()
                .any(|i| !i.credit_applied.is_zero() || !i.credit_added.is_zero());
            let (contract, invoices, events) = step_records(out, &actor);
            committed_ids.push(c.id.clone());
            // Serialized here, while the previous batch is written, rather than in its turn.
            // A renewal leaves the contract's terms as read: marked so, a store keeping them
            // apart writes only the progress.
            commits.push(Encoded::moved_from(
                Commit {
                    contract: Some((contract, stored.version)),
                    invoices,
                    events,
                    ..Default::default()
                },
                c,
            )?);
        }
        let moved = customers
            .into_iter()
            .filter(|(_, (_, _, moved))| *moved)
            .map(|(id, _)| id)
            .collect();
        Ok(Prepared {
            commits,
            committed_ids,
            alone,
            moved,
        })
    }

    /// Writes a prepared batch in one transaction, then bills one by one the contracts that lost
    /// a race or were left out. Returns how many invoices were issued.
    async fn finish_batch(
        &self,
        tenant: &Tenant,
        batch: Prepared,
        until: Timestamp,
    ) -> AppResult<usize> {
        let actor = Actor::bill_run();
        let Prepared {
            commits,
            committed_ids,
            mut alone,
            moved: _,
        } = batch;
        let mut count = 0;
        let results = self.store.commit_batch(&tenant.id, commits).await?;
        for (id, result) in committed_ids.into_iter().zip(results) {
            match result {
                Ok(done) => count += done.invoices.len(),
                Err(StoreError::Conflict) => alone.push(id),
                Err(e) => return Err(e.into()),
            }
        }
        for id in alone {
            match self.bill_contract(tenant, &id, until, &actor).await {
                Ok(n) => count += n.len(),
                Err(AppError::Core(e)) => {
                    tracing::warn!(contract = %id, error = %e, "contract could not be billed");
                }
                Err(AppError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }
}

/// A bill-run batch read and computed, not yet written.
struct Prepared {
    /// One commit per contract billed in the batch, its bodies serialized.
    commits: Vec<Encoded>,
    /// The contract of each commit.
    committed_ids: Vec<String>,
    /// Contracts to bill one by one once the batch is written.
    alone: Vec<String>,
    /// Customers whose credit balance the batch may move: by its commits, or by its contracts
    /// billed one by one after it (held ones included).
    moved: BTreeSet<String>,
}

/// How long a bill-run worker holds the contracts it claimed before others may take them.
pub const DEFAULT_LEASE_SECONDS: i64 = 300;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewals_events_are_its_invoices_then_its_step_with_ids_in_that_order() {
        let (catalog, settings) = tally_core::examples::basic_catalog();
        let cx = BillingContext::new(&catalog, &settings).unwrap();
        let req = SignupRequest::new("Cont_r", "Cust_r", "basic", Currency::Usd, Cycle::Month);
        let start: Timestamp = "2024-03-01T00:00:00Z".parse().unwrap();
        let c = subscribe(&req, &cx, start).unwrap().contract;
        // One month later the contract renews: one invoice, one step.
        let out = advance(&c, &cx, "2024-04-01T00:00:00Z".parse().unwrap()).unwrap();
        let (_, invoices, events) = step_records(out, &Actor::bill_run());
        assert_eq!(invoices.len(), 1);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["v1.invoice.created", "v1.contract.renewed"]);
        assert!(
            events[0].id < events[1].id,
            "ids are made in the order kept"
        );
        assert_eq!(
            events[1].data.get(),
            r#"{"dropped":null,"step":{"type":"renewal"}}"#
        );
        // gross as the invoice states it, its reason, and its step key.
        let inv: serde_json::Value = serde_json::from_str(events[0].data.get()).unwrap();
        assert_eq!(inv["gross"], invoices[0].gross.to_string());
        assert_eq!(inv["reason"], "renewal");
        assert_eq!(inv["step_key"], invoices[0].step_key);
    }
}
