//! The Salesbricks dialect under `/salesbricks/api/v1`: upgrade orders on a subscription
//! (create, list, update, delete, estimate, start) and the subscription itself. A brick is a
//! feature; a brick's quantity is the new absolute count.

use std::collections::BTreeMap;

use crate::extract::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_app::ids::new_id;
use tally_app::store::{Order, OrderStatus, StoredContract, Tenant};
use tally_app::{AppError, OrderWrite};
use tally_core::money::normalize;
use tally_core::prelude::*;

use super::{carried_selection, catalog, period_amount, tax_rate_of, tz};
use crate::AppState;
use crate::dto::draft_json;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Params, RequestId, from_value, parse_json, parse_value};
use crate::native::actor;

type ApiResult<T = Response> = Result<T, ApiError>;

const DIALECT: &str = "salesbricks";

fn answer(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

/// A subscription upgrade: the bricks' new quantities from `starts_at`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    /// The date the upgrade takes effect (`YYYY-MM-DD`, or an instant).
    pub starts_at: String,
    /// The bricks it sets, with their new absolute quantities.
    pub bricks: Vec<Brick>,
    /// Move to the latest published pricing of this plan (id or slug); omitted, the contract's
    /// recorded prices are kept.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Coupon codes; the first one is applied.
    #[serde(default)]
    pub discount_coupons: Vec<String>,
    /// Accepted and kept with the order.
    #[serde(default)]
    pub custom_order_form_html: Option<String>,
    /// Kept with the order; `_`-prefixed keys are ignored.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Value>>,
}

/// A brick and its new quantity.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Brick {
    /// Feature id or slug.
    pub brick_id: String,
    /// The new absolute quantity (0 removes an add-on).
    #[serde(deserialize_with = "super::de_quantity")]
    #[schema(value_type = f64)]
    pub quantity: Decimal,
    /// Per-brick discounts are not part of Tally's model: refused when present.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub discount: Option<Value>,
}

/// The change an upgrade makes, and when.
struct Planned {
    stored: StoredContract,
    req: ChangeRequest,
}

/// The instant a Salesbricks date means: its midnight in the tenant's time zone.
fn start_instant(t: &Tenant, v: &str) -> ApiResult<Timestamp> {
    if let Ok(ts) = v.parse::<Timestamp>() {
        return Ok(ts);
    }
    v.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(tz(t)).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_value",
                Some("starts_at"),
                format!("expected a date (YYYY-MM-DD), got `{v}`"),
            )
        })
}

fn date_of(t: &Tenant, ts: Option<Timestamp>) -> Value {
    ts.map_or(Value::Null, |x| json!(x.to_zoned(tz(t)).date().to_string()))
}

