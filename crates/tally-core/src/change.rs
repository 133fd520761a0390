//! Change planning (seed 000): one function, [`plan_change`], computes the full outcome of a
//! change at an instant (the new phases, the invoice it issues now, the scheduled changes after
//! it). A preview and an execution both call it, so they cannot differ.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::billing::{
    Run, anchor_schedule, bill_arrears, bill_usage, charge_between, charge_period, credit_unused,
    switch_config,
};
use crate::calendar::{BillingPeriod, Schedule};
use crate::config::{Configuration, Params, PlanSelection, resolve_discount};
use crate::contract::{
    BillingContext, ChangeKind, Contract, ContractStatus, Proration, ScheduledChange,
};
use crate::error::CoreError;
use crate::invoice::{InvoiceDraft, InvoiceReason};

/// When a change takes effect (seed 000's `UpgradeActivation`, plus `now` for dialects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "upgrade_date", rename_all = "snake_case")]
pub enum Activation {
    /// At the instant of the request.
    Now,
    /// At the end of the current period, before its renewal is invoiced.
    NextCycle,
    /// At an instant: inside the current period it is prorated; beyond it, scheduled.
    Date(Timestamp),
}

/// A change as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    /// What changes.
    pub change: ChangeKind,
    /// When.
    pub activation: Activation,
    /// Allow a downgrade to take effect mid-cycle.
    pub downgrade_allowed: bool,
    /// Prorate or not.
    pub proration: Proration,
    /// Invoice the change now (`true`) or carry its lines to the next regular invoice.
    pub invoice_now: bool,
}

impl ChangeRequest {
    /// A change with seed 000's defaults: prorated, invoiced now, downgrades only at cycle end.
    pub fn new(change: ChangeKind, activation: Activation) -> Self {
        ChangeRequest {
            change,
            activation,
            downgrade_allowed: false,
            proration: Proration::CreateProrations,
            invoice_now: true,
        }
    }
}

/// Everything a change does, computed without side effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutcome {
    /// The contract as it is after the change (new phase, or the change added to its timeline).
    pub contract: Contract,
    /// The invoice the change issues now, if any.
    pub invoice: Option<InvoiceDraft>,
    /// When the change takes effect.
    pub effective_at: Timestamp,
    /// True when the change waits in the timeline.
    pub scheduled: bool,
    /// The id of the scheduled change, when scheduled.
    pub scheduled_change_id: Option<String>,
    /// True when the change lowers the recurring price per unit of time.
    pub is_downgrade: bool,
}

/// The configuration a change produces from `current` at instant `at`, and whether it names a
/// new discount.
pub(crate) fn resolve_change(
    current: &Configuration,
    change: &ChangeKind,
    cx: &BillingContext,
    at: Timestamp,
    first_period: u32,
) -> Result<Configuration, CoreError> {
    let p = Params::UPGRADE;
    let mut new = match change {
        ChangeKind::NewPlan {
            plan,
            pricing,
            currency,
            cycle,
            unit_counts,
            overrides,
            discount,
        } => {
            let sel = PlanSelection {
                plan: plan.clone(),
                pricing: pricing.clone(),
                currency: Some(currency.unwrap_or(current.currency)),
                cycle: Some(cycle.unwrap_or(current.cycle)),
                unit_counts: unit_counts.clone(),
                overrides: overrides.clone(),
                discount: discount.clone(),
            };
            let mut c = Configuration::resolve(cx.catalog, &sel, at, first_period, p)?;
            if discount.is_none() {
                // The contract's discount carries over a plan change, if its currency still fits.
                c.discount = current
                    .discount
                    .clone()
                    .filter(|d| match &d.discount.value {
                        crate::catalog::DiscountValue::AmountOff { currency, .. } => {
                            *currency == c.currency
                        }
                        crate::catalog::DiscountValue::PercentOff(_) => true,
                    });
            }
            c
        }
        ChangeKind::ChangeUnitCount {
            unit_counts,
            purchased,
            discount: _,
        } => {
            let mut c = current.clone();
            c.apply_unit_counts(unit_counts, p.unit_counts)?;
            for (slug, b) in purchased {
                let param = format!("upgrade_configuration.unit_configuration.{slug}.purchased");
                let f = c
                    .features
                    .get_mut(slug)
                    .ok_or_else(|| CoreError::UnknownFeature {
                        param: param.clone(),
                        slug: slug.clone(),
                    })?;
                if !f.optional && !*b {
                    return Err(CoreError::invalid(
                        param,
                        "true (only optional features can be removed)",
                        b,
                    ));
                }
                f.purchased = *b || !f.optional;
            }
            c
        }
        ChangeKind::ChangeBillingDate { .. } => current.clone(),
    };
    let discount = match change {
        ChangeKind::ChangeUnitCount { discount, .. }
        | ChangeKind::ChangeBillingDate { discount, .. } => discount.as_ref(),
        ChangeKind::NewPlan { .. } => None,
    };
    if let Some(key) = discount {
        new.discount = Some(resolve_discount(
            cx.catalog,
            key,
            new.currency,
            first_period,
            p.discount,
        )?);
    }
    Ok(new)
}

