//! The native API handlers (`/v1/c/...`): customers, contracts and their changes, usage,
//! invoices, catalog and the test clock. Each handler parses, calls one use case, and renders.

use crate::extract::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_app::Actor;
use tally_app::catalog_file::CatalogFile;
use tally_app::ids::new_id;
use tally_app::store::{Customer, InvoiceFilter, InvoiceStatus};
use tally_core::prelude::*;

use crate::AppState;
use crate::dialects::sum_kind;
use crate::dto::*;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Params, RequestId};

type ApiResult<T = Response> = Result<T, ApiError>;

/// The actor of an API request.
pub(crate) fn actor(rid: &RequestId) -> Actor {
    Actor {
        name: "api".into(),
        request_id: Some(rid.0.clone()),
    }
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

/// `POST /v1/c/customer`: create, or update when `id` is set; answers the id.
#[utoipa::path(post, path = "/customer", tag = "customer",  request_body = CustomerBody, responses((status = 200, description = "The customer id", body = String, content_type = "application/json"), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn save_customer(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Body(b): Body<CustomerBody>,
) -> ApiResult {
    let now = s.tally.now(&t);
    let mut c = match &b.id {
        Some(id) => s.tally.customer(&t, id, "id").await?,
        None => Customer {
            id: new_id("Cust"),
            slug: None,
            name: None,
            emails: json!({}),
            customer_reference: None,
            address: None,
            metadata: Default::default(),
            notes: None,
            tax_rate: None,
            created_at: now,
        },
    };
    if let Some(v) = b.name {
        c.name = Some(v);
    }
    if let Some(v) = b.emails {
        c.emails = Value::Object(v);
    }
    if let Some(v) = b.customer_reference {
        c.customer_reference = Some(v);
    }
    if let Some(v) = b.address {
        c.address = Some(Value::Object(v));
    }
    if let Some(v) = b.metadata {
        c.metadata = v.into_iter().filter(|(k, _)| !k.starts_with('_')).collect();
    }
    if let Some(v) = b.notes {
        c.notes = Some(v);
    }
    if let Some(td) = b.tax_details {
        if let Some(r) = td.tax_rate
            && (r < Decimal::ZERO || r > Decimal::ONE_HUNDRED)
        {
            return Err(ApiError::unprocessable(
                "invalid_value",
                Some("tax_details.tax_rate"),
                "a percentage from 0 to 100",
            ));
        }
        c.tax_rate = td.tax_rate;
    }
    s.tally
        .save_customer(&t, &c, b.id.is_none(), &actor(&rid))
        .await?;
    Ok(ok(json!(c.id)))
}

/// `GET /v1/c/customer/{id}` with its contracts.
#[utoipa::path(get, path = "/customer/{id}", tag = "customer", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "The customer with its contracts", body = CustomerDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_customer(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.customer(&t, &id, "customer_id").await?;
    let (contracts, _) = s
        .tally
        .store
        .contracts(
            &t.id,
            Some(&c.id),
            &tally_app::store::Page {
                offset: 0,
                limit: 1000,
            },
        )
        .await
        .map_err(tally_app::AppError::from)?;
    let catalog = s
        .tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?;
    let views = contracts
        .iter()
        .map(|sc| contract_json(&sc.contract, &catalog)["contract_summary"].clone())
        .collect();
    Ok(ok(customer_json(&c, views)))
}

/// `GET /v1/c/customer/{id}/balance`: one entry per currency.
#[utoipa::path(get, path = "/customer/{id}/balance", tag = "customer", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "Credit balance and amount due per currency", body = Vec<Object>), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_balance(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.customer(&t, &id, "customer_id").await?;
    let balances = s
        .tally
        .store
        .balances(&t.id, &c.id)
        .await
        .map_err(tally_app::AppError::from)?;
    let (invoices, _) = s
        .tally
        .store
        .invoices(
            &t.id,
            &InvoiceFilter {
                customer_id: Some(c.id.clone()),
                ..Default::default()
            },
            &tally_app::store::Page {
                offset: 0,
                limit: u64::MAX,
            },
        )
        .await
        .map_err(tally_app::AppError::from)?;
    let mut currencies: std::collections::BTreeSet<Currency> = balances.keys().copied().collect();
    currencies.extend(invoices.iter().map(|i| i.draft.currency));
    let out: Vec<Value> = currencies
        .into_iter()
        .map(|cur| {
            let due: Decimal = invoices
                .iter()
                .filter(|i| i.draft.currency == cur && i.status == InvoiceStatus::Open)
                .map(|i| i.draft.amount_due)
                .sum();
            json!({
                "wb_customer_id": t.id,
                "customer_id": c.id,
                "currency": cur,
                "credit_balance": tally_core::money::normalize(balances.get(&cur).copied().unwrap_or_default(), cur),
                "total_invoices_ready_for_payment": tally_core::money::normalize(due, cur),
            })
        })
        .collect();
    Ok(ok(Value::Array(out)))
}

