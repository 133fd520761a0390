//! Money: currencies with their minor units, rounding modes, and exact rational amounts that are
//! rounded once, at the end of a line.
//!
//! Every line amount is computed as an exact fraction (`Exact`) of integers and only then rounded to
//! the currency's minor unit, so no intermediate result is ever truncated.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// A currency Tally bills in: lowercase ISO 4217 code on the wire.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Currency {
    /// US dollar.
    Usd,
    /// Euro.
    Eur,
    /// Pound sterling.
    Gbp,
    /// Brazilian real.
    Brl,
    /// Argentine peso.
    Ars,
}

/// The currency table: code and minor units. Adding a currency is one entry here plus its variant.
const CURRENCIES: &[(Currency, &str, u32)] = &[
    (Currency::Usd, "usd", 2),
    (Currency::Eur, "eur", 2),
    (Currency::Gbp, "gbp", 2),
    (Currency::Brl, "brl", 2),
    (Currency::Ars, "ars", 2),
];

impl Currency {
    /// Every supported currency, in table order.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES.iter().map(|(c, _, _)| *c)
    }

    fn entry(self) -> &'static (Currency, &'static str, u32) {
        CURRENCIES
            .iter()
            .find(|(c, _, _)| *c == self)
            .unwrap_or(&CURRENCIES[0])
    }

    /// The lowercase ISO 4217 code, as used on the wire.
    pub fn code(self) -> &'static str {
        self.entry().1
    }

    /// Number of decimal places of the currency's minor unit (2 for cents).
    pub fn minor_units(self) -> u32 {
        self.entry().2
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CURRENCIES
            .iter()
            .find(|(_, code, _)| *code == s)
            .map(|(c, _, _)| *c)
            .ok_or_else(|| CoreError::invalid("currency", "one of usd, eur, gbp, brl, ars", s))
    }
}

/// How a line's exact amount is rounded to the currency's minor unit.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// 0.5 rounds away from zero (2.345 -> 2.35, -2.345 -> -2.35). The default.
    #[default]
    HalfAwayFromZero,
    /// 0.5 rounds to the even neighbour (2.345 -> 2.34, 2.355 -> 2.36).
    HalfEven,
}

/// An exact rational amount `num / den` (den > 0), the intermediate form of every line.
///
/// Built from decimals and ratios with checked integer arithmetic; [`Exact::round`] turns it into
/// a decimal at the currency's scale exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exact {
    num: i128,
    den: i128,
}

/// Binary (Stein's) greatest common divisor on one unsigned width: shifts and subtractions only,
/// as 128-bit division is a slow library call.
macro_rules! binary_gcd {
    ($name:ident, $t:ty) => {
        fn $name(mut a: $t, mut b: $t) -> $t {
            if a == 0 || b == 0 {
                return a | b;
            }
            let shift = (a | b).trailing_zeros();
            a >>= a.trailing_zeros();
            loop {
                b >>= b.trailing_zeros();
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                b -= a;
                if b == 0 {
                    return a << shift;
                }
            }
        }
    };
}
binary_gcd!(gcd64, u64);
binary_gcd!(gcd128, u128);

/// The greatest common divisor of `|a|` and `|b|`, at least 1 (so it always divides safely):
/// on 64-bit words when both fit, the usual case for money, else on 128 bits.
fn gcd(a: i128, b: i128) -> i128 {
    let (a, b) = (a.unsigned_abs(), b.unsigned_abs());
    let g = match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from(gcd64(a, b)),
        _ => gcd128(a, b),
    };
    // Only gcd(2^127, 0 or 2^127) exceeds i128; 1 still divides both.
    i128::try_from(g).unwrap_or(1).max(1)
}

/// `a / g` for a divisor `g >= 1` returned by [`gcd`]: a machine division when both fit 64 bits
/// (the usual case for money) and none when `g` is 1, as 128-bit division is a library call.
fn quot(a: i128, g: i128) -> i128 {
    if g == 1 {
        return a;
    }
    match (i64::try_from(a), i64::try_from(g)) {
        // g >= 2 here, so the 64-bit quotient cannot overflow.
        (Ok(a), Ok(g)) => i128::from(a / g),
        _ => a / g,
    }
}

fn pow10(scale: u32) -> Result<i128, CoreError> {
    10i128.checked_pow(scale).ok_or(CoreError::Overflow)
}

impl Exact {
    /// Zero.
    pub const ZERO: Exact = Exact { num: 0, den: 1 };

    /// The fraction `num / den`; `den` must not be zero.
    pub fn ratio(num: i128, den: i128) -> Result<Exact, CoreError> {
        if den == 0 {
            return Err(CoreError::Overflow);
        }
        let (num, den) = if den < 0 { (-num, -den) } else { (num, den) };
        let g = gcd(num, den);
        Ok(Exact {
            num: quot(num, g),
            den: quot(den, g),
        })
    }

    /// The exact value of a decimal.
    pub fn from_decimal(d: Decimal) -> Result<Exact, CoreError> {
        Exact::ratio(d.mantissa(), pow10(d.scale())?)
    }

