//! Reference cases from other billing systems (the public set in `peer-cases.md`), one test per
//! case or case part, named by case id.
//!
//! Each test runs with the settings of its source's convention (day or second granularity,
//! calendar or anniversary alignment, rounding, tax, UTC) and drives the public API: `subscribe`,
//! `plan_change`, `advance`, `cancel`. Every expected amount is worked out by hand in a comment.
//! Where Tally's rules differ from a source on purpose, the test checks Tally's number and the
//! comment names the difference (marked `DIFFERENCE`).
//!
//! Rounding: Lago (Ruby `round`), Kill Bill (`HALF_UP`) and Flexprice (shopspring `Round`) all
//! round half away from zero, Tally's default. The vendor documentation cases (Stripe, Chargebee,
//! Recurly, Zuora) do not state a mode; none of their lines falls on a half cent.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tally_core::prelude::*;

use crate::support::*;

// ----------------------------------------------------------------------------------------------
// Helpers local to the reference cases.

/// A source's convention: granularity, alignment and rounding, in UTC, without tax.
fn convention(g: Granularity, a: Alignment, r: Rounding) -> Settings {
    Settings {
        rounding: r,
        ..settings(g, a)
    }
}

/// Lago: days, half away from zero.
fn lago(a: Alignment) -> Settings {
    convention(Granularity::Day, a, Rounding::HalfAwayFromZero)
}

/// Kill Bill: days, anniversary (BCD = start of the first paid period), HALF_UP.
fn killbill() -> Settings {
    convention(
        Granularity::Day,
        Alignment::Anniversary,
        Rounding::HalfAwayFromZero,
    )
}

/// Flexprice: days (calculator) or seconds (line-item service), half away from zero.
fn flexprice(g: Granularity) -> Settings {
    convention(g, Alignment::Anniversary, Rounding::HalfAwayFromZero)
}

/// Stripe: seconds.
fn stripe(a: Alignment) -> Settings {
    convention(Granularity::Second, a, Rounding::HalfAwayFromZero)
}

/// Vendor documentation examples counted in actual days (Chargebee, Zuora).
fn actual_days(a: Alignment) -> Settings {
    convention(Granularity::Day, a, Rounding::HalfAwayFromZero)
}

fn request(plan: &str, currency: Currency, cycle: Cycle) -> SignupRequest {
    SignupRequest::new("Cont_t", "Cust_t", plan, currency, cycle)
}

/// Signs `plan` (usd) at `at` with a free trial of `days`.
fn signup_trial(cx: &BillingContext, plan: &str, cycle: Cycle, days: u32, at: &str) -> Contract {
    let mut req = request(plan, Currency::Usd, cycle);
    req.free_trial_days = Some(days);
    let out = subscribe(&req, cx, ts(at)).expect("signup with a trial");
    assert!(
        out.invoices.is_empty(),
        "nothing is invoiced during a trial"
    );
    out.contract
}

/// Signs the monthly usd plan `plan` at `at` with the given optional features purchased.
fn signup_addons(cx: &BillingContext, plan: &str, purchased: &[&str], at: &str) -> SignupOutcome {
    let mut req = request(plan, Currency::Usd, Cycle::Month);
    for slug in purchased {
        req.selection.overrides.insert(
            slug.to_string(),
            FeatureOverride {
                purchased: Some(true),
                ..FeatureOverride::default()
            },
        );
    }
    subscribe(&req, cx, ts(at)).expect("signup with add-ons")
}

/// An optional flat fee (an add-on).
fn addon(fee: &str) -> FeaturePrice {
    FeaturePrice {
        optional: true,
        ..flat(fee)
    }
}

/// A catalog with one monthly usd plan `addons` made only of add-ons (slug, fee).
fn addon_catalog(addons: &[(&str, &str)]) -> Catalog {
    let mut cat = Cat::new();
    for (slug, _) in addons {
        cat = cat.feature(slug, FeatureKind::Flat);
    }
    cat.plan(
        "addons",
        vec![(
            Currency::Usd,
            Cycle::Month,
            addons.iter().map(|(s, fee)| (*s, addon(fee))).collect(),
        )],
    )
    .build()
}

/// A change that buys (`true`) or removes (`false`) add-ons on the recorded prices.
fn purchase(items: &[(&str, bool)], activation: Activation) -> ChangeRequest {
    ChangeRequest::new(
        ChangeKind::ChangeUnitCount {
            unit_counts: BTreeMap::new(),
            purchased: items.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            discount: None,
        },
        activation,
    )
}

fn allow_downgrade(mut req: ChangeRequest) -> ChangeRequest {
    req.downgrade_allowed = true;
    req
}

fn carried(mut req: ChangeRequest) -> ChangeRequest {
    req.invoice_now = false;
    req
}

/// The invoice a change issues now (it must issue one).
fn invoice_of(out: &ChangeOutcome) -> &InvoiceDraft {
    out.invoice.as_ref().expect("the change issues an invoice")
}

/// The customer's usd credit balance after `invoices`, from `before`. The core is pure: the
/// caller carries the balance from one call to the next.
fn balance_after<'a>(
    before: &str,
    invoices: impl IntoIterator<Item = &'a InvoiceDraft>,
) -> Decimal {
    invoices
        .into_iter()
        .fold(d(before), |b, i| b + i.credit_added - i.credit_applied)
}

fn usd_balance(b: Decimal) -> BTreeMap<Currency, Decimal> {
    BTreeMap::from([(Currency::Usd, b)])
}

/// When each invoice of a run was issued.
fn issued(out: &AdvanceOutcome) -> Vec<String> {
    out.invoices().map(|i| i.issued_at.to_string()).collect()
}

fn period_of(line: &InvoiceLine) -> (String, String) {
    (line.period_start.to_string(), line.period_end.to_string())
}

// ----------------------------------------------------------------------------------------------
// Lago (getlago/lago-api): days, change day on the new plan, half away from zero.

/// LAGO-01: two upgrades in the same month, calendar billing, in advance, 25% tax.
///
/// DIFFERENCE: Lago issues a credit note for the unused old days *including tax* (806, 1210 cents)
/// next to a separate invoice for the new plan. Tally puts the credit and the new charge on one
/// change invoice and taxes its net; the fee amounts per line are the same.
#[test]
fn lago_01_two_upgrades_same_month() {
    let cat = Cat::new()
        .flat_plan("plan1", Currency::Eur, Cycle::Month, "10.00")
        .flat_plan("plan2", Currency::Eur, Cycle::Month, "15.00")
        .flat_plan("plan3", Currency::Eur, Cycle::Month, "19.00")
        .build();
    let st = lago(Alignment::Calendar);
    let cx = BillingContext::new(&cat, &st)
        .unwrap()
        .with_tax_rate(d("25"));

    // Signup Mar 5 12:12, calendar stub [Mar 5, Apr 1) of March: 27 of 31 days.
    // 10.00 x 27/31 = 8.7096 -> 8.71 (Lago: 871 = 1000 / 31 * (31 - 4))
    // tax 8.71 x 25% = 2.1775 -> 2.18; gross 10.89
    let s = signup(
        &cx,
        "plan1",
        Currency::Eur,
        Cycle::Month,
        &[],
        "2024-03-05T12:12:00Z",
    );
    assert_eq!(s.invoices.len(), 1);
    let inv = &s.invoices[0];
    assert_eq!(amounts(inv), ["8.71"]);
    assert_eq!(inv.tax.to_string(), "2.18");
    assert_eq!(inv.gross.to_string(), "10.89");

    // Upgrade to plan2 on Mar 12 12:12: the change day belongs to plan2, [Mar 12, Apr 1) = 20 days.
    // credit plan1: -(10.00 x 20/31) = -6.4516 -> -6.45 (Lago's note: 6.45 x 1.25 = 8.06 -> 806)
    // charge plan2: 15.00 x 20/31 = 9.6774 -> 9.68 (Lago: 968)
    // net 3.23; tax 3.23 x 25% = 0.8075 -> 0.81; gross 4.04
    // (Lago's two documents net to the same: 9.68 x 1.25 = 12.10, 12.10 - 8.06 = 4.04.)
    let up1 = change(
        &s.contract,
        &new_plan("plan2", &[], Activation::Now),
        &cx,
        "2024-03-12T12:12:00Z",
    );
    let inv = invoice_of(&up1);
    assert_eq!(amounts(inv), ["-6.45", "9.68"]);
    assert_eq!(amounts_of(inv, LineKind::ProrationCharge), ["9.68"]);
    assert_eq!(inv.net.to_string(), "3.23");
    assert_eq!(inv.tax.to_string(), "0.81");
    assert_eq!(inv.gross.to_string(), "4.04");

    // Upgrade again to plan3 an hour later, same day: plan2 is credited for the full 20 days it
    // was just charged for.
    // credit plan2: -(15.00 x 20/31) = -9.68 (Lago's note: 9.68 x 1.25 = 12.10 -> 1210)
    // charge plan3: 19.00 x 20/31 = 12.2580 -> 12.26 (Lago: 1226)
    // net 2.58; tax 2.58 x 25% = 0.645 -> 0.65 (half away from zero); gross 3.23
    let up2 = change(
        &up1.contract,
        &new_plan("plan3", &[], Activation::Now),
        &cx,
        "2024-03-12T13:12:00Z",
    );
    let inv = invoice_of(&up2);
    assert_eq!(amounts(inv), ["-9.68", "12.26"]);
    assert_eq!(inv.net.to_string(), "2.58");
    assert_eq!(inv.tax.to_string(), "0.65");
    assert_eq!(inv.gross.to_string(), "3.23");

    // One invoice per step: 1, 2, 3 (Lago's customer invoice count).
    let count = s.invoices.len() + [&up1, &up2].iter().filter(|o| o.invoice.is_some()).count();
    assert_eq!(count, 3);
}