/// `POST /v1/c/contract` (seed 004): answers the new contract's id.
#[utoipa::path(post, path = "/contract", tag = "contract",  request_body = SignupBody, responses((status = 200, description = "The new contract id", body = String, content_type = "application/json"), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn create_contract(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Body(b): Body<SignupBody>,
) -> ApiResult {
    if let Some(trigger) = &b.invoice_trigger
        && trigger != &json!("immediate")
    {
        return Err(ApiError::unprocessable(
            "unsupported_invoice_trigger",
            Some("invoice_trigger"),
            "Tally invoices each billing step as it happens: only `immediate` is accepted",
        ));
    }
    let activation = optional_instant(&b.activation, "activation")?;
    let req = SignupRequest {
        contract_id: String::new(),
        customer_id: b.customer,
        selection: PlanSelection {
            plan: b.plan,
            pricing: b.pricing_id,
            currency: Some(b.currency),
            cycle: Some(b.cycle),
            unit_counts: b.unit_count_configuration,
            overrides: b.feature_configuration,
            discount: b.discount_id,
        },
        activation,
        is_pending: b.is_pending,
        free_trial_days: b.free_trial_days,
        alignment: None,
    };
    let (c, _) = s.tally.subscribe(&t, req, &actor(&rid)).await?;
    Ok(ok(json!(c.id)))
}

/// The page a list's `limit`, `offset` and `direction` ask for.
fn page_of(
    limit: Option<u64>,
    offset: &Option<String>,
    direction: &Option<String>,
) -> ApiResult<tally_app::store::Page> {
    PageQuery {
        limit,
        offset: offset.clone(),
        direction: direction.clone(),
    }
    .page()
}

/// The id of the customer a list is filtered by (given by id or slug), if any.
async fn customer_filter(
    s: &AppState,
    t: &tally_app::store::Tenant,
    customer: &Option<String>,
) -> ApiResult<Option<String>> {
    match customer {
        Some(c) => Ok(Some(s.tally.customer(t, c, "customer").await?.id)),
        None => Ok(None),
    }
}

/// Query of `GET /v1/c/contract`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContractListQuery {
    /// Only this customer's (id or slug).
    #[serde(default)]
    pub customer: Option<String>,
    /// Rows per page (default 20, at most 100).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Cursor from a previous page.
    #[serde(default)]
    pub offset: Option<String>,
    /// `forward` (default) or `backward`.
    #[serde(default)]
    pub direction: Option<String>,
}

/// `GET /v1/c/contract`: contracts, paged.
#[utoipa::path(get, path = "/contract", tag = "contract", params(ContractListQuery),  responses((status = 200, description = "A page of contracts", body = ContractPageDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn list_contracts(
    State(s): State<AppState>,
    Auth(t): Auth,
    Params(q): Params<ContractListQuery>,
) -> ApiResult {
    let page = page_of(q.limit, &q.offset, &q.direction)?;
    let customer = customer_filter(&s, &t, &q.customer).await?;
    let (rows, total) = s
        .tally
        .store
        .contracts(&t.id, customer.as_deref(), &page)
        .await
        .map_err(tally_app::AppError::from)?;
    let catalog = s
        .tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?;
    let hits = rows
        .iter()
        .map(|r| contract_json(&r.contract, &catalog))
        .collect();
    Ok(ok(page_json(hits, &page, total)))
}

