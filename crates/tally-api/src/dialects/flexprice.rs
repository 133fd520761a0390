//! The Flexprice dialect under `/flexprice/v1`: customers, subscriptions, the plan change with
//! preview and execute, and invoices, in Flexprice's field names and enums. Tally keeps one
//! contract through a plan change (a new phase), so the old and the new subscription of an
//! execution carry the same id.

use std::collections::BTreeMap;

use crate::extract::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_app::ids::new_id;
use tally_app::store::{Customer, Invoice, InvoiceFilter, InvoiceStatus, Page, Tenant};
use tally_core::prelude::*;

use super::{carried_selection, catalog, currency, instant, period_amount, plan, sum_kind, tz};
use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Params, RequestId};
use crate::native::actor;

type ApiResult<T = Response> = Result<T, ApiError>;

fn answer(status: StatusCode, v: Value) -> Response {
    (status, Json(v)).into_response()
}

/// Flexprice's billing periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingPeriod {
    /// Every day.
    Daily,
    /// Every week.
    Weekly,
    /// Every month.
    Monthly,
    /// Every three months.
    Quarterly,
    /// Every six months (not a Tally cycle: refused).
    HalfYearly,
    /// Every year.
    Annual,
    /// Once.
    Onetime,
}

/// `RECURRING` or `ONETIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingCadence {
    /// Every period.
    Recurring,
    /// Once.
    Onetime,
}

/// Where periods are anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    /// At the start date.
    Anniversary,
    /// At the calendar unit's start.
    Calendar,
}

/// Prorate or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProrationBehavior {
    /// Credit unused time, charge the rest of the period.
    CreateProrations,
    /// Nothing now; the new plan is billed from the next period.
    None,
}

/// When a plan change applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAt {
    /// Now.
    Immediate,
    /// At the end of the current period.
    EndOfPeriod,
}

/// The Tally cycle of a Flexprice billing period, cadence and count; `param` names the field.
fn cycle_of(
    period: BillingPeriod,
    cadence: BillingCadence,
    count: Option<i64>,
) -> Result<Cycle, ApiError> {
    let count = count.unwrap_or(1);
    if count < 1 {
        return Err(ApiError::unprocessable(
            "invalid_value",
            Some("billing_period_count"),
            "a count of 1 or more",
        ));
    }
    if cadence == BillingCadence::Onetime || period == BillingPeriod::Onetime {
        return Ok(Cycle::Once);
    }
    let cycle = match (period, count) {
        (BillingPeriod::Daily, 1) => Some(Cycle::Day),
        (BillingPeriod::Daily, 7) | (BillingPeriod::Weekly, 1) => Some(Cycle::Week),
        (BillingPeriod::Monthly, 1) => Some(Cycle::Month),
        (BillingPeriod::Monthly, 3) | (BillingPeriod::Quarterly, 1) => Some(Cycle::Quarter),
        (BillingPeriod::Monthly, 12)
        | (BillingPeriod::Quarterly, 4)
        | (BillingPeriod::HalfYearly, 2)
        | (BillingPeriod::Annual, 1) => Some(Cycle::Year),
        _ => None,
    };
    cycle.ok_or_else(|| {
        ApiError::unprocessable(
            "unsupported_billing_period",
            Some("billing_period"),
            "Tally bills per day, week, month, quarter or year: use one of DAILY, WEEKLY, MONTHLY, QUARTERLY, ANNUAL (or an equal count, e.g. MONTHLY x 3)",
        )
    })
}

/// Flexprice's name of a Tally cycle, with its cadence; `None` for cycles it cannot name.
fn period_name(c: Cycle) -> (Option<&'static str>, &'static str) {
    match c {
        Cycle::Day => (Some("DAILY"), "RECURRING"),
        Cycle::Week => (Some("WEEKLY"), "RECURRING"),
        Cycle::Month => (Some("MONTHLY"), "RECURRING"),
        Cycle::Quarter => (Some("QUARTERLY"), "RECURRING"),
        Cycle::Year => (Some("ANNUAL"), "RECURRING"),
        Cycle::Once => (Some("ONETIME"), "ONETIME"),
        _ => (None, "RECURRING"),
    }
}

fn status_name(c: &Contract) -> &'static str {
    match c.status {
        ContractStatus::Active if c.in_trial() => "trialing",
        ContractStatus::Active => "active",
        ContractStatus::Pending | ContractStatus::Scheduled => "draft",
        ContractStatus::Canceled => "cancelled",
    }
}

/// `calendar` when the contract (or else its tenant) aligns periods on calendar units.
fn cycle_name(c: &Contract, t: &Tenant) -> &'static str {
    match c.alignment.unwrap_or(t.settings.billing_alignment) {
        Alignment::Calendar => "calendar",
        Alignment::Anniversary => "anniversary",
    }
}