/// LAGO-05: monthly -> yearly upgrade, anniversary, in advance; equal annualized price counts as
/// an upgrade (10.00 x 12 = 120.00 = yearly 120.00).
///
/// DIFFERENCE: Lago prorates the new yearly plan to the old anniversary (275 days of a 366-day
/// year: 120.00 x 275/366 = 90.16). Tally resets the anchor to the change instant on a cycle
/// change and charges a full new year.
#[test]
fn lago_05_monthly_to_yearly_upgrade() {
    let cat = Cat::new()
        .flat_plan("monthly_plan", Currency::Eur, Cycle::Month, "10.00")
        .flat_plan("yearly_plan", Currency::Eur, Cycle::Year, "120.00")
        .build();
    let st = lago(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Signup Jun 29 12:12, renewals Jul 29 and Aug 29: 10.00 each (Lago: 1000 cents x 3).
    let s = signup(
        &cx,
        "monthly_plan",
        Currency::Eur,
        Cycle::Month,
        &[],
        "2023-06-29T12:12:00Z",
    );
    let run = advance(&s.contract, &cx, ts("2023-09-28T05:00:00Z")).unwrap();
    let mut all: Vec<&InvoiceDraft> = s.invoices.iter().chain(run.invoices()).collect();
    assert_eq!(
        all.iter().map(|i| i.net.to_string()).collect::<Vec<_>>(),
        ["10.00", "10.00", "10.00"]
    );

    // Change Sep 28 05:00 in the period [Aug 29, Sep 29): only the change day is unused.
    // credit: -(10.00 x 1/31) = -0.3225 -> -0.32 (Lago: 32 = 1000 / 31)
    // yearly: a new period [2023-09-28 05:00, 2024-09-28 05:00) charged in full: 120.00
    // net 120.00 - 0.32 = 119.68
    let up = change(
        &run.contract,
        &new_plan_in("yearly_plan", None, Some(Cycle::Year), &[], Activation::Now),
        &cx,
        "2023-09-28T05:00:00Z",
    );
    assert!(!up.is_downgrade);
    let inv = invoice_of(&up);
    assert_eq!(amounts(inv), ["-0.32", "120.00"]);
    assert_eq!(inv.net.to_string(), "119.68");
    assert_eq!(
        period_of(&inv.lines[1]),
        (
            "2023-09-28T05:00:00Z".to_string(),
            "2024-09-28T05:00:00Z".to_string()
        )
    );
    all.push(inv);
    assert_eq!(all.len(), 4);

    // The next yearly invoice comes a year after the change: 120.00.
    let next = advance(&up.contract, &cx, ts("2024-09-28T05:00:00Z")).unwrap();
    assert_eq!(issued(&next), ["2024-09-28T05:00:00Z"]);
    assert_eq!(amounts(next.invoices().next().unwrap()), ["120.00"]);
}

/// LAGO-06: monthly -> yearly downgrade (1188.00 < 129.00 x 12 = 1548.00), deferred to the period
/// end, anniversary, in advance.
///
/// DIFFERENCE: Lago prorates the new yearly plan to the old anniversary (118800 / 366 x 243 =
/// 78875 cents). Tally resets the anchor to the instant of the change (here the period end), so
/// the first yearly period is a full year: 1188.00. Lago defers a downgrade by itself; Tally
/// refuses a mid-cycle downgrade unless it is asked for at `next_cycle` (or allowed).
#[test]
fn lago_06_monthly_to_yearly_downgrade_deferred() {
    let cat = Cat::new()
        .flat_plan("monthly_plan", Currency::Eur, Cycle::Month, "129.00")
        .flat_plan("yearly_plan", Currency::Eur, Cycle::Year, "1188.00")
        .build();
    let st = lago(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Signup Jul 19 12:12; invoices Jul 19, Aug 19, Sep 19, Oct 19: 129.00 each.
    let s = signup(
        &cx,
        "monthly_plan",
        Currency::Eur,
        Cycle::Month,
        &[],
        "2023-07-19T12:12:00Z",
    );
    let run = advance(&s.contract, &cx, ts("2023-11-09T00:00:00Z")).unwrap();
    let monthly: Vec<String> = s
        .invoices
        .iter()
        .chain(run.invoices())
        .map(|i| i.net.to_string())
        .collect();
    assert_eq!(monthly, ["129.00", "129.00", "129.00", "129.00"]);

    // Nov 9: immediately it is refused; at the next cycle it waits for Nov 19 12:12.
    let yearly = |a| new_plan_in("yearly_plan", None, Some(Cycle::Year), &[], a);
    let err = plan_change(
        &run.contract,
        &yearly(Activation::Now),
        &cx,
        ts("2023-11-09T00:00:00Z"),
        "chg",
    )
    .unwrap_err();
    assert!(matches!(err, CoreError::DowngradeNotAllowed { .. }));
    let down = change(
        &run.contract,
        &yearly(Activation::NextCycle),
        &cx,
        "2023-11-09T00:00:00Z",
    );
    assert!(down.is_downgrade && down.scheduled && down.invoice.is_none());
    assert_eq!(down.effective_at.to_string(), "2023-11-19T12:12:00Z");

    // Nov 19 12:12: the old plan bills nothing more (in advance, already paid); the yearly
    // period [2023-11-19 12:12, 2024-11-19 12:12) is charged in full: 1188.00.
    let at_end = advance(&down.contract, &cx, ts("2023-11-19T12:12:00Z")).unwrap();
    assert_eq!(issued(&at_end), ["2023-11-19T12:12:00Z"]);
    let inv = at_end.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["1188.00"]);
    assert_eq!(
        period_of(&inv.lines[0]),
        (
            "2023-11-19T12:12:00Z".to_string(),
            "2024-11-19T12:12:00Z".to_string()
        )
    );
    // Five invoices in all: four monthly, one yearly.
    assert_eq!(s.invoices.len() + run.invoices().count() + 1, 5);
}

/// LAGO-16 (older docs): in-advance upgrade 20.00 -> 40.00 on May 11.
///
/// DIFFERENCE: the older docs net the whole 20.00 already invoiced against the new prorated charge
/// (27.10 - 20.00 = 7.10), which leaves May 1-10 on the old plan unpaid. Tally credits only the
/// unused part of the old fee, so May 1-10 stay billed at 20.00 x 10/31 = 6.45 (7.10 + 6.45 =
/// 13.55). The new plan's charge, 27.10, is the same.
#[test]
fn lago_16_docs_upgrade_20_to_40() {
    let cat = Cat::new()
        .flat_plan("standard", Currency::Usd, Cycle::Month, "20.00")
        .flat_plan("premium", Currency::Usd, Cycle::Month, "40.00")
        .build();
    let st = lago(Alignment::Calendar);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(
        &cx,
        "standard",
        Currency::Usd,
        Cycle::Month,
        &[],
        "2023-05-01",
    );
    assert_eq!(amounts(&s.invoices[0]), ["20.00"]);

    // May 11 -> Jun 1: 21 of 31 days.
    // credit: -(20.00 x 21/31) = -13.5483 -> -13.55
    // charge: 40.00 x 21/31 = 27.0967 -> 27.10 (docs: 27.10)
    // net 13.55
    let up = change(
        &s.contract,
        &new_plan("premium", &[], Activation::Now),
        &cx,
        "2023-05-11",
    );
    let inv = invoice_of(&up);
    assert_eq!(amounts(inv), ["-13.55", "27.10"]);
    assert_eq!(inv.net.to_string(), "13.55");
}

/// LAGO-17 (current docs): in-arrears upgrade Plan A 100.00 -> Plan B 200.00 on Jan 15, calendar.
/// The old plan is billed at once for the days before the change day; the new one at period end.
#[test]
fn lago_17_docs_in_arrears_upgrade() {
    let cat = Cat::new()
        .feature("base", FeatureKind::Flat)
        .plan(
            "plan_a",
            vec![(
                Currency::Eur,
                Cycle::Month,
                vec![("base", arrears(flat("100.00")))],
            )],
        )
        .plan(
            "plan_b",
            vec![(
                Currency::Eur,
                Cycle::Month,
                vec![("base", arrears(flat("200.00")))],
            )],
        )
        .build();
    let st = lago(Alignment::Calendar);
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Nothing is due in advance at signup.
    let s = signup(
        &cx,
        "plan_a",
        Currency::Eur,
        Cycle::Month,
        &[],
        "2024-01-01",
    );
    assert!(s.invoices.is_empty());

    // Jan 15: Plan A for [Jan 1, Jan 15) = 14 of 31 days: 100.00 x 14/31 = 45.1612 -> 45.16
    let up = change(
        &s.contract,
        &new_plan("plan_b", &[], Activation::Now),
        &cx,
        "2024-01-15",
    );
    assert!(!up.is_downgrade);
    assert_eq!(amounts(invoice_of(&up)), ["45.16"]);

    // Feb 1: Plan B for [Jan 15, Feb 1) = 17 of 31 days: 200.00 x 17/31 = 109.6774 -> 109.68
    // (the source's copy is truncated here; the amount follows the same rule).
    let run = advance(&up.contract, &cx, ts("2024-02-01")).unwrap();
    let inv = run.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["109.68"]);
    assert_eq!(
        period_of(&inv.lines[0]),
        (
            "2024-01-15T00:00:00Z".to_string(),
            "2024-02-01T00:00:00Z".to_string()
        )
    );
}