/// `GET /v1/c/contract/{id}`.
#[utoipa::path(get, path = "/contract/{id}", tag = "contract", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "The contract, its current period, phases and scheduled changes", body = ContractView), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_contract(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.contract(&t, &id).await?;
    let catalog = s
        .tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(Json(ContractView::new(&c.contract, &catalog)).into_response())
}

/// `POST /v1/c/contract/{id}/upgrade` (seed 000): answers the id of the contract in force.
#[utoipa::path(post, path = "/contract/{id}/upgrade", tag = "contract", params(("id" = String, Path, description = "Id (or slug)")), request_body = UpgradeBody, responses((status = 200, description = "The id of the contract in force after the change", body = String, content_type = "application/json"), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn upgrade(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    Body(b): Body<UpgradeBody>,
) -> ApiResult {
    let req = b.to_request();
    let r = s.tally.change(&t, &id, &req, false, &actor(&rid)).await?;
    Ok(ok(json!(r.outcome.contract.id)))
}

/// Wingback's invoice preview: the invoice head and its items.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WingbackPreview<'a> {
    /// The invoice the change would issue.
    pub invoice: WingbackInvoiceHead<'a>,
    /// Its lines.
    pub invoice_items: Vec<WingbackItem<'a>>,
}

/// The head of Wingback's invoice preview.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WingbackInvoiceHead<'a> {
    /// Currency.
    #[schema(value_type = String)]
    pub currency: Currency,
    /// Customer id.
    pub customer_id: &'a str,
    /// Date of issue.
    #[schema(value_type = String, format = DateTime)]
    pub date: jiff::Timestamp,
    /// Always `pending_validation`: a preview is not issued.
    pub status: &'static str,
    /// Total with tax.
    #[schema(value_type = String)]
    pub total: Decimal,
}

/// One line of Wingback's invoice preview.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WingbackItem<'a> {
    /// Currency.
    #[schema(value_type = String)]
    pub currency: Currency,
    /// What the line is for.
    pub description: &'a str,
    /// Feature slug (none on a discount or credit line).
    pub name: Option<&'a str>,
    /// Amount before tax.
    #[schema(value_type = String)]
    pub subtotal: Decimal,
    /// Amount before tax (the same).
    #[schema(value_type = String)]
    pub total_excluding_tax: Decimal,
    /// Units.
    #[schema(value_type = String)]
    pub unit_count: Decimal,
    /// Price per unit.
    #[schema(value_type = String)]
    pub unit_price: Decimal,
}

impl<'a> WingbackPreview<'a> {
    fn of(d: &'a InvoiceDraft) -> Self {
        WingbackPreview {
            invoice: WingbackInvoiceHead {
                currency: d.currency,
                customer_id: &d.customer_id,
                date: d.issued_at,
                status: "pending_validation",
                total: d.gross,
            },
            invoice_items: d
                .lines
                .iter()
                .map(|l| WingbackItem {
                    currency: d.currency,
                    description: &l.description,
                    name: l.feature_slug.as_deref(),
                    subtotal: l.amount,
                    total_excluding_tax: l.amount,
                    unit_count: l.quantity,
                    unit_price: l.unit_amount,
                })
                .collect(),
        }
    }
}

/// `POST /v1/c/contract/{id}/upgrade_estimate`: the same body; changes nothing; the invoice it
/// shows is exactly what the upgrade would issue at the same instant.
#[utoipa::path(post, path = "/contract/{id}/upgrade_estimate", tag = "contract", params(("id" = String, Path, description = "Id (or slug)")), request_body = UpgradeBody, responses((status = 200, description = "What the upgrade would do now, including the exact invoice", body = EstimateView), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn upgrade_estimate(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    Body(b): Body<UpgradeBody>,
) -> ApiResult {
    let req = b.to_request();
    let r = s.tally.change(&t, &id, &req, true, &actor(&rid)).await?;
    let o = &r.outcome;
    let period = if o.scheduled {
        let schedule = o.contract.schedule;
        schedule.and_then(|sch| {
            let tz = tally_core::calendar::time_zone(&t.settings.time_zone).ok()?;
            let p = sch.period_containing(o.effective_at, &tz).ok()?;
            Some(PeriodView {
                start: o.effective_at,
                end: Some(p.end),
            })
        })
    } else {
        Some(PeriodView {
            start: o.effective_at,
            end: o.contract.period.as_ref().and_then(|p| p.end),
        })
    };
    let inv = o.invoice.as_ref();
    Ok(Json(EstimateView {
        is_downgrade: o.is_downgrade,
        new_contract_period: period,
        price_on_new_contract: inv.map(WingbackPreview::of).into_iter().collect(),
        remains_to_pay_current_contract: Vec::new(),
        pro_rate_new_contract: inv
            .map_or(Decimal::ZERO, |i| sum_kind(i, LineKind::ProrationCharge)),
        pro_rate_old_contract: inv
            .map_or(Decimal::ZERO, |i| sum_kind(i, LineKind::ProrationCredit)),
        invoice: inv,
        effective_at: o.effective_at,
        scheduled: o.scheduled,
        contract: ContractView::new(&o.contract, &r.catalog),
    })
    .into_response())
}

