//! Two-arm comparisons of a metric between control (`a`) and treatment (`b`):
//! frequentist (Welch t, z), sequential (always-valid confidence sequences),
//! Bayesian (Gaussian posterior), for means, proportions, ratio metrics and
//! CUPED-adjusted means. Conventions follow GrowthBook's gbstats 0.8.0, so results
//! agree with it (see tests/fixtures/experiment_refs.json):
//! - means use the sample variance (n − 1); proportions use p(1 − p);
//! - the relative lift is (mean_b − mean_a) / |mean_a| with the delta-method
//!   variance var_b/(n_b·mean_a²) + var_a·mean_b²/(n_a·mean_a⁴);
//! - degrees of freedom are Welch–Satterthwaite's.
//!
//! Degenerate inputs (fewer than two units, zero variance, a zero baseline for
//! relative lift) give a result whose `error` says why and whose numbers are NaN.

use super::distributions::{norm_cdf, norm_pdf, norm_ppf, norm_sf, t_ppf, t_sf};
use super::moments::{CoMoments, Moments};

/// One arm reduced to what the tests need: units, the metric's mean, and the
/// variance of one unit's contribution (so the mean's variance is variance / n).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    pub n: f64,
    pub mean: f64,
    pub variance: f64,
}

impl Arm {
    /// A mean metric from its moments.
    pub fn mean(m: &Moments) -> Arm {
        Arm {
            n: m.n,
            mean: m.mean,
            variance: m.variance(),
        }
    }

    /// A conversion metric: `conversions` of `n` units, variance p(1 − p).
    pub fn proportion(n: f64, conversions: f64) -> Arm {
        let p = if n > 0.0 { conversions / n } else { f64::NAN };
        Arm {
            n,
            mean: p,
            variance: p * (1.0 - p),
        }
    }

    /// A ratio metric sum(x)/sum(y) per arm (x numerator, y denominator), with
    /// the delta-method variance of the ratio.
    pub fn ratio(m: &CoMoments) -> Arm {
        let (mx, my) = (m.x.mean, m.y.mean);
        let ratio = mx / my;
        let var_ratio = m.x.variance() / (my * my) + m.y.variance() * mx * mx / my.powi(4)
            - 2.0 * m.covariance() * mx / my.powi(3);
        Arm {
            n: m.n(),
            mean: ratio,
            variance: var_ratio,
        }
    }
}

/// Absolute (b − a) or relative ((b − a)/|a|) effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Absolute,
    Relative,
}

/// The result of a frequentist or sequential test.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub estimate: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub statistic: f64,
    pub df: f64,
    pub p_value: f64,
    pub error: Option<String>,
}

impl TestResult {
    fn failed(reason: &str) -> TestResult {
        TestResult {
            estimate: f64::NAN,
            se: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
            statistic: f64::NAN,
            df: f64::NAN,
            p_value: f64::NAN,
            error: Some(reason.to_string()),
        }
    }
}

/// An effect estimate with its standard error and Welch degrees of freedom.
#[derive(Debug, Clone, Copy)]
struct Effect {
    estimate: f64,
    se: f64,
    df: f64,
}

fn effect(a: &Arm, b: &Arm, scale: Scale) -> Result<Effect, &'static str> {
    if a.n < 2.0 || b.n < 2.0 {
        return Err("each arm needs at least two units");
    }
    let (va, vb) = (a.variance / a.n, b.variance / b.n);
    if !(va.is_finite() && vb.is_finite()) || va < 0.0 || vb < 0.0 {
        return Err("variances must be finite and non-negative");
    }
    let df = (va + vb).powi(2) / (va * va / (a.n - 1.0) + vb * vb / (b.n - 1.0));
    let (estimate, variance) = match scale {
        Scale::Absolute => (b.mean - a.mean, va + vb),
        Scale::Relative => {
            if a.mean == 0.0 {
                return Err("relative lift needs a non-zero control mean");
            }
            let base = a.mean.abs();
            let estimate = (b.mean - a.mean) / base;
            let variance = vb / (a.mean * a.mean) + va * b.mean * b.mean / a.mean.powi(4);
            (estimate, variance)
        }
    };
    if variance <= 0.0 {
        return Err("the effect has zero variance");
    }
    Ok(Effect {
        estimate,
        se: variance.sqrt(),
        df,
    })
}

/// Welch's t-test (GrowthBook's frequentist engine) at confidence 1 − alpha.
pub fn welch(a: &Arm, b: &Arm, scale: Scale, alpha: f64) -> TestResult {
    match effect(a, b, scale) {
        Ok(e) => with_quantile(e, e.df, alpha),
        Err(reason) => TestResult::failed(reason),
    }
}