async fn plan_upgrade(
    s: &AppState,
    t: &Tenant,
    subscription_id: &str,
    b: &UpgradeBody,
    invoice_now: bool,
) -> ApiResult<Planned> {
    let stored = s.tally.contract(t, subscription_id).await?;
    let c = &stored.contract;
    if b.plan_id.is_some() && b.bricks.is_empty() {
        return Err(ApiError::bad_request(
            "bricks_required",
            Some("bricks"),
            "an upgrade with plan_id lists its bricks",
        ));
    }
    let starts_at = start_instant(t, &b.starts_at)?;
    let cat = catalog(s, t).await?;
    let target = match &b.plan_id {
        Some(p) => Some(
            cat.plan(p)
                .ok_or_else(|| ApiError::not_found("plan", "plan_id", p))?,
        ),
        None => None,
    };
    let sold: BTreeMap<String, (bool, FeatureKind)> = match target {
        Some(p) => p
            .pricing_as_of(starts_at)
            .and_then(|x| x.price_set(c.config.currency, c.config.cycle))
            .map(|set| {
                set.features
                    .iter()
                    .filter_map(|(k, f)| cat.feature(k).map(|x| (k.clone(), (f.optional, x.kind))))
                    .collect()
            })
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "not_sold",
                    Some("plan_id"),
                    format!(
                        "plan `{}` is not sold in {} per {}",
                        p.slug, c.config.currency, c.config.cycle
                    ),
                )
            })?,
        None => c
            .config
            .features
            .values()
            .map(|f| (f.slug.clone(), (f.optional, f.kind)))
            .collect(),
    };
    let mut counts = BTreeMap::new();
    let mut purchased = BTreeMap::new();
    for (i, brick) in b.bricks.iter().enumerate() {
        let param = format!("bricks[{i}].brick_id");
        let f = cat
            .feature(&brick.brick_id)
            .ok_or_else(|| ApiError::not_found("brick", &param, &brick.brick_id))?;
        let Some((optional, kind)) = sold.get(&f.slug).copied() else {
            return Err(ApiError::unprocessable(
                "brick_not_in_plan",
                Some(&param),
                format!(
                    "`{}` is not on the subscription's plan version: send plan_id to move to a plan that sells it",
                    f.slug
                ),
            ));
        };
        if brick.discount.is_some() {
            return Err(ApiError::unprocessable(
                "brick_discount_not_supported",
                Some(&format!("bricks[{i}].discount")),
                "Tally applies one discount per contract: use discount_coupons",
            ));
        }
        if brick.quantity < Decimal::ZERO {
            return Err(ApiError::bad_request(
                "negative_value",
                Some(&format!("bricks[{i}].quantity")),
                "a quantity of 0 or more",
            ));
        }
        match kind {
            FeatureKind::PerUnit => {
                counts.insert(f.slug.clone(), brick.quantity);
            }
            FeatureKind::Usage if !brick.quantity.is_zero() => {
                return Err(ApiError::unprocessable(
                    "pre_commitment_not_supported",
                    Some(&format!("bricks[{i}].quantity")),
                    "Tally rates usage as it is used; a usage brick takes no pre-commitment",
                ));
            }
            _ => {}
        }
        if optional {
            purchased.insert(f.slug.clone(), brick.quantity > Decimal::ZERO);
        }
    }
    let discount = b.discount_coupons.first().cloned();
    let change = match target {
        Some(p) => {
            let (mut unit_counts, mut overrides) = carried_selection(
                &cat,
                &c.config,
                &p.id,
                c.config.currency,
                c.config.cycle,
                starts_at,
            );
            unit_counts.extend(counts);
            for (k, v) in purchased {
                overrides.insert(
                    k,
                    FeatureOverride {
                        purchased: Some(v),
                        ..FeatureOverride::default()
                    },
                );
            }
            ChangeKind::NewPlan {
                plan: p.id.clone(),
                pricing: None,
                currency: None,
                cycle: None,
                unit_counts,
                overrides,
                discount,
            }
        }
        None => ChangeKind::ChangeUnitCount {
            unit_counts: counts,
            purchased,
            discount,
        },
    };
    let req = ChangeRequest {
        change,
        activation: Activation::Date(starts_at),
        downgrade_allowed: true,
        proration: Proration::CreateProrations,
        invoice_now,
    };
    Ok(Planned { stored, req })
}

fn frequency(c: Cycle) -> Option<&'static str> {
    match c {
        Cycle::Month => Some("MONTHLY"),
        Cycle::Quarter => Some("QUARTERLY"),
        Cycle::Year => Some("ANNUALLY"),
        Cycle::Constant | Cycle::Once => Some("ALL_UPFRONT"),
        _ => None,
    }
}

