//! Examples: small contracts worked through by hand. Every expected amount carries its
//! arithmetic in a comment; day counts are whole days in UTC unless a test says otherwise.
//!
//! Calendar facts used throughout: March 2024 has 31 days, April 30, February 2024 29
//! (February 2023 28), and the year 2024 has 366 days.

use std::collections::BTreeMap;

use jiff::Timestamp;
use tally_core::prelude::*;

use crate::support::*;

/// Default settings: day granularity, anniversary alignment, UTC, half away from zero, no tax.
fn day_settings() -> Settings {
    settings(Granularity::Day, Alignment::Anniversary)
}

/// Two flat monthly plans in usd: `small` (30.00) and `large` (50.00).
fn small_large() -> Catalog {
    Cat::new()
        .flat_plan("small", Currency::Usd, Cycle::Month, "30.00")
        .flat_plan("large", Currency::Usd, Cycle::Month, "50.00")
        .build()
}

/// A signup request for `plan` in usd (the other fields at their defaults).
fn request(plan: &str, cycle: Cycle) -> SignupRequest {
    SignupRequest::new("Cont_t", "Cust_t", plan, Currency::Usd, cycle)
}

/// Runs every step due up to `until`.
fn run_until(c: &Contract, cx: &BillingContext, until: &str) -> AdvanceOutcome {
    advance(c, cx, ts(until)).expect("the steps run")
}

/// The invoices of an advance, in order.
fn invoices(out: &AdvanceOutcome) -> Vec<InvoiceDraft> {
    out.invoices().cloned().collect()
}

/// The single invoice a change issues.
fn change_invoice(
    c: &Contract,
    req: &ChangeRequest,
    cx: &BillingContext,
    now: &str,
) -> InvoiceDraft {
    change(c, req, cx, now)
        .invoice
        .expect("the change issues an invoice")
}

/// A change that must be refused.
fn refused(c: &Contract, req: &ChangeRequest, cx: &BillingContext, now: &str) -> CoreError {
    plan_change(c, req, cx, ts(now), "chg").expect_err("the change is refused")
}

/// Plans a change with its own id (for timelines of several scheduled changes).
fn change_as(
    c: &Contract,
    req: &ChangeRequest,
    cx: &BillingContext,
    now: &str,
    id: &str,
) -> ChangeOutcome {
    plan_change(c, req, cx, ts(now), id).expect("the change is accepted")
}

fn allow_downgrade(mut req: ChangeRequest) -> ChangeRequest {
    req.downgrade_allowed = true;
    req
}

/// A `new_plan` change naming its pricing.
fn new_plan_pricing(plan: &str, pricing: &str, activation: Activation) -> ChangeRequest {
    let mut req = new_plan(plan, &[], activation);
    if let ChangeKind::NewPlan { pricing: p, .. } = &mut req.change {
        *p = Some(pricing.to_string());
    }
    req
}

/// The current period of a contract as (start, end).
fn period_of(c: &Contract) -> (Timestamp, Timestamp) {
    let p = c.period.as_ref().expect("a current period");
    (p.start, p.end.expect("a closed period"))
}

fn seats_of(c: &Contract) -> String {
    c.config.features["seats"].quantity.to_string()
}

fn usage(feature: &str, units: i64, at: &str, absolute: bool) -> UsageRecord {
    UsageRecord {
        feature_slug: feature.into(),
        units: units.into(),
        timestamp: ts(at),
        is_absolute: absolute,
    }
}

fn kinds(inv: &InvoiceDraft) -> Vec<LineKind> {
    inv.lines.iter().map(|l| l.kind).collect()
}

/// `new_plan`: prices from the latest pricing published by the change instant, or the one named.
mod new_plan {
    use super::*;

    /// `small` 30.00; `large` published three times: 50.00 (2000), 60.00 (Mar 10, 2024) and
    /// 70.00 (Mar 20, 2024).
    fn versioned() -> Catalog {
        let large = |fee: &str| vec![(Currency::Usd, Cycle::Month, vec![("base", flat(fee))])];
        Cat::new()
            .flat_plan("small", Currency::Usd, Cycle::Month, "30.00")
            .plan_version("large", "large-v1", "2000-01-01", large("50.00"))
            .plan_version("large", "large-v2", "2024-03-10", large("60.00"))
            .plan_version("large", "large-v3", "2024-03-20", large("70.00"))
            .build()
    }

    #[test]
    fn latest_pricing_published_by_the_change_instant() {
        let cat = versioned();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan("large", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        // On Mar 16 the latest pricing is v2 (v3 is published on Mar 20).
        assert_eq!(out.contract.config.pricing_id, "Pric_large-v2");
        let inv = out.invoice.unwrap();
        assert_eq!(
            amounts(&inv),
            [
                "-15.48", // 30.00 x 16/31 = 15.4839 -> 15.48 (Mar 16 .. Apr 1 = 16 days)
                "30.97",  // 60.00 x 16/31 = 30.9677 -> 30.97
            ]
        );
        assert_eq!(
            kinds(&inv),
            [LineKind::ProrationCredit, LineKind::ProrationCharge]
        );
        // -15.48 + 30.97 = 15.49
        assert_eq!(inv.net.to_string(), "15.49");
        assert_eq!(inv.reason, InvoiceReason::Change);
        assert!(!out.is_downgrade);
    }

    #[test]
    fn a_named_pricing_is_used_even_when_a_newer_one_exists() {
        let cat = versioned();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan_pricing("large", "Pric_large-v1", on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(out.contract.config.pricing_id, "Pric_large-v1");
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-15.48", // 30.00 x 16/31 = 15.4839 -> 15.48
                "25.81",  // 50.00 x 16/31 = 25.8065 -> 25.81
            ]
        );
        // The renewal keeps the recorded v1 price.
        let renewal = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&renewal[0]), ["50.00"]);
    }

    #[test]
    fn dated_at_the_period_start_replaces_the_whole_period() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // Asked on Mar 5, effective Mar 1: all 31 days of March move to the new plan.
        let inv = change_invoice(
            &c,
            &new_plan("large", &[], on("2024-03-01")),
            &cx,
            "2024-03-05",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-30.00", // 30.00 x 31/31
                "50.00",  // 50.00 x 31/31
            ]
        );
        assert_eq!(inv.net.to_string(), "20.00");
    }

    #[test]
    fn next_cycle_is_scheduled_and_billed_by_the_renewal() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan("large", &[], Activation::NextCycle),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        assert!(out.invoice.is_none());
        assert_eq!(out.effective_at, ts("2024-04-01"));
        assert_eq!(out.contract.config.plan_slug, "small");
        let adv = run_until(&out.contract, &cx, "2024-04-01");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].reason, InvoiceReason::Renewal);
        // No proration: April is billed in full on the new plan.
        assert_eq!(amounts(&inv[0]), ["50.00"]);
        assert_eq!(adv.contract.config.plan_slug, "large");
    }

    #[test]
    fn a_date_beyond_the_period_is_scheduled_and_prorated_in_its_own_period() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan("large", &[], on("2024-04-16")),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        assert!(out.invoice.is_none());
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-16"));
        assert_eq!(inv.len(), 2);
        // Apr 1: the renewal still bills the old plan.
        assert_eq!(amounts(&inv[0]), ["30.00"]);
        // Apr 16: 15 of April's 30 days remain (Apr 16 .. May 1).
        assert_eq!(inv[1].reason, InvoiceReason::Change);
        assert_eq!(
            amounts(&inv[1]),
            [
                "-15.00", // 30.00 x 15/30
                "25.00",  // 50.00 x 15/30
            ]
        );
    }

    #[test]
    fn a_scheduled_change_takes_the_pricing_published_by_its_instant() {
        let cat = versioned();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // Asked on Mar 16 (v2 is the latest then), effective Apr 1 (v3 is the latest then).
        let out = change(
            &c,
            &new_plan("large", &[], Activation::NextCycle),
            &cx,
            "2024-03-16",
        );
        let adv = run_until(&out.contract, &cx, "2024-04-01");
        assert_eq!(adv.contract.config.pricing_id, "Pric_large-v3");
        assert_eq!(amounts(&invoices(&adv)[0]), ["70.00"]);
    }

    #[test]
    fn a_mid_cycle_downgrade_is_refused() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "large", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let err = refused(
            &c,
            &new_plan("small", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            err.code(),
            "downgrade_requires_next_cycle_or_downgrade_allowed"
        );
        assert_eq!(err.param(), "downgrade_allowed");
    }

    #[test]
    fn a_downgrade_dated_inside_a_later_period_is_refused_too() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "large", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // Apr 16 is the middle of the next period, not a boundary.
        let err = refused(
            &c,
            &new_plan("small", &[], on("2024-04-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            err.code(),
            "downgrade_requires_next_cycle_or_downgrade_allowed"
        );
    }

    #[test]
    fn an_allowed_downgrade_moves_the_net_credit_to_the_balance() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "large", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &allow_downgrade(new_plan("small", &[], on("2024-03-16"))),
            &cx,
            "2024-03-16",
        );
        assert!(out.is_downgrade);
        let inv = out.invoice.unwrap();
        assert_eq!(
            amounts(&inv),
            [
                "-25.81", // 50.00 x 16/31 = 25.8065 -> 25.81
                "15.48",  // 30.00 x 16/31 = 15.4839 -> 15.48
            ]
        );
        // -25.81 + 15.48 = -10.33: nothing due, 10.33 to the credit balance.
        assert_eq!(inv.net.to_string(), "-10.33");
        assert_eq!(inv.amount_due.to_string(), "0.00");
        assert_eq!(inv.credit_added.to_string(), "10.33");
    }

    #[test]
    fn a_downgrade_at_next_cycle_is_accepted() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "large", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan("small", &[], Activation::NextCycle),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        assert!(out.is_downgrade);
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&inv[0]), ["30.00"]);
    }

    #[test]
    fn a_downgrade_dated_at_the_period_start_is_not_mid_cycle() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "large", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let inv = change_invoice(
            &c,
            &new_plan("small", &[], on("2024-03-01")),
            &cx,
            "2024-03-02",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-50.00", // 50.00 x 31/31
                "30.00",  // 30.00 x 31/31
            ]
        );
        // -50.00 + 30.00 = -20.00 to the credit balance
        assert_eq!(inv.credit_added.to_string(), "20.00");
    }
}

/// `change_unit_count`: new counts on the prices recorded in the contract.
mod change_unit_count {
    use super::*;

    /// Plan `team`: seats at 10.00 (published 2000), then 15.00 (published Mar 10, 2024).
    fn repriced() -> Catalog {
        let seats = |price: &str| vec![(Currency::Usd, Cycle::Month, vec![("seats", unit(price))])];
        Cat::new()
            .feature("seats", FeatureKind::PerUnit)
            .plan_version("team", "team-v1", "2000-01-01", seats("10.00"))
            .plan_version("team", "team-v2", "2024-03-10", seats("15.00"))
            .build()
    }