/// The same comparison with normal quantiles and p-values (large-sample z-test).
pub fn z_test(a: &Arm, b: &Arm, scale: Scale, alpha: f64) -> TestResult {
    match effect(a, b, scale) {
        Ok(e) => with_quantile(e, f64::INFINITY, alpha),
        Err(reason) => TestResult::failed(reason),
    }
}

fn with_quantile(e: Effect, df: f64, alpha: f64) -> TestResult {
    let statistic = e.estimate / e.se;
    let (p_value, q) = if df.is_infinite() {
        (2.0 * norm_sf(statistic.abs()), norm_ppf(1.0 - alpha / 2.0))
    } else {
        (
            2.0 * t_sf(statistic.abs(), df),
            t_ppf(1.0 - alpha / 2.0, df),
        )
    };
    TestResult {
        estimate: e.estimate,
        se: e.se,
        ci_low: e.estimate - q * e.se,
        ci_high: e.estimate + q * e.se,
        statistic,
        df: e.df,
        p_value: p_value.min(1.0),
        error: None,
    }
}

/// Two-proportion z-test of b − a: pooled variance for the statistic (as
/// statsmodels' `proportions_ztest`) or unpooled (Wald); the CI is always Wald.
pub fn proportions_z(a: &Arm, b: &Arm, pooled: bool, alpha: f64) -> TestResult {
    if a.n < 1.0 || b.n < 1.0 {
        return TestResult::failed("each arm needs at least one unit");
    }
    let diff = b.mean - a.mean;
    let wald_se = (a.variance / a.n + b.variance / b.n).sqrt();
    let test_se = if pooled {
        let p = (a.mean * a.n + b.mean * b.n) / (a.n + b.n);
        (p * (1.0 - p) * (1.0 / a.n + 1.0 / b.n)).sqrt()
    } else {
        wald_se
    };
    if test_se.is_nan() || test_se <= 0.0 {
        return TestResult::failed("the difference has zero variance");
    }
    let statistic = diff / test_se;
    let q = norm_ppf(1.0 - alpha / 2.0);
    TestResult {
        estimate: diff,
        se: wald_se,
        ci_low: diff - q * wald_se,
        ci_high: diff + q * wald_se,
        statistic,
        df: f64::INFINITY,
        p_value: (2.0 * norm_sf(statistic.abs())).min(1.0),
        error: None,
    }
}

/// CUPED: both arms of (metric y, pre-period covariate x) adjusted with one
/// θ = cov(y, x)/var(x) over the pooled sample (gbstats `compute_theta`). Returns
/// θ and the adjusted arms, whose means are mean_y − θ·mean_x and variances
/// var_y + θ²·var_x − 2θ·cov.
pub fn cuped(a: &CoMoments, b: &CoMoments) -> (f64, Arm, Arm) {
    let pooled = a.merge(b);
    let var_x = pooled.x.variance();
    let theta = if var_x > 0.0 {
        pooled.covariance() / var_x
    } else {
        0.0
    };
    let adjust = |m: &CoMoments| Arm {
        n: m.n(),
        mean: m.y.mean - theta * m.x.mean,
        variance: m.y.variance() + theta * theta * m.x.variance() - 2.0 * theta * m.covariance(),
    };
    (theta, adjust(a), adjust(b))
}

/// Welch's test on CUPED-adjusted arms. The relative lift is the adjusted
/// difference over the unadjusted control mean, with gbstats 0.8.0's variance
/// (adjusted variances, unadjusted means in the delta method). Returns θ too.
pub fn cuped_welch(a: &CoMoments, b: &CoMoments, scale: Scale, alpha: f64) -> (f64, TestResult) {
    let (theta, adj_a, adj_b) = cuped(a, b);
    let absolute = match effect(&adj_a, &adj_b, Scale::Absolute) {
        Ok(e) => e,
        Err(reason) => return (theta, TestResult::failed(reason)),
    };
    let e = match scale {
        Scale::Absolute => absolute,
        Scale::Relative => {
            let (ya, yb) = (a.y.mean, b.y.mean);
            if ya == 0.0 {
                return (
                    theta,
                    TestResult::failed("relative lift needs a non-zero control mean"),
                );
            }
            let variance = adj_b.variance / (adj_b.n * ya * ya)
                + adj_a.variance * yb * yb / (adj_a.n * ya.powi(4));
            Effect {
                estimate: absolute.estimate / ya.abs(),
                se: variance.sqrt(),
                df: absolute.df,
            }
        }
    };
    (theta, with_quantile(e, e.df, alpha))
}

/// The ρ of GrowthBook's asymptotic confidence sequences for a tuning sample
/// size N* (the sample size at which the sequence is tightest).
pub fn sequential_rho(alpha: f64, tuning: f64) -> f64 {
    let l = -2.0 * alpha.ln();
    ((l + (l + 1.0).ln()) / tuning).sqrt()
}

