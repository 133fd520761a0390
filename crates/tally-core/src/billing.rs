//! Billing steps as pure functions of (contract, context, instant): signup and activation,
//! renewals (in-advance charges, in-arrears charges and usage of the closed period per phase,
//! discounts, carried lines), trial ends, scheduled changes and cancellations, run in time order.
//!
//! Every step works on a copy of the contract and returns the new state with the invoice it
//! issues, so a failed step changes nothing, and re-running a step on the new state finds nothing
//! due (each step also carries a unique `step_key` for the store).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{Timestamp, ToSpan};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::{Alignment, BillingPeriod, Cycle, Schedule, calendar_start};
use crate::catalog::Timing;
use crate::config::{ChargeItem, Configuration, Params, PlanSelection};
use crate::contract::{BillingContext, Contract, ContractStatus, PaidSpan, Phase};
use crate::error::CoreError;
use crate::invoice::{InvoiceDraft, InvoiceReason, LineBuilder, LineKind, LineSpec, totals};
use crate::money::{Currency, Exact};
use crate::usage::units_in;

/// Collects the invoices of one operation and keeps the credit balances current between them.
pub(crate) struct Run<'c, 'a> {
    pub(crate) cx: &'c BillingContext<'a>,
    balances: BTreeMap<Currency, Decimal>,
    pub(crate) invoices: Vec<InvoiceDraft>,
}

impl<'c, 'a> Run<'c, 'a> {
    pub(crate) fn new(cx: &'c BillingContext<'a>) -> Self {
        Run {
            cx,
            balances: cx.balances.clone(),
            invoices: Vec::new(),
        }
    }

    pub(crate) fn builder(&self, currency: Currency) -> LineBuilder {
        LineBuilder::new(currency, self.cx.settings.rounding)
    }

    /// Issues an invoice from the builder's lines, if there are any.
    pub(crate) fn issue(
        &mut self,
        c: &Contract,
        currency: Currency,
        reason: InvoiceReason,
        at: Timestamp,
        key: String,
        b: LineBuilder,
    ) -> Result<(), CoreError> {
        if b.is_empty() {
            return Ok(());
        }
        let lines = b.into_lines()?;
        let amounts: Vec<Decimal> = lines.iter().map(|l| l.amount).collect();
        let balance = self.balances.get(&currency).copied().unwrap_or_default();
        let t = totals(
            &amounts,
            self.cx.tax_rate,
            balance,
            currency,
            self.cx.settings.rounding,
        )?;
        *self.balances.entry(currency).or_default() = balance - t.credit_applied + t.credit_added;
        self.invoices.push(InvoiceDraft {
            contract_id: c.id.clone(),
            customer_id: c.customer_id.clone(),
            currency,
            issued_at: at,
            reason,
            step_key: key,
            lines,
            net: t.net,
            tax_rate: self.cx.tax_rate,
            tax: t.tax,
            gross: t.gross,
            credit_applied: t.credit_applied,
            amount_due: t.amount_due,
            credit_added: t.credit_added,
        });
        Ok(())
    }
}

fn one() -> Exact {
    Exact::ratio(1, 1).unwrap_or(Exact::ZERO)
}

fn describe_fraction(f: Exact) -> String {
    format!("{}/{} of the period", f.numer(), f.denom())
}

/// The schedule a contract anchored at `at` uses under its own alignment, else the tenant's.
pub(crate) fn anchor_schedule(
    at: Timestamp,
    cycle: Cycle,
    alignment: Option<Alignment>,
    cx: &BillingContext,
) -> Result<Schedule, CoreError> {
    let anchor = match alignment.unwrap_or(cx.settings.billing_alignment) {
        Alignment::Calendar if cycle.is_recurring() => calendar_start(at, cycle, &cx.tz)?,
        _ => at,
    };
    Ok(Schedule { anchor, cycle })
}

fn current_period(c: &Contract) -> Result<&BillingPeriod, CoreError> {
    c.period
        .as_ref()
        .ok_or_else(|| CoreError::state("", "the contract has not started"))
}