    #[test]
    fn keeps_the_recorded_prices_after_a_newer_pricing_is_published() {
        let cat = repriced();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-01",
        )
        .contract;
        // A new customer signing on Mar 16 pays the new price: 2 x 15.00 = 30.00.
        let fresh = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-16",
        );
        assert_eq!(amounts(&fresh.invoices[0]), ["30.00"]);
        let out = change(
            &c,
            &units(&[("seats", 4)], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(out.contract.config.pricing_id, "Pric_team-v1");
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-10.32", // 2 x 10.00 x 16/31 = 10.3226 -> 10.32
                "20.65",  // 4 x 10.00 x 16/31 = 20.6452 -> 20.65
            ]
        );
        let renewal = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        // 4 x 10.00
        assert_eq!(amounts(&renewal[0]), ["40.00"]);
    }

    #[test]
    fn dated_at_the_period_start() {
        let cat = repriced();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-01",
        )
        .contract;
        let inv = change_invoice(
            &c,
            &units(&[("seats", 4)], on("2024-03-01")),
            &cx,
            "2024-03-05",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-20.00", // 2 x 10.00 x 31/31
                "40.00",  // 4 x 10.00 x 31/31
            ]
        );
    }

    #[test]
    fn at_next_cycle() {
        let cat = repriced();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-01",
        )
        .contract;
        let out = change(
            &c,
            &units(&[("seats", 4)], Activation::NextCycle),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        assert!(out.invoice.is_none());
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        // 4 x 10.00 (recorded price, not the 15.00 published since)
        assert_eq!(amounts(&inv[0]), ["40.00"]);
    }

    #[test]
    fn a_date_beyond_the_period_is_scheduled() {
        let cat = repriced();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-01",
        )
        .contract;
        let out = change(
            &c,
            &units(&[("seats", 4)], on("2024-04-16")),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-16"));
        assert_eq!(amounts(&inv[0]), ["20.00"]); // Apr 1: 2 x 10.00
        assert_eq!(
            amounts(&inv[1]),
            [
                "-10.00", // 2 x 10.00 x 15/30
                "20.00",  // 4 x 10.00 x 15/30
            ]
        );
    }

    #[test]
    fn fewer_units_mid_cycle_are_refused() {
        let cat = repriced();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 4)],
            "2024-03-01",
        )
        .contract;
        let err = refused(
            &c,
            &units(&[("seats", 2)], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            err.code(),
            "downgrade_requires_next_cycle_or_downgrade_allowed"
        );
        assert_eq!(err.param(), "downgrade_allowed");
    }

    #[test]
    fn fewer_units_with_downgrade_allowed() {
        let cat = repriced();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 4)],
            "2024-03-01",
        )
        .contract;
        let inv = change_invoice(
            &c,
            &allow_downgrade(units(&[("seats", 2)], on("2024-03-16"))),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-20.65", // 4 x 10.00 x 16/31 = 20.6452 -> 20.65
                "10.32",  // 2 x 10.00 x 16/31 = 10.3226 -> 10.32
            ]
        );
        // -20.65 + 10.32 = -10.33
        assert_eq!(inv.credit_added.to_string(), "10.33");
        assert_eq!(inv.amount_due.to_string(), "0.00");
    }

    #[test]
    fn fewer_units_at_next_cycle() {
        let cat = repriced();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 4)],
            "2024-03-01",
        )
        .contract;
        let out = change(
            &c,
            &units(&[("seats", 2)], Activation::NextCycle),
            &cx,
            "2024-03-16",
        );
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&inv[0]), ["20.00"]); // 2 x 10.00
    }
}

/// `change_billing_date`: the current period ends at the new date; later periods anchor there.
mod change_billing_date {
    use super::*;

    #[test]
    fn shorter_with_recalculation_credits_the_part_cut_off() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(&c, &billing_date("2024-03-20", true), &cx, "2024-03-10");
        let inv = out.invoice.unwrap();
        // [Mar 20, Apr 1) is cut off: 12 of March's 31 days.
        // 30.00 x 12/31 = 11.6129 -> 11.61
        assert_eq!(amounts(&inv), ["-11.61"]);
        assert_eq!(kinds(&inv), [LineKind::ProrationCredit]);
        assert_eq!(period_of(&out.contract).1, ts("2024-03-20"));
        let adv = run_until(&out.contract, &cx, "2024-04-20");
        let inv = invoices(&adv);
        assert_eq!(
            inv.iter().map(|i| i.issued_at).collect::<Vec<_>>(),
            [ts("2024-03-20"), ts("2024-04-20")]
        );
        assert_eq!(amounts(&inv[0]), ["30.00"]);
        assert_eq!(amounts(&inv[1]), ["30.00"]);
        assert_eq!(
            period_of(&adv.contract),
            (ts("2024-04-20"), ts("2024-05-20"))
        );
    }

    #[test]
    fn shorter_without_recalculation_only_moves_the_date() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(&c, &billing_date("2024-03-20", false), &cx, "2024-03-10");
        assert!(out.invoice.is_none());
        let inv = invoices(&run_until(&out.contract, &cx, "2024-03-20"));
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].issued_at, ts("2024-03-20"));
        assert_eq!(amounts(&inv[0]), ["30.00"]);
    }

    #[test]
    fn longer_with_recalculation_charges_the_part_added() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(&c, &billing_date("2024-04-10", true), &cx, "2024-03-10");
        let inv = out.invoice.unwrap();
        // [Apr 1, Apr 10) is added: 9 days of the new schedule's period [Mar 10, Apr 10)
        // (31 days). 30.00 x 9/31 = 8.7097 -> 8.71
        assert_eq!(amounts(&inv), ["8.71"]);
        assert_eq!(kinds(&inv), [LineKind::ProrationCharge]);
        let adv = run_until(&out.contract, &cx, "2024-04-10");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].issued_at, ts("2024-04-10"));
        assert_eq!(amounts(&inv[0]), ["30.00"]);
        assert_eq!(
            period_of(&adv.contract),
            (ts("2024-04-10"), ts("2024-05-10"))
        );
    }

    #[test]
    fn longer_without_recalculation_charges_nothing_extra() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(&c, &billing_date("2024-04-10", false), &cx, "2024-03-10");
        assert!(out.invoice.is_none());
        // No renewal on Apr 1; the next one is on Apr 10, for a full period.
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-10"));
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].issued_at, ts("2024-04-10"));
        assert_eq!(amounts(&inv[0]), ["30.00"]);
    }

    #[test]
    fn during_a_trial_the_first_period_becomes_a_stub() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("small", Cycle::Month);
        req.free_trial_days = Some(14);
        let sub = subscribe(&req, &cx, ts("2024-03-01")).unwrap();
        assert!(sub.invoices.is_empty());
        assert_eq!(sub.contract.trial_end, Some(ts("2024-03-15")));
        let out = change(
            &sub.contract,
            &billing_date("2024-04-01", true),
            &cx,
            "2024-03-05",
        );
        assert!(out.invoice.is_none());
        let adv = run_until(&out.contract, &cx, "2024-04-01");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 2);
        // Trial end, Mar 15: the stub [Mar 15, Apr 1) is 17 days of the schedule's period
        // [Mar 1, Apr 1) (31 days). 30.00 x 17/31 = 16.4516 -> 16.45
        assert_eq!(inv[0].issued_at, ts("2024-03-15"));
        assert_eq!(amounts(&inv[0]), ["16.45"]);
        assert_eq!(inv[0].lines[0].period_end, ts("2024-04-01"));
        // Apr 1: a full period.
        assert_eq!(amounts(&inv[1]), ["30.00"]);
    }

    #[test]
    fn a_change_after_an_extension_prorates_each_part_against_its_own_period() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // The period now runs [Mar 1, Apr 10): [Mar 1, Apr 1) of March (31 days) and
        // [Apr 1, Apr 10) of the new schedule's [Mar 10, Apr 10) (31 days).
        let moved = change(&c, &billing_date("2024-04-10", true), &cx, "2024-03-10");
        assert_eq!(amounts(&moved.invoice.unwrap()), ["8.71"]); // 30.00 x 9/31 = 8.7097
        // From Mar 16: 16/31 of March plus 9/31 of the stub = 25/31.
        let inv = change_invoice(
            &moved.contract,
            &new_plan("large", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-24.19", // 30.00 x 25/31 = 24.1935 -> 24.19
                "40.32",  // 50.00 x 25/31 = 40.3226 -> 40.32
            ]
        );
        let renewal = invoices(&run_until(&moved.contract, &cx, "2024-04-10"));
        assert_eq!(renewal[0].issued_at, ts("2024-04-10"));
    }

    #[test]
    fn a_date_not_after_now_is_refused() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let err = refused(&c, &billing_date("2024-03-10", true), &cx, "2024-03-10");
        assert_eq!(err.code(), "date_out_of_range");
    }
}

/// Free trials, pending contracts and activations in the future or the past.
mod trial_and_activation {
    use super::*;