// ----------------------------------------------------------------------------------------------
// Kill Bill (beatrix integration tests): days, end-exclusive dates, HALF_UP.
//
// Catalog excerpt (usd): shotgun 249.95/month or 2399.95/year, assault-rifle 599.95/month,
// pistol 29.95/month or 69.95/quarter, blowdart 9.95/month (its discount phase), each monthly plan
// with a 30-day trial where the source has one. Kill Bill's trials are phases with a 0.00 FIXED
// item; Tally's trial issues no invoice at all.

fn kb_catalog() -> Catalog {
    Cat::new()
        .flat_plan("shotgun-monthly", Currency::Usd, Cycle::Month, "249.95")
        .flat_plan("shotgun-annual", Currency::Usd, Cycle::Year, "2399.95")
        .flat_plan(
            "assault-rifle-monthly",
            Currency::Usd,
            Cycle::Month,
            "599.95",
        )
        .flat_plan("pistol-monthly", Currency::Usd, Cycle::Month, "29.95")
        .flat_plan("pistol-quarterly", Currency::Usd, Cycle::Quarter, "69.95")
        .flat_plan("blowdart-monthly", Currency::Usd, Cycle::Month, "9.95")
        .build()
}

/// KB-01: Shotgun monthly -> annual, IMMEDIATE, BCD 1.
///
/// DIFFERENCE (anchor): Kill Bill anchors the annual period at the old BCD (2012-05-01) and bills a
/// 354/365 stub (2327.62). Tally resets the anchor to the change instant on a cycle change and
/// charges a full year from May 12.
/// DIFFERENCE (downgrade): 2399.95 a year is less than 249.95 x 12 = 2999.40, so Tally counts it
/// as a downgrade and applies it mid-cycle only with `downgrade_allowed` (Kill Bill's catalog rule
/// MONTHLY -> ANNUAL is IMMEDIATE).
#[test]
fn kb_01_monthly_to_annual_immediate() {
    let cat = kb_catalog();
    let st = killbill();
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Apr 1 signup with a 30-day trial; May 1 the first period [May 1, Jun 1): 249.95.
    let c = signup_trial(&cx, "shotgun-monthly", Cycle::Month, 30, "2012-04-01");
    let run = advance(&c, &cx, ts("2012-05-12")).unwrap();
    assert_eq!(issued(&run), ["2012-05-01T00:00:00Z"]);
    assert_eq!(amounts(run.invoices().next().unwrap()), ["249.95"]);

    let annual = new_plan_in(
        "shotgun-annual",
        None,
        Some(Cycle::Year),
        &[],
        Activation::Now,
    );
    let err = plan_change(&run.contract, &annual, &cx, ts("2012-05-12"), "chg").unwrap_err();
    assert!(matches!(err, CoreError::DowngradeNotAllowed { .. }));

    // May 12 with downgrade_allowed:
    // REPAIR_ADJ equivalent: -(249.95 x 20/31) = -(4999.00 / 31) = -161.2580 -> -161.26 (KB: -161.26)
    // annual: [2012-05-12, 2013-05-12) in full: 2399.95
    // net 2399.95 - 161.26 = 2238.69
    let up = change(&run.contract, &allow_downgrade(annual), &cx, "2012-05-12");
    assert!(up.is_downgrade);
    let inv = invoice_of(&up);
    assert_eq!(amounts(inv), ["-161.26", "2399.95"]);
    assert_eq!(inv.net.to_string(), "2238.69");

    // Next annual invoice on 2013-05-12: 2399.95.
    let next = advance(&up.contract, &cx, ts("2013-05-12")).unwrap();
    assert_eq!(issued(&next), ["2013-05-12T00:00:00Z"]);
    assert_eq!(amounts(next.invoices().next().unwrap()), ["2399.95"]);
}

/// KB-03: Pistol monthly -> quarterly, IMMEDIATE, BCD 1.
///
/// DIFFERENCE (anchor): Kill Bill bills the quarter from the old BCD, 69.95 x 81/92 = 61.59 for
/// [May 12, Aug 1), then 69.95 from Aug 1. Tally starts a full quarter at the change: 69.95 for
/// [May 12, Aug 12), then 69.95 from Aug 12.
/// DIFFERENCE (downgrade): 69.95 x 4 = 279.80 a year < 29.95 x 12 = 359.40, so Tally needs
/// `downgrade_allowed` to apply it mid-cycle.
#[test]
fn kb_03_monthly_to_quarterly() {
    let cat = kb_catalog();
    let st = killbill();
    let cx = BillingContext::new(&cat, &st).unwrap();
    let c = signup_trial(&cx, "pistol-monthly", Cycle::Month, 30, "2012-04-01");
    let run = advance(&c, &cx, ts("2012-05-12")).unwrap();
    // RECURRING [May 1, Jun 1): 29.95
    assert_eq!(amounts(run.invoices().next().unwrap()), ["29.95"]);

    // credit: -(29.95 x 20/31) = -(599.00 / 31) = -19.3225 -> -19.32 (KB: -19.32)
    // quarter [May 12, Aug 12): 69.95
    // net 69.95 - 19.32 = 50.63
    let quarterly = new_plan_in(
        "pistol-quarterly",
        None,
        Some(Cycle::Quarter),
        &[],
        Activation::Now,
    );
    let up = change(
        &run.contract,
        &allow_downgrade(quarterly),
        &cx,
        "2012-05-12",
    );
    let inv = invoice_of(&up);
    assert_eq!(amounts(inv), ["-19.32", "69.95"]);
    assert_eq!(inv.net.to_string(), "50.63");
    assert_eq!(
        period_of(&inv.lines[1]),
        (
            "2012-05-12T00:00:00Z".to_string(),
            "2012-08-12T00:00:00Z".to_string()
        )
    );

    // Next quarter: 69.95 for [Aug 12, Nov 12).
    let next = advance(&up.contract, &cx, ts("2012-08-12")).unwrap();
    let inv = next.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["69.95"]);
    assert_eq!(
        period_of(&inv.lines[0]),
        (
            "2012-08-12T00:00:00Z".to_string(),
            "2012-11-12T00:00:00Z".to_string()
        )
    );
}

/// KB-08: three immediate plan changes, the last two inside the same paid month; the net credit
/// becomes account credit that later invoices consume.
///
/// Blowdart's 9.95 discount phase is modelled as a 9.95 monthly plan. Moving from Assault-Rifle
/// (599.95) to Blowdart (9.95) is a downgrade, which Tally applies mid-cycle with
/// `downgrade_allowed` (Kill Bill's catalog rule makes it IMMEDIATE).
#[test]
fn kb_08_multiple_partial_repairs() {
    let cat = kb_catalog();
    let st = killbill();
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Apr 1 Shotgun with a trial; Apr 4 change to Assault-Rifle during the trial: no invoice.
    let c = signup_trial(&cx, "shotgun-monthly", Cycle::Month, 30, "2012-04-01");
    let in_trial = change(
        &c,
        &new_plan("assault-rifle-monthly", &[], Activation::Now),
        &cx,
        "2012-04-04",
    );
    assert!(in_trial.invoice.is_none());

    // May 1: RECURRING Assault-Rifle [May 1, Jun 1): 599.95.
    let may = advance(&in_trial.contract, &cx, ts("2012-05-07")).unwrap();
    assert_eq!(issued(&may), ["2012-05-01T00:00:00Z"]);
    assert_eq!(amounts(may.invoices().next().unwrap()), ["599.95"]);
    let bal = balance_after("0", may.invoices());

    // May 7 -> Blowdart, [May 7, Jun 1) = 25 of 31 days:
    // credit: -(599.95 x 25/31) = -(14998.75 / 31) = -483.8306 -> -483.83 (KB REPAIR_ADJ)
    // charge: 9.95 x 25/31 = 248.75 / 31 = 8.0241 -> 8.02 (KB RECURRING)
    // net -475.81 -> account credit 475.81 (KB CBA_ADJ)
    let cx = BillingContext::new(&cat, &st)
        .unwrap()
        .with_balances(usd_balance(bal));
    let to_blowdart = change(
        &may.contract,
        &allow_downgrade(new_plan("blowdart-monthly", &[], Activation::Now)),
        &cx,
        "2012-05-07",
    );
    let inv = invoice_of(&to_blowdart);
    assert_eq!(amounts(inv), ["-483.83", "8.02"]);
    assert_eq!(inv.net.to_string(), "-475.81");
    assert_eq!(inv.credit_added.to_string(), "475.81");
    assert_eq!(inv.amount_due.to_string(), "0.00");
    let bal = balance_after(&bal.to_string(), [inv]);
    assert_eq!(bal, d("475.81"));

    // May 8 -> Pistol, [May 8, Jun 1) = 24 of 31 days:
    // credit: -(9.95 x 24/31) = -(238.80 / 31) = -7.7032 -> -7.70 (KB REPAIR_ADJ)
    // charge: 29.95 x 24/31 = 718.80 / 31 = 23.1870 -> 23.19 (KB RECURRING)
    // net 15.49, paid from the account credit (KB CBA_ADJ -15.49): 475.81 - 15.49 = 460.32 left
    let cx = BillingContext::new(&cat, &st)
        .unwrap()
        .with_balances(usd_balance(bal));
    let to_pistol = change(
        &to_blowdart.contract,
        &new_plan("pistol-monthly", &[], Activation::Now),
        &cx,
        "2012-05-08",
    );
    let inv = invoice_of(&to_pistol);
    assert_eq!(amounts(inv), ["-7.70", "23.19"]);
    assert_eq!(inv.net.to_string(), "15.49");
    assert_eq!(inv.credit_applied.to_string(), "15.49");
    assert_eq!(inv.amount_due.to_string(), "0.00");
    let bal = balance_after(&bal.to_string(), [inv]);
    assert_eq!(bal, d("460.32"));

    // Jun 1 and Jul 1: RECURRING 29.95, each paid from the credit (KB CBA_ADJ -29.95).
    // 460.32 - 29.95 - 29.95 = 400.42 left.
    let cx = BillingContext::new(&cat, &st)
        .unwrap()
        .with_balances(usd_balance(bal));
    let later = advance(&to_pistol.contract, &cx, ts("2012-07-08")).unwrap();
    assert_eq!(
        issued(&later),
        ["2012-06-01T00:00:00Z", "2012-07-01T00:00:00Z"]
    );
    for inv in later.invoices() {
        assert_eq!(amounts(inv), ["29.95"]);
        assert_eq!(inv.credit_applied.to_string(), "29.95");
        assert_eq!(inv.amount_due.to_string(), "0.00");
    }
    assert_eq!(
        balance_after(&bal.to_string(), later.invoices()),
        d("400.42")
    );
}