/// Closes the current phase at `t` and opens one with `new`.
pub(crate) fn switch_config(c: &mut Contract, new: Configuration, t: Timestamp) {
    if let Some(last) = c.phases.last_mut() {
        last.end = Some(t);
    }
    let new = Arc::new(new);
    c.phases.push(Phase {
        start: t,
        end: None,
        config: Arc::clone(&new),
    });
    c.config = new;
}

/// Bills the in-arrears charges of every phase in force during `[arrears_billed_until, to)`.
pub(crate) fn bill_arrears(
    c: &mut Contract,
    cx: &BillingContext,
    b: &mut LineBuilder,
    to: Timestamp,
) -> Result<(), CoreError> {
    let from = c.arrears_billed_until.unwrap_or(to);
    c.arrears_billed_until = Some(to);
    let Some(period) = c.period.as_ref().filter(|p| p.end.is_some()) else {
        return Ok(());
    };
    for phase in &c.phases {
        let a = from.max(phase.start);
        let z = phase.end.map_or(to, |e| e.min(to));
        if a >= z {
            continue;
        }
        let f = period.fraction(a, z, cx.granularity(), &cx.tz)?;
        if f.is_zero() {
            continue;
        }
        let ratio = phase.config.discount_ratio(c.period_idx)?;
        for item in phase.config.recurring_items() {
            if item.timing != Timing::InArrears {
                continue;
            }
            let exact = item.amount()?.times(f)?;
            b.push(LineSpec {
                kind: LineKind::Charge,
                feature: Some(item.feature.clone()),
                description: format!("{} ({}, in arrears)", item.describe(), describe_fraction(f)),
                quantity: item.quantity,
                unit_amount: item.unit_amount,
                exact,
                start: a,
                end: z,
            })?;
            // Amount discounts come off the in-advance charges only.
            if let Some(d) = &phase.config.discount
                && matches!(
                    d.discount.value,
                    crate::catalog::DiscountValue::PercentOff(_)
                )
            {
                b.add_discount(exact.times(ratio)?, &d.discount.describe(), a, z)?;
            }
        }
    }
    Ok(())
}

/// Bills the usage of every phase during `[usage_billed_until, to)` at that phase's prices.
pub(crate) fn bill_usage(
    c: &mut Contract,
    cx: &BillingContext,
    b: &mut LineBuilder,
    to: Timestamp,
) -> Result<(), CoreError> {
    let from = c.usage_billed_until.unwrap_or(to);
    c.usage_billed_until = Some(to);
    let Some(period) = c.period.as_ref() else {
        return Ok(());
    };
    if cx.usage.is_empty() {
        return Ok(());
    }
    for phase in &c.phases {
        let a = from.max(phase.start);
        let z = phase.end.map_or(to, |e| e.min(to));
        if a >= z {
            continue;
        }
        for slug in phase.config.features.keys() {
            let units = units_in(cx.usage, slug, period.start, a, z);
            if units.is_zero() {
                continue;
            }
            for item in phase.config.usage_items(slug, units) {
                b.push(LineSpec {
                    kind: LineKind::Usage,
                    feature: Some(item.feature.clone()),
                    description: format!("{} used", item.describe()),
                    quantity: item.quantity,
                    unit_amount: item.unit_amount,
                    exact: item.amount()?,
                    start: a,
                    end: z,
                })?;
            }
        }
    }
    Ok(())
}

fn in_advance(config: &Configuration, open: bool) -> Vec<ChargeItem> {
    config
        .recurring_items()
        .into_iter()
        .filter(|i| open || i.timing == Timing::InAdvance)
        .collect()
}