/// Salesbricks' pricing shape of the upgrade: its invoice now and the schedule after it.
fn pricing_json(t: &Tenant, catalog: &Catalog, out: &ChangeOutcome, tax_rate: Decimal) -> Value {
    let c = &out.contract;
    let cur = c.config.currency;
    let plan = catalog.plan(&c.config.plan_id);
    let inv = out.invoice.as_ref();
    let zero = Decimal::ZERO;
    let mut by_brick: BTreeMap<String, Vec<&InvoiceLine>> = BTreeMap::new();
    for l in inv.map(|i| i.lines.as_slice()).unwrap_or_default() {
        by_brick
            .entry(l.feature_slug.clone().unwrap_or_default())
            .or_default()
            .push(l);
    }
    let tax = |net: Decimal| (net * tax_rate / Decimal::ONE_HUNDRED).round_dp(cur.minor_units());
    let line_items: Vec<Value> = by_brick
        .iter()
        .map(|(slug, lines)| {
            let sub: Decimal = lines.iter().map(|l| l.amount).sum();
            let feature = catalog.feature(slug);
            json!({
                "brick_id": feature.map(|f| f.id.clone()),
                "brick_name": feature.map_or(slug.clone(), |f| f.name.clone()),
                "plan_id": c.config.plan_id,
                "plan_name": plan.map(|p| p.name.clone()),
                "quantity": c.config.features.get(slug).map(|f| {
                    if f.kind == FeatureKind::PerUnit { f.quantity } else { Decimal::ONE }
                }),
                "sub_total": normalize(sub, cur),
                "grand_total": normalize(sub + tax(sub), cur),
                "grand_total_details": { "tax_total": normalize(tax(sub), cur) },
                "tiers_breakdown": lines.iter().map(|l| json!({
                    "quantity": l.quantity,
                    "unit_price": l.unit_amount,
                    "sub_total": l.amount,
                    "duration_text": l.description,
                })).collect::<Vec<_>>(),
                "pre_commitment_schedule": null,
            })
        })
        .collect();
    let period_end = c.period.as_ref().and_then(|p| p.end);
    let mut schedule = vec![json!({
        "starts_at": date_of(t, Some(out.effective_at)),
        "ends_at": date_of(t, period_end),
        "sub_total": normalize(inv.map_or(zero, |i| i.net), cur),
        "grand_total": normalize(inv.map_or(zero, |i| i.gross), cur),
        "grand_total_details": {
            "tax_total": normalize(inv.map_or(zero, |i| i.tax), cur),
            "credit_applied": normalize(inv.map_or(zero, |i| i.credit_applied), cur),
        },
    })];
    if let (Some(end), Some(sch)) = (period_end, c.schedule) {
        let next_end = sch.period_containing(end, &tz(t)).ok().map(|p| p.end);
        let net = period_amount(&c.config);
        schedule.push(json!({
            "starts_at": date_of(t, Some(end)),
            "ends_at": date_of(t, next_end),
            "sub_total": normalize(net, cur),
            "grand_total": normalize(net + tax(net), cur),
            "grand_total_details": { "tax_total": normalize(tax(net), cur) },
        }));
    }
    json!({
        "ends_at": date_of(t, period_end),
        "sub_total": normalize(inv.map_or(zero, |i| i.net), cur),
        "grand_total": normalize(inv.map_or(zero, |i| i.gross), cur),
        "grand_total_details": {
            "tax_total": normalize(inv.map_or(zero, |i| i.tax), cur),
            "discount_total": normalize(-inv.map_or(zero, |i| super::sum_kind(i, LineKind::Discount)), cur),
        },
        "line_items": line_items,
        "billing_schedule": schedule,
        "is_scheduled": out.scheduled,
        "invoice": inv.map(draft_json),
    })
}

/// Prices an upgrade now without changing anything.
async fn estimate(
    s: &AppState,
    t: &Tenant,
    rid: &RequestId,
    subscription_id: &str,
    b: &UpgradeBody,
) -> ApiResult<Value> {
    let p = plan_upgrade(s, t, subscription_id, b, true).await?;
    let out = s
        .tally
        .change(t, &p.stored.contract.id, &p.req, true, &actor(rid))
        .await?;
    let cat = catalog(s, t).await?;
    let tax = tax_rate_of(s, t, &p.stored.contract.customer_id).await;
    Ok(pricing_json(t, &cat, &out.outcome, tax))
}

fn order_json(t: &Tenant, o: &Order, value: Option<(Decimal, Currency)>, ends_at: Value) -> Value {
    let b: Option<UpgradeBody> = serde_json::from_value(o.request.clone()).ok();
    json!({
        "order_id": o.id,
        "subscription_id": o.contract_id,
        "order_type": o.kind,
        "stage": match o.status {
            OrderStatus::Open => "BUILDING",
            OrderStatus::Committed => "CLOSED",
            OrderStatus::Deleted => "DELETED",
        },
        "contract_value": value.map(|(v, c)| format!("{} {}", normalize(v, c), c.to_string().to_uppercase())),
        "pdf_url": null,
        "starts_at": b.as_ref().map(|b| b.starts_at.clone()).map_or(Value::Null, |s| json!(date_of(t, start_instant(t, &s).ok()))),
        "ends_at": ends_at,
        "metadata": b.and_then(|b| b.metadata).unwrap_or_default(),
        "created_at": o.created_at,
    })
}

/// The order's stored request: metadata without private (`_`) keys.
fn stored_request(raw: Value) -> Value {
    let mut raw = raw;
    if let Some(m) = raw.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, _| !k.starts_with('_'));
    }
    raw
}

