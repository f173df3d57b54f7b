//! Distribution functions for the experiment statistics, written for accuracy in
//! the tails: p-values come from survival functions (never `1 - cdf`), the normal
//! quantile is refined to full precision, and the Student-t functions stay exact
//! for any degrees of freedom (their log-beta terms use an asymptotic series where
//! plain `lgamma` differences would cancel).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// Standard normal cumulative distribution, P(Z ≤ x).
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

/// Standard normal survival function, P(Z > x), accurate far into the tail.
pub fn norm_sf(x: f64) -> f64 {
    0.5 * libm::erfc(x * FRAC_1_SQRT_2)
}

/// Standard normal quantile: the x with P(Z ≤ x) = p. Acklam's rational
/// approximation (relative error 1.2e-9) refined by one Halley step on `erfc`.
pub fn norm_ppf(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;
    let x = if p < P_LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // One Halley step on e = cdf(x) − p, computed from the tail nearer to x.
    let e = if x < 0.0 {
        norm_cdf(x) - p
    } else {
        (1.0 - p) - norm_sf(x)
    };
    let u = e * (2.0 * PI).sqrt() * (0.5 * x * x).exp();
    x - u / (1.0 + 0.5 * x * u)
}

/// ln B(a, 1/2) = ln Γ(a) + ln Γ(1/2) − ln Γ(a + 1/2), without the cancellation
/// of the lgamma difference when `a` is large.
fn ln_beta_half(a: f64) -> f64 {
    let ln_gamma_half = 0.5 * PI.ln();
    if a < 100.0 {
        return libm::lgamma(a) + ln_gamma_half - libm::lgamma(a + 0.5);
    }
    // ln Γ(a + 1/2) − ln Γ(a) = ½ ln a − 1/(8a) + 1/(192a³) − 1/(640a⁵) + O(a⁻⁷)
    let a2 = a * a;
    let diff =
        0.5 * a.ln() - 1.0 / (8.0 * a) + 1.0 / (192.0 * a * a2) - 1.0 / (640.0 * a * a2 * a2);
    ln_gamma_half - diff
}

/// The continued fraction of the regularised incomplete beta function (modified
/// Lentz), valid for x < (a + 1) / (a + b + 2).
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    const ITERATIONS_MAX: usize = 100_000;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=ITERATIONS_MAX {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// Student-t survival function, P(T > t) with `df` degrees of freedom (df > 0).
pub fn t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if df.is_infinite() {
        return norm_sf(t);
    }
    if t < 0.0 {
        return 1.0 - t_sf(-t, df);
    }
    // P(T > t) = ½ I_x(df/2, 1/2) with x = df / (df + t²), whose logarithms are
    // taken without forming x (which rounds to 1 for large df).
    let (a, b) = (0.5 * df, 0.5);
    let r = t * t / df;
    let ln_x = -r.ln_1p();
    let ln_1mx = r.ln() - r.ln_1p();
    let prefactor = (a * ln_x + b * ln_1mx - ln_beta_half(a)).exp();
    let x = 1.0 / (1.0 + r);
    let ix = if x < (a + 1.0) / (a + b + 2.0) {
        prefactor * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - prefactor * beta_continued_fraction(b, a, 1.0 - x) / b
    };
    0.5 * ix
}

/// Student-t cumulative distribution, P(T ≤ t).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    t_sf(-t, df)
}

/// Student-t density.
pub fn t_pdf(t: f64, df: f64) -> f64 {
    if df.is_infinite() {
        return norm_pdf(t);
    }
    let a = 0.5 * df;
    (-ln_beta_half(a) - 0.5 * df.ln() - (a + 0.5) * (t * t / df).ln_1p()).exp()
}

