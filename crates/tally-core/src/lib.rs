//! Tally's billing core: pure and deterministic.
//!
//! Given a catalog, a contract and an instant, it computes exactly what is owed, to the cent, the
//! same way every time. It reads no clock and does no IO: time, ids, usage and balances come in as
//! arguments, and every operation returns the new state with the invoices it issues.
//!
//! - [`money`]: currencies, rounding, exact amounts.
//! - [`calendar`]: cycles, schedules, billing periods, proration fractions.
//! - [`catalog`]: features, plans, pricings, tiers, discounts.
//! - [`config`]: the prices a contract records, and its charge items.
//! - [`contract`]: contracts, phases, settings, the billing context.
//! - [`billing`]: signup, activation, renewals, cancellation, running due steps.
//! - [`change`]: planning a change (preview and execution are the same call).
//! - [`invoice`]: lines and totals.
//! - [`usage`]: usage records and windows.
//!
//! See `docs/billing-semantics.md` in the repository for every rule, with worked examples.

pub mod billing;
pub mod calendar;
pub mod catalog;
pub mod change;
pub mod config;
pub mod contract;
pub mod error;
pub mod examples;
pub mod invoice;
pub mod money;
pub mod usage;

/// The types and functions most callers need.
pub mod prelude {
    pub use crate::billing::{
        AdvanceOutcome, CancelMode, CancelOutcome, SignupOutcome, SignupRequest, StepKind,
        StepRecord, activate, advance, cancel, next_step, subscribe,
    };
    pub use crate::calendar::{Alignment, BillingPeriod, Cycle, Granularity, Period, Schedule};
    pub use crate::catalog::{
        Catalog, Discount, DiscountDuration, DiscountValue, Feature, FeatureKind, FeaturePrice,
        Plan, PriceSet, Pricing, Tier, TierEnd, TierMode, Timing,
    };
    pub use crate::change::{
        Activation, ChangeOutcome, ChangeRequest, cancel_scheduled_change, plan_change,
    };
    pub use crate::config::{Configuration, FeatureOverride, PlanSelection};
    pub use crate::contract::{
        BillingContext, ChangeKind, Contract, ContractStatus, Phase, Proration, ScheduledChange,
        Settings,
    };
    pub use crate::error::CoreError;
    pub use crate::invoice::{InvoiceDraft, InvoiceLine, InvoiceReason, LineKind};
    pub use crate::money::{Currency, Rounding};
    pub use crate::usage::UsageRecord;
}
