//! The billwerk dialect under `/billwerk/api/v1`: orders with a cart, priced when made and
//! carried out by `commit`, order previews, and contracts with their phases, billing dates and
//! balance, in billwerk's PascalCase names. A plan variant is a Tally plan sold in a cycle and a
//! currency, written `plan:cycle:currency`.

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
use tally_app::store::{
    Customer, InvoiceFilter, InvoiceStatus, Order, OrderStatus, Page, StoredContract, Tenant,
};
use tally_app::{AppError, OrderWrite};
use tally_core::money::normalize;
use tally_core::prelude::*;

use super::{carried_selection, catalog, currency, instant, period_amount, tax_rate_of};
use crate::AppState;
use crate::dto::draft_json;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, RequestId, from_value, parse_json, parse_value};
use crate::native::actor;

type ApiResult<T = Response> = Result<T, ApiError>;

const DIALECT: &str = "billwerk";

fn answer(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

/// An order: a signup (no `ContractId`) or a change of a contract, described by its cart.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OrderBody {
    /// The customer of a signup order.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// A new customer for a signup order, created with the order.
    #[serde(default)]
    pub customer: Option<CustomerBody>,
    /// The contract a change order changes.
    #[serde(default)]
    pub contract_id: Option<String>,
    /// What is booked.
    pub cart: Cart,
    /// Start of a signup's contract (now when absent; past or future).
    #[serde(default)]
    pub start_date: Option<String>,
    /// When a change takes effect (now when absent; inside the current period or later).
    #[serde(default)]
    pub change_date: Option<String>,
    /// Bill the change now (`true`) or with the next regular billing (`false`); see the docs.
    #[serde(default)]
    pub trigger_interim_billing: Option<bool>,
    /// A coupon code (also accepted in the cart).
    #[serde(default)]
    pub coupon_code: Option<String>,
    /// Accepted; Tally prices orders as they apply now.
    #[serde(default)]
    pub preview_after_trial: Option<bool>,
    /// Accepted and kept with the order.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub custom_fields: Option<Value>,
    /// Accepted and kept with the order.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub contract_custom_fields: Option<Value>,
}

/// An inline customer of a signup order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CustomerBody {
    /// Your id of the customer; accepted wherever a customer id is.
    #[serde(default)]
    pub external_customer_id: Option<String>,
    /// Company.
    #[serde(default)]
    pub company_name: Option<String>,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Email.
    #[serde(default)]
    pub email_address: Option<String>,
    /// VAT id.
    #[serde(default)]
    pub vat_id: Option<String>,
    /// Address.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub address: Option<Value>,
    /// Locale.
    #[serde(default)]
    pub locale: Option<String>,
}

/// The cart of an order.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Cart {
    /// The plan variant to book (`plan`, `plan:cycle` or `plan:cycle:currency`); on a change
    /// order, a different one is an up- or downgrade.
    #[serde(default)]
    pub plan_variant_id: Option<String>,
    /// The plan (must match the variant's).
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Quantity of the plan variant (1).
    #[serde(default, deserialize_with = "super::de_quantity_opt")]
    #[schema(value_type = Option<f64>)]
    pub quantity: Option<Decimal>,
    /// Accepted; the contract keeps its anchor unless the cycle changes.
    #[serde(default)]
    pub inherit_start_date: Option<bool>,
    /// Components (features) to book or set the quantity of.
    #[serde(default)]
    pub component_subscriptions: Vec<ComponentSubscription>,
    /// Component subscriptions to end (their `ComponentId`s).
    #[serde(default)]
    pub end_component_subscriptions: Vec<String>,
    /// Metered usage to record with the order.
    #[serde(default)]
    pub metered_usages: Vec<MeteredUsage>,
    /// Discounts (id or slug); Tally applies one per contract.
    #[serde(default)]
    pub discount_subscriptions: Vec<DiscountSubscription>,
    /// A coupon code.
    #[serde(default)]
    pub coupon_code: Option<String>,
    /// One-off items (not part of Tally's model: refused when not empty).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub rated_items: Vec<Value>,
}

/// A component booked by an order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ComponentSubscription {
    /// Feature id or slug.
    pub component_id: String,
    /// Units (an on/off add-on is booked with any quantity above 0).
    #[serde(deserialize_with = "super::de_quantity")]
    #[schema(value_type = f64)]
    pub quantity: Decimal,
}

/// Usage reported with an order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MeteredUsage {
    /// Usage feature id or slug.
    pub component_id: String,
    /// Units used.
    #[serde(deserialize_with = "super::de_quantity")]
    #[schema(value_type = f64)]
    pub quantity: Decimal,
    /// When (the order's change date, else now, when absent).
    #[serde(default)]
    pub due_date: Option<String>,
    /// Accepted.
    #[serde(default)]
    pub memo: Option<String>,
    /// Accepted.
    #[serde(default)]
    pub key: Option<String>,
}

/// A discount booked by an order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DiscountSubscription {
    /// Discount id, slug or coupon code.
    pub discount_id: String,
    /// Accepted; the discount applies from the order's effective instant.
    #[serde(default)]
    pub start_date: Option<String>,
}

/// A plan variant: a plan with the cycle and currency it is sold in.
struct Variant {
    plan: Plan,
    cycle: Cycle,
    currency: Currency,
}