/// KB-18: BCD 31 with a leading prorated period after the trial, end-of-month clamping, and an
/// END_OF_TERM change to Pistol.
///
/// Kill Bill's account BCD 31 is modelled by moving the billing date to Mar 31 during the trial
/// (the periods after the trial then anchor on the 31st and clamp in shorter months).
#[test]
fn kb_18_bcd_31_leading_proration_end_of_term_change() {
    let cat = kb_catalog();
    let st = killbill();
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Feb 1 Shotgun, 30-day trial to Mar 2 (2012 is a leap year: Feb 1 + 30 days = Mar 2).
    let c = signup_trial(&cx, "shotgun-monthly", Cycle::Month, 30, "2012-02-01");
    assert_eq!(c.trial_end, Some(ts("2012-03-02")));
    let bcd = change(&c, &billing_date("2012-03-31", true), &cx, "2012-02-01");
    assert!(bcd.invoice.is_none());
    // Change to Assault-Rifle during the trial: nothing invoiced.
    let ar = change(
        &bcd.contract,
        &new_plan("assault-rifle-monthly", &[], Activation::Now),
        &cx,
        "2012-02-15",
    );
    assert!(ar.invoice.is_none());

    // Mar 2: leading period [Mar 2, Mar 31) of the BCD period [Feb 29, Mar 31) (31 days):
    // 599.95 x 29/31 = 17398.55 / 31 = 561.2435 -> 561.24 (KB: 561.24)
    let trial_end = advance(&ar.contract, &cx, ts("2012-03-02")).unwrap();
    let inv = trial_end.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["561.24"]);
    assert_eq!(
        period_of(&inv.lines[0]),
        (
            "2012-03-02T00:00:00Z".to_string(),
            "2012-03-31T00:00:00Z".to_string()
        )
    );

    // END_OF_TERM change to Pistol: nothing now; from Mar 31, 29.95 a month, with the 31st
    // clamped to the 30th in April and June.
    let end_of_term = change(
        &trial_end.contract,
        &new_plan("pistol-monthly", &[], Activation::NextCycle),
        &cx,
        "2012-03-02",
    );
    assert!(end_of_term.scheduled && end_of_term.invoice.is_none());
    assert_eq!(end_of_term.effective_at, ts("2012-03-31"));
    let later = advance(&end_of_term.contract, &cx, ts("2012-06-30")).unwrap();
    let got: Vec<(Vec<String>, (String, String))> = later
        .invoices()
        .map(|i| (amounts(i), period_of(&i.lines[0])))
        .collect();
    let want = [
        ("2012-03-31", "2012-04-30"),
        ("2012-04-30", "2012-05-31"),
        ("2012-05-31", "2012-06-30"),
        ("2012-06-30", "2012-07-31"),
    ]
    .map(|(a, b)| {
        (
            vec!["29.95".to_string()],
            (ts(a).to_string(), ts(b).to_string()),
        )
    });
    assert_eq!(got, want);
}

// ----------------------------------------------------------------------------------------------
// Flexprice (flexprice/flexprice): day-based calculator and second-based line-item service.
//
// The day-based calculator counts both ends inclusively (+1) with the period end passed as the
// period's last day: a change on Mar 15 gives (31 - 15 + 1) / 31 = 17/31. Tally counts whole days
// of the half-open period [Mar 15, Apr 1): also 17/31. The rules differ (inclusive +1 versus
// end-exclusive) but agree whenever the period end is passed as its last day, as in these cases.

/// FP-01: upgrade 10 -> 20 (qty 1) on Mar 15, day-based, in advance.
#[test]
fn fp_01_upgrade_day_based() {
    let cat = Cat::new()
        .flat_plan("standard", Currency::Usd, Cycle::Month, "10.00")
        .flat_plan("premium", Currency::Usd, Cycle::Month, "20.00")
        .build();
    let st = flexprice(Granularity::Day);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(
        &cx,
        "standard",
        Currency::Usd,
        Cycle::Month,
        &[],
        "2024-03-01",
    );

    // credit: -(10.00 x 17/31) = -5.4838 -> -5.48
    // charge: 20.00 x 17/31 = 10.9677 -> 10.97
    // net 10.97 - 5.48 = 5.49
    let up = change(
        &s.contract,
        &new_plan("premium", &[], Activation::Now),
        &cx,
        "2024-03-15",
    );
    let inv = invoice_of(&up);
    assert_eq!(amounts_of(inv, LineKind::ProrationCredit), ["-5.48"]);
    assert_eq!(amounts_of(inv, LineKind::ProrationCharge), ["10.97"]);
    assert_eq!(inv.net.to_string(), "5.49");
    for line in &inv.lines {
        assert_eq!(
            period_of(line),
            (
                "2024-03-15T00:00:00Z".to_string(),
                "2024-04-01T00:00:00Z".to_string()
            )
        );
    }
}

/// FP-02: downgrade 2 x 50 -> 1 x 30 on Mar 15; the credit cap (100 paid) does not bind.
///
/// DIFFERENCE: Flexprice applies the downgrade immediately; Tally requires `downgrade_allowed`
/// (or `next_cycle`) for a mid-cycle downgrade.
#[test]
fn fp_02_downgrade_with_credit_cap() {
    let cat = Cat::new()
        .seat_plan("old", Currency::Usd, Cycle::Month, "50.00")
        .seat_plan("new", Currency::Usd, Cycle::Month, "30.00")
        .build();
    let st = flexprice(Granularity::Day);
    let cx = BillingContext::new(&cat, &st).unwrap();
    // 2 x 50.00 = 100.00 paid for March.
    let s = signup(
        &cx,
        "old",
        Currency::Usd,
        Cycle::Month,
        &[("seats", 2)],
        "2024-03-01",
    );
    assert_eq!(s.invoices[0].net.to_string(), "100.00");

    let down = new_plan("new", &[("seats", 1)], Activation::Now);
    let err = plan_change(&s.contract, &down, &cx, ts("2024-03-15"), "chg").unwrap_err();
    assert!(matches!(err, CoreError::DowngradeNotAllowed { .. }));

    // credit: -(2 x 50.00 x 17/31) = -(1700 / 31) = -54.8387 -> -54.84 (below the 100.00 paid)
    // charge: 1 x 30.00 x 17/31 = 510 / 31 = 16.4516 -> 16.45
    // net 16.45 - 54.84 = -38.39 -> credit balance 38.39, nothing due
    let out = change(&s.contract, &allow_downgrade(down), &cx, "2024-03-15");
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-54.84", "16.45"]);
    assert_eq!(inv.net.to_string(), "-38.39");
    assert_eq!(inv.credit_added.to_string(), "38.39");
    assert_eq!(inv.amount_due.to_string(), "0.00");
}

/// FP-03: quantity 5 -> 10 at 10.00 a unit on Mar 15: a full credit of the old quantity and a
/// full charge of the new one (Tally prorates per charge item the same way).
#[test]
fn fp_03_quantity_increase() {
    let cat = Cat::new()
        .seat_plan("seats", Currency::Usd, Cycle::Month, "10.00")
        .build();
    let st = flexprice(Granularity::Day);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(
        &cx,
        "seats",
        Currency::Usd,
        Cycle::Month,
        &[("seats", 5)],
        "2024-03-01",
    );

    // credit: -(5 x 10.00 x 17/31) = -(850 / 31) = -27.4193 -> -27.42
    // charge: 10 x 10.00 x 17/31 = 1700 / 31 = 54.8387 -> 54.84
    // net 54.84 - 27.42 = 27.42
    let out = change(
        &s.contract,
        &units(&[("seats", 10)], Activation::Now),
        &cx,
        "2024-03-15",
    );
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-27.42", "54.84"]);
    assert_eq!(inv.net.to_string(), "27.42");
    assert_eq!(inv.lines[0].quantity, d("5"));
    assert_eq!(inv.lines[1].quantity, d("10"));
}

/// FP-04 (add): add a 25.00 item on Mar 15; nothing to credit for it.
///
/// Tally prorates every charge item of the configuration: the 40.00 add-on already on the
/// contract is credited and charged again for the same 17 days, which cancels exactly; Flexprice
/// emits only the new item's line. The net is the same.
#[test]
fn fp_04_add_item() {
    let cat = addon_catalog(&[("item_25", "25.00"), ("item_40", "40.00")]);
    let st = flexprice(Granularity::Day);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup_addons(&cx, "addons", &["item_40"], "2024-03-01");
    assert_eq!(amounts(&s.invoices[0]), ["40.00"]);

    // item_25: 25.00 x 17/31 = 425 / 31 = 13.7096 -> 13.71
    // item_40: -(40.00 x 17/31) = -(680 / 31) = -21.9354 -> -21.94, and +21.94 again
    // net 13.71
    let out = change(
        &s.contract,
        &purchase(&[("item_25", true)], Activation::Now),
        &cx,
        "2024-03-15",
    );
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-21.94", "13.71", "21.94"]);
    assert_eq!(inv.lines[1].feature_slug.as_deref(), Some("item_25"));
    assert_eq!(inv.net.to_string(), "13.71");
}