/// What `upgrade_estimate` answers: Wingback's estimate fields, then the exact invoice the
/// upgrade would issue now, when it takes effect, and the contract as it would be.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EstimateView<'a> {
    /// True when the change lowers the recurring price per unit of time.
    pub is_downgrade: bool,
    /// The period the new configuration starts in, or null.
    pub new_contract_period: Option<PeriodView>,
    /// Wingback's invoice preview, one entry when one is issued.
    pub price_on_new_contract: Vec<WingbackPreview<'a>>,
    /// Always empty: the change's invoice settles the current contract.
    #[schema(value_type = Vec<Object>)]
    pub remains_to_pay_current_contract: Vec<Value>,
    /// Sum of the proration charges.
    #[schema(value_type = String)]
    pub pro_rate_new_contract: Decimal,
    /// Sum of the proration credits (negative).
    #[schema(value_type = String)]
    pub pro_rate_old_contract: Decimal,
    /// The invoice the upgrade would issue now, exactly.
    #[schema(value_type = Option<Object>)]
    pub invoice: Option<&'a InvoiceDraft>,
    /// When the change takes effect.
    #[schema(value_type = String, format = DateTime)]
    pub effective_at: jiff::Timestamp,
    /// True when it waits in the timeline.
    pub scheduled: bool,
    /// The contract as it would be after the change.
    pub contract: ContractView<'a>,
}

/// `POST /v1/c/contract/{id}/activate`: starts a pending contract now.
#[utoipa::path(post, path = "/contract/{id}/activate", tag = "contract", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "The activated contract and its invoices", body = ActivatedDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn activate_contract(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
) -> ApiResult {
    let (c, invoices) = s.tally.activate(&t, &id, &actor(&rid)).await?;
    let catalog = s
        .tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(ok(json!({
        "contract": contract_json(&c, &catalog),
        "invoices": invoices.iter().map(invoice_json).collect::<Vec<_>>(),
    })))
}

/// `POST /v1/c/contract/{id}/cancel`: now, at period end, or at a date.
#[utoipa::path(post, path = "/contract/{id}/cancel", tag = "contract", params(("id" = String, Path, description = "Id (or slug)")), request_body = CancelBody, responses((status = 200, description = "The contract and its cancellation invoice", body = CanceledDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn cancel_contract(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    Body(b): Body<CancelBody>,
) -> ApiResult {
    let mode = match (b.mode, b.date) {
        (CancelModeBody::Now, None) => CancelMode::Now,
        (CancelModeBody::AtPeriodEnd, None) => CancelMode::AtPeriodEnd,
        (CancelModeBody::Date, Some(d)) => CancelMode::At(d),
        (CancelModeBody::Date, None) => {
            return Err(ApiError::unprocessable(
                "missing_field",
                Some("date"),
                "mode `date` needs a date",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_value",
                Some("date"),
                "a date is only for mode `date`",
            ));
        }
    };
    let (c, invoice) = s.tally.cancel(&t, &id, mode, &actor(&rid)).await?;
    let catalog = s
        .tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(ok(json!({
        "contract": contract_json(&c, &catalog),
        "invoice": invoice.as_ref().map(invoice_json),
    })))
}