fn variant_id(plan_id: &str, cycle: Cycle, currency: Currency) -> String {
    format!("{plan_id}:{cycle}:{currency}")
}

/// Resolves `plan[:cycle[:currency]]`; missing parts come from `fallback` (the contract's), else
/// from the only choice the plan's latest pricing offers.
fn resolve_variant(
    catalog: &Catalog,
    id: &str,
    fallback: Option<(Cycle, Currency)>,
    at: Timestamp,
) -> ApiResult<Variant> {
    const PARAM: &str = "Cart.PlanVariantId";
    let mut parts = id.split(':');
    let plan_key = parts.next().unwrap_or_default();
    let plan = catalog
        .plan(plan_key)
        .ok_or_else(|| ApiError::not_found("plan variant", PARAM, id))?;
    let bad = |what: &str| {
        ApiError::unprocessable(
            "invalid_value",
            Some(PARAM),
            format!("`{id}`: {what}; write plan, plan:cycle or plan:cycle:currency"),
        )
    };
    let cycle = parts
        .next()
        .map(|c| c.parse::<Cycle>().map_err(|_| bad("unknown cycle")))
        .transpose()?;
    let cur = parts.next().map(|c| currency(c, PARAM)).transpose()?;
    if parts.next().is_some() {
        return Err(bad("too many parts"));
    }
    let sets: Vec<(Cycle, Currency)> = plan
        .pricing_as_of(at)
        .map(|p| p.prices.iter().map(|s| (s.cycle, s.currency)).collect())
        .unwrap_or_default();
    let pick = |c: Option<Cycle>, k: Option<Currency>| -> Vec<(Cycle, Currency)> {
        sets.iter()
            .copied()
            .filter(|(sc, sk)| c.is_none_or(|c| c == *sc) && k.is_none_or(|k| k == *sk))
            .collect()
    };
    let chosen = match fallback {
        Some((fc, fk)) => {
            let want = (cycle.unwrap_or(fc), cur.unwrap_or(fk));
            pick(Some(want.0), Some(want.1)).first().copied()
        }
        None => match pick(cycle, cur).as_slice() {
            [one] => Some(*one),
            [] => None,
            _ => {
                return Err(bad(&format!(
                    "the plan is sold in several cycles or currencies: {}",
                    sets.iter()
                        .map(|(c, k)| variant_id(&plan.slug, *c, *k))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        },
    };
    let (cycle, currency) = chosen.ok_or_else(|| {
        ApiError::unprocessable(
            "not_sold",
            Some(PARAM),
            format!("plan `{}` is not sold as `{id}`", plan.slug),
        )
    })?;
    Ok(Variant {
        plan: plan.clone(),
        cycle,
        currency,
    })
}

/// The one discount an order names, if any.
fn discount_of(body: &OrderBody) -> ApiResult<Option<String>> {
    let mut keys: Vec<String> = body
        .cart
        .discount_subscriptions
        .iter()
        .map(|d| d.discount_id.clone())
        .collect();
    keys.extend(body.cart.coupon_code.clone());
    keys.extend(body.coupon_code.clone());
    keys.dedup();
    if keys.len() > 1 {
        return Err(ApiError::unprocessable(
            "one_discount_only",
            Some("Cart.DiscountSubscriptions"),
            "Tally applies one discount per contract: book one discount or coupon",
        ));
    }
    Ok(keys.into_iter().next())
}

/// The feature a component id names, or a 404 at `param`.
fn component<'c>(catalog: &'c Catalog, id: &str, param: &str) -> ApiResult<&'c Feature> {
    catalog
        .feature(id)
        .ok_or_else(|| ApiError::not_found("component", param, id))
}

/// Unit counts and add-on bookings of a cart's components, checked against the features the
/// configuration sells.
fn components(
    catalog: &Catalog,
    cart: &Cart,
    sold: &BTreeMap<String, bool>,
) -> ApiResult<(BTreeMap<String, Decimal>, BTreeMap<String, bool>)> {
    let mut counts = BTreeMap::new();
    let mut purchased = BTreeMap::new();
    for (i, c) in cart.component_subscriptions.iter().enumerate() {
        let param = format!("Cart.ComponentSubscriptions[{i}].ComponentId");
        let f = component(catalog, &c.component_id, &param)?;
        let Some(optional) = sold.get(&f.slug) else {
            return Err(ApiError::unprocessable(
                "component_not_in_plan",
                Some(&param),
                format!("the plan variant does not sell `{}`", f.slug),
            ));
        };
        if c.quantity < Decimal::ZERO {
            return Err(ApiError::unprocessable(
                "negative_value",
                Some(&format!("Cart.ComponentSubscriptions[{i}].Quantity")),
                "a quantity of 0 or more",
            ));
        }
        if f.kind == FeatureKind::PerUnit {
            counts.insert(f.slug.clone(), c.quantity);
        }
        if *optional {
            purchased.insert(f.slug.clone(), c.quantity > Decimal::ZERO);
        }
    }
    for (i, id) in cart.end_component_subscriptions.iter().enumerate() {
        let param = format!("Cart.EndComponentSubscriptions[{i}]");
        let f = component(catalog, id, &param)?;
        match sold.get(&f.slug) {
            Some(true) => {
                purchased.insert(f.slug.clone(), false);
            }
            Some(false) if f.kind == FeatureKind::PerUnit => {
                counts.insert(f.slug.clone(), Decimal::ZERO);
            }
            _ => {
                return Err(ApiError::unprocessable(
                    "component_not_ended",
                    Some(&param),
                    format!(
                        "`{}` is not an add-on or a quantity of this contract",
                        f.slug
                    ),
                ));
            }
        }
    }
    Ok((counts, purchased))
}

/// What an order does, resolved against the catalog at `now`.
enum Effect {
    /// A new contract.
    Signup(Box<SignupRequest>),
    /// A change of a contract (with the usage recorded with it).
    Change(Box<ChangeRequest>, Vec<UsageRecord>),
    /// Usage only: the contract does not change.
    UsageOnly(Vec<UsageRecord>),
}

/// The order's effect, the contract it concerns (for a change) and the plan variant after it.
struct Resolved {
    what: Effect,
    contract: Option<StoredContract>,
    customer_id: String,
    variant: String,
    currency: Currency,
    kind: &'static str,
}

fn check_quantity(cart: &Cart) -> ApiResult<()> {
    if cart.quantity.is_some_and(|q| q != Decimal::ONE) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            Some("Cart.Quantity"),
            "a plan variant is booked once (quantity 1); set component quantities instead",
        ));
    }
    if !cart.rated_items.is_empty() {
        return Err(ApiError::unprocessable(
            "rated_items_not_supported",
            Some("Cart.RatedItems"),
            "Tally bills plans, components and usage; one-off rated items are not part of its model",
        ));
    }
    Ok(())
}

