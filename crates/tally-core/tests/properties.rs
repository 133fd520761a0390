//! Property tests of the billing invariants.
//!
//! - [`proration_composes`]: over one period, the lines of every charge item add up to the
//!   time-weighted price of the configurations in force, to one minor unit per line.
//! - [`preview_equals_execution`] and [`scheduled_preview_equals_execution`]: planning on a stored
//!   (serialized) contract gives the same outcome, and a scheduled change executes as previewed.
//! - [`planning_is_total_and_deterministic`]: any change request gives `Ok` or a typed error,
//!   the same twice.
//! - [`advance_is_idempotent_and_step_independent`]: one invoice per billing step, whatever the
//!   step size.
//! - [`periods_tile_time`]: schedule boundaries increase strictly and periods cover time exactly.
//!
//! Expectations are computed here with integer arithmetic (cents, days, seconds), independently of
//! the engine's own fraction functions.
//!
//! At the end, regression tests keep the defects these properties once found from coming back.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use jiff::{Timestamp, civil};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;
use tally_core::prelude::*;

use crate::support::{Cat, arrears, d, flat, new_plan, signup, ts, unit, units};

// ---------------------------------------------------------------------------------------------
// Catalog and an independent model of its charge items
// ---------------------------------------------------------------------------------------------

/// The plans the composition and scheduling properties switch between.
const PLANS: [&str; 4] = ["a", "b", "c", "d"];

/// Time zones the properties run in (one without DST, two with).
const ZONES: [&str; 3] = ["UTC", "Europe/Berlin", "America/New_York"];

const RECURRING: [Cycle; 6] = [
    Cycle::Hour,
    Cycle::Day,
    Cycle::Week,
    Cycle::Month,
    Cycle::Quarter,
    Cycle::Year,
];

/// Cycles every plan of [`PLANS`] is sold in (usd).
const SHARED: [Cycle; 4] = [Cycle::Week, Cycle::Month, Cycle::Quarter, Cycle::Year];

fn tier(start: &str, end: Option<&str>, amount: &str) -> Tier {
    Tier {
        tier_start: d(start),
        tier_end: end.map_or(TierEnd::Infinity, |e| TierEnd::Concrete(d(e))),
        amount: d(amount),
    }
}

type FeatureList = Vec<(&'static str, FeaturePrice)>;
type PriceSets = Vec<(Currency, Cycle, FeatureList)>;

fn sets(currencies: &[Currency], cycles: &[Cycle], features: &FeatureList) -> PriceSets {
    let mut out = Vec::new();
    for cur in currencies {
        for cy in cycles {
            out.push((*cur, *cy, features.clone()));
        }
    }
    out
}

/// Plan `a`: base 10.00, seats 5.00 each, support 50.00 in arrears, api 0.01 per call (usage),
/// sso 20.00 add-on; usd and eur, every cycle.
/// Plan `b`: base 30.00, seats 8.00 each; usd.
/// Plan `c`: seats with a 2.50 flat fee, graduated 1-10 at 7.00, 11+ at 4.00; support 45.00 in
/// arrears; usd.
/// Plan `d`: base 19.99, seats volume 1-5 at 9.00, 6+ at 6.00; usd and eur.
/// Plan `v`: two pricings (2000: base 12.00, 2030: base 15.00), month; usd.
/// Discounts `pct` (25% for 2 periods) and `off5` (5.00 usd once, coupon FIVE).
fn catalog() -> Catalog {
    let usd = [Currency::Usd];
    let both = [Currency::Usd, Currency::Eur];
    let a: FeatureList = vec![
        ("base", flat("10.00")),
        ("seats", unit("5.00")),
        ("support", arrears(flat("50.00"))),
        ("api", unit("0.01")),
        (
            "sso",
            FeaturePrice {
                optional: true,
                ..flat("20.00")
            },
        ),
    ];
    let b: FeatureList = vec![("base", flat("30.00")), ("seats", unit("8.00"))];
    let c: FeatureList = vec![
        (
            "seats",
            FeaturePrice {
                flat_fee: Some(d("2.50")),
                tiers: Some(vec![
                    tier("1", Some("10"), "7.00"),
                    tier("11", None, "4.00"),
                ]),
                tier_mode: TierMode::Graduated,
                ..FeaturePrice::default()
            },
        ),
        ("support", arrears(flat("45.00"))),
    ];
    let dd: FeatureList = vec![
        ("base", flat("19.99")),
        (
            "seats",
            FeaturePrice {
                tiers: Some(vec![tier("1", Some("5"), "9.00"), tier("6", None, "6.00")]),
                tier_mode: TierMode::Volume,
                ..FeaturePrice::default()
            },
        ),
    ];
    let v1: FeatureList = vec![("base", flat("12.00")), ("seats", unit("3.00"))];
    let v2: FeatureList = vec![("base", flat("15.00")), ("seats", unit("3.50"))];
    let mut cat = Cat::new()
        .feature("base", FeatureKind::Flat)
        .feature("seats", FeatureKind::PerUnit)
        .feature("support", FeatureKind::Flat)
        .feature("api", FeatureKind::Usage)
        .feature("sso", FeatureKind::Flat)
        .plan("a", sets(&both, &Cycle::ALL, &a))
        .plan("b", sets(&usd, &SHARED, &b))
        .plan("c", sets(&usd, &SHARED, &c))
        .plan("d", sets(&both, &SHARED, &dd))
        .plan_version(
            "v",
            "v-2000",
            "2000-01-01",
            sets(&usd, &[Cycle::Month], &v1),
        )
        .plan_version(
            "v",
            "v-2030",
            "2030-01-01",
            sets(&usd, &[Cycle::Month], &v2),
        )
        .discount(
            "pct",
            DiscountValue::PercentOff(d("25")),
            DiscountDuration::Repeating(2),
        )
        .discount(
            "off5",
            DiscountValue::AmountOff {
                amount: d("5.00"),
                currency: Currency::Usd,
            },
            DiscountDuration::Once,
        );
    if let Some(x) = cat.catalog.discounts.last_mut() {
        x.coupon_codes.push("FIVE".into());
    }
    cat.build()
}

/// One charge item of a configuration, modelled independently of the engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    feature: &'static str,
    /// Price per unit and period, in cents (distinct per feature across all plans).
    unit_cents: i128,
    /// Full-period amount, in cents.
    cents: i128,
    arrears: bool,
}

fn item(feature: &'static str, unit_cents: i128, qty: i128) -> Item {
    Item {
        feature,
        unit_cents,
        cents: unit_cents * qty,
        arrears: false,
    }
}