/// Charges the in-advance items of the configuration for the whole current period (a stub is
/// charged for its share of the nominal period); an open period (`once`, `constant`) charges
/// every recurring item once.
pub(crate) fn charge_period(
    c: &mut Contract,
    cx: &BillingContext,
    b: &mut LineBuilder,
) -> Result<(), CoreError> {
    let period = current_period(c)?.clone();
    let (f, start, end) = match period.end {
        Some(e) => (
            period.fraction(period.start, e, cx.granularity(), &cx.tz)?,
            period.start,
            e,
        ),
        None => (one(), period.start, period.start),
    };
    let ratio = c.config.discount_ratio(c.period_idx)?;
    let kind = if c.config.cycle == Cycle::Once {
        LineKind::OneTime
    } else {
        LineKind::Charge
    };
    let stub = f != one();
    for item in in_advance(&c.config, period.end.is_none()) {
        let exact = item.amount()?.times(f)?;
        let description = if stub {
            format!("{} ({})", item.describe(), describe_fraction(f))
        } else {
            item.describe()
        };
        let amount = b.push(LineSpec {
            kind,
            feature: Some(item.feature.clone()),
            description,
            quantity: item.quantity,
            unit_amount: item.unit_amount,
            exact,
            start,
            end,
        })?;
        let mut net = exact;
        if let Some(d) = &c.config.discount {
            let disc = exact.times(ratio)?;
            b.add_discount(disc, &d.discount.describe(), start, end)?;
            net = exact.plus(disc.negated())?;
        }
        c.paid.entry(item.key()).or_default().push(PaidSpan {
            from: start,
            to: end,
            amount: ledger_amount(net, amount),
        });
    }
    Ok(())
}