fn names_discount(change: &ChangeKind) -> bool {
    match change {
        ChangeKind::NewPlan { discount, .. }
        | ChangeKind::ChangeUnitCount { discount, .. }
        | ChangeKind::ChangeBillingDate { discount, .. } => discount.is_some(),
    }
}

fn is_boundary(c: &Contract, t: Timestamp, cx: &BillingContext) -> Result<bool, CoreError> {
    if c.period.as_ref().and_then(|p| p.end) == Some(t) {
        return Ok(true);
    }
    match &c.schedule {
        Some(s) if s.cycle.is_recurring() => Ok(s.period_containing(t, &cx.tz)?.start == t),
        _ => Ok(false),
    }
}

/// Plans a change to `c` made at `now`, with `change_id` as the id it gets if scheduled (and as
/// part of its invoice's step key). Nothing is written: the caller stores the outcome to execute
/// it, or shows it as a preview.
///
/// # Errors
/// A canceled contract; a date before the current period (or before the last change); a
/// mid-cycle downgrade without `downgrade_allowed`; a currency change off a period boundary; a
/// billing date not after now; every catalog error of the new configuration.
///
/// # Example
/// ```
/// use tally_core::prelude::*;
/// # let (catalog, settings) = tally_core::examples::basic_catalog();
/// let cx = BillingContext::new(&catalog, &settings).unwrap();
/// let signup = subscribe(&SignupRequest::new("Cont_1", "Cust_1", "basic", Currency::Usd, Cycle::Month)
///     .seats("seats", 5), &cx, "2024-03-01T00:00:00Z".parse().unwrap()).unwrap();
/// // 5 -> 10 seats on Mar 15: 17 of 31 days remain.
/// let req = ChangeRequest::new(
///     ChangeKind::ChangeUnitCount { unit_counts: [("seats".to_string(), 10.into())].into(), purchased: Default::default(), discount: None },
///     Activation::Date("2024-03-15T00:00:00Z".parse().unwrap()),
/// );
/// let out = plan_change(&signup.contract, &req, &cx, "2024-03-15T00:00:00Z".parse().unwrap(), "chg_1").unwrap();
/// let inv = out.invoice.unwrap();
/// // support in arrears for Mar 1-14: 50.00 x 14/31 = 22.58
/// // unused: platform -(10.00 x 17/31) = -5.48, seats -(5 x 5.00 x 17/31) = -13.71
/// // rest of March: platform 10.00 x 17/31 = 5.48, seats 10 x 5.00 x 17/31 = 27.42
/// let amounts: Vec<String> = inv.lines.iter().map(|l| l.amount.to_string()).collect();
/// assert_eq!(amounts, ["22.58", "-5.48", "-13.71", "5.48", "27.42"]);
/// // 22.58 - 5.48 - 13.71 + 5.48 + 27.42 = 36.29
/// assert_eq!(inv.net.to_string(), "36.29");
/// ```
pub fn plan_change(
    c: &Contract,
    req: &ChangeRequest,
    cx: &BillingContext,
    now: Timestamp,
    change_id: &str,
) -> Result<ChangeOutcome, CoreError> {
    if c.status == ContractStatus::Canceled {
        return Err(CoreError::state("", "the contract is canceled"));
    }
    if let ChangeKind::ChangeBillingDate {
        date,
        recalculate_charges,
        ..
    } = &req.change
    {
        return change_billing_date(c, req, *date, *recalculate_charges, cx, now, change_id);
    }
    let old_rate = c.config.yearly_rate()?;
    if matches!(
        c.status,
        ContractStatus::Pending | ContractStatus::Scheduled
    ) {
        // Not started: the change rewrites what will be billed from the activation.
        let at = c.activation.unwrap_or(now);
        let new = resolve_change(&c.config, &req.change, cx, at, 1)?;
        let is_downgrade = new.yearly_rate()?.cmp_exact(old_rate)?.is_lt();
        let mut out = c.clone();
        out.config = Arc::new(new);
        return Ok(ChangeOutcome {
            contract: out,
            invoice: None,
            effective_at: at,
            scheduled: false,
            scheduled_change_id: None,
            is_downgrade,
        });
    }
    let period = c
        .period
        .as_ref()
        .ok_or_else(|| CoreError::state("", "the contract has no current period"))?;
    let (t, at_end) = match req.activation {
        Activation::Now => (now, false),
        Activation::Date(d) => (d, false),
        Activation::NextCycle => (
            period.end.ok_or_else(|| {
                CoreError::state(
                    "upgrade_configuration.activation",
                    "a once/constant contract has no next cycle: use a date",
                )
            })?,
            true,
        ),
    };
    let date_param = "upgrade_configuration.activation.upgrade_date";
    if t < period.start {
        return Err(CoreError::date(
            date_param,
            format!(
                "{t} is before the current period's start {}; changes cannot be backdated across periods",
                period.start
            ),
        ));
    }
    if let Some(last) = c.phases.last()
        && t < last.start
    {
        return Err(CoreError::date(
            date_param,
            format!("{t} is before the last change, at {}", last.start),
        ));
    }
    if let Some(cancel_at) = c.cancel_at
        && t >= cancel_at
    {
        return Err(CoreError::state(
            date_param,
            format!("the contract ends at {cancel_at}, before this change would apply"),
        ));
    }
    // A date still to come waits in the timeline, even inside the current period; a date that has
    // passed (inside the current period) applies at once, prorated from that date.
    let immediate = period.end.is_none_or(|e| t < e) && t <= now;
    let idx = c.period_idx.max(1);
    let new = resolve_change(&c.config, &req.change, cx, t, idx)?;
    let is_downgrade = new.yearly_rate()?.cmp_exact(old_rate)?.is_lt();
    // Inside the trial nothing is billed, so the mid-cycle rules do not apply there; a change
    // dated after the trial is checked like any other.
    let trial =
        c.in_trial() && (immediate || c.period.as_ref().and_then(|p| p.end).is_some_and(|e| t < e));
    let boundary = !immediate && is_boundary(c, t, cx)?;
    if new.currency != c.config.currency && !trial && !boundary {
        return Err(CoreError::CurrencyChangeNotAtBoundary {
            param: "upgrade_configuration.currency".into(),
        });
    }
    if is_downgrade && !req.downgrade_allowed && !trial {
        let mid_cycle = if immediate {
            t > period.start
        } else {
            !boundary
        };
        if mid_cycle {
            return Err(CoreError::DowngradeNotAllowed {
                param: "downgrade_allowed".into(),
            });
        }
    }
    let mut out = c.clone();
    let mut run = Run::new(cx);
    if !immediate {
        out.scheduled.push(ScheduledChange {
            id: change_id.to_string(),
            effective_at: t,
            at_period_end: at_end,
            seq: out.next_seq,
            created_at: now,
            change: req.change.clone(),
            proration: req.proration,
            invoice_now: req.invoice_now,
        });
        out.next_seq += 1;
        return Ok(ChangeOutcome {
            contract: out,
            invoice: None,
            effective_at: t,
            scheduled: true,
            scheduled_change_id: Some(change_id.to_string()),
            is_downgrade,
        });
    }
    if trial {
        change_in_trial(&mut out, new, t, cx)?;
    } else {
        let key = format!("change:{}:{change_id}", c.id);
        apply_now(
            &mut out,
            &mut run,
            new,
            t,
            req.proration,
            req.invoice_now,
            names_discount(&req.change),
            key,
        )?;
    }
    Ok(ChangeOutcome {
        contract: out,
        invoice: run.invoices.pop(),
        effective_at: t,
        scheduled: false,
        scheduled_change_id: None,
        is_downgrade,
    })
}

