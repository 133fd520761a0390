//! Shared helpers: building catalogs, contracts and changes in a line each.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::str::FromStr;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tally_core::prelude::*;

/// An instant from `2024-03-15` (midnight UTC) or a full RFC 3339 string.
pub fn ts(s: &str) -> Timestamp {
    if s.len() == 10 {
        format!("{s}T00:00:00Z").parse().unwrap()
    } else {
        s.parse().unwrap()
    }
}

/// A decimal from a string.
pub fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Price sets as (currency, cycle, feature prices).
pub type PriceSets<'a> = Vec<(Currency, Cycle, Vec<(&'a str, FeaturePrice)>)>;

/// A catalog under construction.
#[derive(Default)]
pub struct Cat {
    pub catalog: Catalog,
}

impl Cat {
    pub fn new() -> Self {
        Cat::default()
    }

    /// Adds a feature (idempotent on the slug).
    pub fn feature(mut self, slug: &str, kind: FeatureKind) -> Self {
        if self.catalog.feature(slug).is_none() {
            self.catalog.features.push(Feature {
                id: format!("Feat_{slug}"),
                slug: slug.into(),
                name: slug.into(),
                kind,
            });
        }
        self
    }

    /// Adds a plan with one pricing published at 2000-01-01 and the given price sets.
    pub fn plan(self, slug: &str, sets: PriceSets) -> Self {
        self.plan_version(slug, &format!("{slug}-v1"), "2000-01-01", sets)
    }

    /// Adds a pricing version to a plan (creating the plan if needed).
    pub fn plan_version(
        mut self,
        slug: &str,
        pricing: &str,
        published: &str,
        sets: PriceSets,
    ) -> Self {
        let prices = sets
            .into_iter()
            .map(|(currency, cycle, fs)| PriceSet {
                currency,
                cycle,
                features: fs
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect();
        let p = Pricing {
            id: format!("Pric_{pricing}"),
            slug: pricing.into(),
            published_at: ts(published),
            prices,
        };
        match self.catalog.plans.iter_mut().find(|x| x.slug == slug) {
            Some(plan) => plan.pricings.push(p),
            None => self.catalog.plans.push(Plan {
                id: format!("Plan_{slug}"),
                slug: slug.into(),
                name: slug.into(),
                pricings: vec![p],
            }),
        }
        self
    }

    /// A plan with one flat in-advance fee (`base`) in one currency and cycle.
    pub fn flat_plan(self, slug: &str, currency: Currency, cycle: Cycle, fee: &str) -> Self {
        self.feature("base", FeatureKind::Flat)
            .plan(slug, vec![(currency, cycle, vec![("base", flat(fee))])])
    }

    /// A plan with a per-unit in-advance price (`seats`).
    pub fn seat_plan(self, slug: &str, currency: Currency, cycle: Cycle, price: &str) -> Self {
        self.feature("seats", FeatureKind::PerUnit)
            .plan(slug, vec![(currency, cycle, vec![("seats", unit(price))])])
    }

    pub fn discount(
        mut self,
        slug: &str,
        value: DiscountValue,
        duration: DiscountDuration,
    ) -> Self {
        self.catalog.discounts.push(Discount {
            id: format!("Disc_{slug}"),
            slug: slug.into(),
            value,
            duration,
            coupon_codes: vec![],
        });
        self
    }

    pub fn build(self) -> Catalog {
        self.catalog.validate().unwrap();
        self.catalog
    }
}

pub fn flat(fee: &str) -> FeaturePrice {
    FeaturePrice {
        flat_fee: Some(d(fee)),
        ..FeaturePrice::default()
    }
}

pub fn unit(price: &str) -> FeaturePrice {
    FeaturePrice {
        price: Some(d(price)),
        ..FeaturePrice::default()
    }
}

pub fn arrears(mut p: FeaturePrice) -> FeaturePrice {
    p.timing = Timing::InArrears;
    p
}

/// Settings with the given granularity and alignment, UTC, half away from zero, no tax.
pub fn settings(g: Granularity, a: Alignment) -> Settings {
    Settings {
        proration: g,
        billing_alignment: a,
        ..Settings::default()
    }
}

/// Signs `plan` at `at` (activation = now = at) with the given unit counts.
pub fn signup(
    cx: &BillingContext,
    plan: &str,
    currency: Currency,
    cycle: Cycle,
    units: &[(&str, i64)],
    at: &str,
) -> SignupOutcome {
    let mut req = SignupRequest::new("Cont_t", "Cust_t", plan, currency, cycle);
    for (f, u) in units {
        req = req.seats(f, *u);
    }
    subscribe(&req, cx, ts(at)).unwrap()
}

/// A `new_plan` change (same currency and cycle unless given).
pub fn new_plan(plan: &str, units: &[(&str, i64)], activation: Activation) -> ChangeRequest {
    new_plan_in(plan, None, None, units, activation)
}

pub fn new_plan_in(
    plan: &str,
    currency: Option<Currency>,
    cycle: Option<Cycle>,
    units: &[(&str, i64)],
    activation: Activation,
) -> ChangeRequest {
    ChangeRequest::new(
        ChangeKind::NewPlan {
            plan: plan.into(),
            pricing: None,
            currency,
            cycle,
            unit_counts: units
                .iter()
                .map(|(k, v)| (k.to_string(), Decimal::from(*v)))
                .collect(),
            overrides: BTreeMap::new(),
            discount: None,
        },
        activation,
    )
}

/// A `change_unit_count` change.
pub fn units(units: &[(&str, i64)], activation: Activation) -> ChangeRequest {
    ChangeRequest::new(
        ChangeKind::ChangeUnitCount {
            unit_counts: units
                .iter()
                .map(|(k, v)| (k.to_string(), Decimal::from(*v)))
                .collect(),
            purchased: BTreeMap::new(),
            discount: None,
        },
        activation,
    )
}

/// A `change_billing_date` change.
pub fn billing_date(date: &str, recalculate: bool) -> ChangeRequest {
    ChangeRequest::new(
        ChangeKind::ChangeBillingDate {
            date: ts(date),
            recalculate_charges: recalculate,
            discount: None,
        },
        Activation::Now,
    )
}

pub fn on(date: &str) -> Activation {
    Activation::Date(ts(date))
}

/// Plans a change at `now` and returns the outcome.
pub fn change(c: &Contract, req: &ChangeRequest, cx: &BillingContext, now: &str) -> ChangeOutcome {
    plan_change(c, req, cx, ts(now), "chg").unwrap()
}

/// The line amounts of an invoice, as strings.
pub fn amounts(inv: &InvoiceDraft) -> Vec<String> {
    inv.lines.iter().map(|l| l.amount.to_string()).collect()
}

/// The amounts of the lines of one kind.
pub fn amounts_of(inv: &InvoiceDraft, kind: LineKind) -> Vec<String> {
    inv.lines
        .iter()
        .filter(|l| l.kind == kind)
        .map(|l| l.amount.to_string())
        .collect()
}