async fn resolve(
    s: &AppState,
    t: &Tenant,
    b: &OrderBody,
    contract_id: &str,
) -> ApiResult<Resolved> {
    check_quantity(&b.cart)?;
    let cat = catalog(s, t).await?;
    let now = s.tally.now(t);
    let discount = discount_of(b)?;
    match &b.contract_id {
        None => {
            if b.change_date.is_some() {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    Some("ChangeDate"),
                    "a signup order starts at StartDate",
                ));
            }
            if !b.cart.metered_usages.is_empty() {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    Some("Cart.MeteredUsages"),
                    "usage is recorded on an existing contract",
                ));
            }
            let customer_id = match (&b.customer_id, &b.customer) {
                (Some(id), None) => s.tally.customer(t, id, "CustomerId").await?.id,
                (None, Some(_)) => String::new(),
                (Some(_), Some(_)) => {
                    return Err(ApiError::unprocessable(
                        "invalid_value",
                        Some("Customer"),
                        "send CustomerId or Customer, not both",
                    ));
                }
                (None, None) => {
                    return Err(ApiError::unprocessable(
                        "missing_field",
                        Some("CustomerId"),
                        "a signup order needs CustomerId or Customer",
                    ));
                }
            };
            let vid = b.cart.plan_variant_id.as_deref().ok_or_else(|| {
                ApiError::unprocessable(
                    "missing_field",
                    Some("Cart.PlanVariantId"),
                    "a signup order books a plan variant",
                )
            })?;
            let start = b
                .start_date
                .as_deref()
                .map(|d| instant(d, "StartDate"))
                .transpose()?;
            let v = resolve_variant(&cat, vid, None, start.unwrap_or(now))?;
            check_plan(b, &v)?;
            let sold = sold_features(&v, start.unwrap_or(now));
            let (unit_counts, purchased) = components(&cat, &b.cart, &sold)?;
            let overrides = purchased
                .into_iter()
                .map(|(k, p)| {
                    (
                        k,
                        FeatureOverride {
                            purchased: Some(p),
                            ..FeatureOverride::default()
                        },
                    )
                })
                .collect();
            Ok(Resolved {
                what: Effect::Signup(Box::new(SignupRequest {
                    contract_id: contract_id.to_string(),
                    customer_id: customer_id.clone(),
                    selection: PlanSelection {
                        plan: v.plan.id.clone(),
                        pricing: None,
                        currency: Some(v.currency),
                        cycle: Some(v.cycle),
                        unit_counts,
                        overrides,
                        discount,
                    },
                    activation: start,
                    is_pending: false,
                    free_trial_days: None,
                    alignment: None,
                })),
                contract: None,
                customer_id,
                variant: variant_id(&v.plan.id, v.cycle, v.currency),
                currency: v.currency,
                kind: "Signup",
            })
        }
        Some(id) => {
            if b.customer.is_some() || b.start_date.is_some() {
                let param = if b.customer.is_some() {
                    "Customer"
                } else {
                    "StartDate"
                };
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    Some(param),
                    "a change order names its contract; the contract keeps its customer and start",
                ));
            }
            let stored = s.tally.contract(t, id).await.map_err(|e| match e {
                AppError::NotFound { .. } => ApiError::not_found("contract", "ContractId", id),
                other => other.into(),
            })?;
            let c = &stored.contract;
            if let Some(cid) = &b.customer_id
                && s.tally.customer(t, cid, "CustomerId").await?.id != c.customer_id
            {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    Some("CustomerId"),
                    "the contract belongs to another customer",
                ));
            }
            let at = b
                .change_date
                .as_deref()
                .map(|d| instant(d, "ChangeDate"))
                .transpose()?;
            let effective = at.unwrap_or(now);
            let period_start = c.period.as_ref().map(|p| p.start);
            let mut usage = Vec::new();
            for (i, u) in b.cart.metered_usages.iter().enumerate() {
                let param = format!("Cart.MeteredUsages[{i}].ComponentId");
                let f = component(&cat, &u.component_id, &param)?;
                if !c
                    .config
                    .features
                    .get(&f.slug)
                    .is_some_and(|x| x.kind == FeatureKind::Usage)
                {
                    return Err(ApiError::unprocessable(
                        "component_not_in_plan",
                        Some(&param),
                        format!("the contract has no usage component `{}`", f.slug),
                    ));
                }
                if u.quantity < Decimal::ZERO {
                    return Err(ApiError::unprocessable(
                        "negative_value",
                        Some(&format!("Cart.MeteredUsages[{i}].Quantity")),
                        "a quantity of 0 or more",
                    ));
                }
                let due_param = format!("Cart.MeteredUsages[{i}].DueDate");
                let ts = u
                    .due_date
                    .as_deref()
                    .map(|d| instant(d, &due_param))
                    .transpose()?
                    .unwrap_or(effective);
                if period_start.is_some_and(|p| ts < p) || ts > now.max(effective) {
                    return Err(ApiError::unprocessable(
                        "usage_outside_period",
                        Some(&due_param),
                        "usage is dated inside the contract's current period, not in the future",
                    ));
                }
                usage.push(UsageRecord {
                    feature_slug: f.slug.clone(),
                    units: u.quantity,
                    timestamp: ts,
                    is_absolute: false,
                });
            }
            let current = (c.config.cycle, c.config.currency);
            let variant = match b.cart.plan_variant_id.as_deref() {
                Some(vid) => Some(resolve_variant(&cat, vid, Some(current), effective)?),
                None => None,
            };
            if let Some(v) = &variant {
                check_plan(b, v)?;
            }
            let changes_variant = variant
                .as_ref()
                .is_some_and(|v| v.plan.id != c.config.plan_id || (v.cycle, v.currency) != current);
            let interim = b.trigger_interim_billing.unwrap_or(changes_variant);
            let activation = match at {
                Some(t) => Activation::Date(t),
                None => Activation::Now,
            };
            let (change, vid, currency) = if let Some(v) = variant.filter(|_| changes_variant) {
                let sold = sold_features(&v, effective);
                let (mut counts, carried) =
                    carried_selection(&cat, &c.config, &v.plan.id, v.currency, v.cycle, effective);
                let (more, purchased) = components(&cat, &b.cart, &sold)?;
                counts.extend(more);
                let mut overrides = carried;
                for (k, p) in purchased {
                    overrides.insert(
                        k,
                        FeatureOverride {
                            purchased: Some(p),
                            ..FeatureOverride::default()
                        },
                    );
                }
                (
                    Some(ChangeKind::NewPlan {
                        plan: v.plan.id.clone(),
                        pricing: None,
                        currency: Some(v.currency),
                        cycle: Some(v.cycle),
                        unit_counts: counts,
                        overrides,
                        discount: discount.clone(),
                    }),
                    variant_id(&v.plan.id, v.cycle, v.currency),
                    v.currency,
                )
            } else {
                let sold: BTreeMap<String, bool> = c
                    .config
                    .features
                    .values()
                    .map(|f| (f.slug.clone(), f.optional))
                    .collect();
                let (unit_counts, purchased) = components(&cat, &b.cart, &sold)?;
                let vid = variant_id(&c.config.plan_id, c.config.cycle, c.config.currency);
                if unit_counts.is_empty() && purchased.is_empty() && discount.is_none() {
                    (None, vid, c.config.currency)
                } else {
                    (
                        Some(ChangeKind::ChangeUnitCount {
                            unit_counts,
                            purchased,
                            discount: discount.clone(),
                        }),
                        vid,
                        c.config.currency,
                    )
                }
            };
            let what = match change {
                Some(change) => Effect::Change(
                    Box::new(ChangeRequest {
                        change,
                        activation,
                        // billwerk does not hold downgrades back to the period end.
                        downgrade_allowed: true,
                        proration: Proration::CreateProrations,
                        invoice_now: interim,
                    }),
                    usage,
                ),
                None if usage.is_empty() => {
                    return Err(ApiError::unprocessable(
                        "empty_order",
                        Some("Cart"),
                        "the order changes nothing: book a plan variant, components, a discount or usage",
                    ));
                }
                None => Effect::UsageOnly(usage),
            };
            Ok(Resolved {
                what,
                customer_id: c.customer_id.clone(),
                contract: Some(stored),
                variant: vid,
                currency,
                kind: "Upgrade",
            })
        }
    }
}