/// A Flexprice `SubscriptionResponse` of a contract.
pub fn subscription_json(c: &Contract, version: i64, t: &Tenant, catalog: &Catalog) -> Value {
    let (period, cadence) = period_name(c.config.cycle);
    let plan = catalog.plan(&c.config.plan_id);
    let line_items: Vec<Value> = c
        .config
        .features
        .values()
        .filter(|f| f.purchased)
        .map(|f| {
            let usage = f.kind == FeatureKind::Usage;
            json!({
                "id": format!("{}_{}", c.id, f.slug),
                "subscription_id": c.id,
                "customer_id": c.customer_id,
                "plan_id": c.config.plan_id,
                "plan_display_name": plan.map(|p| p.name.clone()),
                "price_id": f.slug,
                "display_name": catalog.feature(&f.slug).map_or(f.slug.clone(), |x| x.name.clone()),
                "price_type": if usage { "USAGE" } else { "FIXED" },
                "invoice_cadence": if usage || f.timing == Timing::InArrears { "ARREAR" } else { "ADVANCE" },
                "quantity": if f.kind == FeatureKind::PerUnit { f.quantity } else { Decimal::ONE },
                "amount": f.price.or(f.flat_fee),
                "currency": c.config.currency,
                "billing_period": period,
                "billing_period_count": 1,
            })
        })
        .collect();
    json!({
        "id": c.id,
        "customer_id": c.customer_id,
        "plan_id": c.config.plan_id,
        "plan": plan.map(|p| json!({ "id": p.id, "name": p.name, "lookup_key": p.slug })),
        "subscription_status": status_name(c),
        "status": "published",
        "currency": c.config.currency,
        "billing_anchor": c.schedule.map(|s| s.anchor),
        "billing_cycle": cycle_name(c, t),
        "billing_cadence": cadence,
        "billing_period": period,
        "billing_period_count": 1,
        "start_date": c.activation,
        "end_date": c.ended_at.or(c.cancel_at),
        "current_period_start": c.period.as_ref().map(|p| p.start),
        "current_period_end": c.period.as_ref().and_then(|p| p.end),
        "cancelled_at": c.ended_at,
        "cancel_at": c.cancel_at,
        "cancel_at_period_end": c.cancel_at_period_end,
        "trial_start": c.trial_end.and(c.activation),
        "trial_end": c.trial_end,
        "pause_status": "none",
        "version": version,
        "metadata": {},
        "created_at": c.created_at,
        "line_items": line_items,
    })
}

fn invoice_lines(d: &InvoiceDraft, invoice_id: Option<&str>) -> Vec<Value> {
    d.lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "id": invoice_id.map(|id| format!("{id}_{}", i + 1)),
                "invoice_id": invoice_id,
                "customer_id": d.customer_id,
                "subscription_id": d.contract_id,
                "entity_type": "plan",
                "price_id": l.feature_slug,
                "price_type": if l.kind == LineKind::Usage { "USAGE" } else { "FIXED" },
                "display_name": l.description,
                "amount": l.amount,
                "quantity": l.quantity,
                "unit_price": l.unit_amount,
                "currency": d.currency,
                "period_start": l.period_start,
                "period_end": l.period_end,
                "is_proration": matches!(l.kind, LineKind::ProrationCredit | LineKind::ProrationCharge),
                "metadata": { "kind": l.kind },
            })
        })
        .collect()
}

fn billing_reason(r: InvoiceReason) -> &'static str {
    match r {
        InvoiceReason::Signup => "SUBSCRIPTION_CREATE",
        InvoiceReason::Renewal => "SUBSCRIPTION_CYCLE",
        InvoiceReason::Change | InvoiceReason::Cancellation => "SUBSCRIPTION_UPDATE",
        InvoiceReason::Manual => "MANUAL",
    }
}

/// A Flexprice invoice of a stored invoice.
pub fn invoice_json(i: &Invoice) -> Value {
    let d = &i.draft;
    let discount = -sum_kind(d, LineKind::Discount);
    let subtotal = d.net + discount;
    let (status, payment, paid) = match i.status {
        InvoiceStatus::Open if d.amount_due.is_zero() => ("FINALIZED", "SUCCEEDED", Decimal::ZERO),
        InvoiceStatus::Open => ("FINALIZED", "PENDING", Decimal::ZERO),
        InvoiceStatus::Paid => ("FINALIZED", "SUCCEEDED", d.amount_due),
        InvoiceStatus::Void => ("VOIDED", "VOIDED", Decimal::ZERO),
    };
    let remaining = if i.status == InvoiceStatus::Open {
        d.amount_due
    } else {
        Decimal::ZERO
    };
    json!({
        "id": i.id,
        "customer_id": d.customer_id,
        "subscription_id": d.contract_id,
        "invoice_type": "SUBSCRIPTION",
        "invoice_status": status,
        "payment_status": payment,
        "currency": d.currency,
        "subtotal": subtotal,
        "total_discount": discount,
        "total_tax": d.tax,
        "total_prepaid_credits_applied": d.credit_applied,
        "total": d.gross,
        "amount_due": d.amount_due,
        "amount_paid": paid,
        "amount_remaining": remaining,
        "invoice_number": i.number,
        "issue_date": d.issued_at,
        "finalized_at": d.issued_at,
        "due_date": d.issued_at,
        "period_start": d.lines.iter().map(|l| l.period_start).min(),
        "period_end": d.lines.iter().map(|l| l.period_end).max(),
        "billing_reason": billing_reason(d.reason),
        "line_items": invoice_lines(d, Some(&i.id)),
        "metadata": {},
    })
}

fn customer_json(c: &Customer) -> Value {
    let address = c.address.clone().unwrap_or(Value::Null);
    let field = |k: &str| address.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "id": c.id,
        "external_id": c.slug,
        "name": c.name,
        "email": c.emails.get("main").cloned().unwrap_or(Value::Null),
        "address_line1": field("line1"),
        "address_line2": field("line2"),
        "address_city": field("city"),
        "address_state": field("state"),
        "address_postal_code": field("postal_code"),
        "address_country": field("country"),
        "metadata": c.metadata,
        "status": "published",
        "created_at": c.created_at,
    })
}