/// `POST /salesbricks/api/v1/subscriptions/{id}/upgrade`: opens an upgrade order, priced now.
#[utoipa::path(post, path = "/subscriptions/{id}/upgrade", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id")), request_body = UpgradeBody, responses((status = 200, description = "The upgrade order", body = OrderDoc), (status = 400, description = "Invalid request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn create_upgrade(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let raw = parse_value(&body)?;
    let b: UpgradeBody = from_value(raw.clone())?;
    let pricing = estimate(&s, &t, &rid, &id, &b).await?;
    let c = s.tally.contract(&t, &id).await?.contract;
    let o = Order {
        id: new_id("Ord"),
        dialect: DIALECT.into(),
        kind: "UPGRADE".into(),
        contract_id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        status: OrderStatus::Open,
        request: stored_request(raw),
        created_at: s.tally.now(&t),
        closed_at: None,
    };
    s.tally
        .store
        .save_order(&t.id, &o)
        .await
        .map_err(AppError::from)?;
    Ok(answer(order_json(
        &t,
        &o,
        value_of(&pricing, c.config.currency),
        pricing["ends_at"].clone(),
    )))
}

fn value_of(pricing: &Value, cur: Currency) -> Option<(Decimal, Currency)> {
    pricing["grand_total"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .map(|v| (v, cur))
}

async fn open_order(
    s: &AppState,
    t: &Tenant,
    subscription_id: &str,
    order_id: &str,
) -> ApiResult<Order> {
    let c = s.tally.contract(t, subscription_id).await?.contract;
    s.tally
        .store
        .order(&t.id, order_id)
        .await
        .map_err(AppError::from)?
        .filter(|o| o.dialect == DIALECT && o.contract_id == c.id)
        .ok_or_else(|| ApiError::not_found("upgrade order", "order_id", order_id))
}

/// `GET /salesbricks/api/v1/subscriptions/{id}/upgrade`: the open upgrade orders.
#[utoipa::path(get, path = "/subscriptions/{id}/upgrade", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id")), responses((status = 200, description = "The open upgrade orders", body = OrdersDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn list_upgrades(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.contract(&t, &id).await?.contract;
    let orders = s
        .tally
        .store
        .orders(&t.id, &c.id)
        .await
        .map_err(AppError::from)?;
    let open: Vec<Value> = orders
        .iter()
        .filter(|o| o.dialect == DIALECT && o.status == OrderStatus::Open)
        .map(|o| order_json(&t, o, None, Value::Null))
        .collect();
    Ok(answer(json!({ "orders": open })))
}

/// `PATCH /salesbricks/api/v1/subscriptions/{id}/upgrade/{order_id}`: replaces the fields sent
/// of an open order (checked and priced again).
#[utoipa::path(patch, path = "/subscriptions/{id}/upgrade/{order_id}", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id"), ("order_id" = String, Path, description = "Order id")), request_body(content = Object, description = "Fields of the upgrade body to replace"), responses((status = 200, description = "The subscription", body = SubscriptionRefDoc), (status = 400, description = "Invalid request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused, or the order is no longer open", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn update_upgrade(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path((id, order_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let patch = parse_value(&body)?;
    let Value::Object(fields) = patch else {
        return Err(ApiError::unprocessable(
            "invalid_body",
            None,
            "expected a JSON object",
        ));
    };
    let o = open_order(&s, &t, &id, &order_id).await?;
    if o.status != OrderStatus::Open {
        return Err(closed());
    }
    let mut request = o.request.clone();
    for (k, v) in fields {
        if k == "metadata" && v.as_object().is_some_and(|m| m.is_empty()) {
            // An empty map deletes every key.
            request["metadata"] = json!({});
            continue;
        }
        request[k] = v;
    }
    let request = stored_request(request);
    let b: UpgradeBody = from_value(request.clone())?;
    estimate(&s, &t, &rid, &id, &b).await?;
    let updated = Order { request, ..o };
    if !s
        .tally
        .store
        .save_order(&t.id, &updated)
        .await
        .map_err(AppError::from)?
    {
        return Err(closed());
    }
    Ok(answer(json!({ "subscription_id": updated.contract_id })))
}

fn closed() -> ApiError {
    ApiError::unprocessable(
        "order_closed",
        Some("order_id"),
        "the order was started or deleted",
    )
}

