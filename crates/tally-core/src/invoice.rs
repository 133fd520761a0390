//! Invoices: lines (each rounded once), and the totals built from them: net, tax, gross, credit
//! balance consumed, amount due, and a negative total moved to the credit balance.

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::money::{Currency, Exact, Rounding};

/// What an invoice line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A recurring charge for a (possibly partial) period.
    Charge,
    /// Credit for the unused part of an in-advance charge.
    ProrationCredit,
    /// Charge for the rest of a period under a new configuration.
    ProrationCharge,
    /// Metered usage, in arrears.
    Usage,
    /// A discount.
    Discount,
    /// A one-time charge (`once` cycle).
    OneTime,
}

/// Why an invoice was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceReason {
    /// The first invoice of a contract.
    Signup,
    /// A period renewal (or the end of a trial).
    Renewal,
    /// A mid-cycle change.
    Change,
    /// A cancellation.
    Cancellation,
    /// Issued by hand.
    Manual,
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// What the line is.
    pub kind: LineKind,
    /// The feature it bills, if any.
    pub feature_slug: Option<String>,
    /// Words for people, including the proration fraction when there is one.
    pub description: String,
    /// Units.
    pub quantity: Decimal,
    /// Price per unit for a full period (or per unit used).
    pub unit_amount: Decimal,
    /// The amount, rounded once to the currency's minor unit.
    pub amount: Decimal,
    /// Start of the time the line bills for.
    pub period_start: Timestamp,
    /// End of the time the line bills for (equal to the start for open-ended charges).
    pub period_end: Timestamp,
}

/// An invoice computed by the core: numbering and ids are the store's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceDraft {
    /// Contract billed.
    pub contract_id: String,
    /// Customer billed.
    pub customer_id: String,
    /// Currency of every amount.
    pub currency: Currency,
    /// Instant of the billing step.
    pub issued_at: Timestamp,
    /// Why.
    pub reason: InvoiceReason,
    /// Unique key of the billing step, so that re-running it never issues a second invoice.
    pub step_key: String,
    /// Lines.
    pub lines: Vec<InvoiceLine>,
    /// Sum of the lines.
    pub net: Decimal,
    /// Tax rate applied, in percent.
    pub tax_rate: Decimal,
    /// Rounded `net x tax_rate / 100`.
    pub tax: Decimal,
    /// `net + tax`.
    pub gross: Decimal,
    /// Credit balance consumed.
    pub credit_applied: Decimal,
    /// What the customer owes: `gross - credit_applied`, never negative.
    pub amount_due: Decimal,
    /// A negative gross moved to the customer's credit balance (positive number).
    pub credit_added: Decimal,
}

/// Accumulates lines for one billing step; each line is rounded once when added.
#[derive(Debug, Clone)]
pub struct LineBuilder {
    currency: Currency,
    rounding: Rounding,
    /// Lines so far.
    pub lines: Vec<InvoiceLine>,
    discount: Exact,
    discount_desc: Option<String>,
    discount_period: Option<(Timestamp, Timestamp)>,
}

/// The parts of a line before rounding.
#[derive(Debug, Clone)]
pub struct LineSpec {
    /// Kind.
    pub kind: LineKind,
    /// Feature.
    pub feature: Option<String>,
    /// Description.
    pub description: String,
    /// Units.
    pub quantity: Decimal,
    /// Unit amount.
    pub unit_amount: Decimal,
    /// Exact amount.
    pub exact: Exact,
    /// Period start.
    pub start: Timestamp,
    /// Period end.
    pub end: Timestamp,
}

impl LineBuilder {
    /// A builder for amounts in `currency`.
    pub fn new(currency: Currency, rounding: Rounding) -> LineBuilder {
        LineBuilder {
            currency,
            rounding,
            lines: Vec::new(),
            discount: Exact::ZERO,
            discount_desc: None,
            discount_period: None,
        }
    }

    /// Rounds and adds a line; returns the rounded amount.
    pub fn push(&mut self, s: LineSpec) -> Result<Decimal, CoreError> {
        let amount = s.exact.round_to(self.currency, self.rounding)?;
        self.lines.push(InvoiceLine {
            kind: s.kind,
            feature_slug: s.feature,
            description: s.description,
            quantity: s.quantity,
            unit_amount: s.unit_amount,
            amount,
            period_start: s.start,
            period_end: s.end,
        });
        Ok(amount)
    }