/// `POST /flexprice/v1/customers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    /// Your id for the customer; accepted wherever a customer id is.
    pub external_id: String,
    /// Name.
    pub name: String,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// Address, line 1.
    #[serde(default)]
    pub address_line1: Option<String>,
    /// Address, line 2.
    #[serde(default)]
    pub address_line2: Option<String>,
    /// City.
    #[serde(default)]
    pub address_city: Option<String>,
    /// State.
    #[serde(default)]
    pub address_state: Option<String>,
    /// Postal code.
    #[serde(default)]
    pub address_postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 country.
    #[serde(default)]
    pub address_country: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /flexprice/v1/customers`: creates a customer (201).
#[utoipa::path(post, path = "/customers", tag = "flexprice", request_body = CustomerBody, responses((status = 201, description = "The customer", body = CustomerDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The external id is taken", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn create_customer(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Body(b): Body<CustomerBody>,
) -> ApiResult {
    let external = b.external_id.trim();
    if external.is_empty() || b.name.trim().is_empty() {
        let param = if external.is_empty() {
            "external_id"
        } else {
            "name"
        };
        return Err(ApiError::unprocessable(
            "missing_field",
            Some(param),
            "a non-empty string",
        ));
    }
    if s.tally
        .store
        .customer(&t.id, external)
        .await
        .map_err(tally_app::AppError::from)?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            Some("external_id"),
            format!("a customer with external id `{external}` exists"),
        ));
    }
    let mut address = serde_json::Map::new();
    for (k, v) in [
        ("line1", b.address_line1),
        ("line2", b.address_line2),
        ("city", b.address_city),
        ("state", b.address_state),
        ("postal_code", b.address_postal_code),
        ("country", b.address_country),
    ] {
        if let Some(v) = v {
            address.insert(k.into(), Value::String(v));
        }
    }
    let c = Customer {
        id: new_id("Cust"),
        slug: Some(external.to_string()),
        name: Some(b.name),
        emails: b.email.map_or(json!({}), |e| json!({ "main": e })),
        customer_reference: Some(external.to_string()),
        address: (!address.is_empty()).then_some(Value::Object(address)),
        metadata: b.metadata,
        notes: None,
        tax_rate: None,
        created_at: s.tally.now(&t),
    };
    s.tally.save_customer(&t, &c, true, &actor(&rid)).await?;
    Ok(answer(StatusCode::CREATED, customer_json(&c)))
}

/// `GET /flexprice/v1/customers/{id}` (id or external id).
#[utoipa::path(get, path = "/customers/{id}", tag = "flexprice", params(("id" = String, Path, description = "Id or external id")), responses((status = 200, description = "The customer", body = CustomerDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn get_customer(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.customer(&t, &id, "id").await?;
    Ok(answer(StatusCode::OK, customer_json(&c)))
}

/// `POST /flexprice/v1/subscriptions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionBody {
    /// Customer id (wins over `external_customer_id`).
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Your id of the customer.
    #[serde(default)]
    pub external_customer_id: Option<String>,
    /// Plan id or slug (Flexprice's lookup key).
    pub plan_id: String,
    /// Three-letter currency, any case.
    pub currency: String,
    /// Billing period.
    pub billing_period: BillingPeriod,
    /// Periods per bill (default 1).
    #[serde(default)]
    pub billing_period_count: Option<i64>,
    /// `anniversary` (default) or `calendar`.
    #[serde(default)]
    pub billing_cycle: Option<BillingCycle>,
    /// Start (now when absent; in the past or the future).
    #[serde(default)]
    pub start_date: Option<String>,
    /// Free trial days.
    #[serde(default)]
    pub trial_period_days: Option<u32>,
    /// `draft` creates it pending, started later by hand; `active` (default) starts it.
    #[serde(default)]
    pub subscription_status: Option<String>,
    /// Coupon ids or codes; Tally applies one discount per contract.
    #[serde(default)]
    pub coupons: Vec<String>,
    /// Quantities per price (feature slug or id).
    #[serde(default)]
    pub override_line_items: Vec<LineItemOverride>,
    /// Accepted; the first calendar period is always prorated.
    #[serde(default)]
    pub proration_behavior: Option<ProrationBehavior>,
    /// Accepted; Tally does not collect payments.
    #[serde(default)]
    pub payment_behavior: Option<String>,
    /// Accepted; Tally does not collect payments.
    #[serde(default)]
    pub collection_method: Option<String>,
    /// Accepted; Tally does not collect payments.
    #[serde(default)]
    pub gateway_payment_method_id: Option<String>,
    /// Accepted; Tally does not collect payments.
    #[serde(default)]
    pub payment_terms: Option<String>,
}

/// A quantity for one price of the plan.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItemOverride {
    /// The feature slug or id the price is for.
    pub price_id: String,
    /// Units.
    #[schema(value_type = String)]
    pub quantity: Decimal,
}

