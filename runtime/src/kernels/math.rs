//! `exp`, `erf` and `tanh` in plain f32 arithmetic, without branches or library calls, so that loops
//! over them vectorise: every version of a [`crate::simd::multiversion!`] kernel (and the
//! scalar fallback) computes the same basic operations in the same order, hence the same bits.
//! Rust never fuses a multiply and an add on its own, so wider vectors do not change a value.

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split in a part exact in few bits and the rest (Cody and Waite), so `x - n ln 2`
/// loses nothing for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` within 2 ulp (Cephes' `expf` polynomial on `[-ln2/2, ln2/2]`, scaled by `2^n` through
/// the exponent bits). Inputs are clamped to `[-87, 88]`: below, the result is about `1.6e-38`
/// instead of a subnormal or 0; above, about `1.65e38` instead of infinity. NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = horner(
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ],
    );
    let e = p * (r * r) + r + 1.0;
    // n is in [-126, 127] (a NaN's casts to 0): a normal power of two.
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `erf(x)` within 1.5e-7: its Maclaurin series to `x^23` below `|x| = 1`, else `1 - erfc`
/// with Numerical Recipes' `erfcc` fit of `erfc(z) e^{z^2}` (relative error 1.2e-7 of an
/// `erfc` under 0.16); both computed and one selected, so the loop stays branch-free.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let z = x.abs();
    let z2 = z * z;
    // 2/sqrt(pi) (-1)^n / (n! (2n + 1)), n = 11 down to 0.
    let series = z * horner(
        z2,
        &[
            -1.229_055_5e-9,
            1.480_719_3e-8,
            -1.636_584_5e-7,
            1.646_211_4e-6,
            -1.492_565e-5,
            1.205_533_3e-4,
            -8.548_327e-4,
            5.223_977_6e-3,
            -0.026_866_17,
            0.112_837_92,
            -0.376_126_4,
            std::f32::consts::FRAC_2_SQRT_PI,
        ],
    );
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z2
        + horner(
            t,
            &[
                0.170_872_77,
                -0.822_152_2,
                1.488_515_9,
                -1.135_204,
                0.278_868_07,
                -0.186_288_06,
                0.096_784_18,
                0.374_091_96,
                1.000_023_7,
                -1.265_512_2,
            ],
        );
    let tail = 1.0 - t * exp(poly);
    let magnitude = if z < 1.0 { series } else { tail };
    magnitude.copysign(x)
}

/// `tanh(x)` within 3 ulp: Cephes' `tanhf`, an odd polynomial below `|x| = 0.625`, else
/// `1 - 2 / (e^{2|x|} + 1)` through [`exp`] (whose clamp gives exactly 1 from `|x| = 44` on,
/// infinities included); both computed and one selected, so the loop stays branch-free. NaN
/// stays NaN.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let z = x.abs();
    let z2 = z * z;
    let small = horner(
        z2,
        &[
            -5.704_988_7e-3,
            2.063_908_8e-2,
            -5.373_971_5e-2,
            1.333_144_2e-1,
            -3.333_328e-1,
        ],
    ) * z2
        * z
        + z;
    let large = 1.0 - 2.0 / (exp(z + z) + 1.0);
    let magnitude = if z < 0.625 { small } else { large };
    magnitude.copysign(x)
}

/// `c[0] x^(n-1) + ... + c[n-1]` by Horner's rule, highest power first (unrolled: the
/// coefficients are constants).
#[inline(always)]
fn horner(x: f32, c: &[f32]) -> f32 {
    c[1..].iter().fold(c[0], |acc, &k| acc * x + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ulps between two finite floats of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn exp_is_within_two_ulps_of_the_library() {
        let mut worst = 0;
        for i in -86_999..88_000 {
            let x = i as f32 * 1e-3;
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 2, "{worst} ulps");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e4) > 0.0 && exp(-1e4) < 2e-38);
        assert!(exp(1e4).is_finite());
    }

    #[test]
    fn tanh_is_within_three_ulps_of_the_f64_library() {
        let mut worst = 0;
        for i in -200_000..=200_000 {
            let x = i as f32 * 5e-5;
            let want = f64::from(x).tanh() as f32;
            worst = worst.max(ulps(tanh(x).abs(), want.abs()));
        }
        assert!(worst <= 3, "{worst} ulps");
        for x in [1e-30f32, 1e-6, 0.624_999_94, 0.625, 20.0, 44.0, 1e30] {
            let want = f64::from(x).tanh() as f32;
            assert!(
                ulps(tanh(x), want) <= 3,
                "tanh({x}) = {}, want {want}",
                tanh(x)
            );
            assert_eq!(tanh(-x).to_bits(), (-tanh(x)).to_bits(), "odd at {x}");
        }
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_within_1_5e7_of_the_f64_series() {
        // erf by its f64 Taylor series, exact enough for |x| < 3 with 60 terms.
        let reference = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for n in 1..60 {
                term *= -x * x / f64::from(n);
                sum += term / f64::from(2 * n + 1);
            }
            sum * std::f64::consts::FRAC_2_SQRT_PI
        };
        for i in -3000..=3000 {
            let x = i as f32 * 1e-3;
            let want = reference(f64::from(x));
            let got = f64::from(erf(x));
            assert!((got - want).abs() < 1.5e-7, "erf({x}) = {got}, want {want}");
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert_eq!(erf(0.0), 0.0);
    }
}