/// FP-04 (remove): remove a 40.00 item (40.00 paid) on Mar 15.
///
/// DIFFERENCE: removing an add-on lowers the price, so Tally needs `downgrade_allowed` to do it
/// mid-cycle.
#[test]
fn fp_04_remove_item() {
    let cat = addon_catalog(&[("item_25", "25.00"), ("item_40", "40.00")]);
    let st = flexprice(Granularity::Day);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup_addons(&cx, "addons", &["item_40"], "2024-03-01");

    // credit: -(40.00 x 17/31) = -(680 / 31) = -21.9354 -> -21.94; net -21.94
    let out = change(
        &s.contract,
        &allow_downgrade(purchase(&[("item_40", false)], Activation::Now)),
        &cx,
        "2024-03-15",
    );
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-21.94"]);
    assert_eq!(inv.net.to_string(), "-21.94");
    assert_eq!(inv.credit_added.to_string(), "21.94");
}

/// FP-05: downgrade 1000 -> 500 on Mar 15; the net is the sum of separately rounded lines
/// (-274.20), not the rounded difference (-274.19).
#[test]
fn fp_05_downgrade_net_of_rounded_lines() {
    let cat = Cat::new()
        .flat_plan("big", Currency::Usd, Cycle::Month, "1000.00")
        .flat_plan("small", Currency::Usd, Cycle::Month, "500.00")
        .build();
    let st = flexprice(Granularity::Day);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(&cx, "big", Currency::Usd, Cycle::Month, &[], "2024-03-01");

    // credit: -(1000.00 x 17/31) = -(17000 / 31) = -548.3870 -> -548.39
    // charge: 500.00 x 17/31 = 8500 / 31 = 274.1935 -> 274.19
    // net 274.19 - 548.39 = -274.20
    let out = change(
        &s.contract,
        &allow_downgrade(new_plan("small", &[], Activation::Now)),
        &cx,
        "2024-03-15",
    );
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-548.39", "274.19"]);
    assert_eq!(inv.net.to_string(), "-274.20");
    assert_eq!(inv.credit_added.to_string(), "274.20");
}

/// FP-05 (second part): adding a usage item priced 0.00 (in arrears) costs nothing now.
#[test]
fn fp_05_add_zero_price_usage_item() {
    let cat = Cat::new()
        .feature("base", FeatureKind::Flat)
        .feature("events", FeatureKind::Usage)
        .plan(
            "big",
            vec![(
                Currency::Usd,
                Cycle::Month,
                vec![
                    ("base", flat("1000.00")),
                    (
                        "events",
                        FeaturePrice {
                            optional: true,
                            ..unit("0")
                        },
                    ),
                ],
            )],
        )
        .build();
    let st = flexprice(Granularity::Day);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(&cx, "big", Currency::Usd, Cycle::Month, &[], "2024-03-01");

    // The base fee is credited and charged again for the same 17 days:
    // -(1000.00 x 17/31) = -548.39 and +548.39; the usage item adds nothing now. Net 0.00.
    let out = change(
        &s.contract,
        &purchase(&[("events", true)], Activation::Now),
        &cx,
        "2024-03-15",
    );
    assert!(!out.is_downgrade);
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-548.39", "548.39"]);
    assert_eq!(inv.net.to_string(), "0.00");
}

/// FP-06: add a 20.00 in-advance item at several instants of April 2026, second-based.
///
/// Flexprice's line-item service measures up to `period_end - 1 s` (1,727,999 / 2,591,999 on
/// Apr 11); Tally measures the half-open period exactly (1,728,000 / 2,592,000 = 2/3). The
/// coefficients differ in the sixth decimal; the cents are the same.
#[test]
fn fp_06_add_item_second_based() {
    let cat = addon_catalog(&[("item", "20.00")]);
    let st = flexprice(Granularity::Second);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let cases = [
        // [Apr 1, May 1) in full: 20.00
        ("2026-04-01T00:00:00Z", "20.00"),
        // 20 of 30 days: 20.00 x 2/3 = 13.3333 -> 13.33
        ("2026-04-11T00:00:00Z", "13.33"),
        // 10 of 30 days: 20.00 x 1/3 = 6.6666 -> 6.67
        ("2026-04-21T00:00:00Z", "6.67"),
        // 1 of 30 days: 20.00 x 1/30 = 0.6666 -> 0.67
        ("2026-04-30T00:00:00Z", "0.67"),
        // 1 s of 2,592,000 s: 20.00 / 2,592,000 = 0.0000077 -> 0.00
        ("2026-04-30T23:59:59Z", "0.00"),
    ];
    for (at, want) in cases {
        let s = signup_addons(&cx, "addons", &[], "2026-04-01");
        assert!(s.invoices.is_empty());
        let out = change(&s.contract, &purchase(&[("item", true)], on(at)), &cx, at);
        let inv = invoice_of(&out);
        assert_eq!(amounts(inv), [want], "added at {at}");
        assert_eq!(inv.net.to_string(), want, "added at {at}");
    }
}

/// FP-07 (baseline): removing the item on Apr 11 with 20.00 billed credits 13.33.
#[test]
fn fp_07_remove_item_credit() {
    let cat = addon_catalog(&[("item", "20.00")]);
    let st = flexprice(Granularity::Second);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup_addons(&cx, "addons", &["item"], "2026-04-01");
    assert_eq!(amounts(&s.invoices[0]), ["20.00"]);
    // -(20.00 x 20/30) = -13.3333 -> -13.33
    let out = change(
        &s.contract,
        &allow_downgrade(purchase(&[("item", false)], Activation::Now)),
        &cx,
        "2026-04-11",
    );
    assert_eq!(amounts(invoice_of(&out)), ["-13.33"]);
}

/// FP-07 (billed 5): the credit is capped at the 5.00 actually billed for the period.
///
/// To reach a period where 5.00 was billed but more time remains, the contract starts with a
/// calendar stub (Apr 23 12:00, a quarter of April: 5.00) and its billing date is then moved out
/// to May 31 without recalculation (nothing charged for the added month).
#[test]
fn fp_07_credit_capped_at_billed_amount() {
    let cat = addon_catalog(&[("item", "20.00")]);
    let st = convention(
        Granularity::Second,
        Alignment::Calendar,
        Rounding::HalfAwayFromZero,
    );
    let cx = BillingContext::new(&cat, &st).unwrap();
    // Stub [Apr 23 12:00, May 1) = 7.5 of 30 days: 20.00 x 1/4 = 5.00
    let s = signup_addons(&cx, "addons", &["item"], "2026-04-23T12:00:00Z");
    assert_eq!(amounts(&s.invoices[0]), ["5.00"]);
    let moved = change(
        &s.contract,
        &billing_date("2026-05-31", false),
        &cx,
        "2026-04-23T12:00:00Z",
    );
    assert!(moved.invoice.is_none());

    // Removal on Apr 25: unused [Apr 25, May 1) = 6/30 of April plus [May 1, May 31) = 30/31 of
    // the period [Apr 30, May 31): 20.00 x (6/30 + 30/31) = 4.00 + 19.3548 = 23.3548 -> 23.35.
    // DIFFERENCE: Flexprice caps at the 5.00 billed for the whole period (credit 5). Tally caps
    // at what invoices charged for the unused time [Apr 25, May 31): the 5.00 paid for the 7.5
    // days [Apr 23 12:00, May 1) spread evenly, of which 6 days remain: 5.00 x 6/7.5 = 4.00.
    let out = change(
        &moved.contract,
        &allow_downgrade(purchase(&[("item", false)], Activation::Now)),
        &cx,
        "2026-04-25",
    );
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-4.00"]);
    assert_eq!(inv.credit_added.to_string(), "4.00");
}

/// FP-07 (billed 20, 8 already credited): the credit is capped at what is left, 12.00.
///
/// The earlier 8.00 credit comes from moving the billing date from May 1 to Apr 19 with
/// recalculation; the period is then pushed out to May 19 without recalculation, so more than
/// 12.00 of unused time remains on paper.
#[test]
fn fp_07_credit_nets_previous_credits() {
    let cat = addon_catalog(&[("item", "20.00")]);
    let st = flexprice(Granularity::Second);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup_addons(&cx, "addons", &["item"], "2026-04-01");
    assert_eq!(amounts(&s.invoices[0]), ["20.00"]);

    // Cut the period at Apr 19: credit [Apr 19, May 1) = 12/30 x 20.00 = 8.00
    let cut = change(
        &s.contract,
        &billing_date("2026-04-19", true),
        &cx,
        "2026-04-01",
    );
    assert_eq!(amounts(invoice_of(&cut)), ["-8.00"]);
    // Push it out to May 19 (one cycle after Apr 19, the furthest a billing date may move)
    // without recalculation: nothing charged.
    let pushed = change(
        &cut.contract,
        &billing_date("2026-05-19", false),
        &cx,
        "2026-04-02",
    );
    assert!(pushed.invoice.is_none());

    // Removal on Apr 11: [Apr 11, Apr 19) = 8/30 of April, [Apr 19, May 19) = a whole period
    // of the new schedule: 20.00 x (8/30 + 1) = 25.3333 -> 25.33.
    // DIFFERENCE: Flexprice caps at 20.00 - 8.00 = 12.00 for the whole period. Tally caps at what
    // invoices charged for the unused time [Apr 11, May 19): the 20.00 for [Apr 1, May 1) counts
    // 20 of its 30 days (13.3333), the -8.00 credit for [Apr 19, May 1) lies wholly inside:
    // 13.3333 - 8.00 = 5.3333 -> 5.33.
    let out = change(
        &pushed.contract,
        &allow_downgrade(purchase(&[("item", false)], Activation::Now)),
        &cx,
        "2026-04-11",
    );
    assert_eq!(amounts(invoice_of(&out)), ["-5.33"]);
}

