//! Catalog: features, plans with versioned pricings per currency and cycle, tiers, and discounts,
//! with validation that names the offending field.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::Cycle;
use crate::error::CoreError;
use crate::money::{Currency, Exact};

/// How a feature is charged.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A flat fee per period.
    Flat,
    /// A price per purchased unit per period (optionally tiered), plus an optional flat fee.
    PerUnit,
    /// A price per unit used, billed in arrears, plus an optional flat fee.
    Usage,
}

/// A billable capability of a product (`seats`, `api_calls`, `sso`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// `Feat_<uuid>`.
    pub id: String,
    /// Stable slug, unique per tenant.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// How it is charged.
    pub kind: FeatureKind,
}

/// When a recurring charge is billed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// At the start of the period it pays for.
    #[default]
    InAdvance,
    /// At the end of the period (or of its phase) for the time it was in force.
    InArrears,
}

/// How tiers price a quantity.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    /// Each unit is priced by the tier it falls in.
    #[default]
    Graduated,
    /// All units are priced at the tier the total reaches.
    Volume,
}

/// The end of a tier: a unit count (`{"Concrete": "10"}`) or `"Infinity"` (seed 000's `TierValue`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TierEnd {
    /// The last unit of the tier, inclusive.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    Concrete(Decimal),
    /// The tier has no upper end.
    Infinity,
}

/// A pricing tier: units `tier_start..=tier_end` at `amount` per unit.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// First unit of the tier (the first tier starts at 0 or 1).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tier_start: Decimal,
    /// Last unit of the tier, or `Infinity`.
    pub tier_end: TierEnd,
    /// Price per unit in this tier.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub amount: Decimal,
}

/// What a quantity costs under a tier table, as (tier index, units, unit amount) pieces.
pub fn rate_tiers(
    tiers: &[Tier],
    mode: TierMode,
    quantity: Decimal,
) -> Vec<(usize, Decimal, Decimal)> {
    let mut out = Vec::new();
    if quantity <= Decimal::ZERO {
        return out;
    }
    let mut lo = Decimal::ZERO;
    for (i, t) in tiers.iter().enumerate() {
        let hi = match &t.tier_end {
            TierEnd::Concrete(e) => Some(*e),
            TierEnd::Infinity => None,
        };
        let reaches = hi.is_none_or(|h| quantity <= h);
        match mode {
            TierMode::Graduated => {
                if quantity > lo {
                    let top = hi.map_or(quantity, |h| quantity.min(h));
                    out.push((i, top - lo, t.amount));
                }
            }
            TierMode::Volume => {
                if reaches {
                    out.push((i, quantity, t.amount));
                    return out;
                }
            }
        }
        if reaches {
            break;
        }
        lo = hi.unwrap_or(lo);
    }
    out
}

/// Checks that tiers cover every unit from the first exactly once and end in `Infinity`.
///
/// # Errors
/// [`CoreError::InvalidTiers`] naming the first offending tier.
pub fn validate_tiers(tiers: &[Tier], param: &str) -> Result<(), CoreError> {
    let bad = |i: usize, detail: String| CoreError::InvalidTiers {
        param: format!("{param}[{i}]"),
        detail,
    };
    if tiers.is_empty() {
        return Err(CoreError::InvalidTiers {
            param: param.to_string(),
            detail: "at least one tier is required".into(),
        });
    }
    let mut prev_end: Option<Decimal> = None;
    for (i, t) in tiers.iter().enumerate() {
        if t.amount < Decimal::ZERO {
            return Err(CoreError::Negative {
                param: format!("{param}[{i}].amount"),
                value: t.amount.to_string(),
            });
        }
        if t.tier_start.fract() != Decimal::ZERO || t.tier_start < Decimal::ZERO {
            return Err(bad(
                i,
                format!(
                    "tier_start must be a whole number of units, got {}",
                    t.tier_start
                ),
            ));
        }
        match prev_end {
            None if t.tier_start > Decimal::ONE => {
                return Err(bad(
                    i,
                    format!("the first tier must start at 0 or 1, got {}", t.tier_start),
                ));
            }
            Some(pe) if pe.checked_add(Decimal::ONE) != Some(t.tier_start) => {
                return Err(bad(
                    i,
                    format!(
                        "tiers must be contiguous: expected tier_start {} after a tier ending at {pe}, got {}",
                        pe.saturating_add(Decimal::ONE),
                        t.tier_start
                    ),
                ));
            }
            _ => {}
        }
        match &t.tier_end {
            TierEnd::Concrete(e) => {
                if e.fract() != Decimal::ZERO || *e < t.tier_start.max(Decimal::ONE) {
                    return Err(bad(
                        i,
                        format!(
                            "tier_end {e} must be a whole number not below tier_start {}",
                            t.tier_start
                        ),
                    ));
                }
                if i + 1 == tiers.len() {
                    return Err(bad(
                        i,
                        "the last tier must end at Infinity so every quantity has a price".into(),
                    ));
                }
                prev_end = Some(*e);
            }
            TierEnd::Infinity => {
                if i + 1 != tiers.len() {
                    return Err(bad(i, "only the last tier may end at Infinity".into()));
                }
            }
        }
    }
    Ok(())
}

