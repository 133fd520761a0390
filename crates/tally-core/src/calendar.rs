//! Calendar: billing cycles, schedules (anchor + k x cycle), billing periods with the nominal
//! periods they are prorated against, and proration fractions at day or second granularity.
//!
//! Period boundaries are always computed from the original anchor (`anchor + k x cycle`), never by
//! adding to the previous boundary, so month-end anchors keep their day: Jan 31 gives Feb 28/29,
//! Mar 31, Apr 30. Civil arithmetic (days, months) happens in the tenant's time zone.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::money::Exact;

/// How often a contract is billed (seed 000's `Cycle` enum).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cycle {
    /// A single charge at activation, no further periods.
    Once,
    /// Every hour.
    Hour,
    /// Every day (calendar day in the tenant's time zone).
    Day,
    /// Every 7 days.
    Week,
    /// Every month, keeping the anchor's day of month (clamped).
    Month,
    /// Every 3 months.
    Quarter,
    /// Every 12 months.
    Year,
    /// A single charge for the whole contract, which runs until cancelled.
    Constant,
}

impl Cycle {
    /// All cycles, in seed order.
    pub const ALL: [Cycle; 8] = [
        Cycle::Once,
        Cycle::Hour,
        Cycle::Day,
        Cycle::Week,
        Cycle::Month,
        Cycle::Quarter,
        Cycle::Year,
        Cycle::Constant,
    ];

    /// True for cycles that renew (everything but `once` and `constant`).
    pub fn is_recurring(self) -> bool {
        !matches!(self, Cycle::Once | Cycle::Constant)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cycle::Once => "once",
            Cycle::Hour => "hour",
            Cycle::Day => "day",
            Cycle::Week => "week",
            Cycle::Month => "month",
            Cycle::Quarter => "quarter",
            Cycle::Year => "year",
            Cycle::Constant => "constant",
        }
    }

    /// How many periods make a year, used to compare recurring prices across cycles
    /// (`once` and `constant` count as one).
    pub fn periods_per_year(self) -> i128 {
        match self {
            Cycle::Hour => 8760,
            Cycle::Day => 365,
            Cycle::Week => 52,
            Cycle::Month => 12,
            Cycle::Quarter => 4,
            Cycle::Year | Cycle::Once | Cycle::Constant => 1,
        }
    }

    /// The span of `k` cycles; `None` for non-recurring cycles.
    fn span(self, k: i64) -> Option<Result<Span, CoreError>> {
        let r = match self {
            Cycle::Hour => k.checked_mul(1).map(|k| Span::new().try_hours(k)),
            Cycle::Day => Some(Span::new().try_days(k)),
            Cycle::Week => k.checked_mul(7).map(|d| Span::new().try_days(d)),
            Cycle::Month => Some(Span::new().try_months(k)),
            Cycle::Quarter => k.checked_mul(3).map(|m| Span::new().try_months(m)),
            Cycle::Year => k.checked_mul(12).map(|m| Span::new().try_months(m)),
            Cycle::Once | Cycle::Constant => return None,
        };
        Some(match r {
            Some(Ok(s)) => Ok(s),
            _ => Err(CoreError::Overflow),
        })
    }

    /// Rough length in seconds, only to estimate how many periods fit between two instants.
    fn approx_seconds(self) -> i64 {
        match self {
            Cycle::Hour => 3600,
            Cycle::Day => 86_400,
            Cycle::Week => 7 * 86_400,
            Cycle::Month => 2_629_746,
            Cycle::Quarter => 7_889_238,
            Cycle::Year => 31_556_952,
            Cycle::Once | Cycle::Constant => i64::MAX,
        }
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cycle {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cycle::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(
                    "cycle",
                    "one of once, hour, day, week, month, quarter, year, constant",
                    s,
                )
            })
    }
}

/// How proration counts time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// Whole days in the tenant's time zone; every instant is taken at the start of its day.
    #[default]
    Day,
    /// Exact seconds.
    Second,
}

/// Where the periods of a new contract are anchored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alignment {
    /// At the activation instant.
    #[default]
    Anniversary,
    /// At the start of the calendar unit containing the activation; the first period is a stub.
    Calendar,
}

/// The anchor and cycle that generate a contract's period boundaries: boundary k is
/// `anchor + k x cycle`, for any integer k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Boundary 0.
    pub anchor: Timestamp,
    /// The cycle.
    pub cycle: Cycle,
}