    #[test]
    fn a_change_during_the_trial_issues_nothing_and_is_billed_at_trial_end() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("small", Cycle::Month);
        req.free_trial_days = Some(14);
        let sub = subscribe(&req, &cx, ts("2024-03-01")).unwrap();
        assert!(sub.invoices.is_empty());
        let out = change(
            &sub.contract,
            &new_plan("large", &[], on("2024-03-05")),
            &cx,
            "2024-03-05",
        );
        assert!(out.invoice.is_none());
        assert!(!out.scheduled);
        let adv = run_until(&out.contract, &cx, "2024-03-15");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].issued_at, ts("2024-03-15"));
        // The first period [Mar 15, Apr 15) in full on the new plan.
        assert_eq!(amounts(&inv[0]), ["50.00"]);
        assert_eq!(
            period_of(&adv.contract),
            (ts("2024-03-15"), ts("2024-04-15"))
        );
    }

    #[test]
    fn a_downgrade_during_the_trial_needs_no_permission() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("large", Cycle::Month);
        req.free_trial_days = Some(14);
        let sub = subscribe(&req, &cx, ts("2024-03-01")).unwrap();
        let out = change(
            &sub.contract,
            &new_plan("small", &[], on("2024-03-05")),
            &cx,
            "2024-03-05",
        );
        assert!(out.invoice.is_none());
        let inv = invoices(&run_until(&out.contract, &cx, "2024-03-15"));
        assert_eq!(amounts(&inv[0]), ["30.00"]);
    }

    #[test]
    fn a_cycle_change_during_the_trial_starts_the_new_cycle_at_trial_end() {
        let cat = Cat::new()
            .flat_plan("small", Currency::Usd, Cycle::Month, "30.00")
            .flat_plan("annual", Currency::Usd, Cycle::Year, "400.00")
            .build();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("small", Cycle::Month);
        req.free_trial_days = Some(14);
        let sub = subscribe(&req, &cx, ts("2024-03-01")).unwrap();
        let out = change(
            &sub.contract,
            &new_plan_in("annual", None, Some(Cycle::Year), &[], on("2024-03-05")),
            &cx,
            "2024-03-05",
        );
        assert!(out.invoice.is_none());
        let adv = run_until(&out.contract, &cx, "2024-03-15");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 1);
        // A full year from the end of the trial.
        assert_eq!(amounts(&inv[0]), ["400.00"]);
        assert_eq!(
            period_of(&adv.contract),
            (ts("2024-03-15"), ts("2025-03-15"))
        );
    }

    #[test]
    fn a_next_cycle_change_during_the_trial_applies_at_trial_end() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("small", Cycle::Month);
        req.free_trial_days = Some(14);
        let sub = subscribe(&req, &cx, ts("2024-03-01")).unwrap();
        let out = change(
            &sub.contract,
            &new_plan("large", &[], Activation::NextCycle),
            &cx,
            "2024-03-05",
        );
        assert!(out.scheduled);
        assert_eq!(out.effective_at, ts("2024-03-15"));
        let inv = invoices(&run_until(&out.contract, &cx, "2024-03-15"));
        assert_eq!(inv.len(), 1);
        assert_eq!(amounts(&inv[0]), ["50.00"]);
    }

    #[test]
    fn a_pending_contract_is_changed_then_activated() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("small", Cycle::Month);
        req.is_pending = true;
        let sub = subscribe(&req, &cx, ts("2024-03-01")).unwrap();
        assert!(sub.invoices.is_empty());
        assert_eq!(sub.contract.status, ContractStatus::Pending);
        let out = change(
            &sub.contract,
            &new_plan("large", &[], Activation::Now),
            &cx,
            "2024-03-05",
        );
        assert!(out.invoice.is_none());
        assert_eq!(out.contract.status, ContractStatus::Pending);
        let act = activate(&out.contract, &cx, ts("2024-03-10")).unwrap();
        assert_eq!(act.invoices.len(), 1);
        assert_eq!(act.invoices[0].reason, InvoiceReason::Signup);
        // The first period starts at activation, on the plan chosen while pending.
        assert_eq!(amounts(&act.invoices[0]), ["50.00"]);
        assert_eq!(
            period_of(&act.contract),
            (ts("2024-03-10"), ts("2024-04-10"))
        );
    }

    #[test]
    fn a_future_activation_is_invoiced_when_it_arrives() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("small", Cycle::Month);
        req.activation = Some(ts("2024-04-01"));
        let sub = subscribe(&req, &cx, ts("2024-03-10")).unwrap();
        assert!(sub.invoices.is_empty());
        assert_eq!(sub.contract.status, ContractStatus::Scheduled);
        assert_eq!(
            run_until(&sub.contract, &cx, "2024-03-31T23:59:59Z")
                .invoices()
                .count(),
            0
        );
        let adv = run_until(&sub.contract, &cx, "2024-04-01");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].reason, InvoiceReason::Signup);
        assert_eq!(inv[0].issued_at, ts("2024-04-01"));
        assert_eq!(amounts(&inv[0]), ["30.00"]);
        assert_eq!(adv.contract.status, ContractStatus::Active);
    }

    #[test]
    fn a_past_activation_invoices_every_period_up_to_now() {
        let cat = Cat::new()
            .feature("base", FeatureKind::Flat)
            .feature("support", FeatureKind::Flat)
            .plan(
                "care",
                vec![(
                    Currency::Usd,
                    Cycle::Month,
                    vec![("base", flat("30.00")), ("support", arrears(flat("10.00")))],
                )],
            )
            .build();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("care", Cycle::Month);
        req.activation = Some(ts("2024-01-01"));
        let sub = subscribe(&req, &cx, ts("2024-03-15")).unwrap();
        let inv = &sub.invoices;
        assert_eq!(inv.len(), 3);
        assert_eq!(
            inv.iter().map(|i| i.issued_at).collect::<Vec<_>>(),
            [ts("2024-01-01"), ts("2024-02-01"), ts("2024-03-01")]
        );
        assert_eq!(
            inv.iter().map(|i| i.reason).collect::<Vec<_>>(),
            [
                InvoiceReason::Signup,
                InvoiceReason::Renewal,
                InvoiceReason::Renewal
            ]
        );
        // January in advance; support is in arrears.
        assert_eq!(amounts(&inv[0]), ["30.00"]);
        // January's support (10.00 x 31/31), then February in advance.
        assert_eq!(amounts(&inv[1]), ["10.00", "30.00"]);
        // February's support (10.00 x 29/29), then March in advance.
        assert_eq!(amounts(&inv[2]), ["10.00", "30.00"]);
        assert_eq!(
            period_of(&sub.contract),
            (ts("2024-03-01"), ts("2024-04-01"))
        );
    }
}

/// Periods and proration on the calendar: month ends, leap years, first and last days,
/// boundaries, several changes, cycle changes, short cycles.
mod calendar {
    use super::*;

