//! Wire shapes: request bodies exactly as seeds 000 and 004 define them (unknown fields refused),
//! and the JSON views of contracts, invoices and pages.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tally_app::store::{Customer, Invoice};
use tally_core::prelude::*;

use crate::error::ApiError;

/// `POST /v1/c/contract` (seed 004).
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// Customer id or slug.
    pub customer: String,
    /// Plan id or slug.
    pub plan: String,
    /// Pricing id or slug.
    #[serde(default)]
    pub pricing_id: Option<String>,
    /// Currency.
    #[schema(value_type = String, example = "usd")]
    pub currency: Currency,
    /// Cycle.
    #[schema(value_type = String)]
    pub cycle: Cycle,
    /// Activation instant; empty or absent = now.
    #[serde(default)]
    pub activation: Option<String>,
    /// Accepted for compatibility; Tally does not collect payments.
    #[serde(default)]
    pub automatic_payment: Option<bool>,
    /// Only `immediate`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub invoice_trigger: Option<Value>,
    /// Free trial days (> 0).
    #[serde(default)]
    pub free_trial_days: Option<u32>,
    /// Discount id, slug or coupon code.
    #[serde(default)]
    pub discount_id: Option<String>,
    /// Pending: activated by hand.
    #[serde(default)]
    pub is_pending: bool,
    /// Units per feature slug.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub unit_count_configuration: BTreeMap<String, Decimal>,
    /// Overrides per feature slug.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, Object>)]
    pub feature_configuration: BTreeMap<String, FeatureOverride>,
}

/// Parses an optional RFC 3339 instant (or a plain date, its midnight UTC) where an empty string
/// means "absent".
pub fn optional_instant(v: &Option<String>, param: &str) -> Result<Option<Timestamp>, ApiError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => {
            if let Ok(t) = s.parse() {
                return Ok(Some(t));
            }
            // A plain date (Wingback's list filters) means its midnight, UTC.
            s.parse::<jiff::civil::Date>()
                .ok()
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| Some(z.timestamp()))
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "invalid_value",
                        Some(param),
                        format!("expected an RFC 3339 instant or a date, got `{s}`"),
                    )
                })
        }
    }
}

/// When an upgrade takes effect (seed 000 `UpgradeActivation`).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpgradeActivation {
    /// At the start of the next billing cycle.
    NextCycle,
    /// At an instant.
    Date {
        /// The instant.
        #[schema(value_type = String, format = DateTime)]
        upgrade_date: Timestamp,
    },
}

impl From<UpgradeActivation> for Activation {
    fn from(a: UpgradeActivation) -> Self {
        match a {
            UpgradeActivation::NextCycle => Activation::NextCycle,
            UpgradeActivation::Date { upgrade_date } => Activation::Date(upgrade_date),
        }
    }
}

/// `new_plan` strategy.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanUpgrade {
    /// Plan id or slug.
    pub plan_id: String,
    /// Cycle.
    #[schema(value_type = String)]
    pub cycle: Cycle,
    /// Currency.
    #[schema(value_type = String, example = "usd")]
    pub currency: Currency,
    /// When.
    pub activation: UpgradeActivation,
    /// Units per feature.
    #[schema(value_type = BTreeMap<String, String>)]
    pub unit_count_configuration: BTreeMap<String, Decimal>,
    /// Overrides per feature.
    #[schema(value_type = BTreeMap<String, Object>)]
    pub unit_configuration: BTreeMap<String, FeatureOverride>,
    /// Pricing id or slug.
    #[serde(default)]
    pub pricing_id: Option<String>,
    /// Discount.
    #[serde(default)]
    pub discount_id: Option<String>,
}

/// `change_unit_count` strategy.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitCountUpgrade {
    /// When.
    pub activation: UpgradeActivation,
    /// Units per feature.
    #[schema(value_type = BTreeMap<String, String>)]
    pub unit_count_configuration: BTreeMap<String, Decimal>,
    /// Discount.
    #[serde(default)]
    pub discount_id: Option<String>,
}