/// A change during the free trial: it only changes what will be billed when the trial ends.
fn change_in_trial(
    c: &mut Contract,
    new: Configuration,
    t: Timestamp,
    cx: &BillingContext,
) -> Result<(), CoreError> {
    if new.cycle != c.config.cycle {
        let trial_end = c.trial_end.unwrap_or(t);
        c.schedule = Some(anchor_schedule(trial_end, new.cycle, c.alignment, cx)?);
    }
    switch_config(c, new, t);
    Ok(())
}

/// Applies a configuration at `t` inside the current period: usage and in-arrears charges of the
/// old configuration up to `t`, credit for its unused in-advance charges, and a charge for the
/// rest of the period under the new one (or a full new period when the cycle changes).
#[allow(clippy::too_many_arguments)]
fn apply_now(
    c: &mut Contract,
    run: &mut Run,
    new: Configuration,
    t: Timestamp,
    proration: Proration,
    invoice_now: bool,
    new_discount: bool,
    key: String,
) -> Result<(), CoreError> {
    let cx = run.cx;
    let mut b = run.builder(c.config.currency);
    let open = c.period.as_ref().is_some_and(|p| p.end.is_none());
    let old_end = c.period.as_ref().and_then(|p| p.end);
    let reset = new.cycle != c.config.cycle || open;
    let prorate = proration == Proration::CreateProrations;
    if prorate || reset {
        bill_usage(c, cx, &mut b, t)?;
        bill_arrears(c, cx, &mut b, t)?;
    }
    if prorate {
        credit_unused(c, cx, &mut b, t)?;
    }
    switch_config(c, new, t);
    if reset {
        let schedule = Schedule {
            anchor: t,
            cycle: c.config.cycle,
        };
        c.schedule = Some(schedule);
        c.period = Some(BillingPeriod::from_schedule(&schedule, t, &cx.tz)?);
        c.period_idx += 1;
        if new_discount && let Some(d) = Arc::make_mut(&mut c.config).discount.as_mut() {
            d.first_period = c.period_idx;
        }
        c.paid.clear();
        c.arrears_billed_until = Some(t);
        c.usage_billed_until = Some(t);
        charge_period(c, cx, &mut b)?;
        if let Some(end) = old_end {
            follow_period_end(c, end);
        }
    } else if prorate && let Some(end) = c.period.as_ref().and_then(|p| p.end) {
        charge_between(c, cx, &mut b, t, end)?;
    }
    if invoice_now {
        let currency = c.config.currency;
        run.issue(c, currency, InvoiceReason::Change, t, key, b)?;
    } else {
        c.carried.extend(b.into_lines()?);
    }
    if let Some(last) = c.phases.last_mut() {
        last.config = c.config.clone();
    }
    Ok(())
}