/// The recurring items of plan `plan` with `seats` seats, from the catalog's prices above.
fn model_items(plan: &str, seats: i64) -> Vec<Item> {
    let q = i128::from(seats);
    let mut v = Vec::new();
    match plan {
        "a" => {
            v.push(item("base", 1000, 1));
            if q > 0 {
                v.push(item("seats", 500, q));
            }
            v.push(Item {
                arrears: true,
                ..item("support", 5000, 1)
            });
        }
        "b" => {
            v.push(item("base", 3000, 1));
            if q > 0 {
                v.push(item("seats", 800, q));
            }
        }
        "c" => {
            v.push(item("seats", 250, 1));
            if q > 0 {
                v.push(item("seats", 700, q.min(10)));
            }
            if q > 10 {
                v.push(item("seats", 400, q - 10));
            }
            v.push(Item {
                arrears: true,
                ..item("support", 4500, 1)
            });
        }
        "d" => {
            v.push(item("base", 1999, 1));
            if q > 0 {
                v.push(item("seats", if q <= 5 { 900 } else { 600 }, q));
            }
        }
        other => panic!("no model for plan {other}"),
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Independent calendar arithmetic
// ---------------------------------------------------------------------------------------------

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `n` days after 1970-01-01.
fn civil_from_days(n: i64) -> (i64, i64, i64) {
    let z = n + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The local day number of an instant in `tz` (days since 1970-01-01 of its civil date).
fn day_number(t: Timestamp, tz: &TimeZone) -> i64 {
    let dt = t.to_zoned(tz.clone()).date();
    days_from_civil(
        i64::from(dt.year()),
        i64::from(dt.month()),
        i64::from(dt.day()),
    )
}

fn civil_dt(y: i64, m: i64, d: i64, time: civil::Time) -> civil::DateTime {
    let date = civil::Date::new(
        i16::try_from(y).expect("year in range"),
        i8::try_from(m).expect("month"),
        i8::try_from(d).expect("day"),
    )
    .expect("valid date");
    date.to_datetime(time)
}

/// A local civil datetime as an instant in `tz` (the earlier instant in a fold, shifted forward
/// in a gap).
fn local(dt: civil::DateTime, tz: &TimeZone) -> Timestamp {
    dt.to_zoned(tz.clone()).expect("representable").timestamp()
}

/// Boundary `k` of a schedule anchored at `anchor`, computed from the rules: whole hours; civil
/// days and weeks at the anchor's local time; months keeping the anchor's day, clamped to the
/// month's last day.
fn model_boundary(anchor: Timestamp, cycle: Cycle, k: i64, tz: &TimeZone) -> Timestamp {
    let z = anchor.to_zoned(tz.clone());
    let (y, m, dd) = (
        i64::from(z.year()),
        i64::from(z.month()),
        i64::from(z.day()),
    );
    let time = z.time();
    let months = |step: i64| {
        let total = y * 12 + (m - 1) + k * step;
        let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
        local(civil_dt(ny, nm, dd.min(days_in_month(ny, nm)), time), tz)
    };
    let days = |step: i64| {
        let (ny, nm, nd) = civil_from_days(days_from_civil(y, m, dd) + k * step);
        local(civil_dt(ny, nm, nd, time), tz)
    };
    match cycle {
        Cycle::Hour => Timestamp::from_second(anchor.as_second() + 3600 * k).expect("in range"),
        Cycle::Day => days(1),
        Cycle::Week => days(7),
        Cycle::Month => months(1),
        Cycle::Quarter => months(3),
        Cycle::Year => months(12),
        Cycle::Once | Cycle::Constant => panic!("no boundaries for {cycle}"),
    }
}

/// Roughly one period of `cycle`, in seconds (a year for non-recurring cycles).
fn approx_secs(cycle: Cycle) -> i64 {
    match cycle {
        Cycle::Hour => 3600,
        Cycle::Day => 86_400,
        Cycle::Week => 7 * 86_400,
        Cycle::Month => 30 * 86_400,
        Cycle::Quarter => 91 * 86_400,
        Cycle::Year | Cycle::Once | Cycle::Constant => 365 * 86_400,
    }
}

fn plus_secs(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_second(t.as_second() + secs).expect("instant in range")
}

fn cents(x: Decimal) -> i128 {
    let mut y = x;
    y.rescale(2);
    y.mantissa()
}

/// A contract as a store would persist and load it: whole (PostgreSQL) and in its two parts,
/// terms and progress, joined again (SQLite); both must read back the same contract.
fn stored(c: &Contract) -> Contract {
    let json = serde_json::to_string(c).expect("serialize contract");
    let whole: Contract = serde_json::from_str(&json).expect("deserialize contract");
    let terms = serde_json::to_string(&c.terms()).expect("serialize terms");
    let progress = serde_json::to_string(&c.progress()).expect("serialize progress");
    let joined = tally_core::contract::join_stored_parts(&terms, &progress);
    let parts: Contract = serde_json::from_str(&joined).expect("deserialize joined parts");
    assert_eq!(parts, whole, "the parts joined read back as the whole");
    whole
}

fn json<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_string(x).expect("serialize")
}

fn fail(what: &str, e: &CoreError) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e} ({})", e.code()))
}

fn settings_in(tz: &str, g: Granularity) -> Settings {
    Settings {
        time_zone: tz.into(),
        proration: g,
        ..Settings::default()
    }
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![Just(Granularity::Day), Just(Granularity::Second)]
}

/// A local date on the 29th-31st (clamped to the month) or, less often, any day.
fn month_end_date() -> impl Strategy<Value = (i64, i64, i64)> {
    (
        2000i64..2040,
        1i64..=12,
        prop_oneof![3 => 29i64..=31, 1 => 1i64..=28],
    )
        .prop_map(|(y, m, d)| (y, m, d.min(days_in_month(y, m))))
}

fn time_of_day() -> impl Strategy<Value = civil::Time> {
    (0i8..24, 0i8..60, 0i8..60).prop_map(|(h, m, s)| civil::time(h, m, s, 0))
}

// ---------------------------------------------------------------------------------------------
// (a) Proration composes to the time-weighted price
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Move {
    /// New seat count on the recorded prices.
    Seats(i64),
    /// Switch to plan `PLANS[i]` with this many seats.
    Plan(usize, i64),
}

#[derive(Debug, Clone)]
struct Timed {
    /// Offset into the period (reduced modulo its length).
    offset: u64,
    /// Snap the instant to the start of its local day.
    snap_to_day: bool,
    /// Ask with `Activation::Now` (at the instant) instead of `Activation::Date`.
    now: bool,
    change: Move,
}

#[derive(Debug, Clone)]
struct Composition {
    g: Granularity,
    tz: &'static str,
    cycle: Cycle,
    start: ((i64, i64, i64), civil::Time),
    plan: usize,
    seats: i64,
    changes: Vec<Timed>,
}

fn seats() -> impl Strategy<Value = i64> {
    prop_oneof![1 => Just(0i64), 6 => 1i64..=25]
}

fn timed_change() -> impl Strategy<Value = Timed> {
    let mv = prop_oneof![
        seats().prop_map(Move::Seats),
        (0..PLANS.len(), seats()).prop_map(|(p, q)| Move::Plan(p, q)),
    ];
    (any::<u64>(), prop::bool::weighted(0.25), any::<bool>(), mv).prop_map(
        |(offset, snap_to_day, now, change)| Timed {
            offset,
            snap_to_day,
            now,
            change,
        },
    )
}

fn composition() -> impl Strategy<Value = Composition> {
    (
        granularity(),
        prop::sample::select(ZONES.to_vec()),
        prop_oneof![6 => Just(Cycle::Month), 1 => prop::sample::select(SHARED.to_vec())],
        (month_end_date(), time_of_day()),
        0..PLANS.len(),
        seats(),
        prop::collection::vec(timed_change(), 1..6),
    )
        .prop_map(|(g, tz, cycle, start, plan, seats, changes)| Composition {
            g,
            tz,
            cycle,
            start,
            plan,
            seats,
            changes,
        })
}

type Key = (String, i128);