/// FP-07 (no billed row): nothing was billed for the item in this period.
///
/// DIFFERENCE: Flexprice falls back to the list price and credits 13.33. Tally never credits more
/// than was billed for the period, so an item added without proration (not billed until the next
/// period) is removed without a credit, and no invoice is issued.
#[test]
fn fp_07_nothing_billed_no_credit() {
    let cat = addon_catalog(&[("item", "20.00")]);
    let st = flexprice(Granularity::Second);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup_addons(&cx, "addons", &[], "2026-04-01");
    let mut add = purchase(&[("item", true)], Activation::Now);
    add.proration = Proration::None;
    let added = change(&s.contract, &add, &cx, "2026-04-01");
    assert!(added.invoice.is_none());

    let out = change(
        &added.contract,
        &allow_downgrade(purchase(&[("item", false)], Activation::Now)),
        &cx,
        "2026-04-11",
    );
    assert!(out.invoice.is_none());
}

/// FP-07 (behavior none): removing a billed item without proration credits nothing now, and the
/// next period is billed without it.
#[test]
fn fp_07_behavior_none_no_credit() {
    let cat = addon_catalog(&[("item", "20.00"), ("other", "5.00")]);
    let st = flexprice(Granularity::Second);
    let cx = BillingContext::new(&cat, &st).unwrap();
    // 20.00 + 5.00 billed for April.
    let s = signup_addons(&cx, "addons", &["item", "other"], "2026-04-01");
    assert_eq!(amounts(&s.invoices[0]), ["20.00", "5.00"]);
    let mut remove = allow_downgrade(purchase(&[("item", false)], Activation::Now));
    remove.proration = Proration::None;
    let out = change(&s.contract, &remove, &cx, "2026-04-11");
    assert!(out.invoice.is_none());
    // May 1: only the 5.00 item.
    let may = advance(&out.contract, &cx, ts("2026-05-01")).unwrap();
    assert_eq!(amounts(may.invoices().next().unwrap()), ["5.00"]);
}

/// FP-08: two add-ons (20.00, 35.00) added on the same date on separate invoices: each line is
/// rounded on its own, 13.33 + 23.33 = 36.66 (55.00 x 2/3 = 36.6666 would round to 36.67).
#[test]
fn fp_08_two_changes_same_date_bill_separately() {
    let cat = addon_catalog(&[("item_20", "20.00"), ("item_35", "35.00")]);
    let st = flexprice(Granularity::Second);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup_addons(&cx, "addons", &[], "2026-04-01");

    // First change: item_20 for [Apr 11, May 1) = 2/3: 20.00 x 2/3 = 13.3333 -> 13.33
    let first = change(
        &s.contract,
        &purchase(&[("item_20", true)], Activation::Now),
        &cx,
        "2026-04-11",
    );
    let a = invoice_of(&first);
    assert_eq!(amounts(a), ["13.33"]);

    // Second change, same instant: item_20 credited and charged again (-13.33, +13.33), item_35
    // 35.00 x 2/3 = 23.3333 -> 23.33; net 23.33.
    let second = change(
        &first.contract,
        &purchase(&[("item_35", true)], Activation::Now),
        &cx,
        "2026-04-11",
    );
    let b = invoice_of(&second);
    assert_eq!(amounts(b), ["-13.33", "13.33", "23.33"]);
    assert_eq!(b.net.to_string(), "23.33");
    // 13.33 + 23.33 = 36.66
    assert_eq!((a.amount_due + b.amount_due).to_string(), "36.66");

    // Both in one change: still one line per item, 13.33 + 23.33 = 36.66.
    let both = change(
        &s.contract,
        &purchase(&[("item_20", true), ("item_35", true)], Activation::Now),
        &cx,
        "2026-04-11",
    );
    let inv = invoice_of(&both);
    assert_eq!(amounts(inv), ["13.33", "23.33"]);
    assert_eq!(inv.net.to_string(), "36.66");
}

/// FP-09: credit-grant proration coefficient, second-based with an exclusive end (Jan 1 -> Feb 1
/// 2025, 31 days = 2,678,400 s), shown on a 100.00 grant and a 1.00 grant added mid-period.
///
/// DIFFERENCE: Flexprice's credits are not money and keep 8 decimals (38.70967742); Tally rounds
/// every line to cents. The coefficient itself is the same and appears in the line description.
#[test]
fn fp_09_credit_grant_coefficient() {
    let cat = addon_catalog(&[("grant_100", "100.00"), ("grant_1", "1.00")]);
    let st = flexprice(Granularity::Second);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let add = |slug: &str, at: &str| {
        let s = signup_addons(&cx, "addons", &[], "2025-01-01");
        change(&s.contract, &purchase(&[(slug, true)], on(at)), &cx, at)
    };

    // Jan 20: [Jan 20, Feb 1) = 12 of 31 days; 100.00 x 12/31 = 38.7096 -> 38.71
    let out = add("grant_100", "2025-01-20T00:00:00Z");
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["38.71"]);
    assert!(inv.lines[0].description.contains("(12/31 of the period)"));

    // Jan 16 12:00: 15.5 of 31 days = 1/2; 100.00 x 1/2 = 50.00
    let out = add("grant_100", "2025-01-16T12:00:00Z");
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["50.00"]);
    assert!(inv.lines[0].description.contains("(1/2 of the period)"));

    // 30 s before the end: 30 / 2,678,400 = 1/89,280; 1.00 x 1/89,280 = 0.0000112 -> 0.00
    let out = add("grant_1", "2025-01-31T23:59:30Z");
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["0.00"]);
    assert!(inv.lines[0].description.contains("(1/89280 of the period)"));

    // At the period end, and after it: nothing is prorated into January; the change waits.
    for at in ["2025-02-01T00:00:00Z", "2025-02-10T00:00:00Z"] {
        let out = add("grant_100", at);
        assert!(out.scheduled && out.invoice.is_none(), "added at {at}");
    }
    // Added at the period end, the grant is simply part of February's renewal: 100.00.
    let out = add("grant_100", "2025-02-01T00:00:00Z");
    let feb = advance(&out.contract, &cx, ts("2025-02-01")).unwrap();
    assert_eq!(amounts(feb.invoices().next().unwrap()), ["100.00"]);
}

// ----------------------------------------------------------------------------------------------
// Stripe (documentation): seconds.

fn stripe_catalog(plans: &[(&str, &str)]) -> Catalog {
    let mut cat = Cat::new();
    for (slug, fee) in plans {
        cat = cat.flat_plan(slug, Currency::Usd, Cycle::Month, fee);
    }
    cat.build()
}

/// STRIPE-01: upgrade 10 -> 20 exactly halfway through the period (April 2024: Apr 16 00:00 is
/// 15 of 30 days). `always_invoice` is Tally's immediate change invoice; `create_prorations`
/// (Stripe's default) is `invoice_now = false`: the items wait for the next regular invoice.
#[test]
fn stripe_01_halfway_upgrade() {
    let cat = stripe_catalog(&[("basic", "10.00"), ("pro", "20.00")]);
    let st = stripe(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(&cx, "basic", Currency::Usd, Cycle::Month, &[], "2024-04-01");

    // credit -(10.00 x 1/2) = -5.00; charge 20.00 x 1/2 = 10.00; total 5.00
    let now = change(
        &s.contract,
        &new_plan("pro", &[], Activation::Now),
        &cx,
        "2024-04-16",
    );
    let inv = invoice_of(&now);
    assert_eq!(amounts(inv), ["-5.00", "10.00"]);
    assert_eq!(inv.net.to_string(), "5.00");

    // create_prorations: nothing now; May 1 invoice = -5.00 + 10.00 + 20.00 (May) = 25.00
    let later = change(
        &s.contract,
        &carried(new_plan("pro", &[], Activation::Now)),
        &cx,
        "2024-04-16",
    );
    assert!(later.invoice.is_none());
    let may = advance(&later.contract, &cx, ts("2024-05-01")).unwrap();
    let inv = may.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["-5.00", "10.00", "20.00"]);
    assert_eq!(inv.net.to_string(), "25.00");
}

/// STRIPE-02: a backdated start prorates its stub.
///
/// DIFFERENCE (denominator): Stripe prorates against an imagined month starting on the backdate
/// (Feb 15 -> Mar 15, Jan 15 -> Feb 15); Tally's calendar stub is prorated against the calendar
/// month it lies in (February, January). Here both have the same length (28 and 31 days), so the
/// fractions agree: 14/28 = 1/2 and 17/31.
#[test]
fn stripe_02_backdated_start_stub() {
    let cat = stripe_catalog(&[("basic", "100.00")]);
    let st = convention(
        Granularity::Day,
        Alignment::Calendar,
        Rounding::HalfAwayFromZero,
    );
    let cx = BillingContext::new(&cat, &st).unwrap();
    let backdated = |start: &str, now: &str| {
        let mut req = request("basic", Currency::Usd, Cycle::Month);
        req.activation = Some(ts(start));
        subscribe(&req, &cx, ts(now)).unwrap()
    };

    // A) Feb 15 -> Mar 1 2023 = 14 of 28 days: 100.00 x 1/2 = 50.00
    let a = backdated("2023-02-15", "2023-02-20");
    assert_eq!(a.invoices.len(), 1);
    assert_eq!(amounts(&a.invoices[0]), ["50.00"]);

    // B) Jan 15 -> Feb 1 2023 = 17 of 31 days: 100.00 x 17/31 = 54.8387 -> 54.84
    let b = backdated("2023-01-15", "2023-01-20");
    assert_eq!(amounts(&b.invoices[0]), ["54.84"]);
    assert!(
        b.invoices[0].lines[0]
            .description
            .contains("(17/31 of the period)")
    );
}