/// Sequential test with an always-valid confidence sequence (Waudby-Smith et al.,
/// as GrowthBook computes it) and the matching always-valid p-value 1/e-value.
/// It is the mixture SPRT whose mixing variance is ρ²σ², with σ² = se²·(n_a + n_b)
/// the variance of one unit and ρ from the tuning sample size.
pub fn sequential(a: &Arm, b: &Arm, scale: Scale, alpha: f64, tuning: f64) -> TestResult {
    let e = match effect(a, b, scale) {
        Ok(e) => e,
        Err(reason) => return TestResult::failed(reason),
    };
    let sigma2 = e.se * e.se * (a.n + b.n);
    mixture_sprt(e, alpha, sequential_rho(alpha, tuning).powi(2) * sigma2)
}

/// The mixture sequential probability ratio test (mSPRT, Johari et al.) with a
/// normal mixing distribution N(0, τ²) on the effect: always-valid p-value
/// min(1, 1/Λ) and confidence sequence {θ : Λ(θ) < 1/α}, where
/// Λ(θ) = √(V/(V+τ²)) · exp(τ²(Δ−θ)² / (2V(V+τ²))) and V = se².
pub fn msprt(a: &Arm, b: &Arm, scale: Scale, alpha: f64, mixing_variance: f64) -> TestResult {
    if !(mixing_variance > 0.0 && mixing_variance.is_finite()) {
        return TestResult::failed("the mixing variance must be positive");
    }
    match effect(a, b, scale) {
        Ok(e) => mixture_sprt(e, alpha, mixing_variance),
        Err(reason) => TestResult::failed(reason),
    }
}

fn mixture_sprt(e: Effect, alpha: f64, tau2: f64) -> TestResult {
    let v = e.se * e.se;
    let ln_ratio = 0.5 * (v / (v + tau2)).ln();
    let ln_lambda = ln_ratio + tau2 * e.estimate * e.estimate / (2.0 * v * (v + tau2));
    let width = (v * (v + tau2) / tau2 * (-2.0 * alpha.ln() - 2.0 * ln_ratio)).sqrt();
    TestResult {
        estimate: e.estimate,
        se: e.se,
        ci_low: e.estimate - width,
        ci_high: e.estimate + width,
        statistic: e.estimate / e.se,
        df: e.df,
        p_value: (-ln_lambda).exp().min(1.0),
        error: None,
    }
}

/// Result of the Bayesian comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct BayesResult {
    pub chance_to_win: f64,
    pub expected: f64,
    pub stddev: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Expected loss of shipping control: E[max(effect, 0)].
    pub risk_control: f64,
    /// Expected loss of shipping treatment: E[max(−effect, 0)].
    pub risk_treatment: f64,
    pub error: Option<String>,
}

/// Bayesian comparison with a Gaussian posterior on the effect: flat prior when
/// `prior` is `None`, else a normal prior (mean, variance) on the effect's scale.
pub fn bayesian(
    a: &Arm,
    b: &Arm,
    scale: Scale,
    prior: Option<(f64, f64)>,
    alpha: f64,
) -> BayesResult {
    let e = match effect(a, b, scale) {
        Ok(e) => e,
        Err(reason) => {
            return BayesResult {
                chance_to_win: f64::NAN,
                expected: f64::NAN,
                stddev: f64::NAN,
                ci_low: f64::NAN,
                ci_high: f64::NAN,
                risk_control: f64::NAN,
                risk_treatment: f64::NAN,
                error: Some(reason.to_string()),
            };
        }
    };
    let data_precision = 1.0 / (e.se * e.se);
    let (mean, sd) = match prior {
        Some((prior_mean, prior_variance)) if prior_variance > 0.0 => {
            let precision = data_precision + 1.0 / prior_variance;
            (
                (e.estimate * data_precision + prior_mean / prior_variance) / precision,
                precision.sqrt().recip(),
            )
        }
        _ => (e.estimate, e.se),
    };
    let z = mean / sd;
    let q = norm_ppf(1.0 - alpha / 2.0);
    BayesResult {
        chance_to_win: norm_cdf(z),
        expected: mean,
        stddev: sd,
        ci_low: mean - q * sd,
        ci_high: mean + q * sd,
        // E[max(X, 0)] and E[max(−X, 0)] for X ~ N(mean, sd²), each computed
        // without subtracting nearly equal terms.
        risk_control: mean * norm_cdf(z) + sd * norm_pdf(z),
        risk_treatment: sd * norm_pdf(z) - mean * norm_sf(z),
        error: None,
    }
}