fn check_composition(case: &Composition) -> Result<(), TestCaseError> {
    let catalog = catalog();
    let settings = settings_in(case.tz, case.g);
    let cx = BillingContext::new(&catalog, &settings).expect("context");
    let tz = cx.tz.clone();
    let ((y, m, dd), time) = case.start;
    let s = local(civil_dt(y, m, dd, time), &tz);
    let req = SignupRequest::new(
        "Cont_p",
        "Cust_p",
        PLANS[case.plan],
        Currency::Usd,
        case.cycle,
    )
    .seats("seats", case.seats);
    let signup = subscribe(&req, &cx, s).map_err(|e| fail("signup", &e))?;
    let e = model_boundary(s, case.cycle, 1, &tz);
    prop_assert_eq!(
        signup.contract.period.as_ref().and_then(|p| p.end),
        Some(e),
        "the first period ends one cycle after the anchor"
    );
    let span = u64::try_from(e.as_second() - s.as_second()).expect("positive period");

    // The instants of the changes, in order, inside [s, e).
    let mut instants: Vec<Timestamp> = case
        .changes
        .iter()
        .map(|ch| {
            let t = plus_secs(s, i64::try_from(ch.offset % span).expect("fits"));
            if ch.snap_to_day {
                let day = t
                    .to_zoned(tz.clone())
                    .start_of_day()
                    .expect("day start")
                    .timestamp();
                day.max(s)
            } else {
                t
            }
        })
        .collect();
    instants.sort();

    let mut lines: Vec<InvoiceLine> = signup
        .invoices
        .iter()
        .flat_map(|i| i.lines.clone())
        .collect();
    let mut configs: Vec<(usize, i64)> = vec![(case.plan, case.seats)];
    let mut c = signup.contract;
    for (k, (ch, t)) in case.changes.iter().zip(&instants).enumerate() {
        let activation = if ch.now {
            Activation::Now
        } else {
            Activation::Date(*t)
        };
        let current = configs.last().map_or(case.plan, |x| x.0);
        let (mut req, cfg) = match ch.change {
            Move::Seats(q) => (units(&[("seats", q)], activation), (current, q)),
            Move::Plan(p, q) => (new_plan(PLANS[p], &[("seats", q)], activation), (p, q)),
        };
        req.downgrade_allowed = true;
        let out = plan_change(&c, &req, &cx, *t, &format!("chg{k}"))
            .map_err(|e| fail(&format!("change {k} at {t}"), &e))?;
        prop_assert!(!out.scheduled, "a change inside the period applies at once");
        prop_assert_eq!(out.effective_at, *t);
        if let Some(inv) = &out.invoice {
            lines.extend(inv.lines.iter().cloned());
        }
        c = out.contract;
        configs.push(cfg);
    }
    // The renewal at e bills the last in-arrears part of the period (and the next period, which
    // is left out here).
    let renewal = advance(&c, &cx, e).map_err(|e| fail("renewal", &e))?;
    prop_assert_eq!(renewal.invoices().count(), 1, "one renewal invoice at e");
    lines.extend(
        renewal
            .invoices()
            .flat_map(|i| i.lines.iter())
            .filter(|l| l.period_start < e)
            .cloned(),
    );

    // Time in the rule's unit: local days, or seconds.
    let measure = |t: Timestamp| match case.g {
        Granularity::Day => i128::from(day_number(t, &tz)),
        Granularity::Second => i128::from(t.as_second()),
    };
    let total = measure(e) - measure(s);
    prop_assert!(total > 0);
    let mut points = vec![s];
    points.extend(instants.iter().copied());
    points.push(e);

    // Expected: sum over configurations of amount x time in force, in cents x units of time.
    let mut expected: BTreeMap<Key, i128> = BTreeMap::new();
    for (k, (plan, q)) in configs.iter().enumerate() {
        let w = measure(points[k + 1]) - measure(points[k]);
        for it in model_items(PLANS[*plan], *q) {
            *expected
                .entry((it.feature.to_string(), it.unit_cents))
                .or_default() += it.cents * w;
        }
    }
    let mut actual: BTreeMap<Key, (i128, i128)> = BTreeMap::new();
    for l in &lines {
        prop_assert!(
            matches!(
                l.kind,
                LineKind::Charge | LineKind::ProrationCredit | LineKind::ProrationCharge
            ),
            "unexpected line {:?}",
            l
        );
        prop_assert!(
            s <= l.period_start && l.period_end <= e,
            "line outside the period: {:?}",
            l
        );
        let key = (
            l.feature_slug.clone().unwrap_or_default(),
            cents(l.unit_amount),
        );
        let a = actual.entry(key).or_default();
        a.0 += cents(l.amount);
        a.1 += 1;
    }
    let keys: BTreeSet<&Key> = expected.keys().chain(actual.keys()).collect();
    for key in keys {
        let want = expected.get(key).copied().unwrap_or_default();
        let (got, n) = actual.get(key).copied().unwrap_or_default();
        // |got - want / total| <= n cents, scaled by total.
        prop_assert!(
            (got * total - want).abs() <= n * total,
            "item {:?}: lines sum to {} cents over {} lines, time-weighted price is {}/{} cents\nconfigs {:?}\ninstants {:?}\nlines {:#?}",
            key,
            got,
            n,
            want,
            total,
            configs,
            instants,
            lines
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) Several changes in one period compose: per charge item, signup charge, proration
    /// credits and charges (and in-arrears parts) add up to the time-weighted price of the
    /// configurations in force, within one minor unit per line.
    #[test]
    fn proration_composes(case in composition()) {
        check_composition(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Random contract states, for (b), (c) and (d)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Start {
    Now,
    /// Activation this many seconds in the past (earlier periods are invoiced at signup).
    Past(i64),
    /// Activation this many seconds in the future.
    Future(i64),
    Pending,
    Trial(u32),
}

#[derive(Debug, Clone)]
enum Op {
    /// Seats now: count, downgrade allowed, invoice now.
    Seats(i64, bool, bool),
    /// Plan `PLANS[i]` now: seats, downgrade allowed.
    Plan(usize, i64, bool),
    /// Plan `PLANS[i]` at the next cycle, with seats.
    NextCyclePlan(usize, i64),
    /// Seats at the next cycle.
    NextCycleSeats(i64),
    CancelAtPeriodEnd,
    CancelNow,
    /// Billing date this many seconds ahead, recalculating charges or not.
    BillingDate(i64, bool),
    Activate,
}

#[derive(Debug, Clone)]
struct StateSpec {
    g: Granularity,
    tz: &'static str,
    calendar: bool,
    half_even: bool,
    tax: u8,
    now: Timestamp,
    plan: usize,
    eur: bool,
    cycle: Cycle,
    seats: i64,
    discount: Option<&'static str>,
    start: Start,
    /// Each op runs `secs` after the previous one, once due steps ran.
    ops: Vec<(i64, Op)>,
}

impl StateSpec {
    fn settings(&self) -> Settings {
        Settings {
            time_zone: self.tz.into(),
            proration: self.g,
            rounding: if self.half_even {
                Rounding::HalfEven
            } else {
                Rounding::HalfAwayFromZero
            },
            billing_alignment: if self.calendar {
                Alignment::Calendar
            } else {
                Alignment::Anniversary
            },
            tax_rate: Decimal::from(self.tax),
        }
    }

    fn currency(&self) -> Currency {
        if self.eur {
            Currency::Eur
        } else {
            Currency::Usd
        }
    }
}

/// The plans a contract may start on, with the cycles they are sold in (usd).
fn plan_cycles(plan: usize) -> Vec<Cycle> {
    if plan == 0 {
        Cycle::ALL.to_vec()
    } else {
        SHARED.to_vec()
    }
}

fn instant_2004_2035() -> impl Strategy<Value = Timestamp> {
    (1_072_915_200i64..2_051_222_400).prop_map(|s| Timestamp::from_second(s).expect("in range"))
}

fn state_spec() -> impl Strategy<Value = StateSpec> {
    let settings = (
        granularity(),
        prop::sample::select(ZONES.to_vec()),
        prop::bool::weighted(0.3),
        any::<bool>(),
        prop::sample::select(vec![0u8, 0, 19]),
    );
    let contract = (
        0..PLANS.len(),
        prop::bool::weighted(0.2),
        any::<prop::sample::Index>(),
        seats(),
        prop::sample::select(vec![None, None, Some("pct"), Some("off5")]),
    );
    let start = prop_oneof![
        4 => Just(Start::Now),
        1 => (0i64..3000).prop_map(Start::Past),
        1 => (1i64..3000).prop_map(Start::Future),
        1 => Just(Start::Pending),
        1 => (1u32..20).prop_map(Start::Trial),
    ];
    let op = prop_oneof![
        4 => (seats(), any::<bool>(), prop::bool::weighted(0.7))
            .prop_map(|(q, a, i)| Op::Seats(q, a, i)),
        4 => (0..PLANS.len(), seats(), any::<bool>()).prop_map(|(p, q, a)| Op::Plan(p, q, a)),
        2 => (0..PLANS.len(), seats()).prop_map(|(p, q)| Op::NextCyclePlan(p, q)),
        1 => seats().prop_map(Op::NextCycleSeats),
        1 => Just(Op::CancelAtPeriodEnd),
        1 => Just(Op::CancelNow),
        1 => (1i64..1500, any::<bool>()).prop_map(|(x, r)| Op::BillingDate(x, r)),
        1 => Just(Op::Activate),
    ];
    let ops = prop::collection::vec((0i64..1500, op), 0..4);
    (settings, instant_2004_2035(), contract, start, ops).prop_map(
        |((g, tz, calendar, half_even, tax), now, (plan, eur, ci, seats, discount), start, ops)| {
            let cycles = plan_cycles(plan);
            let cycle = *ci.get(&cycles);
            // Only plans `a` and `d` are sold in eur; `off5` is a usd discount.
            let eur = eur && (plan == 0 || plan == 3);
            let discount = if eur && discount == Some("off5") {
                None
            } else {
                discount
            };
            // Offsets are in thousandths of a period.
            let per = approx_secs(cycle);
            let scale = |x: i64| x * per / 1000;
            let start = match start {
                Start::Past(x) => Start::Past(scale(x)),
                Start::Future(x) => Start::Future(scale(x)),
                other => other,
            };
            let ops = ops
                .into_iter()
                .map(|(dt, op)| {
                    let op = match op {
                        Op::BillingDate(x, r) => Op::BillingDate(scale(x).max(1), r),
                        other => other,
                    };
                    (scale(dt), op)
                })
                .collect();
            StateSpec {
                g,
                tz,
                calendar,
                half_even,
                tax,
                now,
                plan,
                eur,
                cycle,
                seats,
                discount,
                start,
                ops,
            }
        },
    )
}

/// A contract built from `spec` by signup and a few operations (refused ones are skipped), with
/// every due step run, and the instant it was left at.
fn build_state(spec: &StateSpec, cx: &BillingContext) -> (Contract, Timestamp) {
    let mut now = spec.now;
    let mut req = SignupRequest::new(
        "Cont_s",
        "Cust_s",
        PLANS[spec.plan],
        spec.currency(),
        spec.cycle,
    )
    .seats("seats", spec.seats);
    req.selection.discount = spec.discount.map(String::from);
    match spec.start {
        Start::Now => {}
        Start::Past(x) => req.activation = Some(plus_secs(now, -x)),
        Start::Future(x) => req.activation = Some(plus_secs(now, x)),
        Start::Pending => req.is_pending = true,
        Start::Trial(days) => req.free_trial_days = Some(days),
    }
    let mut c = subscribe(&req, cx, now).expect("valid signup").contract;
    for (k, (dt, op)) in spec.ops.iter().enumerate() {
        now = plus_secs(now, *dt);
        if let Ok(out) = advance(&c, cx, now) {
            c = out.contract;
        }
        let id = format!("op{k}");
        let with = |mut r: ChangeRequest, allowed: bool| {
            r.downgrade_allowed = allowed;
            r
        };
        let next = match op {
            Op::Seats(q, a, i) => {
                let mut r = with(units(&[("seats", *q)], Activation::Now), *a);
                r.invoice_now = *i;
                plan_change(&c, &r, cx, now, &id).map(|o| o.contract)
            }
            Op::Plan(p, q, a) => plan_change(
                &c,
                &with(new_plan(PLANS[*p], &[("seats", *q)], Activation::Now), *a),
                cx,
                now,
                &id,
            )
            .map(|o| o.contract),
            Op::NextCyclePlan(p, q) => plan_change(
                &c,
                &new_plan(PLANS[*p], &[("seats", *q)], Activation::NextCycle),
                cx,
                now,
                &id,
            )
            .map(|o| o.contract),
            Op::NextCycleSeats(q) => plan_change(
                &c,
                &units(&[("seats", *q)], Activation::NextCycle),
                cx,
                now,
                &id,
            )
            .map(|o| o.contract),
            Op::CancelAtPeriodEnd => {
                cancel(&c, CancelMode::AtPeriodEnd, cx, now).map(|o| o.contract)
            }
            Op::CancelNow => cancel(&c, CancelMode::Now, cx, now).map(|o| o.contract),
            Op::BillingDate(x, r) => {
                let req = ChangeRequest::new(
                    ChangeKind::ChangeBillingDate {
                        date: plus_secs(now, *x),
                        recalculate_charges: *r,
                        discount: None,
                    },
                    Activation::Now,
                );
                plan_change(&c, &req, cx, now, &id).map(|o| o.contract)
            }
            Op::Activate => activate(&c, cx, now).map(|o| o.contract),
        };
        if let Ok(n) = next {
            c = n;
        }
    }
    if let Ok(out) = advance(&c, cx, now) {
        c = out.contract;
    }
    (c, now)
}

// ---------------------------------------------------------------------------------------------
// (b) Preview equals execution
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct SaneRequest {
    change: Move,
    eur: bool,
    /// 0 = now, 1 = next cycle, 2 = a date `offset` thousandths of a period from now.
    when: u8,
    offset: i64,
    downgrade_allowed: bool,
    prorate: bool,
    invoice_now: bool,
}

fn sane_request() -> impl Strategy<Value = SaneRequest> {
    let mv = prop_oneof![
        seats().prop_map(Move::Seats),
        (0..PLANS.len(), seats()).prop_map(|(p, q)| Move::Plan(p, q)),
    ];
    (
        mv,
        prop::bool::weighted(0.15),
        0u8..3,
        -200i64..1500,
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(change, eur, when, offset, downgrade_allowed, prorate, invoice_now)| SaneRequest {
                change,
                eur,
                when,
                offset,
                downgrade_allowed,
                prorate,
                invoice_now,
            },
        )
}

impl SaneRequest {
    fn build(&self, c: &Contract, now: Timestamp, activation: Option<Activation>) -> ChangeRequest {
        let per = approx_secs(c.config.cycle);
        let activation = activation.unwrap_or(match self.when {
            0 => Activation::Now,
            1 => Activation::NextCycle,
            _ => Activation::Date(plus_secs(now, self.offset * per / 1000)),
        });
        let mut r = match self.change {
            Move::Seats(q) => units(&[("seats", q)], activation),
            Move::Plan(p, q) => {
                let mut r = new_plan(PLANS[p], &[("seats", q)], activation);
                if self.eur
                    && let ChangeKind::NewPlan { currency, .. } = &mut r.change
                {
                    *currency = Some(Currency::Eur);
                }
                r
            }
        };
        r.downgrade_allowed = self.downgrade_allowed;
        r.proration = if self.prorate {
            Proration::CreateProrations
        } else {
            Proration::None
        };
        r.invoice_now = self.invoice_now;
        r
    }
}

/// The same outcome, down to the serialized form of its contract and invoice.
fn same_outcome(
    a: &Result<ChangeOutcome, CoreError>,
    b: &Result<ChangeOutcome, CoreError>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(a, b);
    if let (Ok(x), Ok(y)) = (a, b) {
        prop_assert_eq!(json(&x.contract), json(&y.contract));
        prop_assert_eq!(json(&x.invoice), json(&y.invoice));
    }
    Ok(())
}

/// Credit balances after the invoices, as the store keeps them.
fn balances_after(
    start: &BTreeMap<Currency, Decimal>,
    invoices: &[InvoiceDraft],
) -> BTreeMap<Currency, Decimal> {
    let mut b = start.clone();
    for i in invoices {
        *b.entry(i.currency).or_default() += i.credit_added - i.credit_applied;
    }
    b
}

/// Runs due steps up to each of `cuts` in turn, storing and reloading the contract and carrying
/// the credit balance between calls, as a store does. Returns the contract and all invoices.
fn advance_in_steps(
    c: &Contract,
    cx: &BillingContext,
    cuts: &[Timestamp],
) -> Result<(Contract, Vec<InvoiceDraft>), TestCaseError> {
    let mut c = c.clone();
    let mut invoices: Vec<InvoiceDraft> = Vec::new();
    for t in cuts {
        let here = cx
            .clone()
            .with_balances(balances_after(&cx.balances, &invoices));
        let before = stored(&c);
        let out = advance(&before, &here, *t).map_err(|e| fail("advance step", &e))?;
        invoices.extend(out.invoices().cloned());
        // Equal terms are exactly equal terms written: a store that skips rewriting equal
        // terms keeps what it would have written.
        let written = |c: &Contract| serde_json::to_string(&c.terms()).expect("terms");
        prop_assert_eq!(
            before.terms() == out.contract.terms(),
            written(&before) == written(&out.contract)
        );
        // Renewals alone leave the terms as they were.
        if out
            .steps
            .iter()
            .all(|s| matches!(s.kind, StepKind::Renewal))
        {
            prop_assert!(
                before.terms() == out.contract.terms(),
                "a renewal moved the terms"
            );
        }
        // Running the same instant again finds nothing due.
        let again = advance(&out.contract, &here, *t).map_err(|e| fail("advance again", &e))?;
        prop_assert!(
            again.steps.is_empty(),
            "steps re-ran at {}: {:?}",
            t,
            again.steps
        );
        c = out.contract;
    }
    Ok((c, invoices))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// (b) Planning a change on a contract and on the same contract after a store round trip
    /// gives identical outcomes (a preview shows exactly what execution does).
    #[test]
    fn preview_equals_execution(spec in state_spec(), r in sane_request()) {
        let catalog = catalog();
        let settings = spec.settings();
        let cx = BillingContext::new(&catalog, &settings).expect("context");
        let (c, now) = build_state(&spec, &cx);
        let loaded = stored(&c);
        prop_assert_eq!(&loaded, &c);
        prop_assert_eq!(json(&loaded), json(&c));
        let req = r.build(&c, now, None);
        let preview = plan_change(&c, &req, &cx, now, "chg_b");
        let execution = plan_change(&loaded, &req, &cx, now, "chg_b");
        same_outcome(&preview, &execution)?;
    }

    /// (b) A change scheduled for the next cycle, previewed, then executed by `advance` at its
    /// instant on the stored contract, issues the invoices the preview's contract issues; the
    /// renewal then bills the new configuration.
    #[test]
    fn scheduled_preview_equals_execution(
        spec in state_spec(),
        r in sane_request(),
        mid in 0u32..=1000,
    ) {
        let catalog = catalog();
        let settings = spec.settings();
        let cx = BillingContext::new(&catalog, &settings).expect("context");
        let (c, now) = build_state(&spec, &cx);
        let req = r.build(&c, now, Some(Activation::NextCycle));
        let planned = plan_change(&c, &req, &cx, now, "chg_next");
        // Only a started contract schedules a change (before its start a change rewrites what
        // the activation bills).
        let preview = match planned {
            Ok(p) if c.status == ContractStatus::Active => p,
            _ => return Ok(()),
        };
        prop_assert!(preview.scheduled);
        let end = c.period.as_ref().and_then(|p| p.end);
        prop_assert_eq!(Some(preview.effective_at), end);
        let at = preview.effective_at;
        prop_assert!(preview
            .contract
            .scheduled
            .iter()
            .any(|s| s.id == "chg_next" && s.effective_at == at));
        prop_assert!(preview.invoice.is_none());

        // What the preview says will happen at `at`.
        let shown = advance(&preview.contract, &cx, at).map_err(|e| fail("preview advance", &e))?;
        let shown_invoices: Vec<InvoiceDraft> = shown.invoices().cloned().collect();
        // What happens: the store persists the outcome and runs due steps, possibly in between.
        let between = plus_secs(now, (at.as_second() - now.as_second()) * i64::from(mid) / 1000);
        let (done, done_invoices) = advance_in_steps(&preview.contract, &cx, &[between, at])?;
        prop_assert_eq!(&done_invoices, &shown_invoices);
        prop_assert_eq!(json(&done_invoices), json(&shown_invoices));
        prop_assert_eq!(&done, &shown.contract);
        prop_assert!(done.scheduled.iter().all(|s| s.id != "chg_next"), "the change ran");

        // With no other change or cancellation pending, the renewal at `at` charges the new
        // configuration in full, unless `at` is off the schedule (a trial ending before a
        // calendar-aligned or moved billing date), where the first period is a stub.
        let alone = c.scheduled.is_empty() && c.cancel_at.is_none();
        let on_schedule = c
            .schedule
            .filter(|s| s.cycle.is_recurring())
            .and_then(|s| s.period_containing(at, &cx.tz).ok())
            .is_some_and(|p| p.start == at);
        if alone && on_schedule && c.status == ContractStatus::Active {
            let (plan, q) = match r.change {
                Move::Seats(q) => (c.config.plan_slug.clone(), q),
                Move::Plan(p, q) => (PLANS[p].to_string(), q),
            };
            prop_assert_eq!(&done.config.plan_slug, &plan);
            let mut want: Vec<(String, i128, i128)> = model_items(&plan, q)
                .into_iter()
                .filter(|i| !i.arrears)
                .map(|i| (i.feature.to_string(), i.unit_cents, i.cents))
                .collect();
            want.sort();
            let mut got: Vec<(String, i128, i128)> = done_invoices
                .iter()
                .filter(|i| i.issued_at == at && i.reason == InvoiceReason::Renewal)
                .flat_map(|i| i.lines.iter())
                .filter(|l| l.kind == LineKind::Charge && l.period_start == at)
                .map(|l| {
                    (
                        l.feature_slug.clone().unwrap_or_default(),
                        cents(l.unit_amount),
                        cents(l.amount),
                    )
                })
                .collect();
            got.sort();
            prop_assert_eq!(got, want, "the renewal bills the scheduled configuration");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (c) Planning is total and deterministic
// ---------------------------------------------------------------------------------------------

const CODES: [&str; 11] = [
    "invalid_value",
    "not_found",
    "not_sold_in_currency_or_cycle",
    "unknown_feature",
    "invalid_tiers",
    "negative_value",
    "downgrade_requires_next_cycle_or_downgrade_allowed",
    "currency_change_requires_next_cycle",
    "date_out_of_range",
    "invalid_contract_state",
    "out_of_range",
];

/// Any decimal: small, negative, fractional, huge, extreme.
fn any_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        4 => (0i64..60).prop_map(Decimal::from),
        1 => (-60i64..0).prop_map(Decimal::from),
        1 => (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        1 => (any::<u128>(), 0u32..=28, any::<bool>()).prop_map(|(m, s, neg)| {
            let m = i128::try_from(m % (1u128 << 96)).expect("below 2^96");
            Decimal::from_i128_with_scale(if neg { -m } else { m }, s)
        }),
        1 => prop::sample::select(vec![Decimal::MAX, Decimal::MIN, Decimal::ZERO, d("0.0000001")]),
    ]
}

/// An instant, resolved against the contract a request is planned on.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Thousandths of a period from the planning instant (may be negative).
    Near(i64),
    /// Thousandths of the way through the current period.
    InPeriod(u32),
    /// Any instant in the representable range.
    At(Timestamp),
}

impl Moment {
    fn resolve(self, c: &Contract, now: Timestamp) -> Timestamp {
        let per = approx_secs(c.config.cycle);
        let shift = |t: Timestamp, secs: i64| {
            Timestamp::from_second(t.as_second().saturating_add(secs)).unwrap_or(t)
        };
        match self {
            Moment::Near(x) => shift(now, x * per / 1000),
            Moment::InPeriod(x) => match c.period.as_ref().and_then(|p| p.interval()) {
                Some(p) => shift(
                    p.start,
                    (p.end.as_second() - p.start.as_second()) * i64::from(x) / 1000,
                ),
                None => shift(now, i64::from(x)),
            },
            Moment::At(t) => t,
        }
    }
}

fn any_moment() -> impl Strategy<Value = Moment> {
    let (lo, hi) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![
        3 => (0u32..1000).prop_map(Moment::InPeriod),
        2 => (-3000i64..3000).prop_map(Moment::Near),
        1 => (lo..=hi).prop_map(|x| Moment::At(Timestamp::from_second(x).expect("in range"))),
        1 => prop::sample::select(vec![Timestamp::MIN, Timestamp::MAX, Timestamp::UNIX_EPOCH])
            .prop_map(Moment::At),
    ]
}

fn slug() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("seats".to_string()),
        2 => prop::sample::select(vec!["base", "support", "api", "sso"]).prop_map(String::from),
        1 => "[a-z_]{0,6}",
    ]
}

fn plan_slug() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(PLANS.to_vec()).prop_map(String::from),
        1 => prop::sample::select(vec!["v", "Plan_a"]).prop_map(String::from),
        1 => "[a-z_]{0,6}",
    ]
}

fn discount_ref() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        1 => prop::sample::select(vec!["pct", "off5", "FIVE", "Disc_pct"]).prop_map(|s| Some(s.to_string())),
        1 => "[a-z]{0,5}".prop_map(Some),
    ]
}