/// Student-t quantile: the t with P(T ≤ t) = p. Newton's method on the survival
/// function from the normal quantile, so it is exact at any degrees of freedom.
pub fn t_ppf(p: f64, df: f64) -> f64 {
    if p.is_nan() || df.is_nan() || df <= 0.0 || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_ppf(1.0 - p, df);
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    if df.is_infinite() {
        return norm_ppf(p);
    }
    let tail = 1.0 - p;
    // Start from the normal quantile with the first Cornish-Fisher correction.
    let z = norm_ppf(p);
    let mut t = z + (z * z * z + z) / (4.0 * df);
    if df < 3.0 {
        // Heavy tails: Newton on log-scale sf from a safer start.
        t = t.max(z).max(1e-3);
    }
    for _ in 0..100 {
        let f = t_sf(t, df) - tail;
        let step = f / t_pdf(t, df);
        let next = t + step;
        let next = if next <= 0.0 { t / 2.0 } else { next };
        if (next - t).abs() <= 1e-15 * next.abs() {
            return next;
        }
        t = next;
    }
    t
}

/// Regularised upper incomplete gamma Q(a, x).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_prefactor = -x + a * x.ln() - libm::lgamma(a);
    if x < a + 1.0 {
        // Series for P(a, x); Q = 1 − P is not small here.
        let mut sum = 1.0 / a;
        let mut term = sum;
        let mut ap = a;
        for _ in 0..100_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        1.0 - sum * ln_prefactor.exp()
    } else {
        // Continued fraction for Q (modified Lentz).
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let i = i as f64;
            let an = -i * (i - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < TINY { TINY } else { d };
            c = b + an / c;
            c = if c.abs() < TINY { TINY } else { c };
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        ln_prefactor.exp() * h
    }
}

/// Chi-square survival function with `df` degrees of freedom.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if x.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    gamma_q(0.5 * df, 0.5 * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        crate::stats::assert_close("value", actual, expected, tolerance);
    }

    // Reference values: ../shared/refs/experiment_refs.json case9_extreme_tails
    // (scipy 1.17.1), copied into tests/fixtures/experiment_refs.json.
    #[test]
    fn normal_tails_and_quantile() {
        close(2.0 * norm_sf(9.0), 2.257_176_811_907_664_7e-19, 1e-9);
        close(2.0 * norm_sf(20.0), 5.507_248_237_212_311e-89, 1e-9);
        close(2.0 * norm_sf(37.5), 9.210_706_019_163_908e-308, 1e-9);
        close(norm_ppf(0.975), 1.959_963_984_540_054, 1e-15);
        for p in [1e-300, 1e-20, 1e-5, 0.01, 0.3, 0.5, 0.7, 0.99, 1.0 - 1e-10] {
            let x = norm_ppf(p);
            close(norm_cdf(x), p, 1e-13);
        }
    }

    #[test]
    fn student_t_at_any_degrees_of_freedom() {
        close(2.0 * t_sf(40.0, 5000.0), 8.414_850_471_935_77e-304, 1e-9);
        close(2.0 * t_sf(10.0, 100.0), 9.901_688_984_594_13e-17, 1e-9);
        for (df, q) in [
            (10.0, 2.228_138_851_986_274),
            (198.0, 1.972_017_477_836_314_6),
            (100_000.0, 1.959_987_707_534_609_5),
            (1_000_000.0, 1.959_966_356_814_107),
            (10_000_000.0, 1.959_964_221_767_205),
        ] {
            close(t_ppf(0.975, df), q, 1e-9);
        }
        close(t_cdf(0.0, 7.0), 0.5, 1e-15);
        close(t_sf(-1.0, 3.0) + t_sf(1.0, 3.0), 1.0, 1e-15);
    }

    #[test]
    fn chi_square_tail() {
        close(chi2_sf(14.4, 2.0), 7.465_858_083_766_791e-4, 1e-9);
        close(
            chi2_sf(44.334_975_369_458_13, 1.0),
            2.767_277_162_294_705e-11,
            1e-9,
        );
        close(
            chi2_sf(4.433_497_536_945_813, 1.0),
            0.035_240_223_824_274_594,
            1e-9,
        );
        assert_eq!(chi2_sf(0.0, 1.0), 1.0);
    }
}