/// What invoices charged, net of credits, for item `key` over `[from, to)`: each paid span is
/// spread evenly over its own time (days or seconds, as proration counts) and counts for the
/// part that falls in the window.
fn paid_for(
    c: &Contract,
    cx: &BillingContext,
    key: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Decimal, CoreError> {
    let mut total = Decimal::ZERO;
    for span in c.paid.get(key).into_iter().flatten() {
        let a = span.from.max(from);
        let z = span.to.min(to);
        if a >= z {
            continue;
        }
        let whole = time_units(span.from, span.to, c.config.cycle, cx)?;
        let share = if whole == 0 {
            one()
        } else {
            Exact::ratio(time_units(a, z, c.config.cycle, cx)?, whole)?
        };
        let part = Exact::from_decimal(span.amount)?.times(share)?;
        total += ledger_amount(part, span.amount);
    }
    let paid = crate::money::round_decimal(total, c.config.currency, cx.settings.rounding)?;
    Ok(paid.max(Decimal::ZERO))
}

/// Length of `[a, z)` in the unit proration counts in: whole days in the tenant's time zone, or
/// seconds at second granularity and for cycles shorter than a day.
fn time_units(
    a: Timestamp,
    z: Timestamp,
    cycle: Cycle,
    cx: &BillingContext,
) -> Result<i128, CoreError> {
    if cx.granularity() == crate::calendar::Granularity::Day && cycle != Cycle::Hour {
        let da = a.to_zoned(cx.tz.clone()).date();
        let dz = z.to_zoned(cx.tz.clone()).date();
        return Ok(i128::from(da.until(dz)?.get_days()));
    }
    Ok(i128::from(z.as_second() - a.as_second()))
}

/// A high-precision decimal of an exact amount, for the paid ledger (falls back to `rounded`).
fn ledger_amount(exact: Exact, rounded: Decimal) -> Decimal {
    exact
        .round(12, crate::money::Rounding::HalfEven)
        .unwrap_or(rounded)
}

/// Credits the in-advance items of the configuration for `[from, period end)`, after discount,
/// each capped at what invoices charged for it for that time.
pub(crate) fn credit_unused(
    c: &mut Contract,
    cx: &BillingContext,
    b: &mut LineBuilder,
    from: Timestamp,
) -> Result<(), CoreError> {
    let period = current_period(c)?.clone();
    let Some(end) = period.end else {
        return Ok(());
    };
    if from >= end {
        return Ok(());
    }
    let f = period.fraction(from, end, cx.granularity(), &cx.tz)?;
    if f.is_zero() {
        return Ok(());
    }
    let keep = one().plus(c.config.discount_ratio(c.period_idx)?.negated())?;
    for item in in_advance(&c.config, false) {
        let exact = item.amount()?.times(f)?.times(keep)?;
        let rounded = exact.round_to(c.config.currency, cx.settings.rounding)?;
        let paid = paid_for(c, cx, &item.key(), from, end)?;
        let credit = rounded.min(paid);
        if credit <= Decimal::ZERO {
            continue;
        }
        b.push(LineSpec {
            kind: LineKind::ProrationCredit,
            feature: Some(item.feature.clone()),
            description: format!(
                "Unused time on {} ({})",
                item.describe(),
                describe_fraction(f)
            ),
            quantity: item.quantity,
            unit_amount: item.unit_amount,
            exact: Exact::from_decimal(-credit)?,
            start: from,
            end,
        })?;
        c.paid.entry(item.key()).or_default().push(PaidSpan {
            from,
            to: end,
            amount: -credit,
        });
    }
    Ok(())
}

/// Charges the in-advance items of the configuration for `[from, to)` of the current period,
/// after discount.
pub(crate) fn charge_between(
    c: &mut Contract,
    cx: &BillingContext,
    b: &mut LineBuilder,
    from: Timestamp,
    to: Timestamp,
) -> Result<(), CoreError> {
    let period = current_period(c)?.clone();
    if period.end.is_none() || from >= to {
        return Ok(());
    }
    let f = period.fraction(from, to, cx.granularity(), &cx.tz)?;
    if f.is_zero() {
        return Ok(());
    }
    let keep = one().plus(c.config.discount_ratio(c.period_idx)?.negated())?;
    for item in in_advance(&c.config, false) {
        let exact = item.amount()?.times(f)?.times(keep)?;
        let amount = b.push(LineSpec {
            kind: LineKind::ProrationCharge,
            feature: Some(item.feature.clone()),
            description: format!(
                "Remaining time on {} ({})",
                item.describe(),
                describe_fraction(f)
            ),
            quantity: item.quantity,
            unit_amount: item.unit_amount,
            exact,
            start: from,
            end: to,
        })?;
        c.paid.entry(item.key()).or_default().push(PaidSpan {
            from,
            to,
            amount: ledger_amount(exact, amount),
        });
    }
    Ok(())
}

/// Starts a contract at `act`: the trial, or the first period and its signup invoice.
pub(crate) fn start(
    c: &mut Contract,
    run: &mut Run,
    act: Timestamp,
    reason: InvoiceReason,
) -> Result<(), CoreError> {
    let cx = run.cx;
    c.status = ContractStatus::Active;
    c.activation = Some(act);
    c.phases = vec![Phase {
        start: act,
        end: None,
        config: c.config.clone(),
    }];
    let cycle = c.config.cycle;
    c.paid.clear();
    c.arrears_billed_until = Some(act);
    c.usage_billed_until = Some(act);
    if let Some(days) = c.free_trial_days.filter(|d| *d > 0) {
        let trial_end = act
            .to_zoned(cx.tz.clone())
            .checked_add(i64::from(days).days())?
            .timestamp();
        c.trial_end = Some(trial_end);
        c.schedule = Some(anchor_schedule(trial_end, cycle, c.alignment, cx)?);
        c.period = Some(BillingPeriod {
            start: act,
            end: Some(trial_end),
            segments: Vec::new(),
        });
        c.period_idx = 0;
        return Ok(());
    }
    let schedule = anchor_schedule(act, cycle, c.alignment, cx)?;
    c.schedule = Some(schedule);
    c.period = Some(BillingPeriod::from_schedule(&schedule, act, &cx.tz)?);
    c.period_idx = 1;
    let mut b = run.builder(c.config.currency);
    charge_period(c, cx, &mut b)?;
    let key = format!("signup:{}", c.id);
    run.issue(c, c.config.currency, reason, act, key, b)
}

/// Renews the contract at the end of its current period (or ends its trial).
fn renew(c: &mut Contract, run: &mut Run, e: Timestamp) -> Result<(), CoreError> {
    let cx = run.cx;
    let mut b = run.builder(c.config.currency);
    if c.period_idx > 0 {
        bill_arrears(c, cx, &mut b, e)?;
        bill_usage(c, cx, &mut b, e)?;
    }
    b.extend_carried(std::mem::take(&mut c.carried));
    let schedule = c
        .schedule
        .ok_or_else(|| CoreError::state("", "the contract has no schedule"))?;
    c.period = Some(BillingPeriod::from_schedule(&schedule, e, &cx.tz)?);
    c.period_idx += 1;
    c.paid.clear();
    c.arrears_billed_until = Some(e);
    c.usage_billed_until = Some(e);
    charge_period(c, cx, &mut b)?;
    let key = format!("renewal:{}:{}", c.id, e);
    run.issue(c, c.config.currency, InvoiceReason::Renewal, e, key, b)
}

/// Ends the contract at `t`: usage and in-arrears charges up to `t`, and a credit for the unused
/// part of the period unless `t` is its end.
pub(crate) fn end_contract(c: &mut Contract, run: &mut Run, t: Timestamp) -> Result<(), CoreError> {
    let cx = run.cx;
    let mut b = run.builder(c.config.currency);
    if c.status == ContractStatus::Active && c.period_idx > 0 {
        bill_arrears(c, cx, &mut b, t)?;
        bill_usage(c, cx, &mut b, t)?;
        credit_unused(c, cx, &mut b, t)?;
    }
    b.extend_carried(std::mem::take(&mut c.carried));
    if let Some(last) = c.phases.last_mut() {
        last.end = Some(t);
    }
    c.status = ContractStatus::Canceled;
    c.ended_at = Some(t);
    c.cancel_at = None;
    c.scheduled.clear();
    let key = format!("cancel:{}", c.id);
    run.issue(c, c.config.currency, InvoiceReason::Cancellation, t, key, b)
}

/// A billing step that falls due at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    /// A scheduled activation.
    Activation,
    /// A scheduled change (by id).
    ScheduledChange {
        /// Its id.
        id: String,
    },
    /// A cancellation.
    Cancellation,
    /// The end of the free trial (the first period starts).
    TrialEnd,
    /// A period renewal.
    Renewal,
}