/// Contiguous tiers ending in `Infinity` (so they pass the shape checks) with random bounds,
/// up to `Decimal::MAX`, and random amounts.
fn well_formed_tiers() -> impl Strategy<Value = Vec<Tier>> {
    let end = prop_oneof![
        3 => (1u64..100).prop_map(Decimal::from),
        1 => any::<u64>().prop_map(Decimal::from),
        1 => Just(Decimal::MAX),
    ];
    (
        0u8..=1,
        prop::collection::vec(end, 0..3),
        prop::collection::vec(any_decimal(), 3),
    )
        .prop_map(|(first, mut ends, amounts)| {
            ends.sort();
            ends.dedup();
            let mut start = Decimal::from(first);
            let mut out = Vec::new();
            for (i, e) in ends.iter().enumerate() {
                out.push(Tier {
                    tier_start: start,
                    tier_end: TierEnd::Concrete(*e),
                    amount: amounts[i].abs(),
                });
                start = e.checked_add(Decimal::ONE).unwrap_or(*e);
            }
            out.push(Tier {
                tier_start: start,
                tier_end: TierEnd::Infinity,
                amount: amounts[2].abs(),
            });
            out
        })
}

fn any_tiers() -> impl Strategy<Value = Vec<Tier>> {
    prop_oneof![1 => random_tiers(), 2 => well_formed_tiers()]
}