impl Schedule {
    /// Boundary `k` (`anchor + k x cycle`), computed in the time zone `tz`.
    ///
    /// # Errors
    /// [`CoreError::Overflow`] when the date leaves jiff's range; [`CoreError::InvalidState`]
    /// for a non-recurring cycle.
    ///
    /// # Example
    /// ```
    /// use tally_core::calendar::{Cycle, Schedule};
    /// let s = Schedule { anchor: "2024-01-31T00:00:00Z".parse().unwrap(), cycle: Cycle::Month };
    /// let tz = jiff::tz::TimeZone::UTC;
    /// assert_eq!(s.boundary(1, &tz).unwrap().to_string(), "2024-02-29T00:00:00Z");
    /// assert_eq!(s.boundary(2, &tz).unwrap().to_string(), "2024-03-31T00:00:00Z");
    /// assert_eq!(s.boundary(3, &tz).unwrap().to_string(), "2024-04-30T00:00:00Z");
    /// ```
    pub fn boundary(&self, k: i64, tz: &TimeZone) -> Result<Timestamp, CoreError> {
        let span = self.cycle.span(k).ok_or_else(|| {
            CoreError::state("cycle", "a once/constant contract has no periods")
        })??;
        let z = self.anchor.to_zoned(tz.clone());
        Ok(z.checked_add(span)?.timestamp())
    }

    /// The index of the first boundary strictly after `t`, and that boundary.
    pub fn next_boundary_after(
        &self,
        t: Timestamp,
        tz: &TimeZone,
    ) -> Result<(i64, Timestamp), CoreError> {
        let secs = t.as_second() - self.anchor.as_second();
        let mut k = secs / self.cycle.approx_seconds();
        // The estimate is within a couple of periods; walk to the exact index.
        let mut b = self.boundary(k, tz)?;
        while b <= t {
            k += 1;
            b = self.boundary(k, tz)?;
        }
        loop {
            let prev = self.boundary(k - 1, tz)?;
            if prev > t {
                k -= 1;
                b = prev;
            } else {
                break;
            }
        }
        Ok((k, b))
    }

    /// The full period `[boundary(k-1), boundary(k))` that contains `t`.
    pub fn period_containing(&self, t: Timestamp, tz: &TimeZone) -> Result<Period, CoreError> {
        let (k, end) = self.next_boundary_after(t, tz)?;
        Ok(Period {
            start: self.boundary(k - 1, tz)?,
            end,
        })
    }
}

/// A half-open interval of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end.
    pub end: Timestamp,
}

impl Period {
    /// True when `t` lies in `[start, end)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// A piece of a billing period and the full schedule period it is prorated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The part of time covered.
    pub span: Period,
    /// The full period of the schedule it belongs to (the proration denominator).
    pub nominal: Period,
}

/// A contract's billing period: its interval and the segments that say what each part is
/// prorated against. A regular period is one segment whose nominal period is itself; a stub
/// (calendar alignment, a moved billing date) is a segment of a longer nominal period.
///
/// Serialized, a regular period leaves out its one segment (it is the period itself), since
/// every renewal writes the period.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "StoredPeriod")]
pub struct BillingPeriod {
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end; `None` for `once` and `constant` contracts, which have a single open period.
    pub end: Option<Timestamp>,
    /// Proration segments covering `[start, end)` in order; empty for open periods.
    pub segments: Vec<Segment>,
}

impl BillingPeriod {
    /// The single segment of a regular (closed, unprorated) period `[start, end)`.
    fn regular_segment(&self) -> Option<Segment> {
        self.end.map(|end| {
            let p = Period {
                start: self.start,
                end,
            };
            Segment {
                span: p,
                nominal: p,
            }
        })
    }
}

impl Serialize for BillingPeriod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let regular = match (self.segments.as_slice(), self.regular_segment()) {
            ([one], Some(r)) => *one == r,
            _ => false,
        };
        let mut st = s.serialize_struct("BillingPeriod", 3)?;
        st.serialize_field("start", &self.start)?;
        st.serialize_field("end", &self.end)?;
        if regular {
            st.skip_field("segments")?;
        } else {
            st.serialize_field("segments", &self.segments)?;
        }
        st.end()
    }
}

/// A billing period as stored: `segments` absent means the one regular segment.
#[derive(Deserialize)]
struct StoredPeriod {
    start: Timestamp,
    end: Option<Timestamp>,
    segments: Option<Vec<Segment>>,
}