impl StepKind {
    fn rank(&self) -> u8 {
        match self {
            StepKind::Activation => 0,
            StepKind::ScheduledChange { .. } => 1,
            StepKind::Cancellation => 2,
            StepKind::TrialEnd | StepKind::Renewal => 3,
        }
    }
}

/// The next billing step of a contract and when it is due: at equal instants, scheduled changes
/// first (in the order they were made), then a cancellation, then the renewal.
pub fn next_step(c: &Contract) -> Option<(Timestamp, StepKind)> {
    match c.status {
        ContractStatus::Scheduled => c.activation.map(|t| (t, StepKind::Activation)),
        ContractStatus::Active => {
            let mut best: Option<(Timestamp, StepKind)> = None;
            let mut consider = |t: Timestamp, k: StepKind| {
                let better = match &best {
                    None => true,
                    Some((bt, bk)) => (t, k.rank()) < (*bt, bk.rank()),
                };
                if better {
                    best = Some((t, k));
                }
            };
            if let Some(sc) = c.timeline().first() {
                consider(
                    sc.effective_at,
                    StepKind::ScheduledChange { id: sc.id.clone() },
                );
            }
            if let Some(t) = c.cancel_at {
                consider(t, StepKind::Cancellation);
            }
            if let Some(e) = c.period.as_ref().and_then(|p| p.end) {
                let k = if c.period_idx == 0 {
                    StepKind::TrialEnd
                } else {
                    StepKind::Renewal
                };
                consider(e, k);
            }
            best
        }
        _ => None,
    }
}

