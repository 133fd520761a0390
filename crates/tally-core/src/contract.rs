//! Contracts: a customer's subscription with its phases (the configuration over time), current
//! billing period, scheduled changes, what was paid for the current period, and the settings and
//! context every billing computation runs in.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use crate::calendar::{Alignment, BillingPeriod, Granularity, Schedule, time_zone};
use crate::catalog::Catalog;
use crate::config::Configuration;
use crate::error::CoreError;
use crate::invoice::InvoiceLine;
use crate::money::{Currency, Rounding};
use crate::usage::UsageRecord;

/// A tenant's billing settings.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// IANA time zone where days begin.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Proration granularity.
    #[serde(default)]
    pub proration: Granularity,
    /// Rounding mode.
    #[serde(default)]
    pub rounding: Rounding,
    /// Where new contracts anchor their periods.
    #[serde(default)]
    pub billing_alignment: Alignment,
    /// Default tax rate in percent, for customers without one.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tax_rate: Decimal,
}

fn utc() -> String {
    "UTC".into()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            time_zone: utc(),
            proration: Granularity::Day,
            rounding: Rounding::HalfAwayFromZero,
            billing_alignment: Alignment::Anniversary,
            tax_rate: Decimal::ZERO,
        }
    }
}

impl Settings {
    /// Checks the settings (time zone name, tax rate range).
    ///
    /// # Errors
    /// An unknown time zone or a tax rate outside 0..=100.
    pub fn validate(&self) -> Result<(), CoreError> {
        time_zone(&self.time_zone)?;
        if self.tax_rate < Decimal::ZERO || self.tax_rate > Decimal::ONE_HUNDRED {
            return Err(CoreError::invalid(
                "settings.tax_rate",
                "a percentage from 0 to 100",
                self.tax_rate,
            ));
        }
        Ok(())
    }
}

/// Where a contract is in its life (Wingback's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractStatus {
    /// Waiting to be activated by hand.
    Pending,
    /// Activates at a future instant.
    Scheduled,
    /// Running (including a free trial).
    Active,
    /// Ended.
    Canceled,
}

/// A span of a contract's life with one configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// When it took effect.
    pub start: Timestamp,
    /// When the next phase replaced it (`None` for the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// The configuration (shared: phases and the contract hold the same one, and copies of a
    /// contract do not copy it).
    pub config: Arc<Configuration>,
}

/// How a change is prorated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proration {
    /// Credit unused time and charge the rest of the period.
    #[default]
    CreateProrations,
    /// Nothing now; the new configuration is billed from the next period.
    None,
}

/// What a change changes (seed 000's strategies, plus add-ons on the recorded prices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum ChangeKind {
    /// Switch plan: prices from the given or latest pricing at the effective instant.
    NewPlan {
        /// Plan id or slug.
        plan: String,
        /// Pricing id or slug.
        pricing: Option<String>,
        /// Currency (current one when absent).
        currency: Option<Currency>,
        /// Cycle (current one when absent).
        cycle: Option<crate::calendar::Cycle>,
        /// Units per feature.
        unit_counts: BTreeMap<String, Decimal>,
        /// Overrides per feature.
        overrides: BTreeMap<String, crate::config::FeatureOverride>,
        /// Discount to apply from the change on.
        discount: Option<String>,
    },
    /// New unit counts (and add-ons) on the prices recorded in the contract.
    ChangeUnitCount {
        /// Units per feature.
        unit_counts: BTreeMap<String, Decimal>,
        /// Add-ons purchased (`true`) or removed (`false`).
        purchased: BTreeMap<String, bool>,
        /// Discount to apply from the change on.
        discount: Option<String>,
    },
    /// Move the billing date: the current period ends at `date`, later periods anchor there.
    ChangeBillingDate {
        /// The new billing date.
        date: Timestamp,
        /// Whether the difference is charged or credited.
        recalculate_charges: bool,
        /// Discount to apply from the change on.
        discount: Option<String>,
    },
}

/// A change waiting for its instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    /// Its id (given by the caller).
    pub id: String,
    /// When it applies.
    pub effective_at: Timestamp,
    /// True when it was asked for at the end of the period (`next_cycle`): it follows the period
    /// end if the billing date moves.
    pub at_period_end: bool,
    /// Creation order, to order equal instants.
    pub seq: u64,
    /// When it was made.
    pub created_at: Timestamp,
    /// What it changes.
    pub change: ChangeKind,
    /// Proration when it applies.
    pub proration: Proration,
    /// Whether its lines are invoiced at once or carried to the next regular invoice.
    pub invoice_now: bool,
}

/// An amount an invoice charged (positive) or credited (negative) for a span of the current
/// period, for one charge item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidSpan {
    /// Start of the time paid for.
    pub from: Timestamp,
    /// End of the time paid for.
    pub to: Timestamp,
    /// The amount (net of discount): charges to 12 decimals, credits as credited.
    pub amount: Decimal,
}