/// `POST /flexprice/v1/subscriptions`: subscribes a customer (201).
#[utoipa::path(post, path = "/subscriptions", tag = "flexprice", request_body = CreateSubscriptionBody, responses((status = 201, description = "The subscription", body = SubscriptionDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Unknown customer, plan or coupon", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn create_subscription(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Body(b): Body<CreateSubscriptionBody>,
) -> ApiResult {
    let (customer_key, param) = match (&b.customer_id, &b.external_customer_id) {
        (Some(id), _) => (id.clone(), "customer_id"),
        (None, Some(ext)) => (ext.clone(), "external_customer_id"),
        (None, None) => {
            return Err(ApiError::unprocessable(
                "missing_field",
                Some("customer_id"),
                "send customer_id or external_customer_id",
            ));
        }
    };
    let customer = s.tally.customer(&t, &customer_key, param).await?;
    let cycle = cycle_of(
        b.billing_period,
        BillingCadence::Recurring,
        b.billing_period_count,
    )?;
    let currency = currency(&b.currency, "currency")?;
    let cat = catalog(&s, &t).await?;
    plan(&cat, &b.plan_id, "plan_id")?;
    if b.coupons.len() > 1 {
        return Err(ApiError::unprocessable(
            "one_discount_only",
            Some("coupons"),
            "Tally applies one discount per contract: send one coupon",
        ));
    }
    let mut unit_counts = BTreeMap::new();
    for (i, o) in b.override_line_items.iter().enumerate() {
        let f = cat.feature(&o.price_id).ok_or_else(|| {
            ApiError::not_found(
                "price",
                &format!("override_line_items[{i}].price_id"),
                &o.price_id,
            )
        })?;
        unit_counts.insert(f.slug.clone(), o.quantity);
    }
    let (activation, is_pending) = match b.subscription_status.as_deref() {
        None | Some("active") => (
            b.start_date
                .as_deref()
                .map(|d| instant(d, "start_date"))
                .transpose()?,
            false,
        ),
        Some("draft") => (None, true),
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_value",
                Some("subscription_status"),
                format!("`{other}`: only `active` or `draft` can be created"),
            ));
        }
    };
    let req = SignupRequest {
        contract_id: String::new(),
        customer_id: customer.id,
        selection: PlanSelection {
            plan: b.plan_id,
            pricing: None,
            currency: Some(currency),
            cycle: Some(cycle),
            unit_counts,
            overrides: BTreeMap::new(),
            discount: b.coupons.into_iter().next(),
        },
        activation,
        is_pending,
        free_trial_days: b.trial_period_days,
        alignment: b.billing_cycle.map(|c| match c {
            BillingCycle::Anniversary => Alignment::Anniversary,
            BillingCycle::Calendar => Alignment::Calendar,
        }),
    };
    let (c, _) = s.tally.subscribe(&t, req, &actor(&rid)).await?;
    Ok(answer(
        StatusCode::CREATED,
        subscription_json(&c, 1, &t, &cat),
    ))
}

/// `GET /flexprice/v1/subscriptions/{id}`.
#[utoipa::path(get, path = "/subscriptions/{id}", tag = "flexprice", params(("id" = String, Path, description = "Subscription id")), responses((status = 200, description = "The subscription", body = SubscriptionDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn get_subscription(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.contract(&t, &id).await?;
    let cat = catalog(&s, &t).await?;
    Ok(answer(
        StatusCode::OK,
        subscription_json(&c.contract, c.version, &t, &cat),
    ))
}

/// `SubscriptionChangeRequest`, the body of both preview and execute.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    /// The plan to move to (id or slug); must differ from the current one.
    pub target_plan_id: String,
    /// Prorate or not.
    pub proration_behavior: ProrationBehavior,
    /// `RECURRING` (or `ONETIME`).
    pub billing_cadence: BillingCadence,
    /// Billing period of the target plan.
    pub billing_period: BillingPeriod,
    /// Periods per bill (default 1).
    #[serde(default)]
    pub billing_period_count: Option<i64>,
    /// Accepted; the anchor is kept through a change (a new billing period re-anchors at the
    /// change).
    pub billing_cycle: BillingCycle,
    /// `immediate` (default) or `end_of_period`.
    #[serde(default)]
    pub change_at: Option<ChangeAt>,
    /// Echoed back.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The parts of a change both endpoints answer.
struct Planned {
    before: Contract,
    result: tally_app::ChangeResult,
    catalog: std::sync::Arc<Catalog>,
    change_type: &'static str,
}

async fn plan_change(
    s: &AppState,
    t: &Tenant,
    rid: &RequestId,
    id: &str,
    b: &ChangeBody,
    preview: bool,
) -> ApiResult<Planned> {
    let before = s.tally.contract(t, id).await?.contract;
    if !matches!(before.status, ContractStatus::Active) {
        return Err(ApiError::unprocessable(
            "subscription_not_active",
            Some("id"),
            format!(
                "only an active or trialing subscription can change plan; this one is {}",
                status_name(&before)
            ),
        ));
    }
    let cat = catalog(s, t).await?;
    let target = plan(&cat, &b.target_plan_id, "target_plan_id")?;
    if target.id == before.config.plan_id {
        return Err(ApiError::unprocessable(
            "same_plan",
            Some("target_plan_id"),
            "cannot change subscription to the same plan",
        ));
    }
    let cycle = cycle_of(b.billing_period, b.billing_cadence, b.billing_period_count)?;
    let now = s.tally.now(t);
    let activation = match b.change_at.unwrap_or(ChangeAt::Immediate) {
        ChangeAt::Immediate => Activation::Now,
        ChangeAt::EndOfPeriod => Activation::NextCycle,
    };
    let at = match activation {
        Activation::NextCycle => before.period.as_ref().and_then(|p| p.end).unwrap_or(now),
        _ => now,
    };
    let (unit_counts, overrides) = carried_selection(
        &cat,
        &before.config,
        &target.id,
        before.config.currency,
        cycle,
        at,
    );
    let req = ChangeRequest {
        change: ChangeKind::NewPlan {
            plan: target.id.clone(),
            pricing: None,
            currency: None,
            cycle: Some(cycle),
            unit_counts,
            overrides,
            discount: None,
        },
        activation,
        // Flexprice applies downgrades immediately too.
        downgrade_allowed: true,
        proration: match b.proration_behavior {
            ProrationBehavior::CreateProrations => Proration::CreateProrations,
            ProrationBehavior::None => Proration::None,
        },
        invoice_now: true,
    };
    let result = s.tally.change(t, id, &req, preview, &actor(rid)).await?;
    let o = &result.outcome;
    let change_type = if o.is_downgrade {
        "downgrade"
    } else if !o.scheduled
        && period_amount(&o.contract.config) == period_amount(&before.config)
        && o.contract.config.cycle == before.config.cycle
    {
        "lateral"
    } else {
        "upgrade"
    };
    Ok(Planned {
        before,
        result,
        catalog: cat,
        change_type,
    })
}

