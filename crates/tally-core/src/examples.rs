//! A small ready-made catalog (the one of the scenario file's example) for documentation
//! examples, tests and demos.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::calendar::Cycle;
use crate::catalog::{
    Catalog, Discount, DiscountDuration, DiscountValue, Feature, FeatureKind, FeaturePrice, Plan,
    PriceSet, Pricing, Tier, TierEnd, TierMode, Timing,
};
use crate::contract::Settings;
use crate::money::Currency;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_default()
}

fn flat(fee: &str) -> FeaturePrice {
    FeaturePrice {
        flat_fee: Some(d(fee)),
        ..FeaturePrice::default()
    }
}

fn unit(price: &str) -> FeaturePrice {
    FeaturePrice {
        price: Some(d(price)),
        ..FeaturePrice::default()
    }
}

/// Plan `basic` (usd, month: platform 10.00 flat, seats 5.00 per unit, api_calls 0.001 per call,
/// sso 20.00 add-on, support 50.00 in arrears; usd, year: platform 100.00 and graduated seats
/// 1-10 at 50.00, 11+ at 40.00), plan `pro` (usd, month: platform 30.00, seats 8.00), discounts
/// `launch` (20% for 3 periods, coupon LAUNCH20) and `fiver` (5.00 usd once), default settings.
pub fn basic_catalog() -> (Catalog, Settings) {
    let features = [
        ("platform", FeatureKind::Flat),
        ("seats", FeatureKind::PerUnit),
        ("api_calls", FeatureKind::Usage),
        ("sso", FeatureKind::Flat),
        ("support", FeatureKind::Flat),
    ]
    .into_iter()
    .map(|(slug, kind)| Feature {
        id: format!("Feat_{slug}"),
        slug: slug.into(),
        name: slug.into(),
        kind,
    })
    .collect();
    let month: BTreeMap<String, FeaturePrice> = [
        ("platform", flat("10.00")),
        ("seats", unit("5.00")),
        ("api_calls", unit("0.001")),
        (
            "sso",
            FeaturePrice {
                optional: true,
                ..flat("20.00")
            },
        ),
        (
            "support",
            FeaturePrice {
                timing: Timing::InArrears,
                ..flat("50.00")
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let year: BTreeMap<String, FeaturePrice> = [
        ("platform", flat("100.00")),
        (
            "seats",
            FeaturePrice {
                tiers: Some(vec![
                    Tier {
                        tier_start: d("1"),
                        tier_end: TierEnd::Concrete(d("10")),
                        amount: d("50.00"),
                    },
                    Tier {
                        tier_start: d("11"),
                        tier_end: TierEnd::Infinity,
                        amount: d("40.00"),
                    },
                ]),
                tier_mode: TierMode::Graduated,
                ..FeaturePrice::default()
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let pro: BTreeMap<String, FeaturePrice> =
        [("platform", flat("30.00")), ("seats", unit("8.00"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    let published = "2024-01-01T00:00:00Z"
        .parse()
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let plans = vec![
        Plan {
            id: "Plan_basic".into(),
            slug: "basic".into(),
            name: "Basic".into(),
            pricings: vec![Pricing {
                id: "Pric_basic_2024".into(),
                slug: "basic-2024".into(),
                published_at: published,
                prices: vec![
                    PriceSet {
                        currency: Currency::Usd,
                        cycle: Cycle::Month,
                        features: month,
                    },
                    PriceSet {
                        currency: Currency::Usd,
                        cycle: Cycle::Year,
                        features: year,
                    },
                ],
            }],
        },
        Plan {
            id: "Plan_pro".into(),
            slug: "pro".into(),
            name: "Pro".into(),
            pricings: vec![Pricing {
                id: "Pric_pro_2024".into(),
                slug: "pro-2024".into(),
                published_at: published,
                prices: vec![PriceSet {
                    currency: Currency::Usd,
                    cycle: Cycle::Month,
                    features: pro,
                }],
            }],
        },
    ];
    let discounts = vec![
        Discount {
            id: "Disc_launch".into(),
            slug: "launch".into(),
            value: DiscountValue::PercentOff(d("20")),
            duration: DiscountDuration::Repeating(3),
            coupon_codes: vec!["LAUNCH20".into()],
        },
        Discount {
            id: "Disc_fiver".into(),
            slug: "fiver".into(),
            value: DiscountValue::AmountOff {
                amount: d("5.00"),
                currency: Currency::Usd,
            },
            duration: DiscountDuration::Once,
            coupon_codes: vec![],
        },
    ];
    (
        Catalog {
            features,
            plans,
            discounts,
        },
        Settings::default(),
    )
}