impl From<StoredPeriod> for BillingPeriod {
    fn from(p: StoredPeriod) -> BillingPeriod {
        let mut out = BillingPeriod {
            start: p.start,
            end: p.end,
            segments: Vec::new(),
        };
        out.segments = match p.segments {
            Some(s) => s,
            None => out.regular_segment().into_iter().collect(),
        };
        out
    }
}

/// Start of the calendar unit (hour, day, Monday, month, quarter, year) containing `t` in `tz`.
pub fn calendar_start(t: Timestamp, cycle: Cycle, tz: &TimeZone) -> Result<Timestamp, CoreError> {
    let z = t.to_zoned(tz.clone());
    let day = z.start_of_day()?;
    let r: Zoned = match cycle {
        Cycle::Hour => z.with().minute(0).second(0).subsec_nanosecond(0).build()?,
        Cycle::Day | Cycle::Once | Cycle::Constant => day,
        Cycle::Week => {
            let back = i64::from(day.weekday().to_monday_zero_offset());
            day.checked_sub(back.days())?
        }
        Cycle::Month => day.with().day(1).build()?,
        Cycle::Quarter => {
            let m = day.month();
            let qm = ((m - 1) / 3) * 3 + 1;
            day.with().month(qm).day(1).build()?
        }
        Cycle::Year => day.with().month(1).day(1).build()?,
    };
    Ok(r.timestamp())
}

impl BillingPeriod {
    /// The period of `schedule` that starts at `start` and runs to the first boundary after it,
    /// prorated against the full schedule period that boundary closes.
    pub fn from_schedule(
        schedule: &Schedule,
        start: Timestamp,
        tz: &TimeZone,
    ) -> Result<BillingPeriod, CoreError> {
        if !schedule.cycle.is_recurring() {
            return Ok(BillingPeriod::open(start));
        }
        let (k, end) = schedule.next_boundary_after(start, tz)?;
        let nominal = Period {
            start: schedule.boundary(k - 1, tz)?,
            end,
        };
        Ok(BillingPeriod {
            start,
            end: Some(end),
            segments: vec![Segment {
                span: Period { start, end },
                nominal,
            }],
        })
    }

    /// The single open period of a `once` or `constant` contract.
    pub fn open(start: Timestamp) -> BillingPeriod {
        BillingPeriod {
            start,
            end: None,
            segments: Vec::new(),
        }
    }

    /// The closed interval, if the period has an end.
    pub fn interval(&self) -> Option<Period> {
        self.end.map(|end| Period {
            start: self.start,
            end,
        })
    }

    /// The share of the period's full price that `[from, to)` is worth: the sum over segments of
    /// the overlap divided by the segment's nominal period, counted in days or seconds.
    ///
    /// # Example
    /// ```
    /// use tally_core::calendar::*;
    /// let tz = jiff::tz::TimeZone::UTC;
    /// let s = Schedule { anchor: "2024-03-01T00:00:00Z".parse().unwrap(), cycle: Cycle::Month };
    /// let p = BillingPeriod::from_schedule(&s, s.anchor, &tz).unwrap();
    /// // A change on Mar 15: 17 of March's 31 days remain.
    /// let f = p.fraction("2024-03-15T00:00:00Z".parse().unwrap(), p.end.unwrap(), Granularity::Day, &tz).unwrap();
    /// assert_eq!((f.numer(), f.denom()), (17, 31));
    /// ```
    pub fn fraction(
        &self,
        from: Timestamp,
        to: Timestamp,
        g: Granularity,
        tz: &TimeZone,
    ) -> Result<Exact, CoreError> {
        let mut total = Exact::ZERO;
        for seg in &self.segments {
            let a = from.max(seg.span.start);
            let b = to.min(seg.span.end);
            if a >= b {
                continue;
            }
            total = total.plus(segment_fraction(a, b, seg.nominal, g, tz)?)?;
        }
        Ok(total)
    }

    /// Cuts the period at `at` (which must lie inside it): the period now ends there.
    pub fn truncate(&mut self, at: Timestamp) {
        self.segments.retain(|s| s.span.start < at);
        if let Some(last) = self.segments.last_mut() {
            last.span.end = last.span.end.min(at);
        }
        self.end = Some(at);
    }

    /// Extends the period from its end to `to`, with segments prorated against the periods of
    /// `schedule` (the new schedule the extension belongs to).
    pub fn extend(
        &mut self,
        to: Timestamp,
        schedule: &Schedule,
        tz: &TimeZone,
    ) -> Result<(), CoreError> {
        let mut cur = self.end.ok_or(CoreError::Overflow)?;
        while cur < to {
            let nominal = schedule.period_containing(cur, tz)?;
            let end = nominal.end.min(to);
            self.segments.push(Segment {
                span: Period { start: cur, end },
                nominal,
            });
            cur = end;
        }
        self.end = Some(to);
        Ok(())
    }
}