fn proration_details(p: &Planned, t: &Tenant) -> Value {
    let o = &p.result.outcome;
    let Some(inv) = o.invoice.as_ref() else {
        return Value::Null;
    };
    if o.scheduled || p.before.in_trial() {
        return Value::Null;
    }
    let credit = -sum_kind(inv, LineKind::ProrationCredit);
    let charge = sum_kind(inv, LineKind::ProrationCharge);
    let period = p.before.period.as_ref();
    let start = period.map(|x| x.start);
    let end = period.and_then(|x| x.end);
    let tz = tz(t);
    let days = |a: Timestamp, b: Timestamp| -> i64 {
        let a = a.to_zoned(tz.clone()).date();
        let b = b.to_zoned(tz.clone()).date();
        (b - a).get_days().into()
    };
    json!({
        "credit_amount": credit,
        "credit_description": format!("Credit for unused time on {}", p.before.config.plan_slug),
        "charge_amount": charge,
        "charge_description": format!("Charge for the rest of the period on {}", o.contract.config.plan_slug),
        "net_amount": charge - credit,
        "proration_date": o.effective_at,
        "current_period_start": start,
        "current_period_end": end,
        "days_used": start.map(|s| days(s, o.effective_at)),
        "days_remaining": end.map(|e| days(o.effective_at, e)),
        "currency": inv.currency,
    })
}

fn plan_summary(catalog: &Catalog, id: &str) -> Value {
    match catalog.plan(id) {
        Some(p) => json!({ "id": p.id, "name": p.name, "lookup_key": p.slug }),
        None => json!({ "id": id }),
    }
}

fn warnings(p: &Planned, b: &ChangeBody) -> Vec<&'static str> {
    let mut w = Vec::new();
    if p.change_type == "downgrade" {
        w.push("This is a downgrade: the customer may lose access to features");
    }
    if p.before.in_trial() {
        w.push("The subscription is in its trial: the change applies to what is billed when the trial ends");
    }
    if b.proration_behavior == ProrationBehavior::CreateProrations && !p.result.outcome.scheduled {
        w.push("Proration is applied on the change invoice");
    }
    w
}

fn new_billing_cycle(p: &Planned, t: &Tenant) -> Value {
    let c = &p.result.outcome.contract;
    let (period, cadence) = period_name(if p.result.outcome.scheduled {
        p.before.config.cycle
    } else {
        c.config.cycle
    });
    json!({
        "period_start": c.period.as_ref().map(|x| x.start),
        "period_end": c.period.as_ref().and_then(|x| x.end),
        "billing_anchor": c.schedule.map(|s| s.anchor),
        "billing_cadence": cadence,
        "billing_period": period,
        "billing_period_count": 1,
        "billing_cycle": cycle_name(c, t),
    })
}

/// `POST /flexprice/v1/subscriptions/{id}/change/preview`: what the change would do now; the
/// invoice shown is exactly the one `execute` issues at the same instant.
#[utoipa::path(post, path = "/subscriptions/{id}/change/preview", tag = "flexprice", params(("id" = String, Path, description = "Subscription id")), request_body = ChangeBody, responses((status = 200, description = "SubscriptionChangePreviewResponse", body = ChangePreviewDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn change_preview(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    Body(b): Body<ChangeBody>,
) -> ApiResult {
    let p = plan_change(&s, &t, &rid, &id, &b, true).await?;
    let o = &p.result.outcome;
    let preview = o.invoice.as_ref().map(|d| {
        json!({
            "subtotal": d.net,
            "tax_amount": d.tax,
            "total": d.gross,
            "amount_due": d.amount_due,
            "credit_applied": d.credit_applied,
            "currency": d.currency,
            "line_items": invoice_lines(d, None),
            "due_date": d.issued_at,
        })
    });
    Ok(answer(
        StatusCode::OK,
        json!({
            "subscription_id": p.before.id,
            "current_plan": plan_summary(&p.catalog, &p.before.config.plan_id),
            "target_plan": plan_summary(&p.catalog, &b.target_plan_id),
            "change_type": p.change_type,
            "proration_details": proration_details(&p, &t),
            "next_invoice_preview": preview,
            "effective_date": o.effective_at,
            "is_scheduled": o.scheduled,
            "new_billing_cycle": new_billing_cycle(&p, &t),
            "warnings": warnings(&p, &b),
            "metadata": b.metadata,
        }),
    ))
}

fn subscription_brief(c: &Contract, status: &str) -> Value {
    json!({
        "id": c.id,
        "status": status,
        "plan_id": c.config.plan_id,
        "current_period_start": c.period.as_ref().map(|p| p.start),
        "current_period_end": c.period.as_ref().and_then(|p| p.end),
        "billing_anchor": c.schedule.map(|s| s.anchor),
        "created_at": c.created_at,
    })
}