/// `GET /v1/c/contract/{id}/history`: phases and events.
#[utoipa::path(get, path = "/contract/{id}/history", tag = "contract", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "Phases and events", body = HistoryDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn contract_history(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.contract(&t, &id).await?;
    let catalog = s
        .tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?;
    let events = s
        .tally
        .store
        .events(&t.id, &id)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(ok(json!({
        "phases": ContractView::new(&c.contract, &catalog).phases,
        "events": events,
    })))
}

/// `GET /v1/c/contract/{id}/scheduled_changes`.
#[utoipa::path(get, path = "/contract/{id}/scheduled_changes", tag = "contract", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "Scheduled changes in the order they apply", body = Vec<ScheduledView>), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn scheduled_changes(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.contract(&t, &id).await?;
    Ok(ok(Value::Array(
        c.contract
            .timeline()
            .iter()
            .map(|x| scheduled_json(x))
            .collect(),
    )))
}

/// `GET /v1/c/contract/{id}/scheduled_changes/{change_id}`.
#[utoipa::path(get, path = "/contract/{id}/scheduled_changes/{change_id}", tag = "contract", params(("id" = String, Path, description = "Id (or slug)"), ("change_id" = String, Path, description = "Scheduled change id")),  responses((status = 200, description = "One scheduled change", body = ScheduledView), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn scheduled_change(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path((id, cid)): Path<(String, String)>,
) -> ApiResult {
    let c = s.tally.contract(&t, &id).await?;
    let sc = c
        .contract
        .scheduled
        .iter()
        .find(|x| x.id == cid)
        .ok_or_else(|| ApiError::not_found("scheduled change", "change_id", &cid))?;
    Ok(ok(scheduled_json(sc)))
}

/// `POST /v1/c/contract/{id}/scheduled_changes/{change_id}/cancel`.
#[utoipa::path(post, path = "/contract/{id}/scheduled_changes/{change_id}/cancel", tag = "contract", params(("id" = String, Path, description = "Id (or slug)"), ("change_id" = String, Path, description = "Scheduled change id")),  responses((status = 200, description = "The scheduled changes left", body = Vec<ScheduledView>), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn cancel_scheduled(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path((id, cid)): Path<(String, String)>,
) -> ApiResult {
    let c = s
        .tally
        .cancel_scheduled_change(&t, &id, &cid, &actor(&rid))
        .await?;
    Ok(ok(Value::Array(
        c.timeline().iter().map(|x| scheduled_json(x)).collect(),
    )))
}

/// `GET /v1/c/contract/{id}/invoices`.
#[utoipa::path(get, path = "/contract/{id}/invoices", tag = "contract", params(("id" = String, Path, description = "Id (or slug)"), PageQuery),  responses((status = 200, description = "A page of the contract's invoices", body = InvoicePageDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn contract_invoices(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
    Params(q): Params<PageQuery>,
) -> ApiResult {
    s.tally.contract(&t, &id).await?;
    let page = q.page()?;
    let filter = InvoiceFilter {
        contract_id: Some(id),
        ..Default::default()
    };
    let (rows, total) = s
        .tally
        .store
        .invoices(&t.id, &filter, &page)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(ok(page_json(
        rows.iter().map(invoice_json).collect(),
        &page,
        total,
    )))
}

fn usage_record(s: &AppState, t: &tally_app::store::Tenant, b: UsageBody) -> UsageRecord {
    UsageRecord {
        feature_slug: b.feature_slug,
        units: b.units,
        timestamp: b.timestamp.unwrap_or_else(|| s.tally.now(t)),
        is_absolute: b.is_absolute.unwrap_or(false),
    }
}

/// `POST /v1/c/usage`: one usage event.
#[utoipa::path(post, path = "/usage", tag = "usage",  request_body = UsageBody, responses((status = 200, description = "Recorded", body = String, content_type = "application/json"), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn post_usage(
    State(s): State<AppState>,
    Auth(t): Auth,
    Body(b): Body<UsageBody>,
) -> ApiResult {
    let customer = b.customer_id.clone();
    let rec = usage_record(&s, &t, b);
    s.tally.record_usage(&t, &customer, rec).await?;
    Ok(ok(json!("Recorded")))
}

