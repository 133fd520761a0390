//! Contract configurations: the prices a contract records from the catalog (with per-contract
//! overrides and unit counts), and the charge items they produce per period.
//!
//! A configuration is resolved once, when a contract is signed or changes plan, and then kept:
//! `change_unit_count` reuses the recorded prices even when the catalog has moved on.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::Cycle;
use crate::catalog::{
    Catalog, Discount, DiscountValue, FeatureKind, FeaturePrice, Tier, TierMode, Timing,
    rate_tiers, validate_tiers,
};
use crate::error::CoreError;
use crate::money::{Currency, Exact};

/// Per-contract overrides of one feature (seed 000's `FeatureConfigurationInternal`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureOverride {
    /// Overridden flat fee.
    #[serde(default)]
    pub flat_fee: Option<Decimal>,
    /// Overridden price per unit.
    #[serde(default)]
    pub price: Option<Decimal>,
    /// For optional features: added to the contract only when `true`.
    #[serde(default)]
    pub purchased: Option<bool>,
    /// Overridden tiers.
    #[serde(default)]
    pub tiers: Option<Vec<Tier>>,
    /// Units purchased.
    #[serde(default)]
    pub unit_count: Option<Decimal>,
}

/// A feature as a contract records it: its prices (after overrides) and the units purchased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedFeature {
    /// Feature slug.
    pub slug: String,
    /// How it is charged.
    pub kind: FeatureKind,
    /// When its recurring part is billed.
    pub timing: Timing,
    /// Price per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// Flat fee per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_fee: Option<Decimal>,
    /// Tiers replacing `price`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<Tier>>,
    /// Tier mode.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tier_mode: TierMode,
    /// An add-on.
    #[serde(default, skip_serializing_if = "is_default")]
    pub optional: bool,
    /// Whether it is on the contract (always true for non-optional features).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub purchased: bool,
    /// Units purchased (per-unit features).
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub quantity: Decimal,
}

// Stored contracts leave out fields at their defaults (they are written on every renewal).
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn yes() -> bool {
    true
}

fn is_yes(v: &bool) -> bool {
    *v
}

/// Which part of a feature's price a charge item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The flat fee.
    Flat,
    /// Units at the unit price.
    Units,
    /// Units in tier n (0-based).
    Tier(usize),
}

/// One chargeable item of a configuration for a full period: `quantity x unit_amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeItem {
    /// Feature slug.
    pub feature: String,
    /// Which part of the price.
    pub component: Component,
    /// Units (1 for a flat fee).
    pub quantity: Decimal,
    /// Price per unit for a full period.
    pub unit_amount: Decimal,
    /// When it is billed.
    pub timing: Timing,
}

impl ChargeItem {
    /// Stable key of the item within a contract (`seats/units`, `seats/tier1`).
    pub fn key(&self) -> String {
        match self.component {
            Component::Flat => format!("{}/flat", self.feature),
            Component::Units => format!("{}/units", self.feature),
            Component::Tier(n) => format!("{}/tier{}", self.feature, n + 1),
        }
    }

    /// The full-period amount, exact.
    pub fn amount(&self) -> Result<Exact, CoreError> {
        Exact::from_decimal(self.quantity)?.mul_dec(self.unit_amount)
    }

    /// Words for an invoice line.
    pub fn describe(&self) -> String {
        match self.component {
            Component::Flat => format!("{} (flat fee)", self.feature),
            Component::Units => format!("{} x {}", self.quantity.normalize(), self.feature),
            Component::Tier(n) => format!(
                "{} x {} (tier {})",
                self.quantity.normalize(),
                self.feature,
                n + 1
            ),
        }
    }
}

/// A discount as a contract holds it: the discount recorded, and the period it started in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedDiscount {
    /// The discount, copied from the catalog.
    pub discount: Discount,
    /// Index of the first period it applies to.
    pub first_period: u32,
}

