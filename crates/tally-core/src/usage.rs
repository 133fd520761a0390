//! Metered usage: the records a contract's usage features are rated from, and how many units
//! fall in a window of a billing period (`is_absolute` resets the period's running total).

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One usage report for a contract's feature (Wingback's usage event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Feature slug.
    pub feature_slug: String,
    /// Units consumed since the last report, or the new total when `is_absolute`.
    pub units: Decimal,
    /// When the usage happened.
    pub timestamp: Timestamp,
    /// When true, discards the earlier reports of the period: `units` is the period's total so far.
    pub is_absolute: bool,
}

/// Units of `feature` used in `[from, to)`, where `period_start` is the start of the billing
/// period that absolute reports reset. Records are taken in time order (equal instants in the
/// order given). A window whose running total went down (an absolute report below what was
/// already counted) counts as zero.
///
/// # Example
/// ```
/// use tally_core::usage::{UsageRecord, units_in};
/// let r = |u: i64, t: &str, abs: bool| UsageRecord { feature_slug: "api".into(), units: u.into(), timestamp: t.parse().unwrap(), is_absolute: abs };
/// let recs = [r(5, "2024-01-02T00:00:00Z", false), r(3, "2024-01-03T00:00:00Z", false), r(20, "2024-01-10T00:00:00Z", true), r(1, "2024-01-20T00:00:00Z", false)];
/// let start = "2024-01-01T00:00:00Z".parse().unwrap();
/// let end = "2024-02-01T00:00:00Z".parse().unwrap();
/// // 5 + 3, then reset to 20, then + 1 = 21 for the whole period
/// assert_eq!(units_in(&recs, "api", start, start, end), 21.into());
/// ```
pub fn units_in(
    records: &[UsageRecord],
    feature: &str,
    period_start: Timestamp,
    from: Timestamp,
    to: Timestamp,
) -> Decimal {
    let mut relevant: Vec<&UsageRecord> = records
        .iter()
        .filter(|r| r.feature_slug == feature && r.timestamp >= period_start && r.timestamp < to)
        .collect();
    relevant.sort_by_key(|r| r.timestamp);
    let mut total = Decimal::ZERO;
    let mut at_from = Decimal::ZERO;
    let mut passed_from = false;
    for r in relevant {
        if !passed_from && r.timestamp >= from {
            at_from = total;
            passed_from = true;
        }
        total = if r.is_absolute {
            r.units
        } else {
            total + r.units
        };
    }
    if !passed_from {
        return Decimal::ZERO;
    }
    (total - at_from).max(Decimal::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(units: i64, t: &str, abs: bool) -> UsageRecord {
        UsageRecord {
            feature_slug: "api".into(),
            units: units.into(),
            timestamp: t.parse().unwrap(),
            is_absolute: abs,
        }
    }

    #[test]
    fn windows_split_the_period() {
        let recs = [
            r(5, "2024-01-02T00:00:00Z", false),
            r(7, "2024-01-16T00:00:00Z", false),
            r(2, "2024-01-20T00:00:00Z", false),
            r(9, "2024-02-01T00:00:00Z", false), // next period
            r(4, "2024-01-05T00:00:00Z", false), // out of order: sorted by time
        ];
        let s: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let mid: Timestamp = "2024-01-16T00:00:00Z".parse().unwrap();
        let e: Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
        // before the change: 5 + 4 = 9; after: 7 + 2 = 9
        assert_eq!(units_in(&recs, "api", s, s, mid), Decimal::from(9));
        assert_eq!(units_in(&recs, "api", s, mid, e), Decimal::from(9));
        assert_eq!(units_in(&recs, "other", s, s, e), Decimal::ZERO);
    }

    #[test]
    fn an_absolute_report_below_the_count_gives_zero_not_negative() {
        let recs = [
            r(10, "2024-01-02T00:00:00Z", false),
            r(3, "2024-01-20T00:00:00Z", true),
        ];
        let s: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let mid: Timestamp = "2024-01-16T00:00:00Z".parse().unwrap();
        let e: Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
        assert_eq!(units_in(&recs, "api", s, s, mid), Decimal::from(10));
        assert_eq!(units_in(&recs, "api", s, mid, e), Decimal::ZERO);
    }
}