/// `Cart.PlanId`, when given, must be the variant's plan.
fn check_plan(b: &OrderBody, v: &Variant) -> ApiResult<()> {
    match &b.cart.plan_id {
        Some(p) if p != &v.plan.id && p != &v.plan.slug => Err(ApiError::unprocessable(
            "invalid_value",
            Some("Cart.PlanId"),
            "the plan of Cart.PlanVariantId",
        )),
        _ => Ok(()),
    }
}

/// Feature slug -> optional, of what a variant sells at `at`.
fn sold_features(v: &Variant, at: Timestamp) -> BTreeMap<String, bool> {
    v.plan
        .pricing_as_of(at)
        .and_then(|p| p.price_set(v.currency, v.cycle))
        .map(|set| {
            set.features
                .iter()
                .map(|(k, f)| (k.clone(), f.optional))
                .collect()
        })
        .unwrap_or_default()
}

/// The priced effect of an order now: the invoice its commit would issue and the contract after.
struct Priced {
    invoice: Option<InvoiceDraft>,
    contract: Option<Contract>,
}

async fn price(s: &AppState, t: &Tenant, rid: &RequestId, r: &Resolved) -> ApiResult<Priced> {
    match &r.what {
        Effect::Signup(req) => {
            let (c, drafts, _) = s
                .tally
                .subscribe_with(
                    t,
                    (**req).clone(),
                    true,
                    &OrderWrite::default(),
                    &actor(rid),
                )
                .await?;
            Ok(Priced {
                invoice: drafts.into_iter().last(),
                contract: Some(c),
            })
        }
        Effect::Change(req, usage) => {
            let id = r
                .contract
                .as_ref()
                .map(|c| c.contract.id.clone())
                .unwrap_or_default();
            let extra = OrderWrite {
                order: None,
                usage: usage.clone(),
            };
            let out = s
                .tally
                .change_with(t, &id, req, true, &extra, &actor(rid))
                .await?;
            Ok(Priced {
                invoice: out.outcome.invoice,
                contract: Some(out.outcome.contract),
            })
        }
        Effect::UsageOnly(_) => Ok(Priced {
            invoice: None,
            contract: r.contract.as_ref().map(|c| c.contract.clone()),
        }),
    }
}