/// One step that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// When it was due.
    pub at: Timestamp,
    /// What it was.
    pub kind: StepKind,
    /// The invoices it issued (at most one, except a currency change at a boundary, which closes
    /// the old currency's books on its own invoice).
    pub invoices: Vec<InvoiceDraft>,
    /// Why a scheduled change was dropped instead of applied, if it was.
    pub dropped: Option<String>,
}

/// The result of running due steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvanceOutcome {
    /// The contract after the steps.
    pub contract: Contract,
    /// The steps, in the order they ran.
    pub steps: Vec<StepRecord>,
}

impl AdvanceOutcome {
    /// All invoices issued, in order.
    pub fn invoices(&self) -> impl Iterator<Item = &InvoiceDraft> {
        self.steps.iter().flat_map(|s| s.invoices.iter())
    }

    /// The credit balances after these invoices, from the balances before them.
    pub fn balances_after(
        &self,
        before: &BTreeMap<Currency, Decimal>,
    ) -> BTreeMap<Currency, Decimal> {
        balances_after(before, self.invoices())
    }
}

/// The most steps one call runs: a bound on runaway loops (an hourly contract advanced ten years
/// needs 87,600).
pub const MAX_STEPS: usize = 500_000;

/// Runs every billing step due at or before `until`, in time order.
///
/// # Errors
/// A step that cannot be computed (an amount out of range); the contract is then unchanged.
///
/// # Example
/// ```
/// use tally_core::prelude::*;
/// # let (catalog, settings) = tally_core::examples::basic_catalog();
/// let cx = BillingContext::new(&catalog, &settings).unwrap();
/// let signup = subscribe(&SignupRequest::new("Cont_1", "Cust_1", "basic", Currency::Usd, Cycle::Month)
///     .seats("seats", 5), &cx, "2024-01-01T00:00:00Z".parse().unwrap()).unwrap();
/// // Renewing on Feb 1 bills January's support in arrears (50.00) and February in advance:
/// // 10.00 platform + 5 x 5.00 seats. 50.00 + 35.00 = 85.00.
/// let out = advance(&signup.contract, &cx, "2024-02-01T00:00:00Z".parse().unwrap()).unwrap();
/// let inv: Vec<_> = out.invoices().collect();
/// assert_eq!(inv.len(), 1);
/// assert_eq!(inv[0].net.to_string(), "85.00");
/// // Running it again at the same instant issues nothing.
/// let again = advance(&out.contract, &cx, "2024-02-01T00:00:00Z".parse().unwrap()).unwrap();
/// assert_eq!(again.invoices().count(), 0);
/// ```
pub fn advance(
    c: &Contract,
    cx: &BillingContext,
    until: Timestamp,
) -> Result<AdvanceOutcome, CoreError> {
    let mut c = c.clone();
    let mut run = Run::new(cx);
    let mut steps = Vec::new();
    while let Some((at, kind)) = next_step(&c) {
        if at > until {
            break;
        }
        if steps.len() >= MAX_STEPS {
            return Err(CoreError::Overflow);
        }
        let dropped = run_step(&mut c, &mut run, at, &kind)?;
        steps.push(StepRecord {
            at,
            kind,
            invoices: std::mem::take(&mut run.invoices),
            dropped,
        });
    }
    Ok(AdvanceOutcome { contract: c, steps })
}

fn run_step(
    c: &mut Contract,
    run: &mut Run,
    at: Timestamp,
    kind: &StepKind,
) -> Result<Option<String>, CoreError> {
    match kind {
        StepKind::Activation => start(c, run, at, InvoiceReason::Signup)?,
        StepKind::ScheduledChange { id } => return crate::change::apply_scheduled(c, run, id),
        StepKind::Cancellation => end_contract(c, run, at)?,
        StepKind::TrialEnd | StepKind::Renewal => renew(c, run, at)?,
    }
    Ok(None)
}