/// Everything a contract bills from during one phase: plan, pricing, currency, cycle, the
/// recorded feature prices and units, and the discount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// Plan id.
    pub plan_id: String,
    /// Plan slug.
    pub plan_slug: String,
    /// Pricing id the prices came from.
    pub pricing_id: String,
    /// Currency.
    pub currency: Currency,
    /// Cycle.
    pub cycle: Cycle,
    /// Feature slug -> recorded price and units.
    pub features: BTreeMap<String, PricedFeature>,
    /// The discount, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<AppliedDiscount>,
}

/// What a signup or `new_plan` change asks for, before it is resolved against the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanSelection {
    /// Plan id or slug.
    pub plan: String,
    /// Pricing id or slug; `None` = the latest published at the instant.
    pub pricing: Option<String>,
    /// Currency.
    pub currency: Option<Currency>,
    /// Cycle.
    pub cycle: Option<Cycle>,
    /// Feature slug -> units.
    pub unit_counts: BTreeMap<String, Decimal>,
    /// Feature slug -> overrides.
    pub overrides: BTreeMap<String, FeatureOverride>,
    /// Discount id, slug or coupon code.
    pub discount: Option<String>,
}

/// Field names used in error paths, which differ between signup and upgrade bodies.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Name of the plan field.
    pub plan: &'static str,
    /// Name of the pricing field.
    pub pricing: &'static str,
    /// Name of the unit count map.
    pub unit_counts: &'static str,
    /// Name of the overrides map.
    pub overrides: &'static str,
    /// Name of the discount field.
    pub discount: &'static str,
}

impl Params {
    /// Paths of `POST /v1/c/contract`.
    pub const SIGNUP: Params = Params {
        plan: "plan",
        pricing: "pricing_id",
        unit_counts: "unit_count_configuration",
        overrides: "feature_configuration",
        discount: "discount_id",
    };
    /// Paths of `POST /v1/c/contract/{id}/upgrade`.
    pub const UPGRADE: Params = Params {
        plan: "upgrade_configuration.plan_id",
        pricing: "upgrade_configuration.pricing_id",
        unit_counts: "upgrade_configuration.unit_count_configuration",
        overrides: "upgrade_configuration.unit_configuration",
        discount: "upgrade_configuration.discount_id",
    };
}

/// Resolves a discount reference for a contract in `currency`.
///
/// # Errors
/// Unknown discount, or an amount discount in another currency.
pub fn resolve_discount(
    catalog: &Catalog,
    key: &str,
    currency: Currency,
    first_period: u32,
    param: &str,
) -> Result<AppliedDiscount, CoreError> {
    let discount = catalog
        .discount(key)
        .ok_or_else(|| CoreError::not_found(param, "discount", key))?;
    if let DiscountValue::AmountOff { currency: c, .. } = &discount.value
        && *c != currency
    {
        return Err(CoreError::invalid(
            param,
            format!("a discount in {currency}"),
            format!("{key} ({c})"),
        ));
    }
    Ok(AppliedDiscount {
        discount: discount.clone(),
        first_period,
    })
}

fn check_units(v: Decimal, param: String) -> Result<Decimal, CoreError> {
    if v < Decimal::ZERO {
        return Err(CoreError::Negative {
            param,
            value: v.to_string(),
        });
    }
    Ok(v)
}

