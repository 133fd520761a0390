//! Catalog as code: the catalog file schema (JSON or YAML, unknown keys refused) and how applying
//! it merges into a tenant's catalog. Applying the same file twice changes nothing; a changed
//! pricing becomes a new version, so contracts keep the prices they recorded.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_core::prelude::*;

use crate::ids::new_id;
use crate::store::Customer;

/// A feature entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureEntry {
    /// Slug.
    pub slug: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Kind.
    pub kind: FeatureKind,
}

/// The prices of a plan in one currency and cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Currency.
    pub currency: Currency,
    /// Cycle.
    pub cycle: Cycle,
    /// Feature slug -> price.
    pub features: BTreeMap<String, FeaturePrice>,
}

/// A pricing version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingEntry {
    /// Slug.
    pub slug: String,
    /// Publication instant.
    pub published_at: Timestamp,
    /// Price sets.
    pub prices: Vec<PriceEntry>,
}

/// A plan entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    /// Slug.
    pub slug: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Versions.
    pub pricings: Vec<PricingEntry>,
}

/// How long a discount lasts, as written in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurationEntry {
    /// One period.
    Once,
    /// `duration_cycles` periods.
    Repeating,
    /// Always.
    Forever,
}

/// A discount entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscountEntry {
    /// Slug.
    pub slug: String,
    /// Percentage off.
    #[serde(default)]
    pub percent_off: Option<Decimal>,
    /// Amount off.
    #[serde(default)]
    pub amount_off: Option<Decimal>,
    /// Currency of `amount_off`.
    #[serde(default)]
    pub currency: Option<Currency>,
    /// Duration.
    pub duration: DurationEntry,
    /// Periods, for `repeating`.
    #[serde(default)]
    pub duration_cycles: Option<u32>,
    /// Coupon codes.
    #[serde(default)]
    pub coupon_codes: Vec<String>,
}

/// A customer entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerEntry {
    /// Slug.
    pub slug: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Tax rate, percent.
    #[serde(default)]
    pub tax_rate: Option<Decimal>,
}

/// A whole catalog file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Tenant settings.
    #[serde(default)]
    pub settings: Option<Settings>,
    /// Features.
    #[serde(default)]
    pub features: Vec<FeatureEntry>,
    /// Plans.
    #[serde(default)]
    pub plans: Vec<PlanEntry>,
    /// Discounts.
    #[serde(default)]
    pub discounts: Vec<DiscountEntry>,
    /// Customers.
    #[serde(default)]
    pub customers: Vec<CustomerEntry>,
}

/// A file that could not be read: the field path and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    /// Path of the offending field (`plans[0].pricings[0].prices[1].features.seats.tiers`).
    pub path: String,
    /// What was expected.
    pub message: String,
}

impl From<CoreError> for FileError {
    fn from(e: CoreError) -> Self {
        FileError {
            path: e.param().to_string(),
            message: e.to_string(),
        }
    }
}