/// After the current period's end moved away from `old_end`, moves the changes and the
/// cancellation that were asked for "at the period end" to the new end.
fn follow_period_end(c: &mut Contract, old_end: Timestamp) {
    let Some(new_end) = c.period.as_ref().and_then(|p| p.end) else {
        return;
    };
    for sc in c.scheduled.iter_mut() {
        if sc.at_period_end && sc.effective_at == old_end {
            sc.effective_at = new_end;
        }
    }
    if c.cancel_at_period_end && c.cancel_at == Some(old_end) {
        c.cancel_at = Some(new_end);
    }
}

/// Moves the billing date: the current period now ends at `date` and later periods anchor there;
/// with `recalculate_charges` the part cut off is credited, or the part added is charged.
fn change_billing_date(
    c: &Contract,
    req: &ChangeRequest,
    date: Timestamp,
    recalc: bool,
    cx: &BillingContext,
    now: Timestamp,
    change_id: &str,
) -> Result<ChangeOutcome, CoreError> {
    let param = "upgrade_configuration.date";
    if c.status != ContractStatus::Active {
        return Err(CoreError::state(
            param,
            "the contract has not started: it has no billing date yet",
        ));
    }
    if !c.config.cycle.is_recurring() {
        return Err(CoreError::state(
            param,
            "a once/constant contract has no billing date",
        ));
    }
    if date <= now {
        return Err(CoreError::date(
            param,
            format!("the new billing date must be after now ({now})"),
        ));
    }
    let mut out = c.clone();
    let mut run = Run::new(cx);
    let schedule = Schedule {
        anchor: date,
        cycle: c.config.cycle,
    };
    if names_discount(&req.change) {
        let new = resolve_change(&c.config, &req.change, cx, now, c.period_idx.max(1))?;
        switch_config(&mut out, new, now);
    }
    if out.in_trial() {
        // The trial keeps its end; the first period after it runs to the new billing date.
        out.schedule = Some(schedule);
        return Ok(ChangeOutcome {
            contract: out,
            invoice: None,
            effective_at: now,
            scheduled: false,
            scheduled_change_id: None,
            is_downgrade: false,
        });
    }
    let old_end = out
        .period
        .as_ref()
        .and_then(|p| p.end)
        .ok_or_else(|| CoreError::state(param, "the contract has no current period"))?;
    if let Some(cancel_at) = out.cancel_at
        && !out.cancel_at_period_end
        && date > cancel_at
    {
        return Err(CoreError::state(
            param,
            format!("the contract ends at {cancel_at}, before the new billing date"),
        ));
    }
    // The new date lies within one cycle after the current period's end: a billing date moves
    // the next renewal, it does not skip periods.
    let limit = Schedule {
        anchor: old_end,
        cycle: c.config.cycle,
    }
    .boundary(1, &cx.tz)?;
    if date > limit {
        return Err(CoreError::date(
            param,
            format!(
                "the new billing date must be at most one cycle after the current period's end ({limit})"
            ),
        ));
    }
    let mut b = run.builder(out.config.currency);
    if date < old_end {
        if recalc {
            credit_unused(&mut out, cx, &mut b, date)?;
        }
        if let Some(p) = out.period.as_mut() {
            p.truncate(date);
        }
    } else if date > old_end {
        if let Some(p) = out.period.as_mut() {
            p.extend(date, &schedule, &cx.tz)?;
        }
        if recalc {
            charge_between(&mut out, cx, &mut b, old_end, date)?;
        }
    }
    out.schedule = Some(schedule);
    follow_period_end(&mut out, old_end);
    let key = format!("change:{}:{change_id}", c.id);
    if req.invoice_now {
        let currency = out.config.currency;
        run.issue(&out, currency, InvoiceReason::Change, now, key, b)?;
    } else {
        out.carried.extend(b.into_lines()?);
    }
    Ok(ChangeOutcome {
        contract: out,
        invoice: run.invoices.pop(),
        effective_at: now,
        scheduled: false,
        scheduled_change_id: None,
        is_downgrade: false,
    })
}