/// The price of one feature in one (currency, cycle) of a pricing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturePrice {
    /// Price per unit (per purchased unit and period, or per unit used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub price: Option<Decimal>,
    /// Fixed amount per period while the feature is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub flat_fee: Option<Decimal>,
    /// Tiers replacing `price`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<Tier>>,
    /// How tiers apply.
    #[serde(default)]
    pub tier_mode: TierMode,
    /// An add-on: billed only when purchased.
    #[serde(default)]
    pub optional: bool,
    /// When the recurring part is billed.
    #[serde(default)]
    pub timing: Timing,
}

/// The prices of a plan in one currency and cycle.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceSet {
    /// Currency.
    pub currency: Currency,
    /// Cycle.
    pub cycle: Cycle,
    /// Feature slug -> price.
    pub features: BTreeMap<String, FeaturePrice>,
}

/// A published version of a plan's prices.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    /// `Pric_<uuid>`.
    pub id: String,
    /// Slug, unique within the tenant.
    pub slug: String,
    /// From when signups and `new_plan` changes pick it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub published_at: Timestamp,
    /// One entry per (currency, cycle) the plan is sold in.
    pub prices: Vec<PriceSet>,
}

impl Pricing {
    /// The prices for a currency and cycle, if the plan is sold so.
    pub fn price_set(&self, currency: Currency, cycle: Cycle) -> Option<&PriceSet> {
        self.prices
            .iter()
            .find(|p| p.currency == currency && p.cycle == cycle)
    }
}

/// A plan: a named bundle of features with versioned pricings.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `Plan_<uuid>`.
    pub id: String,
    /// Slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Versions, in the order they were added.
    pub pricings: Vec<Pricing>,
}

impl Plan {
    /// The latest pricing published at or before `at` (on equal instants, the one added last).
    pub fn pricing_as_of(&self, at: Timestamp) -> Option<&Pricing> {
        self.pricings
            .iter()
            .filter(|p| p.published_at <= at)
            .max_by(|a, b| a.published_at.cmp(&b.published_at))
            .and_then(|best| {
                self.pricings
                    .iter()
                    .rev()
                    .find(|p| p.published_at == best.published_at)
            })
    }

    /// The pricing with this id or slug (for a slug, its latest version).
    pub fn pricing(&self, id_or_slug: &str) -> Option<&Pricing> {
        self.pricings
            .iter()
            .rev()
            .find(|p| p.id == id_or_slug || p.slug == id_or_slug)
    }
}

/// What a discount takes off.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscountValue {
    /// A percentage (0 < p <= 100) of recurring charges.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    PercentOff(Decimal),
    /// A fixed amount per period off the in-advance recurring charges, in one currency.
    AmountOff {
        /// The amount.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        amount: Decimal,
        /// Its currency.
        currency: Currency,
    },
}

/// How long a discount lasts, counted in billing periods from the one it starts in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscountDuration {
    /// One period.
    Once,
    /// This many periods.
    Repeating(u32),
    /// Every period.
    Forever,
}

/// A discount, attachable to contracts by id, slug or coupon code.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    /// `Disc_<uuid>`.
    pub id: String,
    /// Slug.
    pub slug: String,
    /// What it takes off.
    pub value: DiscountValue,
    /// How long.
    pub duration: DiscountDuration,
    /// Codes customers may enter.
    #[serde(default)]
    pub coupon_codes: Vec<String>,
}

impl Discount {
    /// Whether the discount applies in period `idx` when it started in period `first`.
    pub fn active_in(&self, first: u32, idx: u32) -> bool {
        if idx < first {
            return false;
        }
        match self.duration {
            DiscountDuration::Once => idx == first,
            DiscountDuration::Repeating(n) => idx - first < n,
            DiscountDuration::Forever => true,
        }
    }

    /// A short description for invoice lines (`20% off`, `5.00 usd off`).
    pub fn describe(&self) -> String {
        match &self.value {
            DiscountValue::PercentOff(p) => format!("{} ({}% off)", self.slug, p.normalize()),
            DiscountValue::AmountOff { amount, currency } => {
                format!("{} ({amount} {currency} off)", self.slug)
            }
        }
    }