/// Tiers with random fields (mostly refused by the shape checks).
fn random_tiers() -> impl Strategy<Value = Vec<Tier>> {
    let end = prop_oneof![
        1 => Just(TierEnd::Infinity),
        2 => any_decimal().prop_map(TierEnd::Concrete),
    ];
    prop::collection::vec(
        (any_decimal(), end, any_decimal()).prop_map(|(tier_start, tier_end, amount)| Tier {
            tier_start,
            tier_end,
            amount,
        }),
        0..4,
    )
}

fn any_override() -> impl Strategy<Value = FeatureOverride> {
    (
        prop::option::of(any_decimal()),
        prop::option::of(any_decimal()),
        prop::option::of(any::<bool>()),
        prop_oneof![1 => Just(None), 2 => any_tiers().prop_map(Some)],
        prop::option::of(any_decimal()),
    )
        .prop_map(
            |(flat_fee, price, purchased, tiers, unit_count)| FeatureOverride {
                flat_fee,
                price,
                purchased,
                tiers,
                unit_count,
            },
        )
}

/// Any change; the date of a billing date change is set from a [`Moment`] when planned.
fn any_change_kind() -> impl Strategy<Value = ChangeKind> {
    let counts = || prop::collection::btree_map(slug(), any_decimal(), 0..3);
    let new_plan = (
        plan_slug(),
        prop_oneof![
            3 => Just(None),
            1 => prop::sample::select(vec!["a-v1", "v-2000", "v-2030", "Pric_b-v1", "nope"])
                .prop_map(|s| Some(s.to_string())),
        ],
        prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(Currency::all().collect::<Vec<_>>()).prop_map(Some),
        ],
        prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(Cycle::ALL.to_vec()).prop_map(Some),
        ],
        counts(),
        prop_oneof![
            1 => Just(BTreeMap::new()),
            1 => prop::collection::btree_map(slug(), any_override(), 1..3),
        ],
        discount_ref(),
    )
        .prop_map(
            |(plan, pricing, currency, cycle, unit_counts, overrides, discount)| {
                ChangeKind::NewPlan {
                    plan,
                    pricing,
                    currency,
                    cycle,
                    unit_counts,
                    overrides,
                    discount,
                }
            },
        );
    let unit_count = (
        counts(),
        prop::collection::btree_map(slug(), any::<bool>(), 0..2),
        discount_ref(),
    )
        .prop_map(
            |(unit_counts, purchased, discount)| ChangeKind::ChangeUnitCount {
                unit_counts,
                purchased,
                discount,
            },
        );
    let billing_date =
        (any::<bool>(), discount_ref()).prop_map(|(recalculate_charges, discount)| {
            ChangeKind::ChangeBillingDate {
                date: Timestamp::UNIX_EPOCH,
                recalculate_charges,
                discount,
            }
        });
    prop_oneof![2 => new_plan, 2 => unit_count, 1 => billing_date]
}