/// `DELETE /salesbricks/api/v1/subscriptions/{id}/upgrade/{order_id}`: discards an open order.
#[utoipa::path(delete, path = "/subscriptions/{id}/upgrade/{order_id}", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id"), ("order_id" = String, Path, description = "Order id")), responses((status = 200, description = "Deleted", body = MessageDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "The order was started", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn delete_upgrade(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path((id, order_id)): Path<(String, String)>,
) -> ApiResult {
    let o = open_order(&s, &t, &id, &order_id).await?;
    if o.status == OrderStatus::Deleted {
        return Ok(answer(json!({ "message": "Upgrade order deleted." })));
    }
    let deleted = Order {
        status: OrderStatus::Deleted,
        closed_at: Some(s.tally.now(&t)),
        ..o
    };
    if !s
        .tally
        .store
        .save_order(&t.id, &deleted)
        .await
        .map_err(AppError::from)?
    {
        return Err(closed());
    }
    Ok(answer(json!({ "message": "Upgrade order deleted." })))
}

/// `POST /salesbricks/api/v1/subscriptions/{id}/upgrade/estimate`: prices an upgrade body now;
/// the invoice shown is exactly what starting the same upgrade now issues.
#[utoipa::path(post, path = "/subscriptions/{id}/upgrade/estimate", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id")), request_body = UpgradeBody, responses((status = 200, description = "OrderPricing", body = PricingDoc), (status = 400, description = "Invalid request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn estimate_upgrade(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: UpgradeBody = parse_json(&body)?;
    Ok(answer(estimate(&s, &t, &rid, &id, &b).await?))
}

/// `POST /salesbricks/api/v1/subscriptions/{id}/upgrade/{order_id}/estimate`: prices an open
/// order now.
#[utoipa::path(post, path = "/subscriptions/{id}/upgrade/{order_id}/estimate", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id"), ("order_id" = String, Path, description = "Order id")), responses((status = 200, description = "OrderPricing", body = PricingDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused, or the order is no longer open", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn estimate_order(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path((id, order_id)): Path<(String, String)>,
) -> ApiResult {
    let o = open_order(&s, &t, &id, &order_id).await?;
    if o.status != OrderStatus::Open {
        return Err(closed());
    }
    let b: UpgradeBody = from_value(o.request)?;
    Ok(answer(estimate(&s, &t, &rid, &id, &b).await?))
}

/// Query of the start endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// `yes` (default): invoice the upgrade now; `no`: carry it to the next regular invoice.
    #[serde(default)]
    pub charge_immediately: Option<String>,
}