/// `POST /flexprice/v1/subscriptions/{id}/change/execute`: applies the change (or schedules it
/// for the period end) and answers the invoice it issued.
#[utoipa::path(post, path = "/subscriptions/{id}/change/execute", tag = "flexprice", params(("id" = String, Path, description = "Subscription id")), request_body = ChangeBody, responses((status = 200, description = "SubscriptionChangeExecuteResponse", body = ChangeExecutedDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn change_execute(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    Body(b): Body<ChangeBody>,
) -> ApiResult {
    let p = plan_change(&s, &t, &rid, &id, &b, false).await?;
    let o = &p.result.outcome;
    let details = proration_details(&p, &t);
    let applied = if b.proration_behavior == ProrationBehavior::CreateProrations {
        details
    } else {
        Value::Null
    };
    Ok(answer(
        StatusCode::OK,
        json!({
            "is_scheduled": o.scheduled,
            "schedule_id": o.scheduled_change_id,
            "scheduled_at": o.scheduled.then_some(o.effective_at),
            "old_subscription": subscription_brief(&p.before, if o.scheduled { "active" } else { "archived" }),
            "new_subscription": subscription_brief(&o.contract, status_name(&o.contract)),
            "change_type": p.change_type,
            "invoice": p.result.invoice.as_ref().map(invoice_json),
            "proration_applied": applied,
            "effective_date": o.effective_at,
            "metadata": b.metadata,
        }),
    ))
}

/// Query of `GET /flexprice/v1/invoices`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// Only this subscription's.
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// Only this customer's (id or external id).
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Rows (default 50, at most 1000).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Rows to skip.
    #[serde(default)]
    pub offset: Option<u64>,
}

/// `GET /flexprice/v1/invoices`: `{items, pagination: {total, limit, offset}}`.
#[utoipa::path(get, path = "/invoices", tag = "flexprice", params(InvoiceQuery), responses((status = 200, description = "A page of invoices", body = InvoicePageDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Unknown customer or subscription", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn list_invoices(
    State(s): State<AppState>,
    Auth(t): Auth,
    Params(q): Params<InvoiceQuery>,
) -> ApiResult {
    let customer_id = match &q.customer_id {
        Some(c) => Some(s.tally.customer(&t, c, "customer_id").await?.id),
        None => None,
    };
    let contract_id = match &q.subscription_id {
        Some(id) => Some(s.tally.contract(&t, id).await?.contract.id),
        None => None,
    };
    let page = Page {
        offset: q.offset.unwrap_or(0),
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
    };
    let (rows, total) = s
        .tally
        .store
        .invoices(
            &t.id,
            &InvoiceFilter {
                customer_id,
                contract_id,
                ..Default::default()
            },
            &page,
        )
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(answer(
        StatusCode::OK,
        json!({
            "items": rows.iter().map(invoice_json).collect::<Vec<_>>(),
            "pagination": { "total": total, "limit": page.limit, "offset": page.offset },
        }),
    ))
}

/// `GET /flexprice/v1/invoices/{id}`.
#[utoipa::path(get, path = "/invoices/{id}", tag = "flexprice", params(("id" = String, Path, description = "Invoice id")), responses((status = 200, description = "The invoice", body = InvoiceDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn get_invoice(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let inv = s
        .tally
        .store
        .invoice(&t.id, &id)
        .await
        .map_err(tally_app::AppError::from)?
        .ok_or_else(|| ApiError::not_found("invoice", "id", &id))?;
    Ok(answer(StatusCode::OK, invoice_json(&inv)))
}

// The documented shapes of the answers above (the OpenAPI document's; the end-to-end tests hold
// every answer to them).

/// A plan as a subscription or a change names it.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpricePlanRef)]
#[allow(dead_code)]
pub struct PlanRefDoc {
    /// The plan's id.
    id: String,
    /// Its name (absent for a plan no longer in the catalog).
    #[schema(required = false)]
    name: String,
    /// Its slug.
    #[schema(required = false)]
    lookup_key: String,
}

/// One priced feature of a subscription.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceSubscriptionLineItem)]
#[allow(dead_code)]
pub struct SubscriptionLineItemDoc {
    /// `<subscription id>_<feature slug>`.
    id: String,
    /// The subscription.
    subscription_id: String,
    /// Its customer.
    customer_id: String,
    /// Its plan.
    plan_id: String,
    /// The plan's name.
    plan_display_name: Option<String>,
    /// The feature's slug.
    price_id: String,
    /// The feature's name.
    display_name: String,
    /// `FIXED` or `USAGE`.
    price_type: String,
    /// `ADVANCE` or `ARREAR`.
    invoice_cadence: String,
    /// Units (1 for a flat fee or usage).
    quantity: String,
    /// Price per unit, or the flat fee.
    amount: Option<String>,
    /// Currency.
    currency: String,
    /// Flexprice's billing period.
    billing_period: Option<String>,
    /// Always 1.
    billing_period_count: i64,
}