#[derive(Debug, Clone)]
enum When {
    Now,
    NextCycle,
    Date(Moment),
}

#[derive(Debug, Clone)]
struct Fuzz {
    spec: StateSpec,
    /// The request; its activation date and billing date are set from `when` and `date`.
    req: ChangeRequest,
    when: When,
    date: Moment,
    /// The planning instant: where the state was left, or a moment from there.
    now: Option<Moment>,
}

impl Fuzz {
    fn request(&self, c: &Contract, now: Timestamp) -> ChangeRequest {
        let mut req = self.req.clone();
        req.activation = match self.when {
            When::Now => Activation::Now,
            When::NextCycle => Activation::NextCycle,
            When::Date(m) => Activation::Date(m.resolve(c, now)),
        };
        if let ChangeKind::ChangeBillingDate { date, .. } = &mut req.change {
            *date = self.date.resolve(c, now);
        }
        req
    }
}

fn fuzz_case() -> impl Strategy<Value = Fuzz> {
    let when = prop_oneof![
        2 => Just(When::Now),
        1 => Just(When::NextCycle),
        2 => any_moment().prop_map(When::Date),
    ];
    let proration = prop_oneof![Just(Proration::CreateProrations), Just(Proration::None)];
    let req = (any_change_kind(), any::<bool>(), proration, any::<bool>()).prop_map(
        |(change, downgrade_allowed, proration, invoice_now)| ChangeRequest {
            change,
            activation: Activation::Now,
            downgrade_allowed,
            proration,
            invoice_now,
        },
    );
    let now = prop_oneof![4 => Just(None), 1 => any_moment().prop_map(Some)];
    (state_spec(), req, when, any_moment(), now).prop_map(|(spec, req, when, date, now)| Fuzz {
        spec,
        req,
        when,
        date,
        now,
    })
}