/// `change_billing_date` strategy.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingDateConfiguration {
    /// The new billing date.
    #[schema(value_type = String, format = DateTime)]
    pub date: Timestamp,
    /// Charge or credit the difference.
    pub recalculate_charges: bool,
    /// Discount.
    #[serde(default)]
    pub discount_id: Option<String>,
}

/// Seed 000's `UpgradeConfiguration`, discriminated by `upgrade_strategy`.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(tag = "upgrade_strategy", rename_all = "snake_case")]
pub enum UpgradeConfiguration {
    /// Switch plan.
    NewPlan(PlanUpgrade),
    /// Change unit counts.
    ChangeUnitCount(UnitCountUpgrade),
    /// Move the billing date.
    ChangeBillingDate(BillingDateConfiguration),
}

/// The documented shape of [`UpgradeConfiguration`]: one object per strategy, each with its own
/// fields and `upgrade_strategy` naming it (unknown fields are refused).
fn upgrade_configuration_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let variant = |schema: RefOr<Schema>, tag: &str| -> RefOr<Schema> {
        match schema {
            RefOr::T(Schema::Object(mut o)) => {
                o.properties.insert(
                    "upgrade_strategy".into(),
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([tag]))
                        .into(),
                );
                o.required.push("upgrade_strategy".into());
                RefOr::T(Schema::Object(o))
            }
            other => other,
        }
    };
    Schema::OneOf(
        OneOfBuilder::new()
            .item(variant(PlanUpgrade::schema(), "new_plan"))
            .item(variant(UnitCountUpgrade::schema(), "change_unit_count"))
            .item(variant(
                BillingDateConfiguration::schema(),
                "change_billing_date",
            ))
            .description(Some(
                "The change, by `upgrade_strategy` (seed 000's UpgradeConfiguration)",
            ))
            .build(),
    )
}

/// How a change is prorated (Tally's extension of the upgrade body).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProrationBehavior {
    /// Credit and charge the rest of the period (default).
    CreateProrations,
    /// Nothing now; the new configuration is billed from the next period.
    None,
}

/// `POST /v1/c/contract/{id}/upgrade` and `/upgrade_estimate` (seed 000).
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    /// Allow a mid-cycle downgrade.
    #[serde(default)]
    pub downgrade_allowed: bool,
    /// The change.
    #[schema(schema_with = upgrade_configuration_schema)]
    pub upgrade_configuration: UpgradeConfiguration,
    /// Proration (extension; default `create_prorations`).
    #[serde(default)]
    pub proration_behavior: Option<ProrationBehavior>,
    /// Invoice now (default) or carry the lines to the next regular invoice (extension).
    #[serde(default)]
    pub invoice_immediately: Option<bool>,
}

impl UpgradeBody {
    /// The core change request.
    pub fn to_request(self) -> ChangeRequest {
        let (change, activation) = match self.upgrade_configuration {
            UpgradeConfiguration::NewPlan(p) => (
                ChangeKind::NewPlan {
                    plan: p.plan_id,
                    pricing: p.pricing_id,
                    currency: Some(p.currency),
                    cycle: Some(p.cycle),
                    unit_counts: p.unit_count_configuration,
                    overrides: p.unit_configuration,
                    discount: p.discount_id,
                },
                p.activation.into(),
            ),
            UpgradeConfiguration::ChangeUnitCount(u) => (
                ChangeKind::ChangeUnitCount {
                    unit_counts: u.unit_count_configuration,
                    purchased: BTreeMap::new(),
                    discount: u.discount_id,
                },
                u.activation.into(),
            ),
            UpgradeConfiguration::ChangeBillingDate(b) => (
                ChangeKind::ChangeBillingDate {
                    date: b.date,
                    recalculate_charges: b.recalculate_charges,
                    discount: b.discount_id,
                },
                Activation::Now,
            ),
        };
        ChangeRequest {
            change,
            activation,
            downgrade_allowed: self.downgrade_allowed,
            proration: match self.proration_behavior {
                Some(ProrationBehavior::None) => Proration::None,
                _ => Proration::CreateProrations,
            },
            invoice_now: self.invoice_immediately.unwrap_or(true),
        }
    }
}