/// Flexprice's `SubscriptionResponse`.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceSubscription)]
#[allow(dead_code)]
pub struct SubscriptionDoc {
    /// The contract's id.
    id: String,
    /// Its customer.
    customer_id: String,
    /// Its plan.
    plan_id: String,
    /// The plan.
    plan: Option<PlanRefDoc>,
    /// `trialing`, `active`, `cancelled`, `incomplete` or `paused`.
    subscription_status: String,
    /// Always `published`.
    status: String,
    /// Currency.
    currency: String,
    /// Boundary 0 of its billing periods.
    #[schema(format = DateTime)]
    billing_anchor: Option<String>,
    /// `anniversary` or `calendar`.
    billing_cycle: String,
    /// `RECURRING` or `ONETIME`.
    billing_cadence: String,
    /// `DAILY` ... `ANNUAL`.
    billing_period: Option<String>,
    /// Always 1.
    billing_period_count: i64,
    /// Activation.
    #[schema(format = DateTime)]
    start_date: Option<String>,
    /// When it ended or will end.
    #[schema(format = DateTime)]
    end_date: Option<String>,
    /// The current period's start.
    #[schema(format = DateTime)]
    current_period_start: Option<String>,
    /// The current period's end.
    #[schema(format = DateTime)]
    current_period_end: Option<String>,
    /// When it ended.
    #[schema(format = DateTime)]
    cancelled_at: Option<String>,
    /// A scheduled cancellation.
    #[schema(format = DateTime)]
    cancel_at: Option<String>,
    /// Cancels at the end of the period.
    cancel_at_period_end: bool,
    /// The trial's start.
    #[schema(format = DateTime)]
    trial_start: Option<String>,
    /// The trial's end.
    #[schema(format = DateTime)]
    trial_end: Option<String>,
    /// Always `none`.
    pause_status: String,
    /// The contract's version.
    version: i64,
    /// Always empty.
    metadata: BTreeMap<String, String>,
    /// Creation.
    #[schema(format = DateTime)]
    created_at: String,
    /// Its priced features.
    line_items: Vec<SubscriptionLineItemDoc>,
}

/// An invoice line in Flexprice's words.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceInvoiceLineItem)]
#[allow(dead_code)]
pub struct InvoiceLineItemDoc {
    /// `<invoice id>_<n>` (none in a preview).
    id: Option<String>,
    /// The invoice (none in a preview).
    invoice_id: Option<String>,
    /// The customer.
    customer_id: String,
    /// The subscription.
    subscription_id: String,
    /// Always `plan`.
    entity_type: String,
    /// The feature's slug.
    price_id: Option<String>,
    /// `FIXED` or `USAGE`.
    price_type: String,
    /// The line's words.
    display_name: String,
    /// Amount.
    amount: String,
    /// Units.
    quantity: String,
    /// Price per unit.
    unit_price: String,
    /// Currency.
    currency: String,
    /// Start of the time billed.
    #[schema(format = DateTime)]
    period_start: String,
    /// End of the time billed.
    #[schema(format = DateTime)]
    period_end: String,
    /// A proration credit or charge.
    is_proration: bool,
    /// `{kind}`: Tally's line kind.
    metadata: BTreeMap<String, String>,
}

/// Flexprice's `InvoiceResponse`.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceInvoice)]
#[allow(dead_code)]
pub struct InvoiceDoc {
    /// `Inv_<uuid>`.
    id: String,
    /// The customer.
    customer_id: String,
    /// The subscription.
    subscription_id: String,
    /// Always `SUBSCRIPTION`.
    invoice_type: String,
    /// `FINALIZED` or `VOIDED`.
    invoice_status: String,
    /// `PENDING`, `SUCCEEDED` or `VOIDED`.
    payment_status: String,
    /// Currency.
    currency: String,
    /// Before discounts and tax.
    subtotal: String,
    /// Discounts.
    total_discount: String,
    /// Tax.
    total_tax: String,
    /// Credit balance applied.
    total_prepaid_credits_applied: String,
    /// Net + tax.
    total: String,
    /// What the customer owes.
    amount_due: String,
    /// Paid.
    amount_paid: String,
    /// Still owed.
    amount_remaining: String,
    /// Gapless per tenant.
    invoice_number: String,
    /// Issued.
    #[schema(format = DateTime)]
    issue_date: String,
    /// Finalized (when issued).
    #[schema(format = DateTime)]
    finalized_at: String,
    /// Due (when issued).
    #[schema(format = DateTime)]
    due_date: String,
    /// Earliest line start.
    #[schema(format = DateTime)]
    period_start: Option<String>,
    /// Latest line end.
    #[schema(format = DateTime)]
    period_end: Option<String>,
    /// `SUBSCRIPTION_CREATE`, `SUBSCRIPTION_CYCLE`, `SUBSCRIPTION_UPDATE` or `MANUAL`.
    billing_reason: String,
    /// Lines.
    line_items: Vec<InvoiceLineItemDoc>,
    /// Always empty.
    metadata: BTreeMap<String, String>,
}

/// Flexprice's `CustomerResponse`.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceCustomer)]
#[allow(dead_code)]
pub struct CustomerDoc {
    /// `Cust_<uuid>`.
    id: String,
    /// Your id for the customer.
    external_id: Option<String>,
    /// Name.
    name: Option<String>,
    /// Email.
    email: Option<String>,
    /// Address, line 1.
    address_line1: Option<String>,
    /// Address, line 2.
    address_line2: Option<String>,
    /// City.
    address_city: Option<String>,
    /// State.
    address_state: Option<String>,
    /// Postal code.
    address_postal_code: Option<String>,
    /// Country.
    address_country: Option<String>,
    /// Metadata.
    metadata: BTreeMap<String, String>,
    /// Always `published`.
    status: String,
    /// Creation.
    #[schema(format = DateTime)]
    created_at: String,
}