/// billwerk's name of an order's status.
fn order_status(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Open => "InProgress",
        OrderStatus::Committed => "Completed",
        OrderStatus::Deleted => "Deleted",
    }
}

/// The order as billwerk shows it, with its pricing.
fn order_json(o: &Order, r: &Resolved, p: &Priced, body: &OrderBody, tax_rate: Decimal) -> Value {
    let cur = r.currency;
    let inv = p.invoice.as_ref();
    let zero = Decimal::ZERO;
    let next_net = p
        .contract
        .as_ref()
        .map_or(zero, |c| period_amount(&c.config));
    let next_gross =
        next_net + (next_net * tax_rate / Decimal::ONE_HUNDRED).round_dp(cur.minor_units());
    json!({
        "Id": o.id,
        "CustomerId": o.customer_id,
        "ContractId": o.contract_id,
        "PlanVariantId": r.variant,
        "Currency": cur.to_string().to_uppercase(),
        "Status": order_status(o.status),
        "OrderType": o.kind,
        "IsTrial": p.contract.as_ref().is_some_and(|c| c.in_trial()),
        "TrialEndPolicy": "NoTrial",
        "TriggerInterimBilling": body.trigger_interim_billing.unwrap_or(false),
        "ChangeDate": body.change_date,
        "ComponentSubscriptions": body.cart.component_subscriptions.iter().map(|c| json!({
            "ComponentId": c.component_id,
            "Quantity": c.quantity,
        })).collect::<Vec<_>>(),
        "Total": normalize(inv.map_or(zero, |i| i.net), cur),
        "TotalVat": normalize(inv.map_or(zero, |i| i.tax), cur),
        "TotalGross": normalize(inv.map_or(zero, |i| i.gross), cur),
        "NextTotalGross": normalize(next_gross, cur),
        "Invoice": inv.map(draft_json),
        "CreatedAt": o.created_at,
        "CustomFields": body.custom_fields.clone().unwrap_or(json!({})),
    })
}

async fn create_inline_customer(
    s: &AppState,
    t: &Tenant,
    rid: &RequestId,
    c: &CustomerBody,
) -> ApiResult<String> {
    if let Some(ext) = &c.external_customer_id
        && s.tally
            .store
            .customer(&t.id, ext)
            .await
            .map_err(AppError::from)?
            .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            Some("Customer.ExternalCustomerId"),
            format!("a customer with external id `{ext}` exists: book with CustomerId"),
        ));
    }
    let name = match (&c.company_name, &c.first_name, &c.last_name) {
        (Some(co), _, _) => Some(co.clone()),
        (None, f, l) => {
            let n = [f.as_deref(), l.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!n.is_empty()).then_some(n)
        }
    };
    let mut metadata = BTreeMap::new();
    for (k, v) in [("vat_id", &c.vat_id), ("locale", &c.locale)] {
        if let Some(v) = v {
            metadata.insert(k.to_string(), v.clone());
        }
    }
    let customer = Customer {
        id: new_id("Cust"),
        slug: c.external_customer_id.clone(),
        name,
        emails: c
            .email_address
            .as_ref()
            .map_or(json!({}), |e| json!({ "main": e })),
        customer_reference: c.external_customer_id.clone(),
        address: c.address.clone(),
        metadata,
        notes: None,
        tax_rate: None,
        created_at: s.tally.now(t),
    };
    s.tally
        .save_customer(t, &customer, true, &actor(rid))
        .await?;
    Ok(customer.id)
}