    /// The percentage as an exact fraction, if it is a percent discount.
    pub fn percent(&self) -> Result<Option<Exact>, CoreError> {
        match &self.value {
            DiscountValue::PercentOff(p) => {
                Ok(Some(Exact::from_decimal(*p)?.times(Exact::ratio(1, 100)?)?))
            }
            DiscountValue::AmountOff { .. } => Ok(None),
        }
    }
}

/// A tenant's catalog: everything contracts are priced from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Features.
    pub features: Vec<Feature>,
    /// Plans.
    pub plans: Vec<Plan>,
    /// Discounts.
    pub discounts: Vec<Discount>,
}

impl Catalog {
    /// A feature by id or slug.
    pub fn feature(&self, id_or_slug: &str) -> Option<&Feature> {
        self.features
            .iter()
            .find(|f| f.slug == id_or_slug || f.id == id_or_slug)
    }

    /// A plan by id or slug.
    pub fn plan(&self, id_or_slug: &str) -> Option<&Plan> {
        self.plans
            .iter()
            .find(|p| p.id == id_or_slug || p.slug == id_or_slug)
    }

    /// A discount by id, slug or coupon code.
    pub fn discount(&self, key: &str) -> Option<&Discount> {
        self.discounts
            .iter()
            .find(|d| d.id == key || d.slug == key || d.coupon_codes.iter().any(|c| c == key))
    }

