//! Dialect adapters: Flexprice, billwerk and Salesbricks clients pointed at Tally. Each adapter
//! lives under its own prefix, parses its vendor's bodies, calls the same use cases as the native
//! API and renders its vendor's shapes; `docs/dialects.md` documents every mapping.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tally_app::store::Tenant;
use tally_core::prelude::*;

use crate::AppState;
pub(crate) use crate::dto::period_amount;
use crate::error::ApiError;

pub mod billwerk;
pub mod flexprice;
pub mod salesbricks;

/// The unit counts and purchased add-ons of `current` that `plan` (its pricing as of `at`, in
/// `currency` and `cycle`) also sells, so that a plan change keeps them: Flexprice and billwerk
/// move a subscription to another plan without restating its quantities.
pub(crate) fn carried_selection(
    catalog: &Catalog,
    current: &Configuration,
    plan: &str,
    currency: Currency,
    cycle: Cycle,
    at: Timestamp,
) -> (BTreeMap<String, Decimal>, BTreeMap<String, FeatureOverride>) {
    let mut counts = BTreeMap::new();
    let mut overrides = BTreeMap::new();
    let Some(set) = catalog
        .plan(plan)
        .and_then(|p| p.pricing_as_of(at))
        .and_then(|p| p.price_set(currency, cycle))
    else {
        return (counts, overrides);
    };
    for (slug, f) in &current.features {
        let Some(price) = set.features.get(slug) else {
            continue;
        };
        if f.kind == FeatureKind::PerUnit {
            counts.insert(slug.clone(), f.quantity);
        }
        if price.optional && f.optional && f.purchased {
            overrides.insert(
                slug.clone(),
                FeatureOverride {
                    purchased: Some(true),
                    ..FeatureOverride::default()
                },
            );
        }
    }
    (counts, overrides)
}

/// Sum of an invoice's lines of one kind.
pub(crate) fn sum_kind(inv: &InvoiceDraft, kind: LineKind) -> Decimal {
    inv.lines
        .iter()
        .filter(|l| l.kind == kind)
        .map(|l| l.amount)
        .sum()
}

/// The tax rate in force for a customer: its own, else the tenant's.
pub(crate) async fn tax_rate_of(s: &AppState, t: &Tenant, customer_id: &str) -> Decimal {
    match s.tally.store.customer(&t.id, customer_id).await {
        Ok(Some(c)) => c.tax_rate.unwrap_or(t.settings.tax_rate),
        _ => t.settings.tax_rate,
    }
}

/// The tenant's time zone (validated when the settings were saved).
pub(crate) fn tz(t: &Tenant) -> jiff::tz::TimeZone {
    tally_core::calendar::time_zone(&t.settings.time_zone).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// The tenant's catalog.
pub(crate) async fn catalog(s: &AppState, t: &Tenant) -> Result<std::sync::Arc<Catalog>, ApiError> {
    Ok(s.tally
        .store
        .catalog(&t.id)
        .await
        .map_err(tally_app::AppError::from)?)
}

/// Parses a currency code in any case (`USD`, `usd`).
pub(crate) fn currency(code: &str, param: &str) -> Result<Currency, ApiError> {
    code.to_ascii_lowercase().parse().map_err(|_| {
        ApiError::unprocessable(
            "invalid_value",
            Some(param),
            format!("`{code}` is not a currency Tally bills in (usd, eur, gbp, brl, ars)"),
        )
    })
}

/// Checks that a plan exists (by id or slug) and answers it.
pub(crate) fn plan<'c>(catalog: &'c Catalog, id: &str, param: &str) -> Result<&'c Plan, ApiError> {
    catalog
        .plan(id)
        .ok_or_else(|| ApiError::not_found("plan", param, id))
}

/// Parses a date or an instant (`2026-03-01` is its midnight UTC).
pub(crate) fn instant(v: &str, param: &str) -> Result<Timestamp, ApiError> {
    crate::dto::optional_instant(&Some(v.to_string()), param)?.ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_value",
            Some(param),
            "expected a date or an instant",
        )
    })
}

/// Reads a quantity written as a JSON number (billwerk's `2.0`) or a decimal string, through
/// its decimal text, so `2.5` is exactly 2.5. Quantities only: money is never read from a float.
pub(crate) fn de_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    use serde::Deserialize;
    use serde::de::Error;
    let text = match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s,
        other => return Err(D::Error::custom(format!("expected a number, got {other}"))),
    };
    text.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| D::Error::custom(format!("`{text}` is not a quantity")))
}

/// [`de_quantity`] for an optional field.
pub(crate) fn de_quantity_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Decimal>, D::Error> {
    de_quantity(d).map(Some)
}