/// `POST /salesbricks/api/v1/subscriptions/{id}/upgrade/{order_id}/start`: carries the upgrade
/// out as of now, once (starting it again answers the same).
#[utoipa::path(post, path = "/subscriptions/{id}/upgrade/{order_id}/start", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id"), ("order_id" = String, Path, description = "Order id"), StartQuery), responses((status = 200, description = "The subscription", body = SubscriptionRefDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused, or the order was deleted", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn start_upgrade(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path((id, order_id)): Path<(String, String)>,
    Params(q): Params<StartQuery>,
) -> ApiResult {
    let invoice_now = match q.charge_immediately.as_deref() {
        None | Some("yes") => true,
        Some("no") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                Some("charge_immediately"),
                format!("`{other}`: yes or no"),
            ));
        }
    };
    let o = open_order(&s, &t, &id, &order_id).await?;
    let done = json!({ "subscription_id": o.contract_id });
    match o.status {
        OrderStatus::Committed => return Ok(answer(done)),
        OrderStatus::Deleted => return Err(closed()),
        OrderStatus::Open => {}
    }
    let b: UpgradeBody = from_value(o.request.clone())?;
    let p = plan_upgrade(&s, &t, &id, &b, invoice_now).await?;
    let extra = OrderWrite {
        order: Some(Order {
            status: OrderStatus::Committed,
            closed_at: Some(s.tally.now(&t)),
            ..o.clone()
        }),
        usage: Vec::new(),
    };
    match s
        .tally
        .change_with(&t, &o.contract_id, &p.req, false, &extra, &actor(&rid))
        .await
    {
        Ok(_) => Ok(answer(done)),
        Err(e @ AppError::Conflict) => match open_order(&s, &t, &id, &order_id).await?.status {
            OrderStatus::Committed => Ok(answer(done)),
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// `GET /salesbricks/api/v1/subscriptions/{id}`: the subscription, its bricks and schedule.
#[utoipa::path(get, path = "/subscriptions/{id}", tag = "salesbricks", params(("id" = String, Path, description = "Subscription id")), responses((status = 200, description = "The subscription", body = SubscriptionDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json")), security(("salesbricks_key" = [])))]
pub async fn get_subscription(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let c = s.tally.contract(&t, &id).await?.contract;
    let cat = catalog(&s, &t).await?;
    let customer = s
        .tally
        .store
        .customer(&t.id, &c.customer_id)
        .await
        .map_err(AppError::from)?;
    let cur = c.config.currency;
    let plan = cat.plan(&c.config.plan_id);
    let period = c.period.as_ref();
    let line_items: Vec<Value> = c
        .config
        .features
        .values()
        .filter(|f| f.purchased)
        .map(|f| {
            let feature = cat.feature(&f.slug);
            json!({
                "brick_id": feature.map(|x| x.id.clone()),
                "brick_name": feature.map_or(f.slug.clone(), |x| x.name.clone()),
                "plan_id": c.config.plan_id,
                "plan_name": plan.map(|p| p.name.clone()),
                "quantity": if f.kind == FeatureKind::PerUnit { f.quantity } else { Decimal::ONE },
            })
        })
        .collect();
    let status = match c.status {
        ContractStatus::Active => "ACTIVE",
        ContractStatus::Pending | ContractStatus::Scheduled => "PENDING",
        ContractStatus::Canceled => "TERMINATED",
    };
    let net = period_amount(&c.config);
    Ok(answer(json!({
        "subscription_id": c.id,
        "status": status,
        "starts_at": date_of(&t, c.activation),
        "ends_at": date_of(&t, c.ended_at.or(c.cancel_at)),
        "renews_at": date_of(&t, period.and_then(|p| p.end)),
        "terminates_at": date_of(&t, c.cancel_at),
        "billing_frequency": frequency(c.config.cycle),
        "currency": cur.to_string().to_uppercase(),
        "customer": customer.map(|x| json!({ "customer_id": x.id, "name": x.name, "external_id": x.slug })),
        "plan_id": c.config.plan_id,
        "sub_total": normalize(net, cur),
        "line_items": line_items,
        "billing_schedule": period.map(|p| vec![json!({
            "starts_at": date_of(&t, Some(p.start)),
            "ends_at": date_of(&t, p.end),
            "sub_total": normalize(net, cur),
        })]).unwrap_or_default(),
    })))
}

// The documented shapes of the answers above (the OpenAPI document's; the end-to-end tests hold
// every answer to them).

/// Tax (and, on the whole upgrade, discounts and credit) of a total.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksTotalDetails)]
#[allow(dead_code)]
pub struct TotalDetailsDoc {
    /// Tax.
    tax_total: String,
    /// Discounts (on the upgrade's total).
    #[schema(required = false)]
    discount_total: String,
    /// Credit balance applied (on the first billing).
    #[schema(required = false)]
    credit_applied: String,
}

/// One invoice line of a brick.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksTier)]
#[allow(dead_code)]
pub struct TierDoc {
    /// Units.
    quantity: String,
    /// Price per unit.
    unit_price: String,
    /// Amount.
    sub_total: String,
    /// The line's words (with the proration fraction).
    duration_text: String,
}

/// What an upgrade bills for one brick (a feature).
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksPricedBrick)]
#[allow(dead_code)]
pub struct PricedBrickDoc {
    /// The feature's id.
    brick_id: Option<String>,
    /// Its name.
    brick_name: String,
    /// The plan.
    plan_id: String,
    /// The plan's name.
    plan_name: Option<String>,
    /// Units after the upgrade.
    quantity: Option<String>,
    /// Net.
    sub_total: String,
    /// Net + tax.
    grand_total: String,
    /// Its tax.
    grand_total_details: TotalDetailsDoc,
    /// Its invoice lines.
    tiers_breakdown: Vec<TierDoc>,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    pre_commitment_schedule: (),
}

/// One billing of the schedule.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksBilling)]
#[allow(dead_code)]
pub struct BillingDoc {
    /// First day (the tenant's time zone).
    #[schema(format = Date)]
    starts_at: Option<String>,
    /// Last day.
    #[schema(format = Date)]
    ends_at: Option<String>,
    /// Net.
    sub_total: String,
    /// Net + tax (not on a subscription's schedule).
    #[schema(required = false)]
    grand_total: String,
    /// Its tax (not on a subscription's schedule).
    #[schema(required = false)]
    grand_total_details: TotalDetailsDoc,
}