    #[test]
    fn a_jan_31_anchor_renews_on_feb_29_mar_31_apr_30_in_2024() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-01-31").contract;
        let inv = invoices(&run_until(&c, &cx, "2024-05-30"));
        assert_eq!(
            inv.iter().map(|i| i.issued_at).collect::<Vec<_>>(),
            [ts("2024-02-29"), ts("2024-03-31"), ts("2024-04-30")]
        );
        // Each period is billed in full, however long the month.
        for i in &inv {
            assert_eq!(amounts(i), ["30.00"]);
        }
        assert_eq!(inv[0].lines[0].period_end, ts("2024-03-31"));
        assert_eq!(inv[2].lines[0].period_end, ts("2024-05-31"));
    }

    #[test]
    fn a_jan_31_anchor_renews_on_feb_28_in_2023() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2023-01-31").contract;
        let inv = invoices(&run_until(&c, &cx, "2023-04-30"));
        assert_eq!(
            inv.iter().map(|i| i.issued_at).collect::<Vec<_>>(),
            [ts("2023-02-28"), ts("2023-03-31"), ts("2023-04-30")]
        );
    }

    #[test]
    fn a_change_in_the_short_february_period_of_2024() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-01-31").contract;
        // Period [Jan 31, Feb 29) has 29 days; Feb 15 .. Feb 29 leaves 14.
        let inv = change_invoice(
            &c,
            &new_plan("large", &[], on("2024-02-15")),
            &cx,
            "2024-02-15",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-14.48", // 30.00 x 14/29 = 14.4828 -> 14.48
                "24.14",  // 50.00 x 14/29 = 24.1379 -> 24.14
            ]
        );
    }

    #[test]
    fn a_change_in_the_short_february_period_of_2023() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2023-01-31").contract;
        // Period [Jan 31, Feb 28) has 28 days; Feb 15 .. Feb 28 leaves 13.
        let inv = change_invoice(
            &c,
            &new_plan("large", &[], on("2023-02-15")),
            &cx,
            "2023-02-15",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-13.93", // 30.00 x 13/28 = 13.9286 -> 13.93
                "23.21",  // 50.00 x 13/28 = 23.2143 -> 23.21
            ]
        );
    }

    fn yearly() -> Catalog {
        Cat::new()
            .flat_plan("annual", Currency::Usd, Cycle::Year, "400.00")
            .flat_plan("annual-plus", Currency::Usd, Cycle::Year, "500.00")
            .build()
    }

    #[test]
    fn a_leap_year_period_has_366_days() {
        let cat = yearly();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "annual", Currency::Usd, Cycle::Year, &[], "2024-01-01").contract;
        assert_eq!(period_of(&c), (ts("2024-01-01"), ts("2025-01-01")));
        // Jul 1 .. Jan 1 = 31+31+30+31+30+31 = 184 days of 366.
        let inv = change_invoice(
            &c,
            &new_plan_in(
                "annual-plus",
                None,
                Some(Cycle::Year),
                &[],
                on("2024-07-01"),
            ),
            &cx,
            "2024-07-01",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-201.09", // 400.00 x 184/366 = 201.0929 -> 201.09
                "251.37",  // 500.00 x 184/366 = 251.3661 -> 251.37
            ]
        );
    }

    #[test]
    fn a_common_year_period_has_365_days() {
        let cat = yearly();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "annual", Currency::Usd, Cycle::Year, &[], "2023-01-01").contract;
        let inv = change_invoice(
            &c,
            &new_plan_in(
                "annual-plus",
                None,
                Some(Cycle::Year),
                &[],
                on("2023-07-01"),
            ),
            &cx,
            "2023-07-01",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-201.64", // 400.00 x 184/365 = 201.6438 -> 201.64
                "252.05",  // 500.00 x 184/365 = 252.0548 -> 252.05
            ]
        );
    }

    #[test]
    fn a_feb_29_yearly_anchor_renews_on_feb_28_and_returns_to_feb_29() {
        let cat = yearly();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "annual", Currency::Usd, Cycle::Year, &[], "2024-02-29").contract;
        let inv = invoices(&run_until(&c, &cx, "2028-03-01"));
        assert_eq!(
            inv.iter().map(|i| i.issued_at).collect::<Vec<_>>(),
            [
                ts("2025-02-28"),
                ts("2026-02-28"),
                ts("2027-02-28"),
                ts("2028-02-29")
            ]
        );
    }

    #[test]
    fn a_change_on_the_first_day_moves_the_whole_period() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // 15:00 on Mar 1 counts from the start of Mar 1: all 31 days are the new plan's.
        let inv = change_invoice(
            &c,
            &new_plan("large", &[], on("2024-03-01T15:00:00Z")),
            &cx,
            "2024-03-01T15:00:00Z",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-30.00", // 30.00 x 31/31
                "50.00",  // 50.00 x 31/31
            ]
        );
    }

    #[test]
    fn a_change_on_the_last_day_prorates_one_day() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // Mar 31 09:00 counts from the start of Mar 31: 1 day of 31 remains.
        let inv = change_invoice(
            &c,
            &new_plan("large", &[], on("2024-03-31T09:00:00Z")),
            &cx,
            "2024-03-31T09:00:00Z",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-0.97", // 30.00 x 1/31 = 0.9677 -> 0.97
                "1.61",  // 50.00 x 1/31 = 1.6129 -> 1.61
            ]
        );
    }

    #[test]
    fn second_granularity_counts_exact_seconds() {
        let cat = small_large();
        let s = settings(Granularity::Second, Alignment::Anniversary);
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // Mar 16 12:00 .. Apr 1 = 15.5 days of 31.
        let inv = change_invoice(
            &c,
            &new_plan("large", &[], on("2024-03-16T12:00:00Z")),
            &cx,
            "2024-03-16T12:00:00Z",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-15.00", // 30.00 x 15.5/31 = 15.00
                "25.00",  // 50.00 x 15.5/31 = 25.00
            ]
        );
    }

    #[test]
    fn a_change_dated_at_the_period_end_is_applied_before_the_renewal() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan("large", &[], on("2024-04-01")),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        assert!(out.invoice.is_none());
        assert_eq!(out.effective_at, ts("2024-04-01"));
        let adv = run_until(&out.contract, &cx, "2024-04-01");
        assert_eq!(adv.steps.len(), 2);
        assert_eq!(
            adv.steps[0].kind,
            StepKind::ScheduledChange { id: "chg".into() }
        );
        // Applied at the boundary: nothing to prorate.
        assert!(adv.steps[0].invoices.is_empty());
        assert_eq!(adv.steps[1].kind, StepKind::Renewal);
        assert_eq!(amounts(&adv.steps[1].invoices[0]), ["50.00"]);
    }

    #[test]
    fn several_changes_in_one_period_add_up_to_the_time_weighted_price() {
        let cat = Cat::new()
            .seat_plan("team", Currency::Usd, Cycle::Month, "10.00")
            .build();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 1)],
            "2024-03-01",
        );
        assert_eq!(amounts(&sub.invoices[0]), ["10.00"]); // 1 x 10.00
        // Mar 11: 1 -> 3 seats, 21 days remain (Mar 11 .. Apr 1).
        let first = change(
            &sub.contract,
            &units(&[("seats", 3)], on("2024-03-11")),
            &cx,
            "2024-03-11",
        );
        let inv1 = first.invoice.unwrap();
        assert_eq!(
            amounts(&inv1),
            [
                "-6.77", // 1 x 10.00 x 21/31 = 6.7742 -> 6.77
                "20.32", // 3 x 10.00 x 21/31 = 20.3226 -> 20.32
            ]
        );
        // Mar 21: 3 -> 2 seats, 11 days remain (Mar 21 .. Apr 1).
        let inv2 = change_invoice(
            &first.contract,
            &allow_downgrade(units(&[("seats", 2)], on("2024-03-21"))),
            &cx,
            "2024-03-21",
        );
        assert_eq!(
            amounts(&inv2),
            [
                "-10.65", // 3 x 10.00 x 11/31 = 10.6452 -> 10.65
                "7.10",   // 2 x 10.00 x 11/31 = 7.0968 -> 7.10
            ]
        );
        // Over March: 10.00 x (1 x 10 + 3 x 10 + 2 x 11)/31 = 10.00 x 62/31 = 20.00, and
        // 10.00 - 6.77 + 20.32 - 10.65 + 7.10 = 20.00.
        let total = sub.invoices[0].net + inv1.net + inv2.net;
        assert_eq!(total.to_string(), "20.00");
    }

    fn month_and_year() -> Catalog {
        Cat::new()
            .flat_plan("small", Currency::Usd, Cycle::Month, "30.00")
            .flat_plan("monthly-plus", Currency::Usd, Cycle::Month, "40.00")
            .flat_plan("annual", Currency::Usd, Cycle::Year, "400.00")
            .build()
    }

    #[test]
    fn month_to_year_resets_the_anchor_and_charges_a_full_year() {
        let cat = month_and_year();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan_in("annual", None, Some(Cycle::Year), &[], on("2024-03-11")),
            &cx,
            "2024-03-11",
        );
        let inv = out.invoice.unwrap();
        assert_eq!(
            amounts(&inv),
            [
                "-20.32", // 30.00 x 21/31 = 20.3226 -> 20.32
                "400.00", // a full year from Mar 11
            ]
        );
        assert_eq!(inv.lines[1].period_start, ts("2024-03-11"));
        assert_eq!(inv.lines[1].period_end, ts("2025-03-11"));
        assert_eq!(
            period_of(&out.contract),
            (ts("2024-03-11"), ts("2025-03-11"))
        );
        let renewals = invoices(&run_until(&out.contract, &cx, "2025-03-11"));
        assert_eq!(renewals.len(), 1);
        assert_eq!(renewals[0].issued_at, ts("2025-03-11"));
        assert_eq!(amounts(&renewals[0]), ["400.00"]);
    }

    #[test]
    fn month_to_year_at_next_cycle_starts_the_year_at_the_boundary() {
        let cat = month_and_year();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan_in(
                "annual",
                None,
                Some(Cycle::Year),
                &[],
                Activation::NextCycle,
            ),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        let adv = run_until(&out.contract, &cx, "2024-04-01");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 1);
        assert_eq!(amounts(&inv[0]), ["400.00"]);
        assert_eq!(
            period_of(&adv.contract),
            (ts("2024-04-01"), ts("2025-04-01"))
        );
    }

    #[test]
    fn year_to_month_resets_the_anchor_and_charges_a_full_month() {
        let cat = month_and_year();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "annual", Currency::Usd, Cycle::Year, &[], "2024-01-01").contract;
        // 40.00 x 12 = 480.00 a year > 400.00: an upgrade.
        let out = change(
            &c,
            &new_plan_in(
                "monthly-plus",
                None,
                Some(Cycle::Month),
                &[],
                on("2024-07-01"),
            ),
            &cx,
            "2024-07-01",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-201.09", // 400.00 x 184/366 = 201.0929 -> 201.09
                "40.00",   // a full month from Jul 1
            ]
        );
        assert_eq!(
            period_of(&out.contract),
            (ts("2024-07-01"), ts("2024-08-01"))
        );
        let renewals = invoices(&run_until(&out.contract, &cx, "2024-08-01"));
        assert_eq!(amounts(&renewals[0]), ["40.00"]);
    }

    #[test]
    fn calendar_alignment_prorates_the_first_period_and_changes_inside_it() {
        let cat = small_large();
        let s = settings(Granularity::Day, Alignment::Calendar);
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-16");
        // [Mar 16, Apr 1) is 16 days of [Mar 1, Apr 1): 30.00 x 16/31 = 15.4839 -> 15.48
        assert_eq!(amounts(&sub.invoices[0]), ["15.48"]);
        // Mar 21 .. Apr 1 = 11 of 31 days.
        let inv = change_invoice(
            &sub.contract,
            &new_plan("large", &[], on("2024-03-21")),
            &cx,
            "2024-03-21",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-10.65", // 30.00 x 11/31 = 10.6452 -> 10.65
                "17.74",  // 50.00 x 11/31 = 17.7419 -> 17.74
            ]
        );
        let renewal = invoices(&run_until(&sub.contract, &cx, "2024-04-01"));
        assert_eq!(renewal[0].issued_at, ts("2024-04-01"));
        assert_eq!(amounts(&renewal[0]), ["30.00"]);
    }

    #[test]
    fn a_contract_may_choose_its_alignment() {
        let cat = small_large();
        // The tenant aligns on anniversaries; this contract asks for calendar periods.
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("small", Cycle::Month);
        req.alignment = Some(Alignment::Calendar);
        let sub = subscribe(&req, &cx, ts("2024-03-16")).unwrap();
        // [Mar 16, Apr 1) is 16 days of [Mar 1, Apr 1): 30.00 x 16/31 = 15.4839 -> 15.48
        assert_eq!(amounts(&sub.invoices[0]), ["15.48"]);
        assert_eq!(
            period_of(&sub.contract),
            (ts("2024-03-16"), ts("2024-04-01"))
        );
        // With a 10-day trial from Mar 16, the trial ends Mar 26 and the first period after it
        // is the stub [Mar 26, Apr 1): 30.00 x 6/31 = 5.8065 -> 5.81.
        req.free_trial_days = Some(10);
        let trial = subscribe(&req, &cx, ts("2024-03-16")).unwrap();
        let after = invoices(&run_until(&trial.contract, &cx, "2024-03-26"));
        assert_eq!(amounts(&after[0]), ["5.81"]);
        // The other contracts of the tenant keep anniversary periods.
        let plain = subscribe(&request("small", Cycle::Month), &cx, ts("2024-03-16")).unwrap();
        assert_eq!(
            period_of(&plain.contract),
            (ts("2024-03-16"), ts("2024-04-16"))
        );
    }

    #[test]
    fn days_begin_in_the_tenant_time_zone() {
        let cat = small_large();
        let s = Settings {
            time_zone: "Europe/Berlin".into(),
            ..day_settings()
        };
        let cx = BillingContext::new(&cat, &s).unwrap();
        // Mar 1 00:00 in Berlin (UTC+1).
        let c = signup(
            &cx,
            "small",
            Currency::Usd,
            Cycle::Month,
            &[],
            "2024-02-29T23:00:00Z",
        )
        .contract;
        // Apr 1 00:00 in Berlin is 22:00 UTC (summer time from Mar 31).
        assert_eq!(period_of(&c).1, ts("2024-03-31T22:00:00Z"));
        // 23:30 UTC on Mar 15 is already Mar 16 in Berlin: 16 of 31 days remain.
        let inv = change_invoice(
            &c,
            &new_plan("large", &[], on("2024-03-15T23:30:00Z")),
            &cx,
            "2024-03-15T23:30:00Z",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-15.48", // 30.00 x 16/31 = 15.4839 -> 15.48
                "25.81",  // 50.00 x 16/31 = 25.8065 -> 25.81
            ]
        );
    }

    #[test]
    fn an_hour_cycle_prorates_by_seconds_at_day_granularity() {
        let cat = Cat::new()
            .flat_plan("hourly", Currency::Usd, Cycle::Hour, "10.00")
            .flat_plan("hourly-plus", Currency::Usd, Cycle::Hour, "25.00")
            .build();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "hourly",
            Currency::Usd,
            Cycle::Hour,
            &[],
            "2024-03-01T10:00:00Z",
        )
        .contract;
        // 10:20 .. 11:00 = 40 of 60 minutes.
        let out = change(
            &c,
            &new_plan("hourly-plus", &[], on("2024-03-01T10:20:00Z")),
            &cx,
            "2024-03-01T10:20:00Z",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-6.67", // 10.00 x 40/60 = 6.6667 -> 6.67
                "16.67", // 25.00 x 40/60 = 16.6667 -> 16.67
            ]
        );
        let inv = invoices(&run_until(&out.contract, &cx, "2024-03-01T11:00:00Z"));
        assert_eq!(inv[0].issued_at, ts("2024-03-01T11:00:00Z"));
        assert_eq!(amounts(&inv[0]), ["25.00"]);
    }

    fn daily() -> Catalog {
        Cat::new()
            .flat_plan("daily", Currency::Usd, Cycle::Day, "10.00")
            .flat_plan("daily-plus", Currency::Usd, Cycle::Day, "20.00")
            .build()
    }

    #[test]
    fn a_day_cycle_at_day_granularity_gives_the_change_day_to_the_new_plan() {
        let cat = daily();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "daily", Currency::Usd, Cycle::Day, &[], "2024-03-01").contract;
        let inv = change_invoice(
            &c,
            &new_plan("daily-plus", &[], on("2024-03-01T12:00:00Z")),
            &cx,
            "2024-03-01T12:00:00Z",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-10.00", // 10.00 x 1/1 (the change day is the new plan's)
                "20.00",  // 20.00 x 1/1
            ]
        );
    }

    #[test]
    fn a_day_cycle_at_second_granularity_splits_the_day() {
        let cat = daily();
        let s = settings(Granularity::Second, Alignment::Anniversary);
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "daily", Currency::Usd, Cycle::Day, &[], "2024-03-01").contract;
        let inv = change_invoice(
            &c,
            &new_plan("daily-plus", &[], on("2024-03-01T12:00:00Z")),
            &cx,
            "2024-03-01T12:00:00Z",
        );
        assert_eq!(
            amounts(&inv),
            [
                "-5.00", // 10.00 x 12h/24h
                "10.00", // 20.00 x 12h/24h
            ]
        );
    }
}