fn civil_days(a: Timestamp, b: Timestamp, tz: &TimeZone) -> Result<i64, CoreError> {
    let da = a.to_zoned(tz.clone()).date();
    let db = b.to_zoned(tz.clone()).date();
    Ok(i64::from(da.until(db)?.get_days()))
}

fn segment_fraction(
    a: Timestamp,
    b: Timestamp,
    nominal: Period,
    g: Granularity,
    tz: &TimeZone,
) -> Result<Exact, CoreError> {
    let nominal_secs = nominal.end.as_second() - nominal.start.as_second();
    if g == Granularity::Day && nominal_secs >= 86_400 {
        let den = civil_days(nominal.start, nominal.end, tz)?;
        if den > 0 {
            let num = civil_days(a, b, tz)?;
            return Exact::ratio(i128::from(num), i128::from(den));
        }
    }
    let num = b.duration_since(a).as_nanos();
    let den = nominal.end.duration_since(nominal.start).as_nanos();
    Exact::ratio(num, den)
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn time_zone(name: &str) -> Result<TimeZone, CoreError> {
    TimeZone::get(name).map_err(|_| CoreError::invalid("time_zone", "an IANA time zone name", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn jan_31_anchor_clamps_and_recovers() {
        let tz = TimeZone::UTC;
        let s = Schedule {
            anchor: ts("2023-01-31T10:00:00Z"),
            cycle: Cycle::Month,
        };
        let got: Vec<String> = (0..5)
            .map(|k| s.boundary(k, &tz).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "2023-01-31T10:00:00Z",
                "2023-02-28T10:00:00Z",
                "2023-03-31T10:00:00Z",
                "2023-04-30T10:00:00Z",
                "2023-05-31T10:00:00Z"
            ]
        );
    }

    #[test]
    fn leap_day_yearly_anchor() {
        let tz = TimeZone::UTC;
        let s = Schedule {
            anchor: ts("2024-02-29T00:00:00Z"),
            cycle: Cycle::Year,
        };
        assert_eq!(s.boundary(1, &tz).unwrap(), ts("2025-02-28T00:00:00Z"));
        assert_eq!(s.boundary(4, &tz).unwrap(), ts("2028-02-29T00:00:00Z"));
        assert_eq!(s.boundary(-1, &tz).unwrap(), ts("2023-02-28T00:00:00Z"));
    }

    #[test]
    fn every_cycle_steps_as_named() {
        let tz = TimeZone::UTC;
        let a = ts("2024-01-15T06:30:00Z");
        let cases = [
            (Cycle::Hour, "2024-01-15T07:30:00Z"),
            (Cycle::Day, "2024-01-16T06:30:00Z"),
            (Cycle::Week, "2024-01-22T06:30:00Z"),
            (Cycle::Month, "2024-02-15T06:30:00Z"),
            (Cycle::Quarter, "2024-04-15T06:30:00Z"),
            (Cycle::Year, "2025-01-15T06:30:00Z"),
        ];
        for (cycle, want) in cases {
            let s = Schedule { anchor: a, cycle };
            assert_eq!(s.boundary(1, &tz).unwrap(), ts(want), "{cycle}");
        }
        for cycle in [Cycle::Once, Cycle::Constant] {
            assert!(Schedule { anchor: a, cycle }.boundary(1, &tz).is_err());
        }
    }

    #[test]
    fn period_containing_a_boundary_starts_there() {
        let tz = TimeZone::UTC;
        let s = Schedule {
            anchor: ts("2024-01-01T00:00:00Z"),
            cycle: Cycle::Month,
        };
        let p = s
            .period_containing(ts("2024-03-01T00:00:00Z"), &tz)
            .unwrap();
        assert_eq!(p.start, ts("2024-03-01T00:00:00Z"));
        assert_eq!(p.end, ts("2024-04-01T00:00:00Z"));
        let p = s
            .period_containing(ts("2023-12-31T23:59:59Z"), &tz)
            .unwrap();
        assert_eq!(p.start, ts("2023-12-01T00:00:00Z"));
    }

    #[test]
    fn calendar_starts() {
        let tz = TimeZone::UTC;
        let t = ts("2024-05-16T13:45:10Z"); // a Thursday
        assert_eq!(
            calendar_start(t, Cycle::Hour, &tz).unwrap(),
            ts("2024-05-16T13:00:00Z")
        );
        assert_eq!(
            calendar_start(t, Cycle::Day, &tz).unwrap(),
            ts("2024-05-16T00:00:00Z")
        );
        assert_eq!(
            calendar_start(t, Cycle::Week, &tz).unwrap(),
            ts("2024-05-13T00:00:00Z")
        );
        assert_eq!(
            calendar_start(t, Cycle::Month, &tz).unwrap(),
            ts("2024-05-01T00:00:00Z")
        );
        assert_eq!(
            calendar_start(t, Cycle::Quarter, &tz).unwrap(),
            ts("2024-04-01T00:00:00Z")
        );
        assert_eq!(
            calendar_start(t, Cycle::Year, &tz).unwrap(),
            ts("2024-01-01T00:00:00Z")
        );
    }

    #[test]
    fn tenant_time_zone_defines_days() {
        // In Berlin (UTC+1 in winter) 2024-01-14T23:30Z is already Jan 15: the change day is the
        // 15th, so 17 of 31 days remain.
        let tz = time_zone("Europe/Berlin").unwrap();
        let s = Schedule {
            anchor: ts("2023-12-31T23:00:00Z"), // Jan 1 00:00 Berlin
            cycle: Cycle::Month,
        };
        let p = BillingPeriod::from_schedule(&s, s.anchor, &tz).unwrap();
        assert_eq!(p.end, Some(ts("2024-01-31T23:00:00Z")));
        let f = p
            .fraction(
                ts("2024-01-14T23:30:00Z"),
                p.end.unwrap(),
                Granularity::Day,
                &tz,
            )
            .unwrap();
        assert_eq!(f, Exact::ratio(17, 31).unwrap());
        // The same instant in UTC is still Jan 14: 18 days remain.
        let utc = TimeZone::UTC;
        let p = BillingPeriod::from_schedule(
            &Schedule {
                anchor: ts("2024-01-01T00:00:00Z"),
                cycle: Cycle::Month,
            },
            ts("2024-01-01T00:00:00Z"),
            &utc,
        )
        .unwrap();
        let f = p
            .fraction(
                ts("2024-01-14T23:30:00Z"),
                p.end.unwrap(),
                Granularity::Day,
                &utc,
            )
            .unwrap();
        assert_eq!(f, Exact::ratio(18, 31).unwrap());
    }

    #[test]
    fn hour_cycles_use_seconds_even_at_day_granularity() {
        let tz = TimeZone::UTC;
        let s = Schedule {
            anchor: ts("2024-01-01T00:00:00Z"),
            cycle: Cycle::Hour,
        };
        let p = BillingPeriod::from_schedule(&s, s.anchor, &tz).unwrap();
        let f = p
            .fraction(
                ts("2024-01-01T00:15:00Z"),
                p.end.unwrap(),
                Granularity::Day,
                &tz,
            )
            .unwrap();
        assert_eq!(f, Exact::ratio(3, 4).unwrap());
    }

    #[test]
    fn truncate_and_extend_keep_denominators() {
        let tz = TimeZone::UTC;
        let s = Schedule {
            anchor: ts("2024-04-01T00:00:00Z"),
            cycle: Cycle::Month,
        };
        let mut p = BillingPeriod::from_schedule(&s, s.anchor, &tz).unwrap();
        // Extend April's period to May 10 on a schedule anchored at May 10: the extension
        // [May 1, May 10) is 9 days of the period [Apr 10, May 10) (30 days).
        let new = Schedule {
            anchor: ts("2024-05-10T00:00:00Z"),
            cycle: Cycle::Month,
        };
        p.extend(ts("2024-05-10T00:00:00Z"), &new, &tz).unwrap();
        let f = p
            .fraction(
                ts("2024-05-01T00:00:00Z"),
                ts("2024-05-10T00:00:00Z"),
                Granularity::Day,
                &tz,
            )
            .unwrap();
        assert_eq!(f, Exact::ratio(9, 30).unwrap());
        // Cutting April at Apr 21 leaves 20/30 of April.
        let mut q = BillingPeriod::from_schedule(&s, s.anchor, &tz).unwrap();
        q.truncate(ts("2024-04-21T00:00:00Z"));
        let f = q
            .fraction(q.start, q.end.unwrap(), Granularity::Day, &tz)
            .unwrap();
        assert_eq!(f, Exact::ratio(20, 30).unwrap());
    }
}