/// A contract and all the state its billing needs.
///
/// Serialized (how stores keep it) it is compact: fields at their defaults are left out, and the
/// current phase's configuration, which is `config`, is written once. Both the compact and the
/// spelled-out form read back. It serializes in two parts as well, its [`Contract::terms`] and
/// its [`Contract::progress`], so a store can rewrite only the progress on a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ContractIn")]
pub struct Contract {
    /// `Cont_<uuid>`.
    pub id: String,
    /// The customer.
    pub customer_id: String,
    /// Status.
    pub status: ContractStatus,
    /// When it was signed.
    pub created_at: Timestamp,
    /// When it started (or will start).
    pub activation: Option<Timestamp>,
    /// Free trial length asked for at signup.
    pub free_trial_days: Option<u32>,
    /// Period alignment chosen at signup; the tenant's setting when `None`.
    pub alignment: Option<crate::calendar::Alignment>,
    /// End of the free trial, once active.
    pub trial_end: Option<Timestamp>,
    /// The schedule that generates period boundaries.
    pub schedule: Option<Schedule>,
    /// The current period (the trial counts as period 0).
    pub period: Option<BillingPeriod>,
    /// Index of the current period, from 1 (0 during a trial or before activation).
    pub period_idx: u32,
    /// The configuration in force (shared with its phase).
    pub config: Arc<Configuration>,
    /// History: every configuration with its time span.
    pub phases: Vec<Phase>,
    /// Changes waiting for their instant, in time order.
    pub scheduled: Vec<ScheduledChange>,
    /// Next creation sequence number for scheduled changes.
    pub next_seq: u64,
    /// When a cancellation takes effect, if one is scheduled.
    pub cancel_at: Option<Timestamp>,
    /// True when the cancellation was asked for at the period end.
    pub cancel_at_period_end: bool,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// In-arrears charges are billed up to here.
    pub arrears_billed_until: Option<Timestamp>,
    /// Usage is billed up to here.
    pub usage_billed_until: Option<Timestamp>,
    /// Per charge item: what invoices charged (and credited) for spans of the current period;
    /// a credit for `[t, e)` is capped by what these charged for that time.
    pub paid: BTreeMap<String, Vec<PaidSpan>>,
    /// Lines waiting for the next regular invoice (changes made without interim billing).
    pub carried: Vec<InvoiceLine>,
}

/// Writes `$value` under `$name` into the struct serializer `$st`, or leaves the field out when
/// `$skip` (how the compact stored form drops defaults).
macro_rules! field {
    ($st:ident, $name:literal, $value:expr, $skip:expr) => {
        if $skip {
            $st.skip_field($name)?;
        } else {
            $st.serialize_field($name, $value)?;
        }
    };
}

impl Contract {
    /// The contract's terms: whose it is, its phases, scheduled changes and cancellation. A
    /// renewal leaves them as they are, so a store may keep them apart and not rewrite them.
    pub fn terms(&self) -> ContractTerms<'_> {
        ContractTerms(self)
    }

    /// Where the contract's billing stands: the current period, what was billed up to where,
    /// what the period was paid, lines carried. Every renewal moves it.
    pub fn progress(&self) -> ContractProgress<'_> {
        ContractProgress(self)
    }

    /// References to the terms' fields (exhaustive: a new field must be placed in one of the
    /// parts), which both their serialization and their equality read.
    fn terms_fields(&self) -> TermsFields<'_> {
        let Contract {
            id,
            customer_id,
            status,
            created_at,
            activation,
            free_trial_days,
            alignment,
            trial_end,
            schedule,
            config,
            phases,
            scheduled,
            next_seq,
            cancel_at,
            cancel_at_period_end,
            ended_at,
            period: _,
            period_idx: _,
            arrears_billed_until: _,
            usage_billed_until: _,
            paid: _,
            carried: _,
        } = self;
        TermsFields {
            id,
            customer_id,
            status,
            created_at,
            activation,
            free_trial_days,
            alignment,
            trial_end,
            schedule,
            config,
            phases,
            scheduled,
            next_seq,
            cancel_at,
            cancel_at_period_end,
            ended_at,
        }
    }

    /// The terms' fields into `st`.
    fn write_terms<S: SerializeStruct>(&self, st: &mut S) -> Result<(), S::Error> {
        let TermsFields {
            id,
            customer_id,
            status,
            created_at,
            activation,
            free_trial_days,
            alignment,
            trial_end,
            schedule,
            config,
            phases,
            scheduled,
            next_seq,
            cancel_at,
            cancel_at_period_end,
            ended_at,
        } = self.terms_fields();
        st.serialize_field("id", id)?;
        st.serialize_field("customer_id", customer_id)?;
        st.serialize_field("status", status)?;
        st.serialize_field("created_at", created_at)?;
        field!(st, "activation", activation, activation.is_none());
        field!(
            st,
            "free_trial_days",
            free_trial_days,
            free_trial_days.is_none()
        );
        field!(st, "alignment", alignment, alignment.is_none());
        field!(st, "trial_end", trial_end, trial_end.is_none());
        field!(st, "schedule", schedule, schedule.is_none());
        st.serialize_field("config", config)?;
        let phases: Vec<PhaseOut<'_>> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| PhaseOut {
                start: p.start,
                end: p.end,
                config: (i + 1 < phases.len() || p.config != *config).then_some(&p.config),
            })
            .collect();
        field!(st, "phases", &phases, phases.is_empty());
        field!(st, "scheduled", scheduled, scheduled.is_empty());
        field!(st, "next_seq", next_seq, *next_seq == 0);
        field!(st, "cancel_at", cancel_at, cancel_at.is_none());
        field!(
            st,
            "cancel_at_period_end",
            cancel_at_period_end,
            !cancel_at_period_end
        );
        field!(st, "ended_at", ended_at, ended_at.is_none());
        Ok(())
    }

    /// The progress' fields into `st`.
    fn write_progress<S: SerializeStruct>(&self, st: &mut S) -> Result<(), S::Error> {
        field!(st, "period", &self.period, self.period.is_none());
        st.serialize_field("period_idx", &self.period_idx)?;
        let arrears = &self.arrears_billed_until;
        field!(st, "arrears_billed_until", arrears, arrears.is_none());
        let usage = &self.usage_billed_until;
        field!(st, "usage_billed_until", usage, usage.is_none());
        field!(st, "paid", &self.paid, self.paid.is_empty());
        field!(st, "carried", &self.carried, self.carried.is_empty());
        Ok(())
    }
}