/// STRIPE-03: billing dates. A Jan 31 anchor bills on the last day of shorter months, a Sep 2
/// anchor on the 2nd, a weekly anchor on Friday Jun 3 every Friday; a signup on May 15 with
/// periods on the 1st (calendar alignment) bills a prorated stub on May 15, then the 1st.
///
/// DIFFERENCE: Stripe can make the stub free (`proration_behavior=none`); a Tally signup always
/// bills its stub.
#[test]
fn stripe_03_billing_cycle_anchor_dates() {
    let cat = stripe_catalog(&[("basic", "10.00")]);
    let weekly = Cat::new()
        .flat_plan("basic", Currency::Usd, Cycle::Week, "10.00")
        .build();
    let st = stripe(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let renewals = |cx: &BillingContext, cycle: Cycle, start: &str, until: &str| {
        let s = signup(cx, "basic", Currency::Usd, cycle, &[], start);
        issued(&advance(&s.contract, cx, ts(until)).unwrap())
    };

    assert_eq!(
        renewals(&cx, Cycle::Month, "2023-01-31", "2023-05-31"),
        [
            "2023-02-28T00:00:00Z",
            "2023-03-31T00:00:00Z",
            "2023-04-30T00:00:00Z",
            "2023-05-31T00:00:00Z"
        ]
    );
    assert_eq!(
        renewals(&cx, Cycle::Month, "2024-01-31", "2024-03-31"),
        ["2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z"]
    );
    assert_eq!(
        renewals(&cx, Cycle::Month, "2023-09-02", "2023-12-02"),
        [
            "2023-10-02T00:00:00Z",
            "2023-11-02T00:00:00Z",
            "2023-12-02T00:00:00Z"
        ]
    );
    let wcx = BillingContext::new(&weekly, &st).unwrap();
    assert_eq!(
        renewals(&wcx, Cycle::Week, "2022-06-03", "2022-06-24"),
        [
            "2022-06-10T00:00:00Z",
            "2022-06-17T00:00:00Z",
            "2022-06-24T00:00:00Z"
        ]
    );

    // May 15 with periods on the 1st: stub [May 15, Jun 1) = 17 of 31 days:
    // 10.00 x 17/31 = 5.4838 -> 5.48; then 10.00 on Jun 1 and Jul 1.
    let cal = stripe(Alignment::Calendar);
    let ccx = BillingContext::new(&cat, &cal).unwrap();
    let s = signup(
        &ccx,
        "basic",
        Currency::Usd,
        Cycle::Month,
        &[],
        "2023-05-15",
    );
    assert_eq!(amounts(&s.invoices[0]), ["5.48"]);
    let run = advance(&s.contract, &ccx, ts("2023-07-01")).unwrap();
    assert_eq!(
        issued(&run),
        ["2023-06-01T00:00:00Z", "2023-07-01T00:00:00Z"]
    );
    assert!(run.invoices().all(|i| amounts(i) == ["10.00"]));
}

/// STRIPE-04: 10 -> 25 and 25 -> 10 exactly halfway, with `create_prorations`: the proration
/// items go on the next invoice with the next full period. "Halfway" through March 2024 (31 days)
/// is Mar 16 12:00 at second granularity.
///
/// DIFFERENCE: the downgrade needs `downgrade_allowed` to apply mid-cycle in Tally.
#[test]
fn stripe_04_halfway_upgrade_and_downgrade_next_invoice() {
    let cat = stripe_catalog(&[("ten", "10.00"), ("twentyfive", "25.00")]);
    let st = stripe(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let halfway = "2024-03-16T12:00:00Z";

    // Upgrade: credit -(10.00 x 1/2) = -5.00, charge 25.00 x 1/2 = 12.50, net 7.50;
    // Apr 1 invoice: 7.50 + 25.00 = 32.50
    let s = signup(&cx, "ten", Currency::Usd, Cycle::Month, &[], "2024-03-01");
    let up = change(
        &s.contract,
        &carried(new_plan("twentyfive", &[], Activation::Now)),
        &cx,
        halfway,
    );
    assert!(up.invoice.is_none());
    let apr = advance(&up.contract, &cx, ts("2024-04-01")).unwrap();
    let inv = apr.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["-5.00", "12.50", "25.00"]);
    assert_eq!(inv.net.to_string(), "32.50");

    // Downgrade: credit -(25.00 x 1/2) = -12.50, charge 10.00 x 1/2 = 5.00, net -7.50;
    // Apr 1 invoice: 10.00 - 7.50 = 2.50
    let s = signup(
        &cx,
        "twentyfive",
        Currency::Usd,
        Cycle::Month,
        &[],
        "2024-03-01",
    );
    let down = change(
        &s.contract,
        &carried(allow_downgrade(new_plan("ten", &[], Activation::Now))),
        &cx,
        halfway,
    );
    assert!(down.invoice.is_none());
    let apr = advance(&down.contract, &cx, ts("2024-04-01")).unwrap();
    let inv = apr.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["-12.50", "5.00", "10.00"]);
    assert_eq!(inv.net.to_string(), "2.50");
}