/// Tiered per-unit prices: graduated and volume, at signup and across a tier boundary.
mod tiers {
    use super::*;

    /// Seats 1-10 at 5.00, 11+ at 4.00.
    fn tiered(mode: TierMode) -> Catalog {
        let price = FeaturePrice {
            tiers: Some(vec![
                Tier {
                    tier_start: d("1"),
                    tier_end: TierEnd::Concrete(d("10")),
                    amount: d("5.00"),
                },
                Tier {
                    tier_start: d("11"),
                    tier_end: TierEnd::Infinity,
                    amount: d("4.00"),
                },
            ]),
            tier_mode: mode,
            ..FeaturePrice::default()
        };
        Cat::new()
            .feature("seats", FeatureKind::PerUnit)
            .plan(
                "tiered",
                vec![(Currency::Usd, Cycle::Month, vec![("seats", price)])],
            )
            .build()
    }

    #[test]
    fn graduated_signup_prices_each_unit_in_its_tier() {
        let cat = tiered(TierMode::Graduated);
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup(
            &cx,
            "tiered",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 12)],
            "2024-03-01",
        );
        assert_eq!(
            amounts(&sub.invoices[0]),
            [
                "50.00", // 10 x 5.00
                "8.00",  // 2 x 4.00
            ]
        );
        assert_eq!(sub.invoices[0].net.to_string(), "58.00");
    }

    #[test]
    fn graduated_change_crossing_a_tier_boundary() {
        let cat = tiered(TierMode::Graduated);
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "tiered",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 8)],
            "2024-03-01",
        )
        .contract;
        let out = change(
            &c,
            &units(&[("seats", 12)], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-20.65", // tier 1: 8 x 5.00 x 16/31 = 20.6452 -> 20.65
                "25.81",  // tier 1: 10 x 5.00 x 16/31 = 25.8065 -> 25.81
                "4.13",   // tier 2: 2 x 4.00 x 16/31 = 4.1290 -> 4.13
            ]
        );
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&inv[0]), ["50.00", "8.00"]); // 10 x 5.00, 2 x 4.00
    }

    #[test]
    fn volume_signup_prices_every_unit_at_the_tier_reached() {
        let cat = tiered(TierMode::Volume);
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup(
            &cx,
            "tiered",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 12)],
            "2024-03-01",
        );
        assert_eq!(amounts(&sub.invoices[0]), ["48.00"]); // 12 x 4.00
    }

    #[test]
    fn volume_change_crossing_a_tier_boundary() {
        let cat = tiered(TierMode::Volume);
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "tiered",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 8)],
            "2024-03-01",
        )
        .contract;
        // 8 x 5.00 = 40.00 -> 12 x 4.00 = 48.00: an upgrade.
        let out = change(
            &c,
            &units(&[("seats", 12)], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-20.65", // 8 x 5.00 x 16/31 = 20.6452 -> 20.65
                "24.77",  // 12 x 4.00 x 16/31 = 24.7742 -> 24.77
            ]
        );
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&inv[0]), ["48.00"]);
    }
}

/// Usage across a change: before it at the old prices on the change invoice, after it at the
/// new prices at renewal.
mod usage {
    use super::*;

    /// `meter`: base 30.00 + api 0.01 per call; `meter-plus`: base 50.00 + api 0.02 per call;
    /// `meter-max`: base 50.00 + api 0.03 per call.
    fn metered() -> Catalog {
        let set = |base: &str, api: &str| {
            vec![(
                Currency::Usd,
                Cycle::Month,
                vec![("base", flat(base)), ("api", unit(api))],
            )]
        };
        Cat::new()
            .feature("base", FeatureKind::Flat)
            .feature("api", FeatureKind::Usage)
            .plan("meter", set("30.00", "0.01"))
            .plan("meter-plus", set("50.00", "0.02"))
            .plan("meter-max", set("50.00", "0.03"))
            .build()
    }

    #[test]
    fn usage_is_rated_by_the_phase_it_happened_in() {
        let cat = metered();
        let s = day_settings();
        let recs = [
            usage("api", 100, "2024-03-05", false),
            usage("api", 200, "2024-03-20", false),
        ];
        let cx = BillingContext::new(&cat, &s).unwrap().with_usage(&recs);
        let sub = signup(&cx, "meter", Currency::Usd, Cycle::Month, &[], "2024-03-01");
        assert_eq!(amounts(&sub.invoices[0]), ["30.00"]);
        let out = change(
            &sub.contract,
            &new_plan("meter-plus", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        let inv = out.invoice.unwrap();
        assert_eq!(
            amounts(&inv),
            [
                "1.00",   // 100 calls before Mar 16 x 0.01
                "-15.48", // base 30.00 x 16/31 = 15.4839 -> 15.48
                "25.81",  // base 50.00 x 16/31 = 25.8065 -> 25.81
            ]
        );
        assert_eq!(
            kinds(&inv),
            [
                LineKind::Usage,
                LineKind::ProrationCredit,
                LineKind::ProrationCharge
            ]
        );
        let renewal = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(
            amounts(&renewal[0]),
            [
                "4.00",  // 200 calls after Mar 16 x 0.02
                "50.00", // April in advance
            ]
        );
    }

    #[test]
    fn absolute_reports_across_a_change() {
        let cat = metered();
        let s = day_settings();
        // Running total: 10, reset to 50 (Mar 10), reset to 70 (Mar 20), +5 = 75 (Mar 25).
        let recs = [
            usage("api", 10, "2024-03-02", false),
            usage("api", 50, "2024-03-10", true),
            usage("api", 70, "2024-03-20", true),
            usage("api", 5, "2024-03-25", false),
        ];
        let cx = BillingContext::new(&cat, &s).unwrap().with_usage(&recs);
        let c = signup(&cx, "meter", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &new_plan("meter-max", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        // Before Mar 16 the total reached 50: 50 x 0.01 = 0.50.
        assert_eq!(amounts(&out.invoice.unwrap()), ["0.50", "-15.48", "25.81"]);
        // After: 75 - 50 = 25 calls x 0.03 = 0.75.
        let renewal = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&renewal[0]), ["0.75", "50.00"]);
    }
}

/// In-arrears charges across a change: the old configuration's up to the change, on the change
/// invoice; the new one's from the change, at renewal.
mod arrears {
    use super::*;

    #[test]
    fn in_arrears_charges_are_split_at_the_change() {
        let cat = Cat::new()
            .feature("base", FeatureKind::Flat)
            .feature("support", FeatureKind::Flat)
            .plan(
                "care",
                vec![(
                    Currency::Usd,
                    Cycle::Month,
                    vec![("base", flat("30.00")), ("support", arrears(flat("10.00")))],
                )],
            )
            .plan(
                "care-plus",
                vec![(
                    Currency::Usd,
                    Cycle::Month,
                    vec![("base", flat("50.00")), ("support", arrears(flat("20.00")))],
                )],
            )
            .build();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup(&cx, "care", Currency::Usd, Cycle::Month, &[], "2024-03-01");
        // Only the in-advance base at signup.
        assert_eq!(amounts(&sub.invoices[0]), ["30.00"]);
        let out = change(
            &sub.contract,
            &new_plan("care-plus", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "4.84",   // support 10.00 x 15/31 = 4.8387 -> 4.84 (Mar 1 .. Mar 16)
                "-15.48", // base 30.00 x 16/31 = 15.4839 -> 15.48
                "25.81",  // base 50.00 x 16/31 = 25.8065 -> 25.81
            ]
        );
        let renewal = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(
            amounts(&renewal[0]),
            [
                "10.32", // support 20.00 x 16/31 = 10.3226 -> 10.32 (Mar 16 .. Apr 1)
                "50.00", // April's base
            ]
        );
        // March's support: 4.84 + 10.32 = 15.16 = (10.00 x 15 + 20.00 x 16)/31 = 15.1613,
        // within a cent per line.
    }
}

/// Discounts across a change.
mod discounts {
    use super::*;

    fn with_discounts() -> Catalog {
        Cat::new()
            .flat_plan("small", Currency::Usd, Cycle::Month, "30.00")
            .flat_plan("large", Currency::Usd, Cycle::Month, "50.00")
            .discount(
                "twenty",
                DiscountValue::PercentOff(d("20")),
                DiscountDuration::Forever,
            )
            .discount(
                "twenty-twice",
                DiscountValue::PercentOff(d("20")),
                DiscountDuration::Repeating(2),
            )
            .feature("support", FeatureKind::Flat)
            .plan(
                "care",
                vec![(
                    Currency::Usd,
                    Cycle::Month,
                    vec![("base", flat("30.00")), ("support", arrears(flat("10.00")))],
                )],
            )
            .discount(
                "five-off",
                DiscountValue::AmountOff {
                    amount: d("5.00"),
                    currency: Currency::Usd,
                },
                DiscountDuration::Forever,
            )
            .build()
    }

    fn signup_with(cx: &BillingContext, discount: &str, at: &str) -> SignupOutcome {
        let mut req = request("small", Cycle::Month);
        req.selection.discount = Some(discount.into());
        subscribe(&req, cx, ts(at)).expect("the signup is accepted")
    }

    #[test]
    fn a_percent_discount_reduces_credits_and_charges() {
        let cat = with_discounts();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup_with(&cx, "twenty", "2024-03-01");
        assert_eq!(
            amounts(&sub.invoices[0]),
            [
                "30.00", //
                "-6.00", // 30.00 x 20%
            ]
        );
        assert_eq!(
            kinds(&sub.invoices[0]),
            [LineKind::Charge, LineKind::Discount]
        );
        let out = change(
            &sub.contract,
            &new_plan("large", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-12.39", // 30.00 x 16/31 x 0.8 = 12.3871 -> 12.39
                "20.65",  // 50.00 x 16/31 x 0.8 = 20.6452 -> 20.65
            ]
        );
        let renewal = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&renewal[0]), ["50.00", "-10.00"]); // 50.00 x 20%
    }