    /// Numerator (reduced).
    pub fn numer(self) -> i128 {
        self.num
    }

    /// Denominator (reduced, positive).
    pub fn denom(self) -> i128 {
        self.den
    }

    /// Product of two exact values.
    pub fn times(self, other: Exact) -> Result<Exact, CoreError> {
        // Cross-reduce first to keep the integers small.
        let g1 = gcd(self.num, other.den);
        let g2 = gcd(other.num, self.den);
        let num = quot(self.num, g1)
            .checked_mul(quot(other.num, g2))
            .ok_or(CoreError::Overflow)?;
        let den = quot(self.den, g2)
            .checked_mul(quot(other.den, g1))
            .ok_or(CoreError::Overflow)?;
        Exact::ratio(num, den)
    }

    /// Product with a decimal.
    pub fn mul_dec(self, d: Decimal) -> Result<Exact, CoreError> {
        self.times(Exact::from_decimal(d)?)
    }

    /// Sum of two exact values.
    pub fn plus(self, other: Exact) -> Result<Exact, CoreError> {
        let g = gcd(self.den, other.den);
        let l = quot(self.den, g);
        let num = self
            .num
            .checked_mul(quot(other.den, g))
            .and_then(|a| other.num.checked_mul(l).and_then(|b| a.checked_add(b)))
            .ok_or(CoreError::Overflow)?;
        let den = l.checked_mul(other.den).ok_or(CoreError::Overflow)?;
        Exact::ratio(num, den)
    }

    /// Negation.
    pub fn negated(self) -> Exact {
        Exact {
            num: -self.num,
            den: self.den,
        }
    }

    /// True when the value is zero.
    pub fn is_zero(self) -> bool {
        self.num == 0
    }

    /// Compares two exact values.
    pub fn cmp_exact(self, other: Exact) -> Result<std::cmp::Ordering, CoreError> {
        let a = self.num.checked_mul(other.den).ok_or(CoreError::Overflow)?;
        let b = other.num.checked_mul(self.den).ok_or(CoreError::Overflow)?;
        Ok(a.cmp(&b))
    }

    /// Rounds once to `scale` decimal places with the given mode.
    ///
    /// # Example
    /// ```
    /// use tally_core::money::{Exact, Rounding};
    /// // 10.00 x 17/31 = 5.4838... -> 5.48
    /// let x = Exact::ratio(1000 * 17, 100 * 31).unwrap();
    /// assert_eq!(x.round(2, Rounding::HalfAwayFromZero).unwrap().to_string(), "5.48");
    /// // exactly half a cent: away from zero vs to even
    /// let half = Exact::ratio(2345, 1000).unwrap();
    /// assert_eq!(half.round(2, Rounding::HalfAwayFromZero).unwrap().to_string(), "2.35");
    /// assert_eq!(half.round(2, Rounding::HalfEven).unwrap().to_string(), "2.34");
    /// ```
    pub fn round(self, scale: u32, mode: Rounding) -> Result<Decimal, CoreError> {
        let scaled = self
            .num
            .checked_mul(pow10(scale)?)
            .ok_or(CoreError::Overflow)?;
        let q = scaled / self.den;
        let r = scaled % self.den;
        // Compare 2|r| with den to find which side of the half we are on.
        let twice = r.abs().checked_mul(2).ok_or(CoreError::Overflow)?;
        let away = match twice.cmp(&self.den) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => match mode {
                Rounding::HalfAwayFromZero => true,
                Rounding::HalfEven => q % 2 != 0,
            },
        };
        let q = if away && r != 0 {
            if scaled < 0 { q - 1 } else { q + 1 }
        } else {
            q
        };
        Decimal::try_from_i128_with_scale(q, scale).map_err(|_| CoreError::Overflow)
    }

    /// Rounds to the currency's minor unit.
    pub fn round_to(self, currency: Currency, mode: Rounding) -> Result<Decimal, CoreError> {
        self.round(currency.minor_units(), mode)
    }
}

/// Rounds a decimal (already exact) to the currency's minor unit.
pub fn round_decimal(d: Decimal, currency: Currency, mode: Rounding) -> Result<Decimal, CoreError> {
    Exact::from_decimal(d)?.round_to(currency, mode)
}