/// Plans `req` twice: `Ok` or a typed error with a known code, the same both times.
fn check_planning(
    c: &Contract,
    req: &ChangeRequest,
    cx: &BillingContext,
    now: Timestamp,
) -> Result<(), TestCaseError> {
    let first = plan_change(c, req, cx, now, "chg_f");
    let second = plan_change(c, req, cx, now, "chg_f");
    check_outcome(&first)?;
    same_outcome(&first, &second)?;
    if let (Err(a), Err(b)) = (&first, &second) {
        prop_assert_eq!(a.code(), b.code());
        prop_assert_eq!(a.param(), b.param());
    }
    Ok(())
}

fn check_outcome(r: &Result<ChangeOutcome, CoreError>) -> Result<(), TestCaseError> {
    match r {
        Err(e) => {
            let code = e.code();
            prop_assert!(CODES.contains(&code), "unknown code {}", code);
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(o) => {
            prop_assert_eq!(&stored(&o.contract), &o.contract);
            if let Some(inv) = &o.invoice {
                let sum: Decimal = inv.lines.iter().map(|l| l.amount).sum();
                prop_assert_eq!(inv.net, sum);
                prop_assert!(inv.lines.iter().all(|l| l.amount.scale() <= 2));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (c) Any change request the types allow gives `Ok` or a typed error with a known code,
    /// and planning it twice gives the same result.
    #[test]
    fn planning_is_total_and_deterministic(case in fuzz_case()) {
        let catalog = catalog();
        let settings = case.spec.settings();
        let cx = BillingContext::new(&catalog, &settings).expect("context");
        let (c, at) = build_state(&case.spec, &cx);
        let now = case.now.map_or(at, |m| m.resolve(&c, at));
        let req = case.request(&c, now);
        check_planning(&c, &req, &cx, now)?;
    }
}

fn seats_to(x: Decimal, activation: Activation) -> ChangeRequest {
    ChangeRequest::new(
        ChangeKind::ChangeUnitCount {
            unit_counts: [("seats".to_string(), x)].into(),
            purchased: BTreeMap::new(),
            discount: None,
        },
        activation,
    )
}

fn plan_a_with(o: FeatureOverride) -> ChangeRequest {
    let mut r = new_plan("a", &[], Activation::Now);
    if let ChangeKind::NewPlan { overrides, .. } = &mut r.change {
        overrides.insert("seats".into(), o);
    }
    r
}

/// (c) The same checks on fixed extreme inputs, so that every run covers them: extreme unit
/// counts, prices and tier bounds, instants at the ends of the representable range, on running,
/// hourly, one-off, trial, pending and canceled contracts.
#[test]
fn planning_edge_cases_are_total_and_deterministic() {
    let catalog = catalog();
    let settings = Settings::default();
    let cx = BillingContext::new(&catalog, &settings).unwrap();
    let day = "2024-01-31";
    let seats = [("seats", 3)];
    let month = signup(&cx, "a", Currency::Usd, Cycle::Month, &seats, day).contract;
    let mut states = vec![
        month.clone(),
        signup(&cx, "a", Currency::Usd, Cycle::Hour, &seats, day).contract,
        signup(&cx, "a", Currency::Usd, Cycle::Once, &seats, day).contract,
        signup(&cx, "a", Currency::Usd, Cycle::Constant, &seats, day).contract,
        cancel(&month, CancelMode::Now, &cx, ts("2024-02-10"))
            .unwrap()
            .contract,
    ];
    for (trial, pending) in [(Some(10), false), (None, true)] {
        let mut req = SignupRequest::new("Cont_e", "Cust_e", "a", Currency::Usd, Cycle::Month)
            .seats("seats", 3);
        req.free_trial_days = trial;
        req.is_pending = pending;
        states.push(subscribe(&req, &cx, ts(day)).unwrap().contract);
    }

    let extremes = [
        Decimal::MAX,
        Decimal::MIN,
        Decimal::new(1, 28),
        Decimal::new(-1, 7),
        Decimal::from(u64::MAX),
        Decimal::ZERO,
    ];
    let mut reqs = Vec::new();
    for x in extremes {
        reqs.push(seats_to(x, Activation::Now));
        reqs.push(plan_a_with(FeatureOverride {
            price: Some(x),
            flat_fee: Some(x),
            ..FeatureOverride::default()
        }));
        reqs.push(plan_a_with(FeatureOverride {
            unit_count: Some(x),
            ..FeatureOverride::default()
        }));
        // Contiguous tiers whose first tier ends at `x`.
        reqs.push(plan_a_with(FeatureOverride {
            tiers: Some(vec![
                Tier {
                    tier_start: Decimal::ZERO,
                    tier_end: TierEnd::Concrete(x),
                    amount: Decimal::ONE,
                },
                Tier {
                    tier_start: x.checked_add(Decimal::ONE).unwrap_or(x),
                    tier_end: TierEnd::Infinity,
                    amount: x.abs(),
                },
            ]),
            unit_count: Some(Decimal::from(u64::MAX)),
            ..FeatureOverride::default()
        }));
    }
    for date in [
        Timestamp::MIN,
        Timestamp::MAX,
        ts("2024-02-15"),
        ts("2024-03-31"),
    ] {
        for recalculate_charges in [false, true] {
            reqs.push(ChangeRequest::new(
                ChangeKind::ChangeBillingDate {
                    date,
                    recalculate_charges,
                    discount: None,
                },
                Activation::Now,
            ));
        }
    }
    let activations = [
        Activation::Now,
        Activation::NextCycle,
        Activation::Date(Timestamp::MIN),
        Activation::Date(Timestamp::MAX),
        Activation::Date(ts("2024-02-20")),
    ];
    let nows = [ts("2024-02-10"), Timestamp::MIN, Timestamp::MAX];

    let mut failures = Vec::new();
    for c in &states {
        for base in &reqs {
            for activation in activations {
                for now in nows {
                    let mut req = base.clone();
                    req.activation = activation;
                    req.downgrade_allowed = true;
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        check_planning(c, &req, &cx, now)
                    }));
                    match run {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => failures.push(format!("{e}: {req:?} at {now}")),
                        Err(_) => failures.push(format!("panicked: {req:?} at {now}")),
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} inputs failed, first: {}",
        failures.len(),
        failures[0]
    );
}

// ---------------------------------------------------------------------------------------------
// (d) Advancing is idempotent and independent of step size
// ---------------------------------------------------------------------------------------------

fn usage_records(base: Timestamp, per: i64, raw: &[(i64, u32, bool)]) -> Vec<UsageRecord> {
    raw.iter()
        .map(|(off, units, abs)| UsageRecord {
            feature_slug: "api".into(),
            units: Decimal::from(*units),
            timestamp: plus_secs(base, off * per / 1000),
            is_absolute: *abs,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// (d) Running due steps twice at the same instant issues nothing the second time, and
    /// advancing in small steps (stored between calls) issues the same invoices as one big step.
    #[test]
    fn advance_is_idempotent_and_step_independent(
        spec in state_spec(),
        horizon in 0i64..5000,
        cuts in prop::collection::vec(0i64..5000, 0..8),
        exact in prop::collection::vec(0i64..5, 0..3),
        usage in prop::collection::vec((-1000i64..5000, 0u32..500, prop::bool::weighted(0.1)), 0..6),
        credit in prop::sample::select(vec![0i64, 0, 2500]),
    ) {
        let catalog = catalog();
        let settings = spec.settings();
        let cx = BillingContext::new(&catalog, &settings).expect("context");
        let (c, now) = build_state(&spec, &cx);
        let per = approx_secs(c.config.cycle);
        let records = usage_records(now, per, &usage);
        let mut balances = BTreeMap::new();
        balances.insert(c.config.currency, Decimal::new(credit, 2));
        let cx = cx.with_usage(&records).with_balances(balances);
        let until = plus_secs(now, horizon * per / 1000);

        // Cut points: random instants, plus some exact period boundaries.
        let mut steps: Vec<Timestamp> = cuts
            .iter()
            .map(|x| plus_secs(now, (x * per / 1000).min(until.as_second() - now.as_second())))
            .collect();
        if let Some(s) = c.schedule.filter(|s| s.cycle.is_recurring()) {
            for k in &exact {
                if let Ok((i, _)) = s.next_boundary_after(now, &cx.tz)
                    && let Ok(b) = s.boundary(i + k, &cx.tz)
                    && b <= until
                {
                    steps.push(b);
                }
            }
        }
        steps.push(until);
        steps.sort();

        let big = advance(&c, &cx, until).map_err(|e| fail("advance", &e))?;
        let big_invoices: Vec<InvoiceDraft> = big.invoices().cloned().collect();
        let again = advance(&big.contract, &cx, until).map_err(|e| fail("advance again", &e))?;
        prop_assert!(again.steps.is_empty(), "steps re-ran: {:?}", again.steps);
        prop_assert_eq!(again.invoices().count(), 0);
        let keys: BTreeSet<&str> = big_invoices.iter().map(|i| i.step_key.as_str()).collect();
        prop_assert_eq!(keys.len(), big_invoices.len(), "one invoice per billing step");

        let (small, small_invoices) = advance_in_steps(&c, &cx, &steps)?;
        prop_assert_eq!(&small_invoices, &big_invoices);
        prop_assert_eq!(json(&small_invoices), json(&big_invoices));
        prop_assert_eq!(&small, &big.contract);
    }
}

// ---------------------------------------------------------------------------------------------
// (e) Periods tile time
// ---------------------------------------------------------------------------------------------

/// An anchor on the 29th, 30th or 31st of a month (clamped to 30 in 30-day months), or on
/// Feb 29 of a leap year.
fn month_end_anchor() -> impl Strategy<Value = (i64, i64, i64)> {
    (1990i64..2060, 1i64..=12, 29i64..=31).prop_map(|(y, m, d)| {
        if m == 2 {
            let leap = (y..y + 8).find(|x| is_leap(*x)).unwrap_or(2024);
            (leap, 2, 29)
        } else {
            (y, m, d.min(days_in_month(y, m)))
        }
    })
}

const K: i64 = 40;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (e) Boundaries of schedules anchored on the 29th-31st increase strictly and follow the
    /// calendar rules; `period_containing` returns the consecutive boundaries around any instant.
    #[test]
    fn periods_tile_time(
        (y, m, dd) in month_end_anchor(),
        time in time_of_day(),
        tz in prop::sample::select(ZONES.to_vec()),
        cycle in prop::sample::select(RECURRING.to_vec()),
        probes in prop::collection::vec((any::<prop::sample::Index>(), 0u32..=1000), 1..12),
    ) {
        let tz = TimeZone::get(tz).expect("zone");
        let anchor = local(civil_dt(y, m, dd, time), &tz);
        let s = Schedule { anchor, cycle };
        let bounds: Vec<Timestamp> = (-K..=K)
            .map(|k| s.boundary(k, &tz).expect("boundary"))
            .collect();
        let az = anchor.to_zoned(tz.clone());
        for (i, b) in bounds.iter().enumerate() {
            let k = i64::try_from(i).expect("small") - K;
            prop_assert_eq!(*b, model_boundary(anchor, cycle, k, &tz), "boundary {}", k);
            if matches!(cycle, Cycle::Month | Cycle::Quarter | Cycle::Year) {
                let z = b.to_zoned(tz.clone());
                let dim = days_in_month(i64::from(z.year()), i64::from(z.month()));
                prop_assert_eq!(
                    i64::from(z.day()),
                    i64::from(az.day()).min(dim),
                    "boundary {} keeps the anchor's day or clamps",
                    k
                );
            }
        }
        prop_assert_eq!(bounds[usize::try_from(K).expect("small")], anchor);
        for w in bounds.windows(2) {
            prop_assert!(w[0] < w[1], "boundaries increase: {} then {}", w[0], w[1]);
        }
        for (idx, frac) in probes {
            // A probe inside [bounds[i], bounds[i + 1]).
            let i = idx.index(bounds.len() - 1);
            let (lo, hi) = (bounds[i], bounds[i + 1]);
            let width = hi.as_second() - lo.as_second();
            let t = plus_secs(lo, width * i64::from(frac) / 1001);
            let p = s.period_containing(t, &tz).expect("period");
            prop_assert!(p.contains(t));
            prop_assert_eq!((p.start, p.end), (lo, hi), "the period around {}", t);
            // Tiling: the period starting at a boundary is the next one, and the instant just
            // before a boundary belongs to the previous one.
            let at = s.period_containing(lo, &tz).expect("period");
            prop_assert_eq!((at.start, at.end), (lo, hi));
            let before = s
                .period_containing(lo - jiff::SignedDuration::from_nanos(1), &tz)
                .expect("period");
            prop_assert_eq!(before.end, lo);
            if i > 0 {
                prop_assert_eq!(before.start, bounds[i - 1]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests for defects the properties above once found
// ---------------------------------------------------------------------------------------------

/// Found by `planning_is_total_and_deterministic`: override tiers whose first tier ends at
/// `Decimal::MAX` must be refused as `invalid_tiers` (computing `tier_end + 1` once overflowed).
#[test]
fn override_tiers_ending_at_decimal_max_are_refused_not_panicking() {
    let catalog = catalog();
    let settings = Settings::default();
    let cx = BillingContext::new(&catalog, &settings).unwrap();
    let c = signup(
        &cx,
        "a",
        Currency::Usd,
        Cycle::Month,
        &[("seats", 1)],
        "2024-01-01",
    )
    .contract;
    let mut req = new_plan("a", &[], Activation::Now);
    if let ChangeKind::NewPlan { overrides, .. } = &mut req.change {
        overrides.insert(
            "seats".into(),
            FeatureOverride {
                tiers: Some(vec![
                    Tier {
                        tier_start: Decimal::ZERO,
                        tier_end: TierEnd::Concrete(Decimal::MAX),
                        amount: Decimal::ONE,
                    },
                    Tier {
                        tier_start: Decimal::ZERO,
                        tier_end: TierEnd::Infinity,
                        amount: Decimal::ONE,
                    },
                ]),
                ..FeatureOverride::default()
            },
        );
    }
    let at = ts("2024-01-10");
    let r = std::panic::catch_unwind(|| plan_change(&c, &req, &cx, at, "chg"));
    let r = r.expect("plan_change must not panic");
    assert_eq!(r.unwrap_err().code(), "invalid_tiers");
}

/// Found by `planning_is_total_and_deterministic`: moving the billing date of an hourly contract
/// far ahead once extended the period with one segment per hour in between; a billing date more
/// than one cycle past the period end is now refused, so a request does bounded work.
#[test]
fn billing_date_work_does_not_grow_with_distance() {
    let catalog = catalog();
    let settings = Settings::default();
    let cx = BillingContext::new(&catalog, &settings).unwrap();
    let c = signup(
        &cx,
        "a",
        Currency::Usd,
        Cycle::Hour,
        &[("seats", 1)],
        "2024-01-01",
    )
    .contract;
    let req = ChangeRequest::new(
        ChangeKind::ChangeBillingDate {
            date: ts("2224-01-01"),
            recalculate_charges: false,
            discount: None,
        },
        Activation::Now,
    );
    let r = plan_change(&c, &req, &cx, ts("2024-01-01T00:30:00Z"), "chg");
    if let Ok(out) = r {
        let segments = out.contract.period.map_or(0, |p| p.segments.len());
        assert!(
            segments <= 3,
            "{segments} segments for one billing date change"
        );
    }
}
