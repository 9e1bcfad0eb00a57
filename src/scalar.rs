//! Scalars: the [`Real`] bound of every computation and [`LogScaled`], a real
//! number that keeps its magnitude as a logarithm.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, Div, Mul, Neg, Sub};

use nalgebra::RealField;

/// The floating-point types the crate computes in: `f32` and `f64`.
///
/// Blanket-implemented for every `nalgebra::RealField + Copy`, with the two
/// conversions generic code needs (options and results are `f64`), so that
/// a [`RecursiveSimilarity`](crate::RecursiveSimilarity) or block kind
/// generic over `T` needs no trait of nalgebra's.
///
/// ```
/// use tensor_similarity::Real;
///
/// fn half<T: Real>() -> T {
///     T::from_f64_lossy(0.5)
/// }
/// assert_eq!(half::<f32>(), 0.5f32);
/// assert_eq!(half::<f64>().to_f64(), 0.5);
/// assert_eq!(f32::from_f64_lossy(0.1).to_f64(), 0.1f32 as f64); // rounded once
/// ```
pub trait Real: RealField + Copy {
    /// `x` in this type: exact for `f64`, rounded to nearest for `f32`.
    /// (Named apart from `FromPrimitive::from_f64`, a supertrait, which
    /// returns an `Option`.)
    fn from_f64_lossy(x: f64) -> Self {
        from_f64(x)
    }

    /// This value as `f64`: exact for `f32` and `f64` (a wider type
    /// saturates to `±∞`).
    fn to_f64(self) -> f64 {
        to_f64(self)
    }
}

impl<T: RealField + Copy> Real for T {}

/// Converts an `f64` into `T` (exact for `f64`, rounded for `f32`).
pub(crate) fn from_f64<T: Real>(x: f64) -> T {
    nalgebra::convert(x)
}

/// Converts `T` into `f64`.
pub(crate) fn to_f64<T: Real>(x: T) -> f64 {
    // `RealField: SupersetOf<f64>`; `to_subset` only fails for types wider than
    // f64 whose value does not fit, and those overflow to infinity here.
    x.to_subset().unwrap_or(if x > T::zero() {
        f64::INFINITY
    } else {
        f64::NEG_INFINITY
    })
}

/// The smallest ratio to a normalised matrix's largest entry (1) at which
/// an entry of `T` keeps its digits through the next steps: the smallest
/// normal number over the machine epsilon (`≈1e-292` for `f64`, `≈1e-31`
/// for `f32`). Below it, a product lands among the subnormals.
pub(crate) fn smallest_resolved<T: Real>() -> f64 {
    if size_of::<T>() == 4 {
        f32::MIN_POSITIVE as f64 / f32::EPSILON as f64
    } else {
        f64::MIN_POSITIVE / f64::EPSILON
    }
}

/// A real number `sign · e^ln_abs`: the form in which raw inner products are
/// returned, because they grow like `c^(2^L)` with depth `L` and overflow
/// `f64` long before the similarity itself becomes hard to compute.
///
/// Supports the arithmetic that combinations of inner products need
/// (`+`, `-`, `*`, `/`, [`sqrt`](Self::sqrt)), each exact up to rounding in
/// `ln_abs`.
///
/// # Example
///
/// ```
/// use tensor_similarity::LogScaled;
///
/// // e^800 overflows f64, but products and ratios of such numbers do not.
/// let big = LogScaled::from_ln(1.0, 800.0);
/// let ratio = (big * LogScaled::from(3.0)) / big;
/// assert!((ratio.to_f64() - 3.0).abs() < 1e-12);
/// assert_eq!(big.to_f64(), f64::INFINITY);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogScaled {
    /// `-1.0`, `0.0` or `1.0`.
    sign: f64,
    /// `ln |x|`; `-∞` for zero.
    ln_abs: f64,
}

impl LogScaled {
    /// Zero.
    pub const ZERO: Self = Self {
        sign: 0.0,
        ln_abs: f64::NEG_INFINITY,
    };

    /// `sign(s) · e^ln_abs`; only the sign of `s` is used.
    pub fn from_ln(s: f64, ln_abs: f64) -> Self {
        if s == 0.0 || ln_abs == f64::NEG_INFINITY {
            Self::ZERO
        } else {
            Self {
                sign: s.signum(),
                ln_abs,
            }
        }
    }

    /// `x · e^ln_scale`.
    pub fn from_scaled(x: f64, ln_scale: f64) -> Self {
        Self::from_ln(x, x.abs().ln() + ln_scale)
    }

    /// The sign: `-1.0`, `0.0` or `1.0` (NaN for NaN).
    pub fn signum(self) -> f64 {
        self.sign
    }

    /// `ln |x|` (`-∞` for zero).
    pub fn ln_abs(self) -> f64 {
        self.ln_abs
    }

    /// Whether the number is exactly zero.
    pub fn is_zero(self) -> bool {
        self.sign == 0.0
    }

    /// Whether sign and logarithm are both finite numbers (zero included).
    pub fn is_finite(self) -> bool {
        self.is_zero() || (self.sign.is_finite() && self.ln_abs.is_finite())
    }