impl Serialize for Contract {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Contract", 22)?;
        self.write_terms(&mut st)?;
        self.write_progress(&mut st)?;
        st.end()
    }
}

/// A contract's terms ([`Contract::terms`]): serialized, the terms' fields of the contract's
/// stored form; equal when every one of those fields is.
#[derive(Debug, Clone, Copy)]
pub struct ContractTerms<'a>(&'a Contract);

impl Serialize for ContractTerms<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ContractTerms", 16)?;
        self.0.write_terms(&mut st)?;
        st.end()
    }
}

impl PartialEq for ContractTerms<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.terms_fields() == other.0.terms_fields()
    }
}

/// The terms' fields of a contract, borrowed.
#[derive(PartialEq)]
struct TermsFields<'a> {
    id: &'a String,
    customer_id: &'a String,
    status: &'a ContractStatus,
    created_at: &'a Timestamp,
    activation: &'a Option<Timestamp>,
    free_trial_days: &'a Option<u32>,
    alignment: &'a Option<Alignment>,
    trial_end: &'a Option<Timestamp>,
    schedule: &'a Option<Schedule>,
    config: &'a Arc<Configuration>,
    phases: &'a Vec<Phase>,
    scheduled: &'a Vec<ScheduledChange>,
    next_seq: &'a u64,
    cancel_at: &'a Option<Timestamp>,
    cancel_at_period_end: &'a bool,
    ended_at: &'a Option<Timestamp>,
}

/// A contract's progress ([`Contract::progress`]): serialized, the rest of its stored form.
/// The two parts' JSON objects joined ([`join_stored_parts`]) read back as the contract.
#[derive(Debug, Clone, Copy)]
pub struct ContractProgress<'a>(&'a Contract);

impl Serialize for ContractProgress<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ContractProgress", 6)?;
        self.0.write_progress(&mut st)?;
        st.end()
    }
}

/// The stored JSON of a whole contract from its terms' and its progress' JSON objects (each
/// `{...}` with at least one field, as they are serialized): one object with the fields of both.
pub fn join_stored_parts(terms: &str, progress: &str) -> String {
    let terms = terms.trim_end();
    let progress = progress.trim_start();
    let head = terms.strip_suffix('}').unwrap_or(terms);
    let tail = progress.strip_prefix('{').unwrap_or(progress);
    let mut out = String::with_capacity(head.len() + tail.len() + 1);
    out.push_str(head);
    out.push(',');
    out.push_str(tail);
    out
}

/// A phase as a contract writes it: without its configuration when that is the contract's.
#[derive(Serialize)]
struct PhaseOut<'a> {
    start: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a Arc<Configuration>>,
}

/// A phase as read back: no configuration means the contract's.
#[derive(Deserialize)]
struct PhaseIn {
    start: Timestamp,
    #[serde(default)]
    end: Option<Timestamp>,
    #[serde(default)]
    config: Option<Arc<Configuration>>,
}