    #[test]
    fn a_repeating_discount_ends_after_its_periods_even_across_a_change() {
        let cat = with_discounts();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup_with(&cx, "twenty-twice", "2024-01-01");
        // Period 1 (January): discounted.
        assert_eq!(amounts(&sub.invoices[0]), ["30.00", "-6.00"]);
        // Period 2 (February): discounted.
        let feb = run_until(&sub.contract, &cx, "2024-02-01");
        assert_eq!(amounts(&invoices(&feb)[0]), ["30.00", "-6.00"]);
        // Feb 15 .. Mar 1 = 15 of February's 29 days, still in period 2.
        let out = change(
            &feb.contract,
            &new_plan("large", &[], on("2024-02-15")),
            &cx,
            "2024-02-15",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-12.41", // 30.00 x 15/29 x 0.8 = 12.4138 -> 12.41
                "20.69",  // 50.00 x 15/29 x 0.8 = 20.6897 -> 20.69
            ]
        );
        // Period 3 (March): the discount is over.
        let mar = invoices(&run_until(&out.contract, &cx, "2024-03-01"));
        assert_eq!(amounts(&mar[0]), ["50.00"]);
    }

    #[test]
    fn an_amount_discount_is_spread_over_the_in_advance_charges() {
        let cat = with_discounts();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let sub = signup_with(&cx, "five-off", "2024-03-01");
        assert_eq!(amounts(&sub.invoices[0]), ["30.00", "-5.00"]);
        let out = change(
            &sub.contract,
            &new_plan("large", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-12.90", // (30.00 - 5.00) x 16/31 = 12.9032 -> 12.90
                "23.23",  // (50.00 - 5.00) x 16/31 = 23.2258 -> 23.23
            ]
        );
        let renewal = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&renewal[0]), ["50.00", "-5.00"]);
    }

    #[test]
    fn an_amount_discount_takes_its_amount_once_per_period() {
        let cat = with_discounts();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let mut req = request("care", Cycle::Month);
        req.selection.discount = Some("five-off".into());
        let sub = subscribe(&req, &cx, ts("2024-03-01")).unwrap();
        assert_eq!(amounts(&sub.invoices[0]), ["30.00", "-5.00"]);
        let inv = invoices(&run_until(&sub.contract, &cx, "2024-04-01"));
        assert_eq!(
            amounts(&inv[0]),
            [
                "10.00", // March's support, in arrears
                "30.00", // April's base, in advance
                "-5.00", // 5.00 off April's in-advance charges, nothing more
            ]
        );
        // 10.00 + 30.00 - 5.00 = 35.00
        assert_eq!(inv[0].net.to_string(), "35.00");
    }
}

/// Invoice totals: tax, credit balance, rounding mode.
mod totals {
    use super::*;

    #[test]
    fn tax_is_computed_on_the_net_of_each_invoice() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s)
            .unwrap()
            .with_tax_rate(d("19"));
        let sub = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01");
        let first = &sub.invoices[0];
        assert_eq!(first.tax.to_string(), "5.70"); // 30.00 x 19%
        assert_eq!(first.gross.to_string(), "35.70");
        assert_eq!(first.amount_due.to_string(), "35.70");
        let inv = change_invoice(
            &sub.contract,
            &new_plan("large", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(amounts(&inv), ["-15.48", "25.81"]);
        assert_eq!(inv.net.to_string(), "10.33"); // -15.48 + 25.81
        assert_eq!(inv.tax.to_string(), "1.96"); // 10.33 x 19% = 1.9627 -> 1.96
        assert_eq!(inv.gross.to_string(), "12.29"); // 10.33 + 1.96
        assert_eq!(inv.amount_due.to_string(), "12.29");
    }

    #[test]
    fn a_downgrade_credit_is_consumed_by_the_next_renewal() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "large", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = change(
            &c,
            &allow_downgrade(new_plan("small", &[], on("2024-03-16"))),
            &cx,
            "2024-03-16",
        );
        let inv = out.invoice.unwrap();
        // -25.81 + 15.48 = -10.33
        assert_eq!(inv.credit_added.to_string(), "10.33");
        let balances = BTreeMap::from([(Currency::Usd, inv.credit_added)]);
        let cx2 = BillingContext::new(&cat, &s)
            .unwrap()
            .with_balances(balances);
        let renewals = invoices(&run_until(&out.contract, &cx2, "2024-05-01"));
        assert_eq!(renewals.len(), 2);
        // Apr 1: 30.00, of which 10.33 from the balance: 19.67 due.
        assert_eq!(amounts(&renewals[0]), ["30.00"]);
        assert_eq!(renewals[0].credit_applied.to_string(), "10.33");
        assert_eq!(renewals[0].amount_due.to_string(), "19.67");
        // May 1: the balance is spent.
        assert_eq!(renewals[1].credit_applied.to_string(), "0.00");
        assert_eq!(renewals[1].amount_due.to_string(), "30.00");
    }

    #[test]
    fn half_even_rounding_changes_a_half_cent_line() {
        let cat = Cat::new()
            .flat_plan("odd", Currency::Usd, Cycle::Month, "10.05")
            .flat_plan("large", Currency::Usd, Cycle::Month, "20.00")
            .build();
        // Apr 16 .. May 1 = 15 of April's 30 days: 10.05 x 15/30 = 5.025 exactly.
        let credit_with = |rounding: Rounding| {
            let s = Settings {
                rounding,
                ..day_settings()
            };
            let cx = BillingContext::new(&cat, &s).unwrap();
            let c = signup(&cx, "odd", Currency::Usd, Cycle::Month, &[], "2024-04-01").contract;
            amounts(&change_invoice(
                &c,
                &new_plan("large", &[], on("2024-04-16")),
                &cx,
                "2024-04-16",
            ))
        };
        // 5.025 -> 5.02 to even (2 is even); 20.00 x 15/30 = 10.00
        assert_eq!(credit_with(Rounding::HalfEven), ["-5.02", "10.00"]);
        // 5.025 -> 5.03 away from zero
        assert_eq!(credit_with(Rounding::HalfAwayFromZero), ["-5.03", "10.00"]);
    }
}

/// Proration options: none, no interim invoice, and the cap on credits.
mod proration_options {
    use super::*;

    #[test]
    fn proration_none_bills_the_new_plan_from_the_next_period() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let mut req = new_plan("large", &[], on("2024-03-16"));
        req.proration = Proration::None;
        let out = change(&c, &req, &cx, "2024-03-16");
        assert!(out.invoice.is_none());
        assert_eq!(out.contract.config.plan_slug, "large");
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&inv[0]), ["50.00"]);
    }

    #[test]
    fn without_interim_billing_the_lines_go_on_the_next_renewal() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let mut req = new_plan("large", &[], on("2024-03-16"));
        req.invoice_now = false;
        let out = change(&c, &req, &cx, "2024-03-16");
        assert!(out.invoice.is_none());
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(inv.len(), 1);
        assert_eq!(
            amounts(&inv[0]),
            [
                "-15.48", // 30.00 x 16/31 = 15.4839 -> 15.48
                "25.81",  // 50.00 x 16/31 = 25.8065 -> 25.81
                "50.00",  // April
            ]
        );
        // -15.48 + 25.81 + 50.00 = 60.33
        assert_eq!(inv[0].net.to_string(), "60.33");
    }

    #[test]
    fn an_item_not_billed_this_period_gets_no_credit() {
        let cat = Cat::new()
            .feature("base", FeatureKind::Flat)
            .feature("extra", FeatureKind::Flat)
            .flat_plan("solo", Currency::Usd, Cycle::Month, "30.00")
            .plan(
                "duo",
                vec![(
                    Currency::Usd,
                    Cycle::Month,
                    vec![("base", flat("30.00")), ("extra", flat("20.00"))],
                )],
            )
            .build();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "solo", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        // Switched without proration: `extra` is not billed in March.
        let mut req = new_plan("duo", &[], on("2024-03-02"));
        req.proration = Proration::None;
        let out = change(&c, &req, &cx, "2024-03-02");
        assert!(out.invoice.is_none());
        let cancelled = cancel(&out.contract, CancelMode::Now, &cx, ts("2024-03-16")).unwrap();
        // base: 30.00 x 16/31 = 15.4839 -> 15.48; extra: nothing was paid, nothing is credited.
        assert_eq!(amounts(&cancelled.invoice.unwrap()), ["-15.48"]);
    }
}

/// Currency changes take effect only at a period boundary.
mod currency {
    use super::*;

    /// `intl` in usd (base 30.00, support 10.00 in arrears, api 0.01) and eur (base 28.00,
    /// support 9.00 in arrears, api 0.01).
    fn intl() -> Catalog {
        let set = |cur: Currency, base: &str, support: &str| {
            (
                cur,
                Cycle::Month,
                vec![
                    ("base", flat(base)),
                    ("support", arrears(flat(support))),
                    ("api", unit("0.01")),
                ],
            )
        };
        Cat::new()
            .feature("base", FeatureKind::Flat)
            .feature("support", FeatureKind::Flat)
            .feature("api", FeatureKind::Usage)
            .plan(
                "intl",
                vec![
                    set(Currency::Usd, "30.00", "10.00"),
                    set(Currency::Eur, "28.00", "9.00"),
                ],
            )
            .build()
    }