impl Configuration {
    /// Resolves a plan selection against the catalog at instant `at`.
    ///
    /// # Errors
    /// Unknown plan, pricing, feature or discount; a currency or cycle the plan is not sold in;
    /// negative counts or prices; invalid override tiers.
    pub fn resolve(
        catalog: &Catalog,
        sel: &PlanSelection,
        at: Timestamp,
        first_period: u32,
        p: Params,
    ) -> Result<Configuration, CoreError> {
        let plan = catalog
            .plan(&sel.plan)
            .ok_or_else(|| CoreError::not_found(p.plan, "plan", &sel.plan))?;
        let pricing = match &sel.pricing {
            Some(id) => plan
                .pricing(id)
                .ok_or_else(|| CoreError::not_found(p.pricing, "pricing of this plan", id))?,
            None => plan.pricing_as_of(at).ok_or_else(|| {
                CoreError::not_found(
                    p.plan,
                    "pricing published by the activation instant for plan",
                    &sel.plan,
                )
            })?,
        };
        let currency = sel
            .currency
            .ok_or_else(|| CoreError::invalid("currency", "a currency", "nothing"))?;
        let cycle = sel
            .cycle
            .ok_or_else(|| CoreError::invalid("cycle", "a cycle", "nothing"))?;
        let set = pricing
            .price_set(currency, cycle)
            .ok_or_else(|| CoreError::NotSold {
                param: "currency".into(),
                plan: plan.slug.clone(),
                currency: currency.to_string(),
                cycle: cycle.to_string(),
            })?;
        let mut features = BTreeMap::new();
        for (slug, price) in &set.features {
            let kind =
                catalog
                    .feature(slug)
                    .map(|f| f.kind)
                    .ok_or_else(|| CoreError::UnknownFeature {
                        param: p.plan.into(),
                        slug: slug.clone(),
                    })?;
            features.insert(slug.clone(), PricedFeature::from_price(slug, kind, price));
        }
        let mut config = Configuration {
            plan_id: plan.id.clone(),
            plan_slug: plan.slug.clone(),
            pricing_id: pricing.id.clone(),
            currency,
            cycle,
            features,
            discount: None,
        };
        config.apply_overrides(&sel.overrides, p.overrides)?;
        config.apply_unit_counts(&sel.unit_counts, p.unit_counts)?;
        if let Some(key) = &sel.discount {
            config.discount = Some(resolve_discount(
                catalog,
                key,
                currency,
                first_period,
                p.discount,
            )?);
        }
        Ok(config)
    }

    /// Applies per-feature overrides (prices, tiers, purchase of add-ons, unit counts).
    ///
    /// # Errors
    /// Unknown feature slugs, negative values, invalid tiers, `purchased: false` on a required
    /// feature.
    pub fn apply_overrides(
        &mut self,
        overrides: &BTreeMap<String, FeatureOverride>,
        param: &str,
    ) -> Result<(), CoreError> {
        for (slug, o) in overrides {
            let at = format!("{param}.{slug}");
            let f = self
                .features
                .get_mut(slug)
                .ok_or_else(|| CoreError::UnknownFeature {
                    param: at.clone(),
                    slug: slug.clone(),
                })?;
            if let Some(v) = o.price {
                f.price = Some(check_units(v, format!("{at}.price"))?);
                f.tiers = None;
            }
            if let Some(v) = o.flat_fee {
                f.flat_fee = Some(check_units(v, format!("{at}.flat_fee"))?);
            }
            if let Some(t) = &o.tiers {
                if f.kind == FeatureKind::Flat {
                    return Err(CoreError::invalid(
                        format!("{at}.tiers"),
                        "no tiers on a flat feature",
                        "tiers",
                    ));
                }
                validate_tiers(t, &format!("{at}.tiers"))?;
                f.tiers = Some(t.clone());
                f.price = None;
            }
            if let Some(v) = o.unit_count {
                f.quantity = check_units(v, format!("{at}.unit_count"))?;
            }
            if let Some(b) = o.purchased {
                if !f.optional && !b {
                    return Err(CoreError::invalid(
                        format!("{at}.purchased"),
                        "true (only optional features can be left out)",
                        b,
                    ));
                }
                f.purchased = b || !f.optional;
            }
        }
        Ok(())
    }

    /// Sets unit counts per feature slug.
    ///
    /// # Errors
    /// Unknown feature slugs and negative counts.
    pub fn apply_unit_counts(
        &mut self,
        counts: &BTreeMap<String, Decimal>,
        param: &str,
    ) -> Result<(), CoreError> {
        for (slug, v) in counts {
            let at = format!("{param}.{slug}");
            let f = self
                .features
                .get_mut(slug)
                .ok_or_else(|| CoreError::UnknownFeature {
                    param: at.clone(),
                    slug: slug.clone(),
                })?;
            f.quantity = check_units(*v, at)?;
        }
        Ok(())
    }