impl CatalogFile {
    /// Parses JSON (`{...}`) with the path of the first offending field in the error.
    ///
    /// # Errors
    /// A syntax error, a wrong type or an unknown key, with its path.
    pub fn from_json(text: &str) -> Result<CatalogFile, FileError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| FileError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Reads an already parsed JSON value, with the path of the first offending field.
    ///
    /// # Errors
    /// A wrong type or an unknown key, with its path.
    pub fn from_value(value: serde_json::Value) -> Result<CatalogFile, FileError> {
        serde_path_to_error::deserialize(value).map_err(|e| FileError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Parses YAML (or JSON, which is YAML) with the path of the first offending field.
    ///
    /// # Errors
    /// A syntax error, a wrong type or an unknown key, with its path.
    pub fn from_yaml(text: &str) -> Result<CatalogFile, FileError> {
        // Through a JSON value, so that enums such as `tier_end: { Concrete: "10" }` read as the
        // same maps they are in JSON.
        let value: serde_json::Value = serde_norway::from_str(text).map_err(|e| FileError {
            path: String::new(),
            message: format!("not valid YAML: {e}"),
        })?;
        serde_path_to_error::deserialize(value).map_err(|e| FileError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Checks the file on its own: slugs, prices against feature kinds, tiers, discounts.
    ///
    /// # Errors
    /// The first problem, with its path.
    pub fn validate(&self) -> Result<(), FileError> {
        if let Some(s) = &self.settings {
            s.validate()?;
        }
        for (i, d) in self.discounts.iter().enumerate() {
            discount_value(d, i)?;
        }
        Ok(())
    }

    /// Merges the file into `catalog`: features, plans and discounts by slug; an identical
    /// pricing is left alone, a changed one is added as a new version with the same slug.
    ///
    /// # Errors
    /// Anything [`Catalog::validate`] refuses in the result, with the file's paths.
    pub fn merge_into(&self, catalog: &Catalog) -> Result<Catalog, FileError> {
        self.validate()?;
        let mut out = catalog.clone();
        for f in &self.features {
            let name = f.name.clone().unwrap_or_else(|| f.slug.clone());
            match out.features.iter_mut().find(|x| x.slug == f.slug) {
                Some(x) => {
                    x.name = name;
                    x.kind = f.kind;
                }
                None => out.features.push(Feature {
                    id: new_id("Feat"),
                    slug: f.slug.clone(),
                    name,
                    kind: f.kind,
                }),
            }
        }
        for (pi, p) in self.plans.iter().enumerate() {
            let idx = match out.plans.iter().position(|x| x.slug == p.slug) {
                Some(i) => i,
                None => {
                    out.plans.push(Plan {
                        id: new_id("Plan"),
                        slug: p.slug.clone(),
                        name: p.slug.clone(),
                        pricings: Vec::new(),
                    });
                    out.plans.len() - 1
                }
            };
            let plan = &mut out.plans[idx];
            if let Some(n) = &p.name {
                plan.name = n.clone();
            }
            for (vi, v) in p.pricings.iter().enumerate() {
                let prices: Vec<PriceSet> = v
                    .prices
                    .iter()
                    .map(|s| PriceSet {
                        currency: s.currency,
                        cycle: s.cycle,
                        features: s.features.clone(),
                    })
                    .collect();
                let mut seen = std::collections::BTreeSet::new();
                for (si, s) in prices.iter().enumerate() {
                    if !seen.insert((s.currency, s.cycle)) {
                        return Err(FileError {
                            path: format!("plans[{pi}].pricings[{vi}].prices[{si}]"),
                            message: format!(
                                "a second price set for {} per {}",
                                s.currency, s.cycle
                            ),
                        });
                    }
                }
                let latest_same_slug = plan.pricings.iter().rev().find(|x| x.slug == v.slug);
                let unchanged = latest_same_slug
                    .is_some_and(|x| x.prices == prices && x.published_at == v.published_at);
                if !unchanged {
                    plan.pricings.push(Pricing {
                        id: new_id("Pric"),
                        slug: v.slug.clone(),
                        published_at: v.published_at,
                        prices,
                    });
                }
            }
        }
        for (i, d) in self.discounts.iter().enumerate() {
            let (value, duration) = discount_value(d, i)?;
            match out.discounts.iter_mut().find(|x| x.slug == d.slug) {
                Some(x) => {
                    x.value = value;
                    x.duration = duration;
                    x.coupon_codes = d.coupon_codes.clone();
                }
                None => out.discounts.push(Discount {
                    id: new_id("Disc"),
                    slug: d.slug.clone(),
                    value,
                    duration,
                    coupon_codes: d.coupon_codes.clone(),
                }),
            }
        }
        out.validate().map_err(|e| FileError {
            path: e.param().to_string(),
            message: e.to_string(),
        })?;
        Ok(out)
    }

    /// The customers of the file, merged with the existing ones (by slug).
    pub fn customers(&self, existing: &[Option<Customer>], now: Timestamp) -> Vec<Customer> {
        self.customers
            .iter()
            .zip(existing.iter())
            .map(|(e, old)| {
                let mut c = old.clone().unwrap_or_else(|| Customer {
                    id: new_id("Cust"),
                    slug: Some(e.slug.clone()),
                    name: None,
                    emails: serde_json::json!({}),
                    customer_reference: None,
                    address: None,
                    metadata: BTreeMap::new(),
                    notes: None,
                    tax_rate: None,
                    created_at: now,
                });
                c.name = e.name.clone().or(c.name);
                c.tax_rate = e.tax_rate.or(c.tax_rate);
                c
            })
            .collect()
    }
}

fn discount_value(
    d: &DiscountEntry,
    i: usize,
) -> Result<(DiscountValue, DiscountDuration), FileError> {
    let path = |f: &str| format!("discounts[{i}].{f}");
    let value = match (d.percent_off, d.amount_off) {
        (Some(p), None) => DiscountValue::PercentOff(p),
        (None, Some(a)) => DiscountValue::AmountOff {
            amount: a,
            currency: d.currency.ok_or_else(|| FileError {
                path: path("currency"),
                message: "an amount_off discount needs its currency".into(),
            })?,
        },
        _ => {
            return Err(FileError {
                path: path("percent_off"),
                message: "exactly one of percent_off and amount_off".into(),
            });
        }
    };
    let duration = match (d.duration, d.duration_cycles) {
        (DurationEntry::Once, None) => DiscountDuration::Once,
        (DurationEntry::Forever, None) => DiscountDuration::Forever,
        (DurationEntry::Repeating, Some(n)) if n > 0 => DiscountDuration::Repeating(n),
        (DurationEntry::Repeating, _) => {
            return Err(FileError {
                path: path("duration_cycles"),
                message: "a repeating discount needs duration_cycles of at least 1".into(),
            });
        }
        (_, Some(_)) => {
            return Err(FileError {
                path: path("duration_cycles"),
                message: "duration_cycles is only for a repeating discount".into(),
            });
        }
    };
    Ok((value, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
      "settings": {"time_zone": "UTC", "proration": "day"},
      "features": [{"slug": "platform", "name": "Platform", "kind": "flat"},
                   {"slug": "seats", "kind": "per_unit"}],
      "plans": [{"slug": "basic", "name": "Basic", "pricings": [{"slug": "basic-2024",
        "published_at": "2024-01-01T00:00:00Z",
        "prices": [{"currency": "usd", "cycle": "month", "features": {
          "platform": {"flat_fee": "10.00"}, "seats": {"price": "5.00"}}}]}]}],
      "discounts": [{"slug": "launch", "percent_off": "20", "duration": "repeating", "duration_cycles": 3, "coupon_codes": ["LAUNCH20"]}],
      "customers": [{"slug": "acme", "name": "Acme Inc", "tax_rate": "19"}]
    }"#;

    #[test]
    fn applying_twice_changes_nothing_and_a_change_adds_a_version() {
        let f = CatalogFile::from_json(FILE).unwrap();
        let once = f.merge_into(&Catalog::default()).unwrap();
        let twice = f.merge_into(&once).unwrap();
        assert_eq!(once, twice);
        let changed = CatalogFile::from_json(&FILE.replace("\"5.00\"", "\"6.00\"")).unwrap();
        let v2 = changed.merge_into(&twice).unwrap();
        let plan = v2.plan("basic").unwrap();
        assert_eq!(plan.pricings.len(), 2);
        assert_eq!(plan.pricings[0], once.plan("basic").unwrap().pricings[0]);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let bad = FILE.replace("\"flat_fee\": \"10.00\"", "\"flat_fe\": \"10.00\"");
        let e = CatalogFile::from_json(&bad).unwrap_err();
        assert_eq!(
            e.path,
            "plans[0].pricings[0].prices[0].features.platform.flat_fe"
        );
        assert!(e.message.contains("flat_fe"), "{}", e.message);
    }

    #[test]
    fn yaml_and_json_read_the_same() {
        let yaml = "features:\n  - { slug: platform, name: Platform, kind: flat }\n  - { slug: seats, kind: per_unit }\nplans:\n  - slug: p\n    pricings:\n      - slug: v1\n        published_at: 2024-01-01T00:00:00Z\n        prices:\n          - currency: usd\n            cycle: month\n            features:\n              seats:\n                tiers:\n                  - { tier_start: \"1\", tier_end: { Concrete: \"10\" }, amount: \"5\" }\n                  - { tier_start: \"11\", tier_end: Infinity, amount: \"4\" }\n";
        let f = CatalogFile::from_yaml(yaml).unwrap();
        assert_eq!(f.features[0].kind, FeatureKind::Flat);
        let tiers = f.plans[0].pricings[0].prices[0].features["seats"]
            .tiers
            .clone()
            .unwrap();
        assert_eq!(tiers[0].tier_end, TierEnd::Concrete(Decimal::from(10)));
        assert_eq!(tiers[1].tier_end, TierEnd::Infinity);
        let e = CatalogFile::from_yaml("features:\n  - { slug: p, kind: flatt }\n").unwrap_err();
        assert_eq!(e.path, "features[0].kind");
    }

    #[test]
    fn prices_for_unknown_features_are_refused() {
        let bad = FILE.replace("\"seats\": {\"price\"", "\"sets\": {\"price\"");
        let e = CatalogFile::from_json(&bad)
            .unwrap()
            .merge_into(&Catalog::default())
            .unwrap_err();
        assert_eq!(e.path, "plans[0].pricings[0].prices[0].features.sets");
    }
}