/// What a plan change credits and charges for the rest of the period.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceProrationDetails)]
#[allow(dead_code)]
pub struct ProrationDetailsDoc {
    /// Credit for the unused time on the old plan.
    credit_amount: String,
    /// Its words.
    credit_description: String,
    /// Charge for the rest of the period on the new plan.
    charge_amount: String,
    /// Its words.
    charge_description: String,
    /// Charge - credit.
    net_amount: String,
    /// The change's instant.
    #[schema(format = DateTime)]
    proration_date: String,
    /// The period's start.
    #[schema(format = DateTime)]
    current_period_start: Option<String>,
    /// The period's end.
    #[schema(format = DateTime)]
    current_period_end: Option<String>,
    /// Days from the period's start to the change.
    days_used: Option<i64>,
    /// Days from the change to the period's end.
    days_remaining: Option<i64>,
    /// Currency.
    currency: String,
}

/// The invoice a change would issue.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceInvoicePreview)]
#[allow(dead_code)]
pub struct InvoicePreviewDoc {
    /// Net.
    subtotal: String,
    /// Tax.
    tax_amount: String,
    /// Net + tax.
    total: String,
    /// What the customer would owe.
    amount_due: String,
    /// Credit balance it would apply.
    credit_applied: String,
    /// Currency.
    currency: String,
    /// Lines.
    line_items: Vec<InvoiceLineItemDoc>,
    /// Its date.
    #[schema(format = DateTime)]
    due_date: String,
}

/// The billing cycle after a change.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceBillingCycle)]
#[allow(dead_code)]
pub struct BillingCycleDoc {
    /// The period's start.
    #[schema(format = DateTime)]
    period_start: Option<String>,
    /// The period's end.
    #[schema(format = DateTime)]
    period_end: Option<String>,
    /// Boundary 0.
    #[schema(format = DateTime)]
    billing_anchor: Option<String>,
    /// `RECURRING` or `ONETIME`.
    billing_cadence: String,
    /// `DAILY` ... `ANNUAL`.
    billing_period: Option<String>,
    /// Always 1.
    billing_period_count: i64,
    /// `anniversary` or `calendar`.
    billing_cycle: String,
}

/// Flexprice's `SubscriptionChangePreviewResponse`.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceChangePreview)]
#[allow(dead_code)]
pub struct ChangePreviewDoc {
    /// The subscription.
    subscription_id: String,
    /// Its plan now.
    current_plan: PlanRefDoc,
    /// The plan asked for.
    target_plan: PlanRefDoc,
    /// `upgrade`, `downgrade` or `lateral`.
    change_type: String,
    /// Credit and charge for the rest of the period (none when scheduled or in a trial).
    proration_details: Option<ProrationDetailsDoc>,
    /// The invoice the change would issue now.
    next_invoice_preview: Option<InvoicePreviewDoc>,
    /// When it takes effect.
    #[schema(format = DateTime)]
    effective_date: String,
    /// Scheduled for the period's end.
    is_scheduled: bool,
    /// The billing cycle after it.
    new_billing_cycle: BillingCycleDoc,
    /// What to tell the customer.
    warnings: Vec<String>,
    /// Echoed from the request.
    metadata: BTreeMap<String, String>,
}

/// A subscription before or after a change.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceSubscriptionBrief)]
#[allow(dead_code)]
pub struct SubscriptionBriefDoc {
    /// The contract's id (the same before and after).
    id: String,
    /// `archived` (the old one of an applied change), `active` ...
    status: String,
    /// Its plan.
    plan_id: String,
    /// The period's start.
    #[schema(format = DateTime)]
    current_period_start: Option<String>,
    /// The period's end.
    #[schema(format = DateTime)]
    current_period_end: Option<String>,
    /// Boundary 0.
    #[schema(format = DateTime)]
    billing_anchor: Option<String>,
    /// Creation.
    #[schema(format = DateTime)]
    created_at: String,
}

/// Flexprice's `SubscriptionChangeExecuteResponse`.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceChangeExecuted)]
#[allow(dead_code)]
pub struct ChangeExecutedDoc {
    /// Scheduled for the period's end.
    is_scheduled: bool,
    /// The scheduled change's id.
    schedule_id: Option<String>,
    /// When the scheduled change applies.
    #[schema(format = DateTime)]
    scheduled_at: Option<String>,
    /// Before.
    old_subscription: SubscriptionBriefDoc,
    /// After.
    new_subscription: SubscriptionBriefDoc,
    /// `upgrade`, `downgrade` or `lateral`.
    change_type: String,
    /// The invoice issued now.
    invoice: Option<InvoiceDoc>,
    /// Credit and charge applied (with `create_prorations`).
    proration_applied: Option<ProrationDetailsDoc>,
    /// When it takes effect.
    #[schema(format = DateTime)]
    effective_date: String,
    /// Echoed from the request.
    metadata: BTreeMap<String, String>,
}

/// Paging of a Flexprice list.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpricePagination)]
#[allow(dead_code)]
pub struct PaginationDoc {
    /// Rows in all.
    total: u64,
    /// Rows asked for.
    limit: u64,
    /// Rows skipped.
    offset: u64,
}

/// A page of invoices.
#[derive(utoipa::ToSchema)]
#[schema(as = FlexpriceInvoicePage)]
#[allow(dead_code)]
pub struct InvoicePageDoc {
    /// The invoices.
    items: Vec<InvoiceDoc>,
    /// Paging.
    pagination: PaginationDoc,
}