/// STRIPE-05 (plausibility): unused time on a 10.00 monthly plan after 2017-03-03 19:14:48 in the
/// assumed cycle 2017-02-14 -> 2017-03-14 (28 days = 2,419,200 s), second-based.
#[test]
fn stripe_05_unused_time_credit_seconds() {
    let cat = stripe_catalog(&[("widgets", "10.00")]);
    let st = stripe(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(
        &cx,
        "widgets",
        Currency::Usd,
        Cycle::Month,
        &[],
        "2017-02-14",
    );

    // remaining 2017-03-03T19:14:48 -> 2017-03-14: 10 days 4:45:12 = 881,112 s
    // credit -(10.00 x 881,112 / 2,419,200) = -3.6421 -> -3.64 (Stripe: -364 cents)
    let out = cancel(
        &s.contract,
        CancelMode::Now,
        &cx,
        ts("2017-03-03T19:14:48Z"),
    )
    .unwrap();
    let inv = out.invoice.expect("a cancellation invoice");
    assert_eq!(amounts(&inv), ["-3.64"]);
    assert_eq!(
        period_of(&inv.lines[0]),
        (
            "2017-03-03T19:14:48Z".to_string(),
            "2017-03-14T00:00:00Z".to_string()
        )
    );
}

// ----------------------------------------------------------------------------------------------
// Chargebee, Recurly, Zuora (vendor documentation).
//
// Chargebee's older docs prorate by the days of the current billing cycle ("30 in April") and
// Tally counts actual days too, so April and November examples agree on the denominator. Where
// Chargebee uses a fixed 30-day month (price / 30 x days) Tally still uses the actual month.

/// CB-01: downgrade 60 -> 30 on Apr 21 (cycle Apr 1 - May 1): 10 of 30 days remain.
/// DIFFERENCE: Tally applies a mid-cycle downgrade only with `downgrade_allowed`.
#[test]
fn cb_01_downgrade_credit_then_renewal() {
    let cat = stripe_catalog(&[("sixty", "60.00"), ("thirty", "30.00")]);
    let st = actual_days(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(&cx, "sixty", Currency::Usd, Cycle::Month, &[], "2012-04-01");

    // unused 60.00 x 10/30 = 20.00 (used 60.00 x 20/30 = 40.00); new 30.00 x 10/30 = 10.00
    // net -10.00 -> credit balance 10.00
    let down = change(
        &s.contract,
        &allow_downgrade(new_plan("thirty", &[], Activation::Now)),
        &cx,
        "2012-04-21",
    );
    let inv = invoice_of(&down);
    assert_eq!(amounts(inv), ["-20.00", "10.00"]);
    assert_eq!(inv.credit_added.to_string(), "10.00");
    let bal = balance_after("0", [inv]);

    // May 1: 30.00 - 10.00 credit = 20.00 due (then 30.00 a month).
    let cx = BillingContext::new(&cat, &st)
        .unwrap()
        .with_balances(usd_balance(bal));
    let may = advance(&down.contract, &cx, ts("2012-05-01")).unwrap();
    let inv = may.invoices().next().unwrap();
    assert_eq!(amounts(inv), ["30.00"]);
    assert_eq!(inv.credit_applied.to_string(), "10.00");
    assert_eq!(inv.amount_due.to_string(), "20.00");
}

/// CB-01 (example 2): 3 -> 2 units at 30.00 on Apr 10 2013.
///
/// DIFFERENCE (change day): Chargebee counts Apr 1-10 as used on 3 units (10 days used, 20
/// remaining: credit 60 - 40 = 20). In Tally the change day belongs to the new configuration:
/// Apr 1-9 are used (9 days), Apr 10-30 remain (21 of 30 days).
#[test]
fn cb_01_quantity_decrease_change_day() {
    let cat = Cat::new()
        .seat_plan("seats", Currency::Usd, Cycle::Month, "30.00")
        .build();
    let st = actual_days(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(
        &cx,
        "seats",
        Currency::Usd,
        Cycle::Month,
        &[("seats", 3)],
        "2013-04-01",
    );

    // credit -(3 x 30.00 x 21/30) = -63.00; charge 2 x 30.00 x 21/30 = 42.00; net -21.00
    let out = change(
        &s.contract,
        &allow_downgrade(units(&[("seats", 2)], Activation::Now)),
        &cx,
        "2013-04-10",
    );
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-63.00", "42.00"]);
    assert_eq!(inv.credit_added.to_string(), "21.00");
}

/// CB-02: Gold 30 <-> Silver 15 on Apr 5 (cycle Apr 1 - May 1): 26 of 30 days remain.
#[test]
fn cb_02_gold_silver_both_ways() {
    let cat = stripe_catalog(&[("gold", "30.00"), ("silver", "15.00")]);
    let st = actual_days(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Downgrade Gold -> Silver (with downgrade_allowed; Chargebee applies it immediately):
    // credit -(30.00 x 26/30) = -26.00, charge 15.00 x 26/30 = 13.00; nothing due now,
    // credit 13.00 carried to the renewal: May 1 Silver 15.00 - 13.00 = 2.00 due.
    let s = signup(&cx, "gold", Currency::Usd, Cycle::Month, &[], "2012-04-01");
    let down = change(
        &s.contract,
        &allow_downgrade(new_plan("silver", &[], Activation::Now)),
        &cx,
        "2012-04-05",
    );
    let inv = invoice_of(&down);
    assert_eq!(amounts(inv), ["-26.00", "13.00"]);
    assert_eq!(inv.amount_due.to_string(), "0.00");
    assert_eq!(inv.credit_added.to_string(), "13.00");
    let cx2 = BillingContext::new(&cat, &st)
        .unwrap()
        .with_balances(usd_balance(balance_after("0", [inv])));
    let may = advance(&down.contract, &cx2, ts("2012-05-01")).unwrap();
    let renewal = may.invoices().next().unwrap();
    assert_eq!(renewal.credit_applied.to_string(), "13.00");
    assert_eq!(renewal.amount_due.to_string(), "2.00");

    // Upgrade Silver -> Gold: credit -(15.00 x 26/30) = -13.00, charge 30.00 x 26/30 = 26.00;
    // 13.00 to pay.
    let s = signup(
        &cx,
        "silver",
        Currency::Usd,
        Cycle::Month,
        &[],
        "2012-04-01",
    );
    let up = change(
        &s.contract,
        &new_plan("gold", &[], Activation::Now),
        &cx,
        "2012-04-05",
    );
    let inv = invoice_of(&up);
    assert_eq!(amounts(inv), ["-13.00", "26.00"]);
    assert_eq!(inv.amount_due.to_string(), "13.00");
}

/// CB-03: upgrade 30 -> 100 on Nov 15 (created Nov 1).
///
/// DIFFERENCE (day count): the example counts 15 remaining days ((30/30) x 15 = 15 credit,
/// (100/30) x 15 = 50 charge, 35 to pay), although Nov 15 00:00 -> Dec 1 is 16 days (the source
/// is inconsistent). Tally counts the change day for the new plan: 16 of November's 30 days.
#[test]
fn cb_03_upgrade_mid_november() {
    let cat = stripe_catalog(&[("plan_a", "30.00"), ("plan_b", "100.00")]);
    let st = actual_days(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(
        &cx,
        "plan_a",
        Currency::Usd,
        Cycle::Month,
        &[],
        "2023-11-01",
    );

    // credit -(30.00 x 16/30) = -16.00; charge 100.00 x 16/30 = 53.3333 -> 53.33; net 37.33
    let up = change(
        &s.contract,
        &new_plan("plan_b", &[], Activation::Now),
        &cx,
        "2023-11-15",
    );
    let inv = invoice_of(&up);
    assert_eq!(amounts(inv), ["-16.00", "53.33"]);
    assert_eq!(inv.amount_due.to_string(), "37.33");

    // Renewal Dec 1: 100.00.
    let dec = advance(&up.contract, &cx, ts("2023-12-01")).unwrap();
    assert_eq!(amounts(dec.invoices().next().unwrap()), ["100.00"]);
}

/// RC-01: add a 10.00 user halfway through June (Jun 16 00:00: 15 of 30 days remain).
///
/// Recurly's "only bill what changed" shows a single +5.00 line; Tally credits the old count and
/// charges the new one per charge item, with the same net.
#[test]
fn rc_01_add_user_halfway_june() {
    let cat = Cat::new()
        .seat_plan("team", Currency::Usd, Cycle::Month, "10.00")
        .build();
    let st = convention(
        Granularity::Second,
        Alignment::Anniversary,
        Rounding::HalfAwayFromZero,
    );
    let cx = BillingContext::new(&cat, &st).unwrap();
    let s = signup(
        &cx,
        "team",
        Currency::Usd,
        Cycle::Month,
        &[("seats", 1)],
        "2024-06-01",
    );

    // credit -(1 x 10.00 x 1/2) = -5.00; charge 2 x 10.00 x 1/2 = 10.00; net 5.00
    // (the added user: 10.00 x (Jul 1 - Jun 16) / (Jul 1 - Jun 1) = 10.00 x 1/2 = 5.00)
    let out = change(
        &s.contract,
        &units(&[("seats", 2)], Activation::Now),
        &cx,
        "2024-06-16",
    );
    let inv = invoice_of(&out);
    assert_eq!(amounts(inv), ["-5.00", "10.00"]);
    assert_eq!(inv.net.to_string(), "5.00");
    assert_eq!(
        period_of(&inv.lines[1]),
        (
            "2024-06-16T00:00:00Z".to_string(),
            "2024-07-01T00:00:00Z".to_string()
        )
    );
}

/// ZU-01: proration ratios of four service periods, actual-days option, on a 100.00 monthly fee
/// billed in arrears with calendar alignment (each service period is one prorated line).
///
/// Zuora's service dates are inclusive; Tally's periods are half-open, so 2021-01-27..01-31 is
/// [Jan 27, Feb 1). DIFFERENCE: Zuora's 30-day (actual/360) and strict 30/360 options have no
/// Tally equivalent; Tally always counts actual days.
#[test]
fn zu_01_actual_day_ratios() {
    let cat = Cat::new()
        .feature("base", FeatureKind::Flat)
        .plan(
            "fee",
            vec![(
                Currency::Usd,
                Cycle::Month,
                vec![("base", arrears(flat("100.00")))],
            )],
        )
        .build();
    let st = actual_days(Alignment::Calendar);
    let cx = BillingContext::new(&cat, &st).unwrap();
    let billed = |start: &str, until: &str| -> Vec<String> {
        let s = signup(&cx, "fee", Currency::Usd, Cycle::Month, &[], start);
        assert!(s.invoices.is_empty());
        let run = advance(&s.contract, &cx, ts(until)).unwrap();
        amounts(run.invoices().next().unwrap())
    };

    // 2021-01-27..01-31: 5/31 x 100.00 = 16.1290 -> 16.13
    assert_eq!(billed("2021-01-27", "2021-02-01"), ["16.13"]);
    // 2021-02-27..02-28: 2/28 x 100.00 = 7.1428 -> 7.14
    assert_eq!(billed("2021-02-27", "2021-03-01"), ["7.14"]);
    // 2020-02-01..02-29: 29/29 x 100.00 = 100.00
    assert_eq!(billed("2020-02-01", "2020-03-01"), ["100.00"]);

    // 2021-04-21..04-29: the service ends with a cancellation on Apr 30: 9/30 x 100.00 = 30.00
    let s = signup(&cx, "fee", Currency::Usd, Cycle::Month, &[], "2021-04-21");
    let out = cancel(&s.contract, CancelMode::Now, &cx, ts("2021-04-30")).unwrap();
    let inv = out.invoice.expect("the cancellation bills the arrears");
    assert_eq!(amounts(&inv), ["30.00"]);
    assert!(inv.lines[0].description.contains("(3/10 of the period"));
}

/// ZU-02: 100.00 a week billed on Wednesdays, term start Monday 2018-01-01, bill run target
/// 2018-01-31: 100.00 x (5 + 2/7) = 528.57.
///
/// The Wednesday billing day is set by moving the billing date of a contract started on Monday
/// Jan 1 to Wednesday Jan 3, with recalculation.
#[test]
fn zu_02_weekly_partial_period() {
    let cat = Cat::new()
        .flat_plan("weekly", Currency::Usd, Cycle::Week, "100.00")
        .build();
    let st = actual_days(Alignment::Anniversary);
    let cx = BillingContext::new(&cat, &st).unwrap();

    // Jan 1: a full week [Jan 1, Jan 8) in advance: 100.00
    let s = signup(&cx, "weekly", Currency::Usd, Cycle::Week, &[], "2018-01-01");
    assert_eq!(amounts(&s.invoices[0]), ["100.00"]);
    // Billing day Wednesday Jan 3: credit [Jan 3, Jan 8) = 5/7: -(100.00 x 5/7) = -71.4285 -> -71.43
    // so Jan 1-2 cost 100.00 - 71.43 = 28.57 (= 100.00 x 2/7 = 28.5714 -> 28.57)
    let moved = change(
        &s.contract,
        &billing_date("2018-01-03", true),
        &cx,
        "2018-01-01",
    );
    let inv = invoice_of(&moved);
    assert_eq!(amounts(inv), ["-71.43"]);

    // Weeks from Jan 3, 10, 17, 24, 31: 5 x 100.00 = 500.00
    let run = advance(&moved.contract, &cx, ts("2018-01-31")).unwrap();
    assert_eq!(
        issued(&run),
        [
            "2018-01-03T00:00:00Z",
            "2018-01-10T00:00:00Z",
            "2018-01-17T00:00:00Z",
            "2018-01-24T00:00:00Z",
            "2018-01-31T00:00:00Z"
        ]
    );
    // Total to the bill run target: 100.00 - 71.43 + 500.00 = 528.57
    let total: Decimal = s
        .invoices
        .iter()
        .chain([inv])
        .chain(run.invoices())
        .map(|i| i.net)
        .sum();
    assert_eq!(total.to_string(), "528.57");
}