    /// Adds an exact amount to this step's discount line.
    pub fn add_discount(
        &mut self,
        exact: Exact,
        desc: &str,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<(), CoreError> {
        if exact.is_zero() {
            return Ok(());
        }
        self.discount = self.discount.plus(exact)?;
        self.discount_desc.get_or_insert_with(|| desc.to_string());
        let p = self.discount_period.get_or_insert((start, end));
        p.0 = p.0.min(start);
        p.1 = p.1.max(end);
        Ok(())
    }

    /// Adds lines carried from an earlier step (already rounded).
    pub fn extend_carried(&mut self, lines: Vec<InvoiceLine>) {
        self.lines.extend(lines);
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.discount.is_zero()
    }

    /// Closes the builder into its lines (the discount line last).
    pub fn into_lines(mut self) -> Result<Vec<InvoiceLine>, CoreError> {
        if !self.discount.is_zero() {
            let (start, end) = self
                .discount_period
                .unwrap_or((Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH));
            let amount = self
                .discount
                .negated()
                .round_to(self.currency, self.rounding)?;
            self.lines.push(InvoiceLine {
                kind: LineKind::Discount,
                feature_slug: None,
                description: self
                    .discount_desc
                    .take()
                    .unwrap_or_else(|| "discount".into()),
                quantity: Decimal::ONE,
                unit_amount: amount,
                amount,
                period_start: start,
                period_end: end,
            });
        }
        Ok(self.lines)
    }
}

/// Totals of an invoice from its lines, the tax rate (percent) and the customer's credit balance
/// in the invoice currency.
///
/// Returns `(net, tax, gross, credit_applied, amount_due, credit_added)`.
///
/// # Example
/// ```
/// use rust_decimal::Decimal;
/// use tally_core::invoice::totals;
/// use tally_core::money::{Currency, Rounding};
/// // net 100.00, 19% tax = 19.00, gross 119.00; 20.00 of credit leaves 99.00 due.
/// let t = totals(&[Decimal::new(10000, 2)], Decimal::new(19, 0), Decimal::new(2000, 2), Currency::Eur, Rounding::HalfAwayFromZero).unwrap();
/// assert_eq!(t.amount_due, Decimal::new(9900, 2));
/// assert_eq!(t.credit_applied, Decimal::new(2000, 2));
/// ```
pub fn totals(
    amounts: &[Decimal],
    tax_rate: Decimal,
    balance: Decimal,
    currency: Currency,
    rounding: Rounding,
) -> Result<Totals, CoreError> {
    let net: Decimal = amounts.iter().copied().sum();
    let tax = Exact::from_decimal(net)?
        .mul_dec(tax_rate)?
        .times(Exact::ratio(1, 100)?)?
        .round_to(currency, rounding)?;
    let gross = net + tax;
    let (credit_applied, amount_due, credit_added) = if gross < Decimal::ZERO {
        (Decimal::ZERO, Decimal::ZERO, -gross)
    } else {
        let applied = balance.max(Decimal::ZERO).min(gross);
        (applied, gross - applied, Decimal::ZERO)
    };
    let n = |d: Decimal| crate::money::normalize(d, currency);
    Ok(Totals {
        net: n(net),
        tax: n(tax),
        gross: n(gross),
        credit_applied: n(credit_applied),
        amount_due: n(amount_due),
        credit_added: n(credit_added),
    })
}

/// The totals of an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Sum of lines.
    pub net: Decimal,
    /// Tax.
    pub tax: Decimal,
    /// Net plus tax.
    pub gross: Decimal,
    /// Credit balance consumed.
    pub credit_applied: Decimal,
    /// Owed.
    pub amount_due: Decimal,
    /// Moved to the credit balance.
    pub credit_added: Decimal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn negative_total_goes_to_balance_with_its_tax() {
        // lines -54.84 + 16.45 = -38.39 net; 10% tax = -3.839 -> -3.84; gross -42.23 -> credit 42.23
        let t = totals(
            &[d("-54.84"), d("16.45")],
            d("10"),
            d("5"),
            Currency::Usd,
            Rounding::HalfAwayFromZero,
        )
        .unwrap();
        assert_eq!(t.net, d("-38.39"));
        assert_eq!(t.tax, d("-3.84"));
        assert_eq!(t.gross, d("-42.23"));
        assert_eq!(t.amount_due, d("0"));
        assert_eq!(t.credit_applied, d("0"));
        assert_eq!(t.credit_added, d("42.23"));
    }

    #[test]
    fn balance_is_consumed_up_to_the_gross() {
        // gross 30.00 with 50.00 of balance: 30.00 applied, 0 due
        let t = totals(
            &[d("30")],
            d("0"),
            d("50"),
            Currency::Usd,
            Rounding::HalfAwayFromZero,
        )
        .unwrap();
        assert_eq!((t.credit_applied, t.amount_due), (d("30.00"), d("0.00")));
        assert_eq!(t.gross.to_string(), "30.00");
    }

    #[test]
    fn tax_rounds_once_on_the_net() {
        // 3 lines of 0.35 = 1.05; 25% = 0.2625 -> 0.26
        let t = totals(
            &[d("0.35"), d("0.35"), d("0.35")],
            d("25"),
            d("0"),
            Currency::Eur,
            Rounding::HalfAwayFromZero,
        )
        .unwrap();
        assert_eq!(t.tax, d("0.26"));
        assert_eq!(t.gross, d("1.31"));
    }
}