/// `POST /billwerk/api/v1/Orders`: prices an order and keeps it open until `commit`.
#[utoipa::path(post, path = "/Orders", tag = "billwerk", request_body = OrderBody, responses((status = 200, description = "The priced order (Status InProgress)", body = OrderDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Unknown contract, customer, plan variant or component", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn create_order(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    body: Bytes,
) -> ApiResult {
    let raw = parse_value(&body)?;
    let b: OrderBody = from_value(raw.clone())?;
    let contract_id = b.contract_id.clone().unwrap_or_else(|| new_id("Cont"));
    let mut r = resolve(&s, &t, &b, &contract_id).await?;
    if let (Effect::Signup(req), Some(c)) = (&mut r.what, &b.customer) {
        let id = create_inline_customer(&s, &t, &rid, c).await?;
        req.customer_id = id.clone();
        r.customer_id = id;
    }
    let p = price(&s, &t, &rid, &r).await?;
    let o = Order {
        id: new_id("Ord"),
        dialect: DIALECT.into(),
        kind: r.kind.into(),
        contract_id: r
            .contract
            .as_ref()
            .map_or(contract_id, |c| c.contract.id.clone()),
        customer_id: r.customer_id.clone(),
        status: OrderStatus::Open,
        request: raw,
        created_at: s.tally.now(&t),
        closed_at: None,
    };
    s.tally
        .store
        .save_order(&t.id, &o)
        .await
        .map_err(AppError::from)?;
    let tax = tax_rate_of(&s, &t, &o.customer_id).await;
    Ok(answer(order_json(&o, &r, &p, &b, tax)))
}

/// `POST /billwerk/api/v1/Orders/preview`: prices an order without keeping anything.
#[utoipa::path(post, path = "/Orders/preview", tag = "billwerk", request_body = OrderBody, responses((status = 200, description = "The priced order; nothing is stored", body = OrderDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Unknown contract, customer, plan variant or component", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn preview_order(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    body: Bytes,
) -> ApiResult {
    let b: OrderBody = parse_json(&body)?;
    if b.customer.is_some() {
        return Err(ApiError::unprocessable(
            "invalid_value",
            Some("Customer"),
            "a preview prices for an existing customer: send CustomerId",
        ));
    }
    let contract_id = b.contract_id.clone().unwrap_or_default();
    let r = resolve(&s, &t, &b, &contract_id).await?;
    let p = price(&s, &t, &rid, &r).await?;
    let o = Order {
        id: String::new(),
        dialect: DIALECT.into(),
        kind: r.kind.into(),
        contract_id,
        customer_id: r.customer_id.clone(),
        status: OrderStatus::Open,
        request: Value::Null,
        created_at: s.tally.now(&t),
        closed_at: None,
    };
    let tax = tax_rate_of(&s, &t, &o.customer_id).await;
    let mut v = order_json(&o, &r, &p, &b, tax);
    v["Id"] = Value::Null;
    Ok(answer(v))
}

async fn read_order(s: &AppState, t: &Tenant, id: &str) -> ApiResult<Order> {
    s.tally
        .store
        .order(&t.id, id)
        .await
        .map_err(AppError::from)?
        .filter(|o| o.dialect == DIALECT)
        .ok_or_else(|| ApiError::not_found("order", "id", id))
}

/// `GET /billwerk/api/v1/Orders/{id}`: the order as it was priced, and its status.
#[utoipa::path(get, path = "/Orders/{id}", tag = "billwerk", params(("id" = String, Path, description = "Order id")), responses((status = 200, description = "The order", body = OrderStatusDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_order(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let o = read_order(&s, &t, &id).await?;
    let b: OrderBody = from_value(o.request.clone())?;
    Ok(answer(json!({
        "Id": o.id,
        "CustomerId": o.customer_id,
        "ContractId": o.contract_id,
        "Status": order_status(o.status),
        "OrderType": o.kind,
        "PlanVariantId": b.cart.plan_variant_id,
        "ChangeDate": b.change_date,
        "TriggerInterimBilling": b.trigger_interim_billing.unwrap_or(false),
        "CreatedAt": o.created_at,
        "CommittedAt": o.closed_at,
    })))
}

