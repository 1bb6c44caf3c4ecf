//! Python's `round(x, 2)` for floats, and half-even rescaling for decimals.
//!
//! CPython rounds a float to `n` decimals by printing its *exact* binary value
//! correctly rounded to `n` decimals (ties to even) and parsing that string back.
//! [`py_round2`] gives the same double without strings: a fast path multiplies by
//! 100 and rounds with the 2^52 trick, which is provably right unless the scaled
//! value is an exact half (or too large to hold halves); those rare inputs take an
//! exact integer path. Python's result sign is kept, so `round(-0.001, 2)` is `-0.0`.

/// 2^52: from here on every double is an integer; below it every half-integer is a double.
const TWO_52: f64 = 4_503_599_627_370_496.0;

/// `round(x, 2)` exactly as CPython computes it, for every double (NaN and ±inf
/// round to themselves, with the same bits).
#[inline]
pub fn py_round2(x: f64) -> f64 {
    let p = x * 100.0;
    // NaN and |p| >= 2^52 fail this test and go to the exact path.
    if p.abs() < TWO_52 {
        // Adding and subtracting 2^52 rounds to an integer, ties to even.
        let magic = TWO_52.copysign(p);
        let r = ((p + magic) - magic).copysign(p);
        // `p` is the double nearest to x*100; unless `p` is itself a half-integer,
        // no half-integer lies between `p` and the exact product, so `r` is the
        // correctly rounded exact product, and `r / 100` is the nearest double to it.
        if (p - r).abs() != 0.5 {
            return r / 100.0;
        }
    }
    round2_exact(x)
}

/// Exact `round(x, 2)` by integer arithmetic on the binary value of `x`.
#[cold]
fn round2_exact(x: f64) -> f64 {
    if !x.is_finite() || x.abs() >= TWO_52 {
        return x;
    }
    let bits = x.to_bits();
    let negative = bits >> 63 == 1;
    let biased_exp = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exp) = if biased_exp == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased_exp - 1075)
    };
    if exp >= 0 {
        return x;
    }
    // |x| * 100 = mantissa * 100 / 2^shift; round that to an integer, ties to even.
    let shift = exp.unsigned_abs();
    let scaled = u128::from(mantissa) * 100;
    let hundredths = if shift > 64 {
        0 // scaled < 2^60 <= half of 2^shift: rounds to zero
    } else {
        let quotient = scaled >> shift;
        let remainder = scaled & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        if remainder > half || (remainder == half && quotient & 1 == 1) {
            quotient + 1
        } else {
            quotient
        }
    };
    let magnitude = nearest_f64_of_hundredths(hundredths);
    if negative { -magnitude } else { magnitude }
}

/// The double nearest to `n / 100` (ties to even), for `n < 2^61`.
fn nearest_f64_of_hundredths(n: u128) -> f64 {
    if n < (1u128 << 53) {
        // Both operands are exact, so IEEE division rounds correctly.
        return n as f64 / 100.0;
    }
    // Find a scale 2^k with n * 2^k / 100 in [2^52, 2^53), then round the quotient.
    let mut k = 0u32;
    while ((n << k) / 100) < (1u128 << 52) {
        k += 1;
    }
    let numerator = n << k;
    let mut m = numerator / 100;
    let r = numerator % 100;
    if r > 50 || (r == 50 && m & 1 == 1) {
        m += 1;
    }
    // m <= 2^53 is exact as a double, and dividing by 2^k is exact too.
    m as f64 / f64::from(1u32 << k)
}

/// Divides `value` by `10^digits`, rounding half to even (exact decimal rescaling).
pub fn div_pow10_half_even(value: i128, digits: u32) -> Option<i128> {
    if digits == 0 {
        return Some(value);
    }
    let divisor = 10i128.checked_pow(digits)?;
    let quotient = value / divisor;
    let remainder = (value % divisor).abs();
    let twice = remainder * 2;
    let away = twice > divisor || (twice == divisor && quotient % 2 != 0);
    Some(if !away {
        quotient
    } else if value < 0 {
        quotient - 1
    } else {
        quotient + 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits()
    }

    #[test]
    fn python_examples() {
        // Values checked against CPython 3.11.
        assert!(same(py_round2(2.675), 2.67));
        assert!(same(py_round2(0.125), 0.12));
        assert!(same(py_round2(0.375), 0.38));
        assert!(same(py_round2(-0.001), -0.0));
        assert!(same(py_round2(0.0), 0.0));
        assert!(same(py_round2(-0.0), -0.0));
        assert!(same(py_round2(1.005), 1.0));
        assert!(same(py_round2(-2.5), -2.5));
        assert!(same(py_round2(-0.125), -0.12));
        assert!(same(py_round2(1e300), 1e300));
        assert!(same(py_round2(f64::INFINITY), f64::INFINITY));
        assert!(same(py_round2(f64::NEG_INFINITY), f64::NEG_INFINITY));
        assert!(same(py_round2(5e-324), 0.0));
        assert!(same(py_round2(-5e-324), -0.0));
        assert!(py_round2(f64::NAN).is_nan());
        assert!(same(py_round2(-f64::NAN), -f64::NAN));
    }

    #[test]
    fn large_values_use_the_exact_path() {
        // 2^52/100 <= x < 2^52: x has fractional bits but x*100 has no halves.
        assert!(same(
            py_round2(123_456_789_012_345.67),
            123_456_789_012_345.67
        ));
        assert!(same(py_round2(1e14 + 0.015625), 1e14 + 0.015625));
        assert!(same(py_round2(1e15 + 0.125), 1e15 + 0.125));
        assert!(same(py_round2(-(1e15 + 0.125)), -(1e15 + 0.125)));
    }

    #[test]
    fn exact_path_agrees_with_fast_path() {
        let mut x = 0.001f64;
        while x < 1e12 {
            for v in [x, -x, x * 1.37, x + 0.005] {
                assert!(same(py_round2(v), round2_exact(v)), "{v}");
            }
            x *= 1.013;
        }
    }

    #[test]
    fn decimal_half_even() {
        assert_eq!(div_pow10_half_even(12345, 1), Some(1234));
        assert_eq!(div_pow10_half_even(12355, 1), Some(1236));
        assert_eq!(div_pow10_half_even(-12345, 1), Some(-1234));
        assert_eq!(div_pow10_half_even(-12355, 1), Some(-1236));
        assert_eq!(div_pow10_half_even(-12346, 1), Some(-1235));
        assert_eq!(div_pow10_half_even(5, 0), Some(5));
        assert_eq!(div_pow10_half_even(1, 40), None);
    }
}