/// `POST /v1/c/usage/bulk`: an array of events; per-entry errors keyed by index.
#[utoipa::path(post, path = "/usage/bulk", tag = "usage",  request_body = Vec<UsageBody>, responses((status = 200, description = "Recorded", body = String, content_type = "application/json"), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn post_usage_bulk(
    State(s): State<AppState>,
    Auth(t): Auth,
    body: axum::body::Bytes,
) -> ApiResult {
    let Value::Array(items) = crate::extract::parse_value(&body)? else {
        return Err(ApiError::unprocessable(
            "invalid_body",
            None,
            "expected a JSON array of usage events",
        ));
    };
    let mut errors = serde_json::Map::new();
    for (i, item) in items.into_iter().enumerate() {
        let parsed: Result<UsageBody, ApiError> = if item.is_object() {
            crate::extract::from_value(item)
        } else {
            Err(ApiError::unprocessable(
                "invalid_body",
                None,
                "expected a JSON object",
            ))
        };
        let result = match parsed {
            Ok(b) => {
                let customer = b.customer_id.clone();
                let rec = usage_record(&s, &t, b);
                s.tally
                    .record_usage(&t, &customer, rec)
                    .await
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            errors.insert(
                i.to_string(),
                json!({ "code": e.code, "param": e.param, "detail": e.detail }),
            );
        }
    }
    if errors.is_empty() {
        return Ok(ok(json!("Recorded")));
    }
    // A problem document with the per-entry errors keyed by index; entries not listed were
    // recorded.
    let body = json!({
        "type": "https://tally.dev/problems/invalid_entries",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": format!("{} of the entries were refused; the others were recorded", errors.len()),
        "code": "invalid_entries",
        "errors": errors,
    });
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response())
}

/// Query of `GET /v1/c/invoice`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceListQuery {
    /// Customer id or slug.
    #[serde(default)]
    pub customer: Option<String>,
    /// Issued before.
    #[serde(default)]
    pub date_before: Option<String>,
    /// Issued at or after.
    #[serde(default)]
    pub date_after: Option<String>,
    /// Rows per page (default 20, at most 100).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Cursor from a previous page.
    #[serde(default)]
    pub offset: Option<String>,
    /// `forward` (default) or `backward`.
    #[serde(default)]
    pub direction: Option<String>,
}

/// `GET /v1/c/invoice`: invoices, paged.
#[utoipa::path(get, path = "/invoice", tag = "invoice", params(InvoiceListQuery),  responses((status = 200, description = "A page of invoices", body = InvoicePageDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn list_invoices(
    State(s): State<AppState>,
    Auth(t): Auth,
    Params(q): Params<InvoiceListQuery>,
) -> ApiResult {
    let page = page_of(q.limit, &q.offset, &q.direction)?;
    let customer_id = customer_filter(&s, &t, &q.customer).await?;
    let filter = InvoiceFilter {
        customer_id,
        contract_id: None,
        date_before: optional_instant(&q.date_before, "date_before")?,
        date_after: optional_instant(&q.date_after, "date_after")?,
    };
    let (rows, total) = s
        .tally
        .store
        .invoices(&t.id, &filter, &page)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(ok(page_json(
        rows.iter().map(invoice_json).collect(),
        &page,
        total,
    )))
}

/// `GET /v1/c/invoice/{id}`.
#[utoipa::path(get, path = "/invoice/{id}", tag = "invoice", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "The invoice", body = InvoiceDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
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
        .ok_or_else(|| ApiError::not_found("invoice", "invoice_id", &id))?;
    Ok(ok(invoice_json(&inv)))
}

/// Moves an open invoice to paid or void with its events (`v1.invoice.paid` and
/// `v1.payment.succeeded`, or `v1.invoice.voided`); asking again for the state it is already
/// in answers it unchanged.
/// The payment an event reports: the customer, the invoice, the amount due and its currency,
/// with what the provider said of the attempt, when it reported one.
fn payment_data(inv: &tally_app::store::Invoice, attempt: Option<&PaymentBody>) -> Value {
    let mut data = json!({
        "customer_id": inv.draft.customer_id,
        "invoice_id": inv.id,
        "amount": inv.draft.amount_due.to_string(),
        "currency": inv.draft.currency,
    });
    if let Some(a) = attempt {
        for (key, value) in a.details() {
            if let Some(v) = value {
                data[key] = json!(v);
            }
        }
    }
    data
}