/// `POST /billwerk/api/v1/Orders/{id}/commit`: carries the order out now (once: committing it
/// again answers the contract unchanged) and answers the contract. The body (`{}` or a payment
/// method) is accepted; Tally does not collect payments.
#[utoipa::path(post, path = "/Orders/{id}/commit", tag = "billwerk", params(("id" = String, Path, description = "Order id")), request_body(content = Object, description = "`{}` or a payment method; not used"), responses((status = 200, description = "The contract after the order", body = ContractDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Concurrent change; retry", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn commit_order(
    State(s): State<AppState>,
    Auth(t): Auth,
    rid: RequestId,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    if !body.iter().all(u8::is_ascii_whitespace) {
        parse_value(&body)?;
    }
    let o = read_order(&s, &t, &id).await?;
    match o.status {
        OrderStatus::Committed => return contract_answer(&s, &t, &o.contract_id).await,
        OrderStatus::Deleted => {
            return Err(ApiError::unprocessable(
                "order_closed",
                Some("id"),
                "the order was deleted",
            ));
        }
        OrderStatus::Open => {}
    }
    let b: OrderBody = from_value(o.request.clone())?;
    let r = resolve(&s, &t, &b, &o.contract_id).await?;
    let done = Order {
        status: OrderStatus::Committed,
        closed_at: Some(s.tally.now(&t)),
        ..o.clone()
    };
    let result = match r.what {
        Effect::Signup(mut req) => {
            req.customer_id = o.customer_id.clone();
            let extra = OrderWrite {
                order: Some(done),
                usage: Vec::new(),
            };
            s.tally
                .subscribe_with(&t, *req, false, &extra, &actor(&rid))
                .await
                .map(|_| ())
        }
        Effect::Change(req, usage) => {
            let extra = OrderWrite {
                order: Some(done),
                usage,
            };
            s.tally
                .change_with(&t, &o.contract_id, &req, false, &extra, &actor(&rid))
                .await
                .map(|_| ())
        }
        Effect::UsageOnly(usage) => {
            let extra = OrderWrite {
                order: Some(done),
                usage,
            };
            s.tally
                .carry_out_order(&t, &o.contract_id, &extra)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => contract_answer(&s, &t, &o.contract_id).await,
        Err(e @ (AppError::Conflict | AppError::Store(_))) => {
            // Another request may have carried it out meanwhile: answer that, or the conflict.
            match read_order(&s, &t, &id).await?.status {
                OrderStatus::Committed => contract_answer(&s, &t, &o.contract_id).await,
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn lifecycle(c: &Contract) -> &'static str {
    match c.status {
        ContractStatus::Active if c.in_trial() => "InTrial",
        ContractStatus::Active => "Active",
        ContractStatus::Pending | ContractStatus::Scheduled => "Pending",
        ContractStatus::Canceled => "Inactive",
    }
}

fn phase_json(kind: &str, start: Timestamp, cfg: &Configuration) -> Value {
    json!({
        "Type": kind,
        "StartDate": start,
        "PlanVariantId": variant_id(&cfg.plan_id, cfg.cycle, cfg.currency),
        "PlanId": cfg.plan_id,
        "Quantity": 1,
        "InheritStartDate": false,
    })
}

/// A contract as billwerk shows it.
pub fn contract_json(
    c: &Contract,
    customer: Option<&Customer>,
    balance: Decimal,
    now: Timestamp,
) -> Value {
    let mut phases = Vec::new();
    for (i, p) in c.phases.iter().enumerate() {
        let mut start = p.start;
        if i == 0
            && let Some(te) = c.trial_end
        {
            phases.push(phase_json("Trial", p.start, &p.config));
            if p.end.is_some_and(|e| e <= te) {
                continue;
            }
            start = start.max(te);
        }
        phases.push(phase_json("Normal", start, &p.config));
    }
    if let Some(end) = c.ended_at.or(c.cancel_at) {
        phases.push(json!({ "Type": "Inactive", "StartDate": end }));
    }
    let current = phases
        .iter()
        .rev()
        .find(|p| {
            p["StartDate"]
                .as_str()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .is_some_and(|s| s <= now)
        })
        .cloned();
    let billed = c.period_idx >= 1;
    let period = c.period.as_ref();
    json!({
        "Id": c.id,
        "CustomerId": c.customer_id,
        "CustomerName": customer.and_then(|x| x.name.clone()),
        "ExternalCustomerId": customer.and_then(|x| x.slug.clone()),
        "PlanId": c.config.plan_id,
        "PlanVariantId": variant_id(&c.config.plan_id, c.config.cycle, c.config.currency),
        "Currency": c.config.currency.to_string().to_uppercase(),
        "LifecycleStatus": lifecycle(c),
        "StartDate": c.activation,
        "EndDate": c.ended_at.or(c.cancel_at),
        "LastBillingDate": period.filter(|_| billed).map(|p| p.start),
        "NextBillingDate": period.and_then(|p| p.end),
        "BilledUntil": if billed { period.and_then(|p| p.end) } else { c.activation },
        "Balance": normalize(balance, c.config.currency),
        "Phases": phases,
        "CurrentPhase": current,
        "CustomFields": {},
    })
}

async fn contract_answer(s: &AppState, t: &Tenant, id: &str) -> ApiResult {
    let c = s.tally.contract(t, id).await?.contract;
    let customer = s
        .tally
        .store
        .customer(&t.id, &c.customer_id)
        .await
        .map_err(AppError::from)?;
    let cur = c.config.currency;
    let credit = s
        .tally
        .store
        .balances(&t.id, &c.customer_id)
        .await
        .map_err(AppError::from)?
        .get(&cur)
        .copied()
        .unwrap_or_default();
    let (invoices, _) = s
        .tally
        .store
        .invoices(
            &t.id,
            &InvoiceFilter {
                contract_id: Some(c.id.clone()),
                ..Default::default()
            },
            &Page {
                offset: 0,
                limit: u64::MAX,
            },
        )
        .await
        .map_err(AppError::from)?;
    let owed: Decimal = invoices
        .iter()
        .filter(|i| i.status == InvoiceStatus::Open)
        .map(|i| i.draft.amount_due)
        .sum();
    Ok(answer(contract_json(
        &c,
        customer.as_ref(),
        credit - owed,
        s.tally.now(t),
    )))
}

/// `GET /billwerk/api/v1/Contracts/{id}`: phases, billing dates and balance.
#[utoipa::path(get, path = "/Contracts/{id}", tag = "billwerk", params(("id" = String, Path, description = "Contract id")), responses((status = 200, description = "The contract", body = ContractDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_contract(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    contract_answer(&s, &t, &id).await
}

// The documented shapes of the answers above (the OpenAPI document's; the end-to-end tests hold
// every answer to them).

/// A component and its quantity, as the order booked it.
#[derive(utoipa::ToSchema)]
#[schema(as = BillwerkComponentQuantity, rename_all = "PascalCase")]
#[allow(dead_code)]
pub struct ComponentQuantityDoc {
    /// The component (a feature's slug).
    component_id: String,
    /// Units.
    quantity: String,
}

/// An order as billwerk prices it (`POST /Orders`, `/Orders/preview`).
#[derive(utoipa::ToSchema)]
#[schema(as = BillwerkOrder, rename_all = "PascalCase")]
#[allow(dead_code)]
pub struct OrderDoc {
    /// The order's id (none in a preview).
    id: Option<String>,
    /// Its customer.
    customer_id: String,
    /// The contract it changes or creates.
    contract_id: Option<String>,
    /// `<plan>-<cycle>-<currency>`.
    plan_variant_id: String,
    /// `EUR`, `USD` ...
    currency: String,
    /// `InProgress`, `Completed` or `Deleted`.
    status: String,
    /// `Signup`, `Upgrade` ...
    order_type: String,
    /// The contract would be in its trial.
    is_trial: bool,
    /// Always `NoTrial`.
    trial_end_policy: String,
    /// As asked.
    trigger_interim_billing: bool,
    /// As asked.
    change_date: Option<String>,
    /// The components booked.
    component_subscriptions: Vec<ComponentQuantityDoc>,
    /// Net of the invoice the commit issues now.
    total: String,
    /// Its tax.
    total_vat: String,
    /// Its gross.
    total_gross: String,
    /// The gross of a full period after the order.
    next_total_gross: String,
    /// The invoice the commit issues now.
    invoice: Option<crate::dto::InvoiceDraftDoc>,
    /// When the order was made.
    #[schema(format = DateTime)]
    created_at: String,
    /// As given.
    #[schema(value_type = Object)]
    custom_fields: Value,
}

/// An order read back (`GET /Orders/{id}`).
#[derive(utoipa::ToSchema)]
#[schema(as = BillwerkOrderStatus, rename_all = "PascalCase")]
#[allow(dead_code)]
pub struct OrderStatusDoc {
    /// The order's id.
    id: String,
    /// Its customer.
    customer_id: String,
    /// The contract it changes or created.
    contract_id: Option<String>,
    /// `InProgress`, `Completed` or `Deleted`.
    status: String,
    /// `Signup`, `Upgrade` ...
    order_type: String,
    /// The variant booked.
    plan_variant_id: Option<String>,
    /// As asked.
    change_date: Option<String>,
    /// As asked.
    trigger_interim_billing: bool,
    /// When the order was made.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it was committed.
    #[schema(format = DateTime)]
    committed_at: Option<String>,
}

/// One phase of a billwerk contract.
#[derive(utoipa::ToSchema)]
#[schema(as = BillwerkPhase, rename_all = "PascalCase")]
#[allow(dead_code)]
pub struct PhaseDoc {
    /// `Trial`, `Normal` or `Inactive`.
    r#type: String,
    /// When it starts.
    #[schema(format = DateTime)]
    start_date: String,
    /// The variant billed (not on `Inactive`).
    #[schema(required = false)]
    plan_variant_id: String,
    /// The plan billed (not on `Inactive`).
    #[schema(required = false)]
    plan_id: String,
    /// Always 1 (not on `Inactive`).
    #[schema(required = false)]
    quantity: i64,
    /// Always false (not on `Inactive`).
    #[schema(required = false)]
    inherit_start_date: bool,
}

/// A contract as billwerk shows it.
#[derive(utoipa::ToSchema)]
#[schema(as = BillwerkContract, rename_all = "PascalCase")]
#[allow(dead_code)]
pub struct ContractDoc {
    /// The contract's id.
    id: String,
    /// Its customer.
    customer_id: String,
    /// The customer's name.
    customer_name: Option<String>,
    /// The customer's external id.
    external_customer_id: Option<String>,
    /// Its plan.
    plan_id: String,
    /// `<plan>-<cycle>-<currency>`.
    plan_variant_id: String,
    /// `EUR`, `USD` ...
    currency: String,
    /// `InTrial`, `Active`, `Pending` or `Inactive`.
    lifecycle_status: String,
    /// Activation.
    #[schema(format = DateTime)]
    start_date: Option<String>,
    /// When it ended or will end.
    #[schema(format = DateTime)]
    end_date: Option<String>,
    /// The current period's start, once billed.
    #[schema(format = DateTime)]
    last_billing_date: Option<String>,
    /// The current period's end.
    #[schema(format = DateTime)]
    next_billing_date: Option<String>,
    /// Billed up to.
    #[schema(format = DateTime)]
    billed_until: Option<String>,
    /// The customer's credit balance in the contract's currency.
    balance: String,
    /// Its phases.
    phases: Vec<PhaseDoc>,
    /// The phase in force now.
    current_phase: Option<PhaseDoc>,
    /// Always empty.
    #[schema(value_type = Object)]
    custom_fields: Value,
}