/// `POST /v1/c/customer`: create, or update when `id` is set.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    /// Set to update.
    #[serde(default)]
    pub id: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Emails object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub emails: Option<serde_json::Map<String, Value>>,
    /// Your reference.
    #[serde(default)]
    pub customer_reference: Option<String>,
    /// Address object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub address: Option<serde_json::Map<String, Value>>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Tax details; `{"tax_rate": "19"}` sets the customer's VAT rate.
    #[serde(default)]
    pub tax_details: Option<TaxDetails>,
}

/// Tax details of a customer.
#[derive(utoipa::ToSchema, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaxDetails {
    /// Tax rate in percent.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub tax_rate: Option<Decimal>,
}

/// One usage event (`POST /v1/c/usage`, and each entry of the bulk array).
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBody {
    /// Customer id or slug.
    pub customer_id: String,
    /// Feature slug.
    pub feature_slug: String,
    /// Units since the last report (or the total, with `is_absolute`).
    #[schema(value_type = String)]
    pub units: Decimal,
    /// When; now when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub timestamp: Option<Timestamp>,
    /// Resets the period's count.
    #[serde(default)]
    pub is_absolute: Option<bool>,
    /// Metadata (kept for compatibility).
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v1/c/contract/{id}/cancel`.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// `now`, `at_period_end` or `date`.
    pub mode: CancelModeBody,
    /// For `date`.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub date: Option<Timestamp>,
}

/// `POST /v1/c/invoice/{id}/payment`: a payment provider's report of one attempt to collect an
/// open invoice.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// `started`, `failed` (one report per failed try) or `succeeded` (the invoice is paid).
    pub outcome: PaymentOutcome,
    /// Who collects, e.g. `stripe` (at most 255 characters).
    #[serde(default)]
    pub provider: Option<String>,
    /// The provider's id of the attempt, e.g. a payment intent (at most 255 characters).
    #[serde(default)]
    pub reference: Option<String>,
    /// Why it failed, e.g. `card_declined`: only with `failed` (at most 255 characters).
    #[serde(default)]
    pub failure_reason: Option<String>,
}

impl PaymentBody {
    /// The optional details, by field name.
    pub fn details(&self) -> [(&'static str, &Option<String>); 3] {
        [
            ("provider", &self.provider),
            ("reference", &self.reference),
            ("failure_reason", &self.failure_reason),
        ]
    }
}

/// Outcomes of a payment attempt.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// Collection began (`v1.payment.started`).
    Started,
    /// A try failed (`v1.payment.failed`); the invoice stays open.
    Failed,
    /// Collected (`v1.payment.succeeded`, `v1.invoice.paid`); the invoice is paid.
    Succeeded,
}

/// Cancellation modes on the wire.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelModeBody {
    /// Now.
    Now,
    /// At the period end.
    AtPeriodEnd,
    /// At `date`.
    Date,
}

/// `POST /v1/c/test_clock/advance`.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    /// The instant to move to.
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
}

/// A billing period on the wire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodView {
    /// Start.
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    /// End (none for a period without end).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end: Option<Timestamp>,
}

impl PeriodView {
    fn of(p: &BillingPeriod) -> Self {
        PeriodView {
            start: p.start,
            end: p.end,
        }
    }
}

/// A feature as a contract records it: prices after overrides and units.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeatureView<'a> {
    /// Feature slug.
    pub slug: &'a str,
    /// `flat`, `per_unit` or `usage`.
    #[schema(value_type = String)]
    pub kind: FeatureKind,
    /// `in_advance` or `in_arrears`.
    #[schema(value_type = String)]
    pub timing: Timing,
    /// Price per unit.
    #[schema(value_type = Option<String>)]
    pub price: Option<Decimal>,
    /// Flat fee per period.
    #[schema(value_type = Option<String>)]
    pub flat_fee: Option<Decimal>,
    /// Tiers replacing the price.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tiers: Option<&'a Vec<Tier>>,
    /// `graduated` or `volume`.
    #[schema(value_type = String)]
    pub tier_mode: TierMode,
    /// An add-on.
    pub optional: bool,
    /// On the contract.
    pub purchased: bool,
    /// Units purchased.
    #[schema(value_type = String)]
    pub unit_count: Decimal,
}

/// The discount of a configuration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiscountView<'a> {
    /// Discount id.
    pub id: &'a str,
    /// Slug.
    pub slug: &'a str,
    /// `{percent_off}` or `{amount_off, currency}`.
    #[schema(value_type = Object)]
    pub value: &'a DiscountValue,
    /// How long it applies.
    #[schema(value_type = Object)]
    pub duration: &'a DiscountDuration,
    /// The period it applies from.
    pub first_period: u32,
}

/// A configuration: plan, pricing, currency, cycle, features and discount.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigView<'a> {
    /// Plan id.
    pub plan_id: &'a str,
    /// Plan slug.
    pub plan: &'a str,
    /// Pricing id the prices came from.
    pub pricing_id: &'a str,
    /// Currency.
    #[schema(value_type = String)]
    pub currency: Currency,
    /// Cycle.
    #[schema(value_type = String)]
    pub cycle: Cycle,
    /// Features with their recorded prices and units.
    pub features: Vec<FeatureView<'a>>,
    /// The discount, if any.
    pub discount: Option<DiscountView<'a>>,
}

fn features_of(c: &Configuration) -> Vec<FeatureView<'_>> {
    c.features
        .values()
        .map(|f| FeatureView {
            slug: &f.slug,
            kind: f.kind,
            timing: f.timing,
            price: f.price,
            flat_fee: f.flat_fee,
            tiers: f.tiers.as_ref(),
            tier_mode: f.tier_mode,
            optional: f.optional,
            purchased: f.purchased,
            unit_count: f.quantity,
        })
        .collect()
}

fn discount_of(c: &Configuration) -> Option<DiscountView<'_>> {
    c.discount.as_ref().map(|d| DiscountView {
        id: &d.discount.id,
        slug: &d.discount.slug,
        value: &d.discount.value,
        duration: &d.discount.duration,
        first_period: d.first_period,
    })
}

impl<'a> ConfigView<'a> {
    fn of(c: &'a Configuration) -> Self {
        ConfigView {
            plan_id: &c.plan_id,
            plan: &c.plan_slug,
            pricing_id: &c.pricing_id,
            currency: c.currency,
            cycle: c.cycle,
            features: features_of(c),
            discount: discount_of(c),
        }
    }
}

/// The recurring amount of one full period of a configuration (usage excluded), rounded to the
/// currency.
pub(crate) fn period_amount(c: &Configuration) -> Decimal {
    c.recurring_items()
        .iter()
        .map(|i| i.quantity * i.unit_amount)
        .sum::<Decimal>()
        .round_dp(c.currency.minor_units())
}

/// The current period and its index.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BillingInformation {
    /// The current period (none before activation).
    pub current_period: Option<PeriodView>,
    /// Its index, from 1 (0 during a trial or before activation).
    pub current_period_idx: u32,
}

/// Wingback's contract summary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContractSummary<'a> {
    /// Contract id.
    pub id: &'a str,
    /// Customer id.
    pub customer_id: &'a str,
    /// Plan name.
    pub plan: Option<&'a str>,
    /// Plan id.
    pub plan_id: &'a str,
    /// Pricing id.
    pub pricing_id: &'a str,
    /// `pending`, `scheduled`, `active` or `canceled`.
    #[schema(value_type = String)]
    pub status: ContractStatus,
    /// Cycle.
    #[schema(value_type = String)]
    pub cycle: Cycle,
    /// Currency.
    #[schema(value_type = String)]
    pub currency: Currency,
    /// Recurring amount of one full period (usage excluded).
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// When it was signed.
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    /// When it started (or starts).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activation: Option<Timestamp>,
    /// When it ends or ended.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expiration: Option<Timestamp>,
    /// End of the free trial.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub free_trial_end: Option<Timestamp>,
    /// Start of the next period.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_cycle_start: Option<Timestamp>,
    /// In its free trial now.
    pub in_trial: bool,
}

/// The plan of a contract with its recorded features.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContractPlan<'a> {
    /// Plan id.
    pub id: &'a str,
    /// Plan slug.
    pub slug: &'a str,
    /// Plan name.
    pub name: Option<&'a str>,
    /// Features with their recorded prices and units.
    pub features: Vec<FeatureView<'a>>,
}

/// A phase: a configuration and its span.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PhaseView<'a> {
    /// When it took effect.
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    /// When the next phase replaced it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end: Option<Timestamp>,
    /// The configuration.
    pub configuration: ConfigView<'a>,
}

/// A scheduled change on the wire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduledView<'a> {
    /// Its id.
    pub id: &'a str,
    /// When it applies.
    #[schema(value_type = String, format = DateTime)]
    pub effective_at: Timestamp,
    /// Asked for at the period end (`next_cycle`).
    pub at_period_end: bool,
    /// When it was made.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// What it changes.
    #[schema(value_type = Object)]
    pub change: &'a ChangeKind,
    /// `create_prorations` or `none`.
    #[schema(value_type = String)]
    pub proration: Proration,
    /// Invoiced at once (or carried to the next regular invoice).
    pub invoice_now: bool,
}

impl<'a> ScheduledView<'a> {
    /// The view of a scheduled change.
    pub fn of(s: &'a ScheduledChange) -> Self {
        ScheduledView {
            id: &s.id,
            effective_at: s.effective_at,
            at_period_end: s.at_period_end,
            created_at: s.created_at,
            change: &s.change,
            proration: s.proration,
            invoice_now: s.invoice_now,
        }
    }
}

/// `GET /v1/c/contract/{id}`: Wingback's shape with Tally's phases and timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContractView<'a> {
    /// The current period.
    pub billing_information: BillingInformation,
    /// Wingback's summary.
    pub contract_summary: ContractSummary<'a>,
    /// The plan in force with its recorded features.
    pub plan: ContractPlan<'a>,
    /// The discount in force.
    pub discount: Option<DiscountView<'a>>,
    /// Every configuration with its span.
    pub phases: Vec<PhaseView<'a>>,
    /// Changes waiting for their instant, in the order they apply.
    pub scheduled_changes: Vec<ScheduledView<'a>>,
    /// When a scheduled cancellation takes effect.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cancel_at: Option<Timestamp>,
    /// When it ended.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub canceled_at: Option<Timestamp>,
}

impl<'a> ContractView<'a> {
    /// The view of a contract; `catalog` names its plan.
    pub fn new(c: &'a Contract, catalog: &'a Catalog) -> Self {
        let plan = catalog.plan(&c.config.plan_id).map(|p| p.name.as_str());
        ContractView {
            billing_information: BillingInformation {
                current_period: c.period.as_ref().map(PeriodView::of),
                current_period_idx: c.period_idx,
            },
            contract_summary: ContractSummary {
                id: &c.id,
                customer_id: &c.customer_id,
                plan,
                plan_id: &c.config.plan_id,
                pricing_id: &c.config.pricing_id,
                status: c.status,
                cycle: c.config.cycle,
                currency: c.config.currency,
                amount: period_amount(&c.config),
                created: c.created_at,
                activation: c.activation,
                expiration: c.ended_at.or(c.cancel_at),
                free_trial_end: c.trial_end,
                next_cycle_start: c.period.as_ref().and_then(|p| p.end),
                in_trial: c.in_trial(),
            },
            plan: ContractPlan {
                id: &c.config.plan_id,
                slug: &c.config.plan_slug,
                name: plan,
                features: features_of(&c.config),
            },
            discount: discount_of(&c.config),
            phases: c
                .phases
                .iter()
                .map(|p| PhaseView {
                    start: p.start,
                    end: p.end,
                    configuration: ConfigView::of(&p.config),
                })
                .collect(),
            scheduled_changes: c.timeline().into_iter().map(ScheduledView::of).collect(),
            cancel_at: c.cancel_at,
            canceled_at: c.ended_at,
        }
    }
}

/// The contract view as a JSON value (for answers that embed parts of it).
pub fn contract_json(c: &Contract, catalog: &Catalog) -> Value {
    serde_json::to_value(ContractView::new(c, catalog)).unwrap_or(Value::Null)
}

/// A scheduled change as a JSON value.
pub fn scheduled_json(s: &ScheduledChange) -> Value {
    serde_json::to_value(ScheduledView::of(s)).unwrap_or(Value::Null)
}

/// The documented shape of an invoice line (served from the core's `InvoiceLine`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = InvoiceLine)]
#[allow(dead_code)]
pub struct InvoiceLineDoc {
    /// `charge`, `proration_credit`, `proration_charge`, `usage`, `discount` or `one_time`.
    kind: String,
    /// The feature it bills.
    feature_slug: Option<String>,
    /// Words for people, with the proration fraction when there is one.
    description: String,
    /// Units.
    quantity: String,
    /// Price per unit for a full period (or per unit used).
    unit_amount: String,
    /// The amount, rounded once to the currency's minor unit.
    amount: String,
    /// Start of the time the line bills for.
    #[schema(format = DateTime)]
    period_start: String,
    /// End of the time the line bills for.
    #[schema(format = DateTime)]
    period_end: String,
}

/// The documented shape of an invoice (served from the stored `Invoice`): its id, number and
/// status, and the computed invoice's fields beside them.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Invoice)]
#[allow(dead_code)]
pub struct InvoiceDoc {
    /// `Inv_<uuid>`.
    id: String,
    /// Gapless per tenant: `YYYY-NNNNNN`.
    number: String,
    /// `open`, `paid` or `void`.
    status: String,
    /// What was computed.
    #[serde(flatten)]
    draft: InvoiceDraftDoc,
}

/// The documented shape of an invoice as computed, before the store numbers it (served from
/// the core's `InvoiceDraft`, which previews answer).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = InvoiceDraft)]
#[allow(dead_code)]
pub struct InvoiceDraftDoc {
    /// Contract billed.
    contract_id: String,
    /// Customer billed.
    customer_id: String,
    /// Currency of every amount.
    currency: String,
    /// Instant of the billing step.
    #[schema(format = DateTime)]
    issued_at: String,
    /// `signup`, `renewal`, `change`, `cancellation` or `manual`.
    reason: String,
    /// The billing step's unique key.
    step_key: String,
    /// Lines.
    lines: Vec<InvoiceLineDoc>,
    /// Sum of the lines.
    net: String,
    /// Tax rate in percent.
    tax_rate: String,
    /// Rounded net x tax rate.
    tax: String,
    /// Net + tax.
    gross: String,
    /// Credit balance consumed.
    credit_applied: String,
    /// What the customer owes.
    amount_due: String,
    /// A negative gross moved to the credit balance.
    credit_added: String,
}

/// Writes the documented shape of one kind of page (Wingback's paging): its items, and the
/// counts and cursors every page carries.
macro_rules! page_doc {
    ($(#[$meta:meta])* $name:ident, $schema:ident, $item:ty, $hits:literal, $total:literal) => {
        $(#[$meta])*
        #[derive(utoipa::ToSchema)]
        #[schema(as = $schema)]
        #[allow(dead_code)]
        pub struct $name {
            #[doc = $hits]
            hits: Vec<$item>,
            /// Page number, from 1.
            current_page: u64,
            #[doc = $total]
            total: u64,
            /// Pages in all.
            total_pages: u64,
            /// Cursor of the first page.
            first: String,
            /// Cursor of the last page.
            last: String,
            /// Cursor of the next page.
            forward: Option<String>,
            /// Cursor of the previous page.
            backward: Option<String>,
        }
    };
}
pub(crate) use page_doc;

page_doc!(
    /// The documented shape of a page of invoices (Wingback's paging).
    InvoicePageDoc,
    InvoicePage,
    InvoiceDoc,
    " The invoices of this page.",
    " Invoices in all."
);

page_doc!(
    /// The documented shape of a page of contracts (Wingback's paging).
    ContractPageDoc,
    ContractPage,
    ContractView<'static>,
    " The contracts of this page, each as `GET /v1/c/contract/{id}` serves it.",
    " Contracts in all."
);

/// The answer to activating a pending contract.
#[derive(utoipa::ToSchema)]
#[schema(as = Activated)]
#[allow(dead_code)]
pub struct ActivatedDoc {
    /// The contract, now active.
    contract: ContractView<'static>,
    /// The invoices its activation issued.
    invoices: Vec<InvoiceDoc>,
}

/// The answer to a cancellation.
#[derive(utoipa::ToSchema)]
#[schema(as = Canceled)]
#[allow(dead_code)]
pub struct CanceledDoc {
    /// The contract: canceled now, or with its cancellation scheduled.
    contract: ContractView<'static>,
    /// The invoice the cancellation issued now (credit for unused time, usage), if any.
    invoice: Option<InvoiceDoc>,
}

/// One event of a contract's history, as webhooks also deliver it.
#[derive(utoipa::ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub struct EventDoc {
    /// `Evt_<uuid>`.
    id: String,
    /// Event type (`v1.contract.signature.completed`, `v1.invoice.created`, ...).
    kind: String,
    /// The contract concerned.
    contract_id: Option<String>,
    /// When it happened (tenant time).
    #[schema(format = DateTime)]
    at: String,
    /// Who: `api`, `bill_run` or `test_clock`.
    actor: String,
    /// The request id, when made through the API.
    request_id: Option<String>,
    /// Details, by event type.
    #[schema(value_type = Object)]
    data: Value,
}

/// A contract's history.
#[derive(utoipa::ToSchema)]
#[schema(as = ContractHistory)]
#[allow(dead_code)]
pub struct HistoryDoc {
    /// Every configuration with its span, oldest first.
    phases: Vec<PhaseView<'static>>,
    /// Its events, oldest first.
    events: Vec<EventDoc>,
}

/// A test-mode tenant's clock.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TestClock)]
pub struct ClockView {
    /// The tenant's current instant.
    #[schema(value_type = String, format = DateTime)]
    pub now: Timestamp,
}

/// The answer to advancing the test clock.
#[derive(utoipa::ToSchema)]
#[schema(as = ClockAdvanced)]
#[allow(dead_code)]
pub struct AdvancedDoc {
    /// The tenant's instant after advancing.
    #[schema(format = DateTime)]
    now: String,
    /// The invoices the billing steps on the way issued, in time order.
    invoices: Vec<InvoiceDoc>,
}

/// A tenant's billing settings and catalog, as `GET /v1/c/catalog` serves them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CatalogAnswer)]
pub struct CatalogView<'a> {
    /// Time zone, proration, rounding, alignment and default tax rate.
    pub settings: &'a Settings,
    /// Features, plans with their pricings, and discounts.
    pub catalog: &'a Catalog,
}

/// An invoice on the wire.
pub fn invoice_json(i: &Invoice) -> Value {
    serde_json::to_value(i).unwrap_or(Value::Null)
}

/// An invoice the core computed but that is not stored (previews).
pub fn draft_json(d: &InvoiceDraft) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

/// The documented shape of a customer, as `GET /v1/c/customer/{id}` serves it.
#[derive(utoipa::ToSchema)]
#[schema(as = Customer)]
#[allow(dead_code)]
pub struct CustomerDoc {
    /// `Cust_<uuid>`.
    id: String,
    /// Slug from a catalog file (or a dialect's external id), accepted wherever the id is.
    slug: Option<String>,
    /// When it was created.
    #[schema(format = DateTime)]
    created: String,
    /// Always `active`.
    status: String,
    /// Name.
    name: Option<String>,
    /// Email addresses (free-form object).
    #[schema(value_type = Object)]
    emails: Value,
    /// The tenant's own reference.
    customer_reference: Option<String>,
    /// Postal address (free-form object).
    #[schema(value_type = Option<Object>)]
    address: Option<Value>,
    /// Metadata.
    metadata: BTreeMap<String, String>,
    /// Notes.
    notes: Option<String>,
    /// Tax settings.
    tax_details: TaxDetailsDoc,
    /// The summaries of its contracts, oldest first.
    contracts: Vec<ContractSummary<'static>>,
}

/// A customer's tax settings.
#[derive(utoipa::ToSchema)]
#[schema(as = TaxDetails)]
#[allow(dead_code)]
pub struct TaxDetailsDoc {
    /// Tax rate in percent; the tenant's when null.
    tax_rate: Option<String>,
}

/// A customer on the wire (Wingback's fields).
pub fn customer_json(c: &Customer, contracts: Vec<Value>) -> Value {
    json!({
        "id": c.id,
        "slug": c.slug,
        "created": c.created_at,
        "status": "active",
        "name": c.name,
        "emails": c.emails,
        "customer_reference": c.customer_reference,
        "address": c.address,
        "metadata": c.metadata,
        "notes": c.notes,
        "tax_details": { "tax_rate": c.tax_rate },
        "contracts": contracts,
    })
}

/// Wingback list paging: `limit`, an opaque `offset` cursor, `direction`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page (default 20, at most 100).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Cursor from a previous page's `forward`/`backward`/`first`/`last`.
    #[serde(default)]
    pub offset: Option<String>,
    /// `forward` (default) or `backward`.
    #[serde(default)]
    pub direction: Option<String>,
}

impl PageQuery {
    /// The page to read.
    pub fn page(&self) -> Result<tally_app::store::Page, ApiError> {
        let limit = self.limit.unwrap_or(20).min(100);
        let start = match self.offset.as_deref() {
            None | Some("") => 0,
            Some(c) => c
                .strip_prefix("o")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "invalid_cursor",
                        Some("offset"),
                        "not a cursor this API returned",
                    )
                })?,
        };
        let offset = match self.direction.as_deref() {
            None | Some("forward") => start,
            Some("backward") => start.saturating_sub(limit),
            Some(other) => {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    Some("direction"),
                    format!("expected forward or backward, got `{other}`"),
                ));
            }
        };
        Ok(tally_app::store::Page { offset, limit })
    }
}

/// The page envelope: `{hits, current_page, total, total_pages, first, last, forward, backward}`.
pub fn page_json(hits: Vec<Value>, page: &tally_app::store::Page, total: u64) -> Value {
    let limit = page.limit.max(1);
    let total_pages = total.div_ceil(limit);
    let cursor = |o: u64| format!("o{o}");
    let forward = (page.offset + page.limit < total).then(|| cursor(page.offset + page.limit));
    let backward = (page.offset > 0).then(|| cursor(page.offset.saturating_sub(page.limit)));
    json!({
        "hits": hits,
        "current_page": page.offset / limit + 1,
        "total": total,
        "total_pages": total_pages,
        "first": cursor(0),
        "last": cursor(total_pages.saturating_sub(1) * limit),
        "forward": forward,
        "backward": backward,
    })
}