/// Formats an amount with exactly the currency's minor units (`12.5` -> `"12.50"`).
pub fn normalize(d: Decimal, currency: Currency) -> Decimal {
    let mut d = d;
    d.rescale(currency.minor_units());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn currency_codes_round_trip_and_have_two_minor_units() {
        for c in Currency::all() {
            assert_eq!(Currency::from_str(c.code()).unwrap(), c);
            assert_eq!(c.minor_units(), 2);
        }
        assert!(Currency::from_str("USD").is_err());
        assert!(Currency::from_str("jpy").is_err());
    }

    #[test]
    fn half_cases_follow_the_mode() {
        // 0.125 -> 0.13 away from zero, 0.12 to even; -0.125 -> -0.13 / -0.12.
        let x = Exact::from_decimal(dec("0.125")).unwrap();
        assert_eq!(x.round(2, Rounding::HalfAwayFromZero).unwrap(), dec("0.13"));
        assert_eq!(x.round(2, Rounding::HalfEven).unwrap(), dec("0.12"));
        let y = x.negated();
        assert_eq!(
            y.round(2, Rounding::HalfAwayFromZero).unwrap(),
            dec("-0.13")
        );
        assert_eq!(y.round(2, Rounding::HalfEven).unwrap(), dec("-0.12"));
        // 0.135 to even -> 0.14 (3 is odd).
        let z = Exact::from_decimal(dec("0.135")).unwrap();
        assert_eq!(z.round(2, Rounding::HalfEven).unwrap(), dec("0.14"));
    }

    #[test]
    fn non_half_values_round_to_nearest() {
        // 1000 x 17/31 = 548.387... -> 548.39
        let x = Exact::from_decimal(dec("1000"))
            .unwrap()
            .times(Exact::ratio(17, 31).unwrap())
            .unwrap();
        assert_eq!(x.round(2, Rounding::HalfEven).unwrap(), dec("548.39"));
        // -(10 x 17/31) = -5.4838 -> -5.48
        let y = Exact::from_decimal(dec("-10"))
            .unwrap()
            .times(Exact::ratio(17, 31).unwrap())
            .unwrap();
        assert_eq!(
            y.round(2, Rounding::HalfAwayFromZero).unwrap(),
            dec("-5.48")
        );
    }

    #[test]
    fn sub_cent_unit_prices_are_exact() {
        // 0.001 per call x 12345 calls = 12.345 exactly -> 12.35 (away) / 12.34 (even)
        let x = Exact::from_decimal(dec("0.001"))
            .unwrap()
            .mul_dec(dec("12345"))
            .unwrap();
        assert_eq!(
            x.round(2, Rounding::HalfAwayFromZero).unwrap(),
            dec("12.35")
        );
        assert_eq!(x.round(2, Rounding::HalfEven).unwrap(), dec("12.34"));
    }

    proptest::proptest! {
        /// The binary gcd agrees with Euclid's on 64-bit and on wider values, and divides both.
        #[test]
        fn gcd_agrees_with_euclid(a in proptest::num::i128::ANY, b in proptest::num::i128::ANY, small in proptest::bool::ANY) {
            let (a, b) = if small { (a % (1 << 40), b % (1 << 40)) } else { (a, b) };
            proptest::prop_assume!(a != i128::MIN && b != i128::MIN);
            let (mut x, mut y) = (a.abs(), b.abs());
            while y != 0 {
                (x, y) = (y, x % y);
            }
            let g = gcd(a, b);
            proptest::prop_assert_eq!(g, x.max(1));
            proptest::prop_assert_eq!(a % g, 0);
            proptest::prop_assert_eq!(b % g, 0);
        }
    }

    proptest::proptest! {
        #[test]
        fn quot_agrees_with_128_bit_division(a in proptest::num::i128::ANY, b in proptest::num::i128::ANY, small in proptest::bool::ANY) {
            let (a, b) = if small { (a % (1 << 40), b % (1 << 40)) } else { (a, b) };
            let g = gcd(a, b);
            proptest::prop_assert_eq!(quot(a, g), a / g);
            proptest::prop_assert_eq!(quot(b, g), b / g);
        }
    }

    #[test]
    fn quot_at_the_edges_of_64_bits() {
        // i64::MIN / 2 = -2^62 on the 64-bit path; 2^64 / 2 = 2^63 on the 128-bit one.
        assert_eq!(quot(i128::from(i64::MIN), 2), -(1 << 62));
        assert_eq!(quot(1 << 64, 2), 1 << 63);
        // A divisor of 1 leaves even i128::MIN as it is.
        assert_eq!(quot(i128::MIN, 1), i128::MIN);
        // -2^63 / 3 truncates toward zero: 9223372036854775808 = 3 x 3074457345618258602 + 2.
        assert_eq!(quot(i128::from(i64::MIN), 3), -3_074_457_345_618_258_602);
    }

    #[test]
    fn gcd_edge_cases() {
        // gcd(0, 0) is taken as 1 so that reducing 0/1 never divides by zero.
        assert_eq!(gcd(0, 0), 1);
        assert_eq!(gcd(0, -12), 12);
        // 2^64 does not fit 64 bits: 2^64 and 6 share 2.
        assert_eq!(gcd(1 << 64, 6), 2);
        // 2^127 has no i128; 1 is returned, which still divides.
        assert_eq!(gcd(i128::MIN, 0), 1);
        assert_eq!(gcd(i128::MIN, 6), 2);
    }

    #[test]
    fn addition_is_exact() {
        // 1/3 + 1/6 = 1/2
        let a = Exact::ratio(1, 3)
            .unwrap()
            .plus(Exact::ratio(1, 6).unwrap())
            .unwrap();
        assert_eq!(a, Exact::ratio(1, 2).unwrap());
        assert!(Exact::ratio(1, 0).is_err());
    }
}