    /// Checks the whole catalog: unique slugs, prices that reference known features and fit
    /// their kind, valid tiers, non-negative amounts, sane discounts.
    ///
    /// # Errors
    /// The first problem found, with the path of the offending field.
    pub fn validate(&self) -> Result<(), CoreError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in self.features.iter().enumerate() {
            if !seen.insert(f.slug.as_str()) {
                return Err(CoreError::invalid(
                    format!("features[{i}].slug"),
                    "a slug not used by another feature",
                    &f.slug,
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (pi, plan) in self.plans.iter().enumerate() {
            if !seen.insert(plan.slug.as_str()) {
                return Err(CoreError::invalid(
                    format!("plans[{pi}].slug"),
                    "a slug not used by another plan",
                    &plan.slug,
                ));
            }
            for (vi, pricing) in plan.pricings.iter().enumerate() {
                for (si, set) in pricing.prices.iter().enumerate() {
                    for (slug, price) in &set.features {
                        let param =
                            format!("plans[{pi}].pricings[{vi}].prices[{si}].features.{slug}");
                        let feature =
                            self.feature(slug)
                                .ok_or_else(|| CoreError::UnknownFeature {
                                    param: param.clone(),
                                    slug: slug.clone(),
                                })?;
                        validate_price(feature.kind, price, &param)?;
                    }
                }
            }
        }
        for (i, d) in self.discounts.iter().enumerate() {
            let param = format!("discounts[{i}]");
            match &d.value {
                DiscountValue::PercentOff(p)
                    if *p <= Decimal::ZERO || *p > Decimal::ONE_HUNDRED =>
                {
                    return Err(CoreError::invalid(
                        format!("{param}.percent_off"),
                        "a percentage above 0 and at most 100",
                        p,
                    ));
                }
                DiscountValue::AmountOff { amount, .. } if *amount <= Decimal::ZERO => {
                    return Err(CoreError::invalid(
                        format!("{param}.amount_off"),
                        "a positive amount",
                        amount,
                    ));
                }
                _ => {}
            }
            if let DiscountDuration::Repeating(0) = d.duration {
                return Err(CoreError::invalid(
                    format!("{param}.duration_cycles"),
                    "at least 1",
                    0,
                ));
            }
        }
        Ok(())
    }
}

fn non_negative(v: Option<Decimal>, param: String) -> Result<(), CoreError> {
    match v {
        Some(d) if d < Decimal::ZERO => Err(CoreError::Negative {
            param,
            value: d.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Checks one feature price against its feature's kind.
///
/// # Errors
/// Negative amounts, invalid tiers, or a price shape the kind cannot use.
pub fn validate_price(kind: FeatureKind, p: &FeaturePrice, param: &str) -> Result<(), CoreError> {
    non_negative(p.price, format!("{param}.price"))?;
    non_negative(p.flat_fee, format!("{param}.flat_fee"))?;
    if let Some(tiers) = &p.tiers {
        if kind == FeatureKind::Flat {
            return Err(CoreError::invalid(
                format!("{param}.tiers"),
                "no tiers on a flat feature",
                "tiers",
            ));
        }
        if p.price.is_some() {
            return Err(CoreError::invalid(
                format!("{param}.price"),
                "either price or tiers, not both",
                "both",
            ));
        }
        validate_tiers(tiers, &format!("{param}.tiers"))?;
    }
    if kind == FeatureKind::Flat && p.flat_fee.is_none() && p.price.is_none() {
        return Err(CoreError::invalid(
            format!("{param}.flat_fee"),
            "a flat fee for a flat feature",
            "nothing",
        ));
    }
    if kind == FeatureKind::Usage && p.timing == Timing::InArrears && p.flat_fee.is_none() {
        // Usage is always in arrears; the timing only concerns the flat fee, so this is harmless.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn tiers() -> Vec<Tier> {
        // 1-10 at 50, 11+ at 40 (the scenario file's example)
        vec![
            Tier {
                tier_start: d("1"),
                tier_end: TierEnd::Concrete(d("10")),
                amount: d("50"),
            },
            Tier {
                tier_start: d("11"),
                tier_end: TierEnd::Infinity,
                amount: d("40"),
            },
        ]
    }

    #[test]
    fn graduated_prices_each_unit_by_its_tier() {
        // 12 units: 10 x 50 + 2 x 40
        let r = rate_tiers(&tiers(), TierMode::Graduated, d("12"));
        assert_eq!(r, vec![(0, d("10"), d("50")), (1, d("2"), d("40"))]);
        // 10 units stay in the first tier
        assert_eq!(
            rate_tiers(&tiers(), TierMode::Graduated, d("10")),
            vec![(0, d("10"), d("50"))]
        );
        assert!(rate_tiers(&tiers(), TierMode::Graduated, d("0")).is_empty());
    }

    #[test]
    fn volume_prices_all_units_at_the_tier_reached() {
        // 12 units all at 40
        assert_eq!(
            rate_tiers(&tiers(), TierMode::Volume, d("12")),
            vec![(1, d("12"), d("40"))]
        );
        assert_eq!(
            rate_tiers(&tiers(), TierMode::Volume, d("3")),
            vec![(0, d("3"), d("50"))]
        );
    }

    #[test]
    fn tier_validation_names_the_tier() {
        validate_tiers(&tiers(), "t").unwrap();
        let mut gap = tiers();
        gap[1].tier_start = d("12");
        let e = validate_tiers(&gap, "t").unwrap_err();
        assert_eq!(e.param(), "t[1]");
        assert_eq!(e.code(), "invalid_tiers");
        let mut open = tiers();
        open[1].tier_end = TierEnd::Concrete(d("20"));
        assert_eq!(validate_tiers(&open, "t").unwrap_err().param(), "t[1]");
        let mut starts_late = tiers();
        starts_late[0].tier_start = d("2");
        assert_eq!(
            validate_tiers(&starts_late, "t").unwrap_err().param(),
            "t[0]"
        );
        assert!(validate_tiers(&[], "t").is_err());
    }

    #[test]
    fn tier_end_has_the_seed_wire_shape() {
        let t: Tier = serde_json::from_str(
            r#"{"tier_start":"1","tier_end":{"Concrete":"10"},"amount":"50.00"}"#,
        )
        .unwrap();
        assert_eq!(t.tier_end, TierEnd::Concrete(d("10")));
        let t: Tier =
            serde_json::from_str(r#"{"tier_start":"11","tier_end":"Infinity","amount":"40"}"#)
                .unwrap();
        assert_eq!(t.tier_end, TierEnd::Infinity);
    }

    #[test]
    fn latest_published_pricing_wins() {
        let mk = |slug: &str, at: &str| Pricing {
            id: slug.into(),
            slug: slug.into(),
            published_at: at.parse().unwrap(),
            prices: vec![],
        };
        let plan = Plan {
            id: "p".into(),
            slug: "p".into(),
            name: "P".into(),
            pricings: vec![
                mk("v1", "2024-01-01T00:00:00Z"),
                mk("v2", "2024-06-01T00:00:00Z"),
            ],
        };
        assert_eq!(
            plan.pricing_as_of("2024-05-31T23:59:59Z".parse().unwrap())
                .unwrap()
                .slug,
            "v1"
        );
        assert_eq!(
            plan.pricing_as_of("2024-06-01T00:00:00Z".parse().unwrap())
                .unwrap()
                .slug,
            "v2"
        );
        assert!(
            plan.pricing_as_of("2023-01-01T00:00:00Z".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn discount_durations_count_periods() {
        let mut disc = Discount {
            id: "d".into(),
            slug: "d".into(),
            value: DiscountValue::PercentOff(d("20")),
            duration: DiscountDuration::Repeating(3),
            coupon_codes: vec![],
        };
        let active: Vec<bool> = (1..=5).map(|i| disc.active_in(2, i)).collect();
        assert_eq!(active, [false, true, true, true, false]);
        disc.duration = DiscountDuration::Once;
        assert!(disc.active_in(2, 2) && !disc.active_in(2, 3));
        disc.duration = DiscountDuration::Forever;
        assert!(disc.active_in(2, 99));
    }
}