/// Applies the scheduled change `id` at its instant. A change that can no longer be resolved
/// (its plan is no longer sold so, say) is dropped; the reason is returned.
pub(crate) fn apply_scheduled(
    c: &mut Contract,
    run: &mut Run,
    id: &str,
) -> Result<Option<String>, CoreError> {
    let cx = run.cx;
    let Some(pos) = c.scheduled.iter().position(|s| s.id == id) else {
        return Ok(None);
    };
    let sc = c.scheduled.remove(pos);
    let t = sc.effective_at;
    let at_boundary = c.period.as_ref().and_then(|p| p.end) == Some(t);
    let first = if at_boundary {
        c.period_idx + 1
    } else {
        c.period_idx.max(1)
    };
    let new = match resolve_change(&c.config, &sc.change, cx, t, first) {
        Ok(n) => n,
        Err(e) => return Ok(Some(e.to_string())),
    };
    if c.in_trial() && !at_boundary {
        change_in_trial(c, new, t, cx)?;
        return Ok(None);
    }
    if new.currency != c.config.currency && !at_boundary {
        // The period boundary it was scheduled for has moved (a cycle change, a new billing
        // date): a currency cannot change mid-period, so the change cannot apply.
        return Ok(Some(format!(
            "the currency change scheduled for {t} no longer falls on a period boundary"
        )));
    }
    if at_boundary {
        if new.currency != c.config.currency && c.period_idx > 0 {
            // Close the old currency's books on their own invoice before the renewal.
            let mut b = run.builder(c.config.currency);
            bill_arrears(c, cx, &mut b, t)?;
            bill_usage(c, cx, &mut b, t)?;
            b.extend_carried(std::mem::take(&mut c.carried));
            let currency = c.config.currency;
            run.issue(
                c,
                currency,
                InvoiceReason::Change,
                t,
                format!("change:{}:{}", c.id, sc.id),
                b,
            )?;
        }
        if new.cycle != c.config.cycle {
            c.schedule = Some(Schedule {
                anchor: t,
                cycle: new.cycle,
            });
        }
        switch_config(c, new, t);
        return Ok(None);
    }
    let key = format!("change:{}:{}", c.id, sc.id);
    let new_discount = names_discount(&sc.change);
    apply_now(
        c,
        run,
        new,
        t,
        sc.proration,
        sc.invoice_now,
        new_discount,
        key,
    )?;
    Ok(None)
}

/// Removes a scheduled change from the timeline.
///
/// # Errors
/// No scheduled change with that id (named `change_id`, as in the path that names it).
pub fn cancel_scheduled_change(c: &Contract, id: &str) -> Result<Contract, CoreError> {
    let mut out = c.clone();
    let before = out.scheduled.len();
    out.scheduled.retain(|s| s.id != id);
    if out.scheduled.len() == before {
        return Err(CoreError::not_found("change_id", "scheduled change", id));
    }
    Ok(out)
}