    #[test]
    fn an_immediate_currency_change_is_refused() {
        let cat = intl();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "intl", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let err = refused(
            &c,
            &new_plan_in("intl", Some(Currency::Eur), None, &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        assert_eq!(err.code(), "currency_change_requires_next_cycle");
    }

    #[test]
    fn at_next_cycle_the_old_currency_is_closed_and_the_renewal_is_in_the_new_one() {
        let cat = intl();
        let s = day_settings();
        let recs = [usage("api", 100, "2024-03-20", false)];
        let cx = BillingContext::new(&cat, &s).unwrap().with_usage(&recs);
        let sub = signup(&cx, "intl", Currency::Usd, Cycle::Month, &[], "2024-03-01");
        assert_eq!(amounts(&sub.invoices[0]), ["30.00"]);
        let out = change(
            &sub.contract,
            &new_plan_in(
                "intl",
                Some(Currency::Eur),
                None,
                &[],
                Activation::NextCycle,
            ),
            &cx,
            "2024-03-16",
        );
        assert!(out.scheduled);
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(inv.len(), 2);
        // Closing usd invoice: March's support and usage.
        assert_eq!(inv[0].currency, Currency::Usd);
        assert_eq!(
            amounts(&inv[0]),
            [
                "10.00", // support 10.00 x 31/31
                "1.00",  // 100 calls x 0.01
            ]
        );
        // The renewal in eur.
        assert_eq!(inv[1].currency, Currency::Eur);
        assert_eq!(inv[1].reason, InvoiceReason::Renewal);
        assert_eq!(amounts(&inv[1]), ["28.00"]);
    }
}

/// Dates outside what can be applied.
mod dates {
    use super::*;

    #[test]
    fn a_date_before_the_current_period_is_refused() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let c = run_until(&c, &cx, "2024-04-01").contract;
        // The current period is [Apr 1, May 1); Mar 20 lies in the one before.
        let err = refused(
            &c,
            &new_plan("large", &[], on("2024-03-20")),
            &cx,
            "2024-04-05",
        );
        assert_eq!(err.code(), "date_out_of_range");
        assert_eq!(err.param(), "upgrade_configuration.activation.upgrade_date");
    }
}

/// Scheduled changes form a timeline.
mod timeline {
    use super::*;

    fn team() -> Catalog {
        Cat::new()
            .seat_plan("team", Currency::Usd, Cycle::Month, "10.00")
            .seat_plan("team-pro", Currency::Usd, Cycle::Month, "12.00")
            .build()
    }

    /// A `team` contract (2 seats from Mar 1) with three changes made on Mar 10: `a` (5 seats on
    /// Apr 15), `b` (4 seats at next cycle) and `c` (6 seats on Apr 15).
    fn with_three(cx: &BillingContext) -> Contract {
        let c = signup(
            cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-01",
        )
        .contract;
        let c = change_as(
            &c,
            &units(&[("seats", 5)], on("2024-04-15")),
            cx,
            "2024-03-10",
            "a",
        )
        .contract;
        let c = change_as(
            &c,
            &units(&[("seats", 4)], Activation::NextCycle),
            cx,
            "2024-03-10",
            "b",
        )
        .contract;
        change_as(
            &c,
            &units(&[("seats", 6)], on("2024-04-15")),
            cx,
            "2024-03-10",
            "c",
        )
        .contract
    }

    fn ids(c: &Contract) -> Vec<String> {
        c.timeline().iter().map(|s| s.id.clone()).collect()
    }

    #[test]
    fn ordered_by_instant_then_by_creation() {
        let cat = team();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = with_three(&cx);
        assert_eq!(ids(&c), ["b", "a", "c"]);
        assert_eq!(
            c.timeline()
                .iter()
                .map(|s| s.effective_at)
                .collect::<Vec<_>>(),
            [ts("2024-04-01"), ts("2024-04-15"), ts("2024-04-15")]
        );
    }

    #[test]
    fn cancelled_one_by_one() {
        let cat = team();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = with_three(&cx);
        let c = cancel_scheduled_change(&c, "a").unwrap();
        assert_eq!(ids(&c), ["b", "c"]);
        let c = cancel_scheduled_change(&c, "b").unwrap();
        assert_eq!(ids(&c), ["c"]);
        let e = cancel_scheduled_change(&c, "b").unwrap_err();
        assert_eq!((e.code(), e.param()), ("not_found", "change_id"));
        let c = cancel_scheduled_change(&c, "c").unwrap();
        assert!(c.timeline().is_empty());
        // Nothing left to apply: April renews 2 seats.
        let inv = invoices(&run_until(&c, &cx, "2024-04-30"));
        assert_eq!(inv.len(), 1);
        assert_eq!(amounts(&inv[0]), ["20.00"]);
    }

    #[test]
    fn they_apply_in_timeline_order() {
        let cat = team();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = with_three(&cx);
        let adv = run_until(&c, &cx, "2024-04-15");
        let inv = invoices(&adv);
        assert_eq!(inv.len(), 3);
        // Apr 1: `b` at the boundary, then the renewal: 4 x 10.00.
        assert_eq!(amounts(&inv[0]), ["40.00"]);
        // Apr 15: `a`, 16 of April's 30 days remain (Apr 15 .. May 1).
        assert_eq!(
            amounts(&inv[1]),
            [
                "-21.33", // 4 x 10.00 x 16/30 = 21.3333 -> 21.33
                "26.67",  // 5 x 10.00 x 16/30 = 26.6667 -> 26.67
            ]
        );
        // Apr 15: then `c`.
        assert_eq!(
            amounts(&inv[2]),
            [
                "-26.67", // 5 x 10.00 x 16/30 = 26.6667 -> 26.67
                "32.00",  // 6 x 10.00 x 16/30 = 32.00
            ]
        );
        assert_eq!(seats_of(&adv.contract), "6");
        assert!(adv.contract.timeline().is_empty());
    }

    #[test]
    fn an_immediate_change_leaves_the_scheduled_ones_in_place() {
        let cat = team();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = with_three(&cx);
        let out = change_as(
            &c,
            &units(&[("seats", 3)], on("2024-03-16")),
            &cx,
            "2024-03-16",
            "now",
        );
        assert_eq!(
            amounts(&out.invoice.unwrap()),
            [
                "-10.32", // 2 x 10.00 x 16/31 = 10.3226 -> 10.32
                "15.48",  // 3 x 10.00 x 16/31 = 15.4839 -> 15.48
            ]
        );
        assert_eq!(ids(&out.contract), ["b", "a", "c"]);
        // `b` still applies at the renewal: 4 x 10.00.
        let inv = invoices(&run_until(&out.contract, &cx, "2024-04-01"));
        assert_eq!(amounts(&inv[0]), ["40.00"]);
    }

    #[test]
    fn a_unit_count_change_applies_to_the_plan_in_force_when_it_fires() {
        let cat = team();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-01",
        )
        .contract;
        let c = change_as(
            &c,
            &new_plan("team-pro", &[("seats", 2)], Activation::NextCycle),
            &cx,
            "2024-03-10",
            "plan",
        )
        .contract;
        let c = change_as(
            &c,
            &units(&[("seats", 5)], on("2024-04-16")),
            &cx,
            "2024-03-10",
            "seats",
        )
        .contract;
        let adv = run_until(&c, &cx, "2024-04-16");
        let inv = invoices(&adv);
        assert_eq!(amounts(&inv[0]), ["24.00"]); // Apr 1 on team-pro: 2 x 12.00
        // Apr 16 .. May 1 = 15 of 30 days, at team-pro's 12.00 a seat.
        assert_eq!(
            amounts(&inv[1]),
            [
                "-12.00", // 2 x 12.00 x 15/30
                "30.00",  // 5 x 12.00 x 15/30
            ]
        );
        assert_eq!(adv.contract.config.plan_slug, "team-pro");
        assert_eq!(seats_of(&adv.contract), "5");
    }

    #[test]
    fn a_next_cycle_change_follows_a_moved_billing_date() {
        let cat = team();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(
            &cx,
            "team",
            Currency::Usd,
            Cycle::Month,
            &[("seats", 2)],
            "2024-03-01",
        )
        .contract;
        let c = change_as(
            &c,
            &units(&[("seats", 4)], Activation::NextCycle),
            &cx,
            "2024-03-05",
            "b",
        )
        .contract;
        let c = change(&c, &billing_date("2024-03-20", false), &cx, "2024-03-10").contract;
        assert_eq!(c.timeline()[0].effective_at, ts("2024-03-20"));
        let inv = invoices(&run_until(&c, &cx, "2024-03-20"));
        assert_eq!(inv[0].issued_at, ts("2024-03-20"));
        assert_eq!(amounts(&inv[0]), ["40.00"]); // 4 x 10.00
    }
}

/// Cancellation now, at the period end, or at a date.
mod cancellation {
    use super::*;

    /// `care`: base 30.00 in advance, support 10.00 in arrears, api 0.01 per call.
    fn care() -> Catalog {
        Cat::new()
            .feature("base", FeatureKind::Flat)
            .feature("support", FeatureKind::Flat)
            .feature("api", FeatureKind::Usage)
            .plan(
                "care",
                vec![(
                    Currency::Usd,
                    Cycle::Month,
                    vec![
                        ("base", flat("30.00")),
                        ("support", arrears(flat("10.00"))),
                        ("api", unit("0.01")),
                    ],
                )],
            )
            .build()
    }

    #[test]
    fn now_credits_the_unused_part() {
        let cat = care();
        let s = day_settings();
        let recs = [usage("api", 100, "2024-03-05", false)];
        let cx = BillingContext::new(&cat, &s).unwrap().with_usage(&recs);
        let c = signup(&cx, "care", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = cancel(&c, CancelMode::Now, &cx, ts("2024-03-16")).unwrap();
        assert_eq!(out.effective_at, ts("2024-03-16"));
        let inv = out.invoice.unwrap();
        assert_eq!(inv.reason, InvoiceReason::Cancellation);
        assert_eq!(
            amounts(&inv),
            [
                "4.84",   // support 10.00 x 15/31 = 4.8387 -> 4.84 (Mar 1 .. Mar 16)
                "1.00",   // 100 calls x 0.01
                "-15.48", // base 30.00 x 16/31 = 15.4839 -> 15.48
            ]
        );
        // 4.84 + 1.00 - 15.48 = -9.64
        assert_eq!(inv.net.to_string(), "-9.64");
        assert_eq!(inv.credit_added.to_string(), "9.64");
        assert_eq!(out.contract.status, ContractStatus::Canceled);
        assert_eq!(run_until(&out.contract, &cx, "2024-06-01").steps.len(), 0);
    }

    #[test]
    fn at_period_end_bills_arrears_and_usage_without_credit() {
        let cat = care();
        let s = day_settings();
        let recs = [usage("api", 100, "2024-03-20", false)];
        let cx = BillingContext::new(&cat, &s).unwrap().with_usage(&recs);
        let c = signup(&cx, "care", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = cancel(&c, CancelMode::AtPeriodEnd, &cx, ts("2024-03-16")).unwrap();
        assert!(out.invoice.is_none());
        assert_eq!(out.effective_at, ts("2024-04-01"));
        let adv = run_until(&out.contract, &cx, "2024-06-01");
        assert_eq!(adv.steps.len(), 1);
        assert_eq!(adv.steps[0].kind, StepKind::Cancellation);
        let inv = invoices(&adv);
        assert_eq!(
            amounts(&inv[0]),
            [
                "10.00", // support 10.00 x 31/31
                "1.00",  // 100 calls x 0.01
            ]
        );
        assert_eq!(adv.contract.status, ContractStatus::Canceled);
    }

    #[test]
    fn at_a_date_in_the_next_period_renews_first() {
        let cat = care();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "care", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = cancel(&c, CancelMode::At(ts("2024-04-16")), &cx, ts("2024-03-16")).unwrap();
        let inv = invoices(&run_until(&out.contract, &cx, "2024-06-01"));
        assert_eq!(inv.len(), 2);
        // Apr 1: March's support (10.00 x 31/31) and April's base.
        assert_eq!(amounts(&inv[0]), ["10.00", "30.00"]);
        // Apr 16: 15 of April's 30 days on each side.
        assert_eq!(inv[1].reason, InvoiceReason::Cancellation);
        assert_eq!(
            amounts(&inv[1]),
            [
                "5.00",   // support 10.00 x 15/30 (Apr 1 .. Apr 16)
                "-15.00", // base 30.00 x 15/30 (Apr 16 .. May 1)
            ]
        );
    }

    #[test]
    fn at_a_date_credits_from_that_date() {
        let cat = care();
        let s = day_settings();
        let recs = [usage("api", 100, "2024-03-05", false)];
        let cx = BillingContext::new(&cat, &s).unwrap().with_usage(&recs);
        let c = signup(&cx, "care", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = cancel(&c, CancelMode::At(ts("2024-03-21")), &cx, ts("2024-03-16")).unwrap();
        assert!(out.invoice.is_none());
        assert_eq!(out.effective_at, ts("2024-03-21"));
        let inv = invoices(&run_until(&out.contract, &cx, "2024-06-01"));
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].issued_at, ts("2024-03-21"));
        assert_eq!(
            amounts(&inv[0]),
            [
                "6.45",   // support 10.00 x 20/31 = 6.4516 -> 6.45 (Mar 1 .. Mar 21)
                "1.00",   // 100 calls x 0.01
                "-10.65", // base 30.00 x 11/31 = 10.6452 -> 10.65 (Mar 21 .. Apr 1)
            ]
        );
    }
}

/// How a contract is written to storage (on every renewal): compact, and read back exactly.
mod stored_form {
    use super::*;