/// A new subscription (seed 004's `POST /v1/c/contract`, resolved to core types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupRequest {
    /// Id for the new contract.
    pub contract_id: String,
    /// The customer.
    pub customer_id: String,
    /// Plan, pricing, currency, cycle, unit counts, overrides and discount.
    pub selection: PlanSelection,
    /// Start; `None` = now.
    pub activation: Option<Timestamp>,
    /// Wait for a manual activation.
    pub is_pending: bool,
    /// Free trial length in days.
    pub free_trial_days: Option<u32>,
    /// Period alignment for this contract; the tenant's setting when `None`.
    pub alignment: Option<Alignment>,
}

impl SignupRequest {
    /// A signup to `plan` in `currency` per `cycle`, starting now, with no units.
    pub fn new(
        contract_id: &str,
        customer_id: &str,
        plan: &str,
        currency: Currency,
        cycle: Cycle,
    ) -> Self {
        SignupRequest {
            contract_id: contract_id.into(),
            customer_id: customer_id.into(),
            selection: PlanSelection {
                plan: plan.into(),
                currency: Some(currency),
                cycle: Some(cycle),
                ..PlanSelection::default()
            },
            activation: None,
            is_pending: false,
            free_trial_days: None,
            alignment: None,
        }
    }

    /// Sets a unit count.
    pub fn seats(mut self, feature: &str, units: i64) -> Self {
        self.selection
            .unit_counts
            .insert(feature.into(), units.into());
        self
    }
}

/// A signup's result: the contract and the invoices issued (one for an immediate start, one per
/// period for an activation in the past, none for a pending, scheduled or trial start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupOutcome {
    /// The new contract.
    pub contract: Contract,
    /// The invoices, in order.
    pub invoices: Vec<InvoiceDraft>,
}

/// Subscribes a customer to a plan at `now`.
///
/// # Errors
/// Unknown plan, pricing, feature or discount; a currency or cycle the plan is not sold in;
/// negative counts; a free trial of 0 days.
///
/// # Example
/// ```
/// use tally_core::prelude::*;
/// # let (catalog, settings) = tally_core::examples::basic_catalog();
/// let cx = BillingContext::new(&catalog, &settings).unwrap();
/// let req = SignupRequest::new("Cont_1", "Cust_1", "basic", Currency::Usd, Cycle::Month).seats("seats", 5);
/// let out = subscribe(&req, &cx, "2024-01-01T00:00:00Z".parse().unwrap()).unwrap();
/// // 10.00 platform fee + 5 seats x 5.00
/// assert_eq!(out.invoices[0].net.to_string(), "35.00");
/// ```
pub fn subscribe(
    req: &SignupRequest,
    cx: &BillingContext,
    now: Timestamp,
) -> Result<SignupOutcome, CoreError> {
    if req.free_trial_days == Some(0) {
        return Err(CoreError::invalid(
            "free_trial_days",
            "a number of days above 0",
            0,
        ));
    }
    let at = if req.is_pending {
        now
    } else {
        req.activation.unwrap_or(now)
    };
    let config = Configuration::resolve(cx.catalog, &req.selection, at, 1, Params::SIGNUP)?;
    let mut c = Contract {
        id: req.contract_id.clone(),
        customer_id: req.customer_id.clone(),
        status: ContractStatus::Pending,
        created_at: now,
        activation: None,
        free_trial_days: req.free_trial_days,
        alignment: req.alignment,
        trial_end: None,
        schedule: None,
        period: None,
        period_idx: 0,
        config: Arc::new(config),
        phases: Vec::new(),
        scheduled: Vec::new(),
        next_seq: 0,
        cancel_at: None,
        cancel_at_period_end: false,
        ended_at: None,
        arrears_billed_until: None,
        usage_billed_until: None,
        paid: BTreeMap::new(),
        carried: Vec::new(),
    };
    if req.is_pending {
        return Ok(SignupOutcome {
            contract: c,
            invoices: Vec::new(),
        });
    }
    if at > now {
        c.status = ContractStatus::Scheduled;
        c.activation = Some(at);
        return Ok(SignupOutcome {
            contract: c,
            invoices: Vec::new(),
        });
    }
    let mut run = Run::new(cx);
    start(&mut c, &mut run, at, InvoiceReason::Signup)?;
    let mut invoices = run.invoices;
    // An activation in the past: every period up to now is invoiced, each on its own invoice.
    let caught_up = advance(
        &c,
        &cx.clone()
            .with_balances(balances_after(&cx.balances, &invoices)),
        now,
    )?;
    invoices.extend(caught_up.invoices().cloned());
    Ok(SignupOutcome {
        contract: caught_up.contract,
        invoices,
    })
}