/// An invoice of the tenant, or 404.
async fn read_invoice(
    s: &AppState,
    t: &tally_app::store::Tenant,
    id: &str,
) -> ApiResult<tally_app::store::Invoice> {
    s.tally
        .store
        .invoice(&t.id, id)
        .await
        .map_err(tally_app::AppError::from)?
        .ok_or_else(|| ApiError::not_found("invoice", "invoice_id", id))
}

/// 422 for a change an invoice in `status` cannot take.
fn invalid_invoice_state(status: InvoiceStatus) -> ApiError {
    ApiError::unprocessable(
        "invalid_invoice_state",
        Some("invoice_id"),
        format!("the invoice is {status:?}").to_lowercase(),
    )
}

async fn set_status(
    s: &AppState,
    t: &tally_app::store::Tenant,
    rid: &RequestId,
    id: &str,
    to: InvoiceStatus,
    attempt: Option<&PaymentBody>,
) -> ApiResult {
    let inv = read_invoice(s, t, id).await?;
    if inv.status == to {
        return Ok(ok(invoice_json(&inv)));
    }
    if inv.status != InvoiceStatus::Open {
        return Err(invalid_invoice_state(inv.status));
    }
    let who = actor(rid);
    let at = s.tally.now(t);
    let event =
        |kind: &str, data: Value| who.event(kind, Some(inv.draft.contract_id.clone()), at, data);
    let about = json!({ "invoice_id": inv.id, "number": inv.number });
    let events = match to {
        InvoiceStatus::Void => vec![event("v1.invoice.voided", about)],
        // Marking an invoice paid records the payment too (Wingback's `v1.payment.succeeded`
        // names the customer; ours adds the invoice and the amount due).
        _ => vec![
            event("v1.invoice.paid", about),
            event("v1.payment.succeeded", payment_data(&inv, attempt)),
        ],
    };
    let moved = s
        .tally
        .store
        .set_invoice_status(&t.id, &inv.id, to, &events)
        .await
        .map_err(tally_app::AppError::from)?;
    // Another request moved it first: answer what it is now.
    let inv = read_invoice(s, t, id).await?;
    if !moved && inv.status != to {
        return Err(invalid_invoice_state(inv.status));
    }
    Ok(ok(invoice_json(&inv)))
}

/// `POST /v1/c/invoice/{id}/pay`.
#[utoipa::path(post, path = "/invoice/{id}/pay", tag = "invoice", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "The invoice, paid", body = InvoiceDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn pay_invoice(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
) -> ApiResult {
    set_status(&s, &t, &rid, &id, InvoiceStatus::Paid, None).await
}

/// `POST /v1/c/invoice/{id}/void`.
#[utoipa::path(post, path = "/invoice/{id}/void", tag = "invoice", params(("id" = String, Path, description = "Id (or slug)")),  responses((status = 200, description = "The invoice, void", body = InvoiceDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn void_invoice(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
) -> ApiResult {
    set_status(&s, &t, &rid, &id, InvoiceStatus::Void, None).await
}