    #[test]
    fn a_contract_is_written_compactly_and_read_back_exactly() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let text = serde_json::to_string(&c).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The current phase's configuration is `config`, written once; a regular period's one
        // segment is the period itself; nothing at its default is written.
        assert_eq!(
            v["phases"],
            serde_json::json!([{"start": "2024-03-01T00:00:00Z"}])
        );
        assert_eq!(
            v["period"],
            serde_json::json!({"start": "2024-03-01T00:00:00Z", "end": "2024-04-01T00:00:00Z"})
        );
        assert!(!text.contains("null") && !text.contains("false"), "{text}");
        assert_eq!(serde_json::from_str::<Contract>(&text).unwrap(), c);

        // After an upgrade the replaced phase keeps its own configuration.
        let out = change(
            &c,
            &new_plan("large", &[], on("2024-03-16")),
            &cx,
            "2024-03-16",
        );
        let text = serde_json::to_string(&out.contract).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["phases"][0]["config"]["plan_slug"], "small");
        assert_eq!(v["phases"][0]["end"], "2024-03-16T00:00:00Z");
        assert_eq!(v["phases"][1].get("config"), None);
        assert_eq!(v["config"]["plan_slug"], "large");
        assert_eq!(
            serde_json::from_str::<Contract>(&text).unwrap(),
            out.contract
        );
    }

    #[test]
    fn a_renewal_moves_only_the_progress_and_the_parts_read_back() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        let out = run_until(&c, &cx, "2024-04-01");
        let renewed = &out.contract;
        assert_eq!(out.steps.len(), 1);
        // The renewal moved the period and what was paid for it, not the terms.
        assert!(renewed.terms() == c.terms());
        assert_ne!(renewed.period, c.period);
        let terms = serde_json::to_string(&renewed.terms()).unwrap();
        let progress = serde_json::to_string(&renewed.progress()).unwrap();
        assert_eq!(terms, serde_json::to_string(&c.terms()).unwrap());
        let p: serde_json::Value = serde_json::from_str(&progress).unwrap();
        assert_eq!(
            p,
            serde_json::json!({
                "period": {"start": "2024-04-01T00:00:00Z", "end": "2024-05-01T00:00:00Z"},
                "period_idx": 2,
                "arrears_billed_until": "2024-04-01T00:00:00Z",
                "usage_billed_until": "2024-04-01T00:00:00Z",
                // small: 30.00 for the whole of April, kept to 12 decimals.
                "paid": {"base/flat": [{"from": "2024-04-01T00:00:00Z",
                    "to": "2024-05-01T00:00:00Z", "amount": "30.000000000000"}]}
            })
        );
        // The terms hold none of the progress' fields, and the two joined are the contract.
        let t: serde_json::Value = serde_json::from_str(&terms).unwrap();
        for k in p.as_object().unwrap().keys() {
            assert_eq!(t.get(k), None, "{k}");
        }
        let joined = tally_core::contract::join_stored_parts(&terms, &progress);
        assert_eq!(&serde_json::from_str::<Contract>(&joined).unwrap(), renewed);

        // An upgrade moves the terms (a new phase and configuration).
        let up = change(
            renewed,
            &new_plan("large", &[], on("2024-04-16")),
            &cx,
            "2024-04-16",
        );
        assert!(up.contract.terms() != renewed.terms());
        let terms = serde_json::to_string(&up.contract.terms()).unwrap();
        let progress = serde_json::to_string(&up.contract.progress()).unwrap();
        let joined = tally_core::contract::join_stored_parts(&terms, &progress);
        assert_eq!(
            serde_json::from_str::<Contract>(&joined).unwrap(),
            up.contract
        );
    }

    #[test]
    fn terms_differ_when_any_of_their_fields_does() {
        let cat = small_large();
        let s = day_settings();
        let cx = BillingContext::new(&cat, &s).unwrap();
        let c = signup(&cx, "small", Currency::Usd, Cycle::Month, &[], "2024-03-01").contract;
        type Edit = fn(&mut Contract);
        let edits: Vec<(&str, Edit)> = vec![
            ("customer_id", |c| c.customer_id.push('x')),
            ("status", |c| c.status = ContractStatus::Canceled),
            ("trial_end", |c| c.trial_end = Some(ts("2024-03-15"))),
            ("config", |c| {
                std::sync::Arc::make_mut(&mut c.config).plan_slug.push('x')
            }),
            ("phases", |c| c.phases[0].end = Some(ts("2024-03-15"))),
            ("next_seq", |c| c.next_seq += 1),
            ("cancel_at", |c| c.cancel_at = Some(ts("2024-04-01"))),
            ("cancel_at_period_end", |c| c.cancel_at_period_end = true),
            ("ended_at", |c| c.ended_at = Some(ts("2024-04-01"))),
        ];
        for (name, edit) in edits {
            let mut d = c.clone();
            edit(&mut d);
            assert!(d.terms() != c.terms(), "{name}");
        }
        // The progress' fields are not terms.
        let mut d = c.clone();
        d.period_idx += 1;
        d.paid.clear();
        d.usage_billed_until = None;
        assert!(d.terms() == c.terms());
    }

    #[test]
    fn a_spelled_out_contract_reads_back() {
        // Every field written, defaults included (how contracts were first stored).
        let config = r#"{"plan_id": "Plan_small", "plan_slug": "small", "pricing_id": "Pric_small",
            "currency": "usd", "cycle": "month", "features": {"base": {"slug": "base",
            "kind": "flat", "timing": "in_advance", "price": null, "flat_fee": "30.00",
            "tiers": null, "tier_mode": "graduated", "optional": false, "purchased": true,
            "quantity": "0"}}, "discount": null}"#;
        let text = format!(
            r#"{{"id": "Cont_t", "customer_id": "Cust_t", "status": "active",
            "created_at": "2024-03-01T00:00:00Z", "activation": "2024-03-01T00:00:00Z",
            "free_trial_days": null, "trial_end": null,
            "schedule": {{"anchor": "2024-03-01T00:00:00Z", "cycle": "month"}},
            "period": {{"start": "2024-03-01T00:00:00Z", "end": "2024-04-01T00:00:00Z",
              "segments": [{{"span": {{"start": "2024-03-01T00:00:00Z", "end": "2024-04-01T00:00:00Z"}},
                "nominal": {{"start": "2024-03-01T00:00:00Z", "end": "2024-04-01T00:00:00Z"}}}}]}},
            "period_idx": 1, "config": {config},
            "phases": [{{"start": "2024-03-01T00:00:00Z", "end": null, "config": {config}}}],
            "scheduled": [], "next_seq": 0, "cancel_at": null, "cancel_at_period_end": false,
            "ended_at": null, "arrears_billed_until": "2024-03-01T00:00:00Z",
            "usage_billed_until": "2024-03-01T00:00:00Z",
            "paid": {{"base/flat": [{{"from": "2024-03-01T00:00:00Z", "to": "2024-04-01T00:00:00Z",
              "amount": "30.000000000000"}}]}}, "carried": []}}"#
        );
        let c: Contract = serde_json::from_str(&text).unwrap();
        let base = &c.config.features["base"];
        assert_eq!(
            (base.flat_fee, base.price, base.purchased, base.optional),
            (Some(rust_decimal::Decimal::new(3000, 2)), None, true, false)
        );
        assert_eq!(c.phases.len(), 1);
        assert_eq!(c.phases[0].config, c.config);
        let period = c.period.clone().unwrap();
        assert_eq!(period.segments.len(), 1);
        assert_eq!(period.segments[0].span, period.segments[0].nominal);
        assert_eq!(period.segments[0].span.end, ts("2024-04-01"));
        // Written again it is compact, and reads back the same contract.
        let compact = serde_json::to_string(&c).unwrap();
        assert!(compact.len() < text.len() / 2, "{compact}");
        assert_eq!(serde_json::from_str::<Contract>(&compact).unwrap(), c);
    }
}

/// Two renewals due at once: each step carries its own invoice, not the ones before it (the bill
/// run writes each step's events from them).
#[test]
fn each_step_of_an_advance_carries_its_own_invoice() {
    let cat = small_large();
    let settings = day_settings();
    let cx = BillingContext::new(&cat, &settings).unwrap();
    let c = subscribe(&request("small", Cycle::Month), &cx, ts("2024-03-01"))
        .unwrap()
        .contract;
    let out = run_until(&c, &cx, "2024-05-01");
    // Renewals on Apr 1 and May 1, each 30.00 (the small plan's flat fee) for its own month.
    assert_eq!(out.steps.len(), 2);
    for (step, start) in out.steps.iter().zip(["2024-04-01", "2024-05-01"]) {
        assert_eq!(step.invoices.len(), 1, "{start}");
        assert_eq!(step.invoices[0].net.to_string(), "30.00");
        assert_eq!(step.invoices[0].lines[0].period_start, ts(start));
    }
}