/// Credit balances after `invoices`: each adds its negative total and takes what it consumed.
fn balances_after<'i>(
    before: &BTreeMap<Currency, Decimal>,
    invoices: impl IntoIterator<Item = &'i InvoiceDraft>,
) -> BTreeMap<Currency, Decimal> {
    let mut b = before.clone();
    for i in invoices {
        *b.entry(i.currency).or_default() += i.credit_added - i.credit_applied;
    }
    b
}

/// Activates a pending contract at `now` (as a signup starting now).
///
/// # Errors
/// The contract is not pending.
pub fn activate(
    c: &Contract,
    cx: &BillingContext,
    now: Timestamp,
) -> Result<SignupOutcome, CoreError> {
    if c.status != ContractStatus::Pending {
        return Err(CoreError::state(
            "",
            format!(
                "only a pending contract can be activated; this one is {:?}",
                c.status
            )
            .to_lowercase(),
        ));
    }
    let mut c = c.clone();
    let mut run = Run::new(cx);
    start(&mut c, &mut run, now, InvoiceReason::Signup)?;
    Ok(SignupOutcome {
        contract: c,
        invoices: run.invoices,
    })
}

/// When a cancellation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "date", rename_all = "snake_case")]
pub enum CancelMode {
    /// Now, with a credit for the unused part of the period.
    Now,
    /// At the end of the current period, with no credit.
    AtPeriodEnd,
    /// At an instant, with a credit for the part of its period after it.
    At(Timestamp),
}

/// A cancellation's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOutcome {
    /// The contract after it.
    pub contract: Contract,
    /// The cancellation invoice, for an immediate one.
    pub invoice: Option<InvoiceDraft>,
    /// When the contract ends.
    pub effective_at: Timestamp,
}

/// Cancels a contract now, at the period end, or at a date.
///
/// # Errors
/// Already canceled; a date in the past; `at_period_end` on a contract without periods.
pub fn cancel(
    c: &Contract,
    mode: CancelMode,
    cx: &BillingContext,
    now: Timestamp,
) -> Result<CancelOutcome, CoreError> {
    if c.status == ContractStatus::Canceled {
        return Err(CoreError::state("", "the contract is already canceled"));
    }
    let mut c = c.clone();
    let mut run = Run::new(cx);
    if c.status != ContractStatus::Active {
        end_contract(&mut c, &mut run, now)?;
        return Ok(CancelOutcome {
            contract: c,
            invoice: None,
            effective_at: now,
        });
    }
    let at = match mode {
        CancelMode::Now => now,
        CancelMode::AtPeriodEnd => current_period(&c)?.end.ok_or_else(|| {
            CoreError::state(
                "mode",
                "a once/constant contract has no period end: cancel now or at a date",
            )
        })?,
        CancelMode::At(t) if t < now => {
            return Err(CoreError::date(
                "date",
                format!("must not be before now ({now})"),
            ));
        }
        CancelMode::At(t) => t,
    };
    if at <= now {
        end_contract(&mut c, &mut run, now)?;
        return Ok(CancelOutcome {
            contract: c,
            invoice: run.invoices.pop(),
            effective_at: now,
        });
    }
    c.cancel_at = Some(at);
    c.cancel_at_period_end = mode == CancelMode::AtPeriodEnd;
    Ok(CancelOutcome {
        contract: c,
        invoice: None,
        effective_at: at,
    })
}