/// `POST /v1/c/invoice/{id}/payment`: a payment provider reports an attempt to collect an open
/// invoice. `started` and `failed` record `v1.payment.started` / `v1.payment.failed` and leave
/// it open; `succeeded` marks it paid, as `/pay` does, with the attempt in the payment event.
#[utoipa::path(post, path = "/invoice/{id}/payment", tag = "invoice", params(("id" = String, Path, description = "Invoice id")), request_body = PaymentBody, responses((status = 200, description = "The invoice after the report", body = InvoiceDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules (the invoice is paid or void; a failure reason without a failure)", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn report_payment(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    Body(b): Body<PaymentBody>,
) -> ApiResult {
    for (param, value) in b.details() {
        if value.as_ref().is_some_and(|v| v.chars().count() > 255) {
            return Err(ApiError::unprocessable(
                "invalid_value",
                Some(param),
                "at most 255 characters",
            ));
        }
    }
    if b.failure_reason.is_some() && b.outcome != PaymentOutcome::Failed {
        return Err(ApiError::unprocessable(
            "invalid_value",
            Some("failure_reason"),
            "a failure reason goes only with the outcome `failed`",
        ));
    }
    let kind = match b.outcome {
        PaymentOutcome::Succeeded => {
            return set_status(&s, &t, &rid, &id, InvoiceStatus::Paid, Some(&b)).await;
        }
        PaymentOutcome::Started => "v1.payment.started",
        PaymentOutcome::Failed => "v1.payment.failed",
    };
    let inv = read_invoice(&s, &t, &id).await?;
    if inv.status != InvoiceStatus::Open {
        return Err(invalid_invoice_state(inv.status));
    }
    let event = actor(&rid).event(
        kind,
        Some(inv.draft.contract_id.clone()),
        s.tally.now(&t),
        payment_data(&inv, Some(&b)),
    );
    let commit = tally_app::store::Commit {
        events: vec![event],
        ..Default::default()
    };
    s.tally
        .store
        .commit(&t.id, commit)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(ok(invoice_json(&inv)))
}

/// `GET /v1/c/catalog`: the tenant's catalog and settings.
#[utoipa::path(get, path = "/catalog", tag = "catalog",   responses((status = 200, description = "Settings and catalog", body = CatalogView), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_catalog(State(s): State<AppState>, Auth(t): Auth) -> ApiResult {
    let catalog = s
        .tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(Json(CatalogView {
        settings: &t.settings,
        catalog: &catalog,
    })
    .into_response())
}

/// `POST /v1/c/catalog`: applies a catalog file (the schema of `tally catalog apply`), as JSON,
/// or as YAML with a `yaml` content type.
#[utoipa::path(post, path = "/catalog", tag = "catalog",  request_body(content = Object, description = "A catalog file (JSON, or YAML with a yaml content type)"), responses((status = 200, description = "Settings and catalog after applying", body = CatalogView), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn apply_catalog(
    State(s): State<AppState>,
    Auth(t): Auth,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("malformed_json", None, "the body is not UTF-8"))?;
    let yaml = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"));
    let parsed = if yaml {
        CatalogFile::from_yaml(text)
    } else {
        let value = crate::extract::parse_value(&body)?;
        if !value.is_object() {
            return Err(ApiError::unprocessable(
                "invalid_catalog",
                None,
                "expected a catalog object",
            ));
        }
        CatalogFile::from_value(value)
    };
    let file = parsed.map_err(|e| {
        let param =
            (!e.path.is_empty() && e.path != "." && e.path != "?").then_some(e.path.as_str());
        ApiError::unprocessable("invalid_catalog", param, e.message.clone())
    })?;
    let (tenant, catalog) = s.tally.apply_catalog(&t, &file).await?;
    Ok(Json(CatalogView {
        settings: &tenant.settings,
        catalog: &catalog,
    })
    .into_response())
}

/// `GET /v1/c/test_clock`.
#[utoipa::path(get, path = "/test_clock", tag = "test_clock",   responses((status = 200, description = "The test clock", body = ClockView), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_clock(State(s): State<AppState>, Auth(t): Auth) -> ApiResult {
    if !t.test_mode {
        return Err(ApiError::unprocessable(
            "not_test_mode",
            Some("wb-key"),
            "only test-mode keys have a test clock",
        ));
    }
    Ok(Json(ClockView {
        now: s.tally.now(&t),
    })
    .into_response())
}

/// `POST /v1/c/test_clock/advance`: moves the clock, running every due billing step in order.
#[utoipa::path(post, path = "/test_clock/advance", tag = "test_clock",  request_body = AdvanceBody, responses((status = 200, description = "The clock and the invoices issued", body = AdvancedDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn advance_clock(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Body(b): Body<AdvanceBody>,
) -> ApiResult {
    let mut a = actor(&rid);
    a.name = "test_clock".into();
    let (tenant, invoices) = s.tally.advance_clock(&t, b.to, &a).await?;
    Ok(ok(json!({
        "now": s.tally.now(&tenant),
        "invoices": invoices.iter().map(invoice_json).collect::<Vec<_>>(),
    })))
}