/// A contract as read back, compact or spelled out.
#[derive(Deserialize)]
struct ContractIn {
    id: String,
    customer_id: String,
    status: ContractStatus,
    created_at: Timestamp,
    #[serde(default)]
    activation: Option<Timestamp>,
    #[serde(default)]
    free_trial_days: Option<u32>,
    #[serde(default)]
    alignment: Option<Alignment>,
    #[serde(default)]
    trial_end: Option<Timestamp>,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    period: Option<BillingPeriod>,
    period_idx: u32,
    config: Arc<Configuration>,
    #[serde(default)]
    phases: Vec<PhaseIn>,
    #[serde(default)]
    scheduled: Vec<ScheduledChange>,
    #[serde(default)]
    next_seq: u64,
    #[serde(default)]
    cancel_at: Option<Timestamp>,
    #[serde(default)]
    cancel_at_period_end: bool,
    #[serde(default)]
    ended_at: Option<Timestamp>,
    #[serde(default)]
    arrears_billed_until: Option<Timestamp>,
    #[serde(default)]
    usage_billed_until: Option<Timestamp>,
    #[serde(default)]
    paid: BTreeMap<String, Vec<PaidSpan>>,
    #[serde(default)]
    carried: Vec<InvoiceLine>,
}

impl From<ContractIn> for Contract {
    fn from(c: ContractIn) -> Contract {
        let phases = c
            .phases
            .into_iter()
            .map(|p| Phase {
                start: p.start,
                end: p.end,
                config: p.config.unwrap_or_else(|| Arc::clone(&c.config)),
            })
            .collect();
        Contract {
            id: c.id,
            customer_id: c.customer_id,
            status: c.status,
            created_at: c.created_at,
            activation: c.activation,
            free_trial_days: c.free_trial_days,
            alignment: c.alignment,
            trial_end: c.trial_end,
            schedule: c.schedule,
            period: c.period,
            period_idx: c.period_idx,
            config: c.config,
            phases,
            scheduled: c.scheduled,
            next_seq: c.next_seq,
            cancel_at: c.cancel_at,
            cancel_at_period_end: c.cancel_at_period_end,
            ended_at: c.ended_at,
            arrears_billed_until: c.arrears_billed_until,
            usage_billed_until: c.usage_billed_until,
            paid: c.paid,
            carried: c.carried,
        }
    }
}

impl Contract {
    /// True while the free trial runs (period 0 of an active contract).
    pub fn in_trial(&self) -> bool {
        self.status == ContractStatus::Active && self.period_idx == 0
    }

    /// The scheduled changes in the order they apply.
    pub fn timeline(&self) -> Vec<&ScheduledChange> {
        let mut v: Vec<&ScheduledChange> = self.scheduled.iter().collect();
        v.sort_by_key(|s| (s.effective_at, s.seq));
        v
    }
}

/// What a billing computation reads besides the contract: the catalog, the tenant's settings,
/// the contract's usage, the tax rate in force and the customer's credit balances.
#[derive(Debug, Clone)]
pub struct BillingContext<'a> {
    /// The tenant's catalog.
    pub catalog: &'a Catalog,
    /// The tenant's settings.
    pub settings: &'a Settings,
    /// The settings' time zone, resolved.
    pub tz: TimeZone,
    /// Usage records of the contract from (at least) the start of its current period.
    pub usage: &'a [UsageRecord],
    /// Tax rate in percent (the customer's, else the tenant's).
    pub tax_rate: Decimal,
    /// The customer's credit balance per currency before the computation.
    pub balances: BTreeMap<Currency, Decimal>,
}

impl<'a> BillingContext<'a> {
    /// A context with no usage, the tenant's tax rate and no credit balance.
    ///
    /// # Errors
    /// An unknown time zone in the settings.
    pub fn new(
        catalog: &'a Catalog,
        settings: &'a Settings,
    ) -> Result<BillingContext<'a>, CoreError> {
        Ok(BillingContext {
            catalog,
            settings,
            tz: time_zone(&settings.time_zone)?,
            usage: &[],
            tax_rate: settings.tax_rate,
            balances: BTreeMap::new(),
        })
    }

    /// The same context with these usage records.
    pub fn with_usage(mut self, usage: &'a [UsageRecord]) -> Self {
        self.usage = usage;
        self
    }

    /// The same context with this tax rate.
    pub fn with_tax_rate(mut self, rate: Decimal) -> Self {
        self.tax_rate = rate;
        self
    }

    /// The same context with these credit balances.
    pub fn with_balances(mut self, balances: BTreeMap<Currency, Decimal>) -> Self {
        self.balances = balances;
        self
    }

    /// The granularity to prorate with.
    pub fn granularity(&self) -> Granularity {
        self.settings.proration
    }
}