    /// The recurring items billed per period (flat fees, units, tiers), in a stable order.
    pub fn recurring_items(&self) -> Vec<ChargeItem> {
        let mut out = Vec::new();
        for f in self.features.values().filter(|f| f.purchased) {
            let flat = match f.kind {
                FeatureKind::Flat => f.flat_fee.or(f.price),
                _ => f.flat_fee,
            };
            if let Some(fee) = flat.filter(|v| !v.is_zero()) {
                out.push(ChargeItem {
                    feature: f.slug.clone(),
                    component: Component::Flat,
                    quantity: Decimal::ONE,
                    unit_amount: fee,
                    timing: f.timing,
                });
            }
            if f.kind == FeatureKind::PerUnit {
                out.extend(f.unit_items(f.quantity, f.timing));
            }
        }
        out
    }

    /// The items for `units` used of a usage feature (empty for other kinds).
    pub fn usage_items(&self, slug: &str, units: Decimal) -> Vec<ChargeItem> {
        match self.features.get(slug) {
            Some(f) if f.kind == FeatureKind::Usage && f.purchased => {
                f.unit_items(units, Timing::InArrears)
            }
            _ => Vec::new(),
        }
    }

    /// The recurring (non-usage) price per year, exact, used to tell downgrades from upgrades.
    pub fn yearly_rate(&self) -> Result<Exact, CoreError> {
        let mut total = Exact::ZERO;
        for item in self.recurring_items() {
            total = total.plus(item.amount()?)?;
        }
        total.times(Exact::ratio(self.cycle.periods_per_year(), 1)?)
    }

    /// The share of recurring charges the discount takes off in period `idx` (0 when inactive):
    /// the percentage, or for an amount discount its share of the in-advance charges (at most 1).
    pub fn discount_ratio(&self, idx: u32) -> Result<Exact, CoreError> {
        let Some(applied) = &self.discount else {
            return Ok(Exact::ZERO);
        };
        if !applied.discount.active_in(applied.first_period, idx) {
            return Ok(Exact::ZERO);
        }
        if let Some(p) = applied.discount.percent()? {
            return Ok(p);
        }
        let DiscountValue::AmountOff { amount, .. } = applied.discount.value else {
            return Ok(Exact::ZERO);
        };
        let mut base = Exact::ZERO;
        for item in self.recurring_items() {
            if item.timing == Timing::InAdvance {
                base = base.plus(item.amount()?)?;
            }
        }
        if base.is_zero() {
            return Ok(Exact::ZERO);
        }
        let r = Exact::from_decimal(amount)?.times(Exact::ratio(base.denom(), base.numer())?)?;
        Ok(if r.cmp_exact(Exact::ratio(1, 1)?)?.is_gt() {
            Exact::ratio(1, 1)?
        } else {
            r
        })
    }
}

impl PricedFeature {
    fn from_price(slug: &str, kind: FeatureKind, p: &FeaturePrice) -> PricedFeature {
        PricedFeature {
            slug: slug.to_string(),
            kind,
            timing: p.timing,
            price: p.price,
            flat_fee: p.flat_fee,
            tiers: p.tiers.clone(),
            tier_mode: p.tier_mode,
            optional: p.optional,
            purchased: !p.optional,
            quantity: Decimal::ZERO,
        }
    }

    fn unit_items(&self, units: Decimal, timing: Timing) -> Vec<ChargeItem> {
        if units.is_zero() {
            return Vec::new();
        }
        if let Some(tiers) = &self.tiers {
            return rate_tiers(tiers, self.tier_mode, units)
                .into_iter()
                .map(|(i, q, a)| ChargeItem {
                    feature: self.slug.clone(),
                    component: Component::Tier(i),
                    quantity: q,
                    unit_amount: a,
                    timing,
                })
                .collect();
        }
        match self.price {
            Some(price) => vec![ChargeItem {
                feature: self.slug.clone(),
                component: Component::Units,
                quantity: units,
                unit_amount: price,
                timing,
            }],
            None => Vec::new(),
        }
    }
}