    /// The value as an `f64`; `±∞` where it is out of range.
    pub fn to_f64(self) -> f64 {
        if self.is_zero() {
            0.0
        } else {
            self.sign * self.ln_abs.exp()
        }
    }

    /// `√x`, NaN for negative `x`.
    pub fn sqrt(self) -> Self {
        if self.sign < 0.0 {
            Self {
                sign: f64::NAN,
                ln_abs: f64::NAN,
            }
        } else {
            Self::from_ln(self.sign, 0.5 * self.ln_abs)
        }
    }

    /// `|x|`.
    pub fn abs(self) -> Self {
        Self::from_ln(self.sign.abs(), self.ln_abs)
    }
}

impl From<f64> for LogScaled {
    fn from(x: f64) -> Self {
        if x.is_nan() {
            Self {
                sign: f64::NAN,
                ln_abs: f64::NAN,
            }
        } else {
            Self::from_ln(x, x.abs().ln())
        }
    }
}

impl fmt::Display for LogScaled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_f64();
        if v.is_finite() || !self.is_finite() {
            write!(f, "{v}")
        } else {
            // A decimal mantissa and an exponent that f64 cannot hold. ln_abs
            // carries about 16 significant digits, of which log10(ln_abs)
            // are spent on the exponent: 10 digits of mantissa by default.
            let log10 = self.ln_abs / core::f64::consts::LN_10;
            let mut exponent = log10.floor();
            let precision = f.precision().unwrap_or(10);
            let mut digits = format!("{:.*}", precision, 10f64.powf(log10 - exponent));
            if digits.starts_with("10") {
                exponent += 1.0;
                digits = format!("{:.*}", precision, 1.0);
            }
            if f.precision().is_none() && digits.contains('.') {
                digits = digits
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_owned();
            }
            let sign = if self.sign < 0.0 { "-" } else { "" };
            write!(f, "{sign}{digits}e{exponent}")
        }
    }
}

impl Neg for LogScaled {
    type Output = Self;
    fn neg(self) -> Self {
        Self {
            sign: -self.sign,
            ..self
        }
    }
}

impl Mul for LogScaled {
    type Output = Self;
    fn mul(self, rhs: Self) -> Self {
        Self::from_ln(self.sign * rhs.sign, self.ln_abs + rhs.ln_abs)
    }
}

impl Div for LogScaled {
    type Output = Self;
    fn div(self, rhs: Self) -> Self {
        if rhs.is_zero() {
            return Self::from(self.sign / 0.0);
        }
        Self::from_ln(self.sign * rhs.sign, self.ln_abs - rhs.ln_abs)
    }
}

impl Add for LogScaled {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        if rhs.is_zero() {
            return self;
        }
        if self.is_zero() {
            return rhs;
        }
        let (big, small) = match self.ln_abs.partial_cmp(&rhs.ln_abs) {
            Some(Ordering::Less) => (rhs, self),
            _ => (self, rhs),
        };
        // big · (1 + t) with |t| ≤ 1; ln_1p keeps the digits when t is small.
        let t = big.sign * small.sign * (small.ln_abs - big.ln_abs).exp();
        if t == -1.0 {
            return Self::ZERO;
        }
        Self::from_ln(big.sign * (1.0 + t).signum(), big.ln_abs + t.ln_1p())
    }
}

impl Sub for LogScaled {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        self + (-rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_matches_f64_in_range() {
        let values = [-3.5, -1.0, -1e-3, 0.0, 2e-7, 1.0, 7.25, 1e10];
        for &a in &values {
            for &b in &values {
                let (la, lb) = (LogScaled::from(a), LogScaled::from(b));
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + x.abs().max(y.abs()));
                assert!(close((la + lb).to_f64(), a + b), "{a} + {b}");
                assert!(close((la - lb).to_f64(), a - b), "{a} - {b}");
                assert!(close((la * lb).to_f64(), a * b), "{a} * {b}");
                if b != 0.0 {
                    assert!(close((la / lb).to_f64(), a / b), "{a} / {b}");
                }
            }
            if a >= 0.0 {
                assert!(
                    (LogScaled::from(a).sqrt().to_f64() - a.sqrt()).abs()
                        <= 1e-12 * a.sqrt().max(1.0)
                );
            }
        }
    }

    #[test]
    fn beyond_f64_range() {
        let x = LogScaled::from_ln(1.0, 1000.0);
        let y = LogScaled::from_ln(-1.0, 1000.0 + 2f64.ln());
        // x + y = -e^1000
        let s = x + y;
        assert_eq!(s.signum(), -1.0);
        assert!((s.ln_abs() - 1000.0).abs() < 1e-12);
        assert!((x - x).is_zero());
        assert!((((x * x).sqrt() / x).to_f64() - 1.0).abs() < 1e-12);
        assert_eq!(
            format!(
                "{}",
                LogScaled::from_ln(1.0, 1000.0 * core::f64::consts::LN_10)
            ),
            "1e1000"
        );
        let minus_two = LogScaled::from_ln(-1.0, 1000.0 * core::f64::consts::LN_10 + 2f64.ln());
        assert_eq!(format!("{minus_two:.3}"), "-2.000e1000");
        assert_eq!(format!("{}", LogScaled::from(2.5)), "2.5");
    }
}