/// Salesbricks' `OrderPricing` of an upgrade: its invoice now and the billings after it.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksPricing)]
#[allow(dead_code)]
pub struct PricingDoc {
    /// End of the period the upgrade bills.
    #[schema(format = Date)]
    ends_at: Option<String>,
    /// Net of the invoice now.
    sub_total: String,
    /// Its gross.
    grand_total: String,
    /// Its tax and discounts.
    grand_total_details: TotalDetailsDoc,
    /// By brick.
    line_items: Vec<PricedBrickDoc>,
    /// The invoice now, then the next full period.
    billing_schedule: Vec<BillingDoc>,
    /// Takes effect at the period's end.
    is_scheduled: bool,
    /// The invoice issued when the upgrade starts now.
    invoice: Option<crate::dto::InvoiceDraftDoc>,
}

/// An upgrade order.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksOrder)]
#[allow(dead_code)]
pub struct OrderDoc {
    /// The order's id.
    order_id: String,
    /// The subscription it upgrades.
    subscription_id: Option<String>,
    /// Always `upgrade`.
    order_type: String,
    /// `BUILDING`, `CLOSED` or `DELETED`.
    stage: String,
    /// `"<amount> <CURRENCY>"`: the invoice it issues (when just priced).
    contract_value: Option<String>,
    /// Always null.
    pdf_url: Option<String>,
    /// The day it starts.
    #[schema(format = Date)]
    starts_at: Option<String>,
    /// End of the period it bills (when just priced).
    #[schema(format = Date)]
    ends_at: Option<String>,
    /// As given, without `_` keys.
    #[schema(value_type = Object)]
    metadata: Value,
    /// When it was opened.
    #[schema(format = DateTime)]
    created_at: String,
}

/// The open upgrade orders of a subscription.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksOrders)]
#[allow(dead_code)]
pub struct OrdersDoc {
    /// Open orders, oldest first.
    orders: Vec<OrderDoc>,
}

/// The subscription an order changed or will change.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksSubscriptionRef)]
#[allow(dead_code)]
pub struct SubscriptionRefDoc {
    /// Its id.
    subscription_id: Option<String>,
}

/// What was done.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksMessage)]
#[allow(dead_code)]
pub struct MessageDoc {
    /// `Upgrade order deleted.`
    message: String,
}

/// A subscription's customer.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksCustomer)]
#[allow(dead_code)]
pub struct CustomerDoc {
    /// `Cust_<uuid>`.
    customer_id: String,
    /// Name.
    name: Option<String>,
    /// Your id for the customer.
    external_id: Option<String>,
}

/// One brick of a subscription.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksBrick)]
#[allow(dead_code)]
pub struct BrickDoc {
    /// The feature's id.
    brick_id: Option<String>,
    /// Its name.
    brick_name: String,
    /// The plan.
    plan_id: String,
    /// The plan's name.
    plan_name: Option<String>,
    /// Units.
    quantity: String,
}

/// A subscription as Salesbricks shows it.
#[derive(utoipa::ToSchema)]
#[schema(as = SalesbricksSubscription)]
#[allow(dead_code)]
pub struct SubscriptionDoc {
    /// The contract's id.
    subscription_id: String,
    /// `ACTIVE`, `PENDING` or `TERMINATED`.
    status: String,
    /// Activation day.
    #[schema(format = Date)]
    starts_at: Option<String>,
    /// Day it ended or ends.
    #[schema(format = Date)]
    ends_at: Option<String>,
    /// Next renewal day.
    #[schema(format = Date)]
    renews_at: Option<String>,
    /// Scheduled cancellation day.
    #[schema(format = Date)]
    terminates_at: Option<String>,
    /// `MONTHLY`, `QUARTERLY`, `ANNUALLY` ...
    billing_frequency: Option<String>,
    /// `EUR`, `USD` ...
    currency: String,
    /// Its customer.
    customer: Option<CustomerDoc>,
    /// Its plan.
    plan_id: String,
    /// Net of a full period.
    sub_total: String,
    /// Its bricks.
    line_items: Vec<BrickDoc>,
    /// The current period's billing.
    billing_schedule: Vec<BillingDoc>,
}
