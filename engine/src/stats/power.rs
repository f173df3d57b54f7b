//! Experiment design: sample size, minimum detectable effect and power for
//! two-sided tests with two equal arms, by the normal approximation.

use super::distributions::{norm_cdf, norm_ppf};

fn z_sum(alpha: f64, power: f64) -> f64 {
    norm_ppf(1.0 - alpha / 2.0) + norm_ppf(power)
}

/// Units per arm to detect a change of conversion rate from `p_control` to
/// `p_treatment` (unpooled variances).
pub fn sample_size_proportions(p_control: f64, p_treatment: f64, alpha: f64, power: f64) -> f64 {
    let variance = p_control * (1.0 - p_control) + p_treatment * (1.0 - p_treatment);
    z_sum(alpha, power).powi(2) * variance / (p_treatment - p_control).powi(2)
}

/// Units per arm to detect an absolute change `effect` of a mean with standard
/// deviation `sd`.
pub fn sample_size_means(sd: f64, effect: f64, alpha: f64, power: f64) -> f64 {
    2.0 * (z_sum(alpha, power) * sd / effect).powi(2)
}

/// The smallest absolute change of a mean (standard deviation `sd`) detectable
/// with `n` units per arm.
pub fn mde_means(sd: f64, n: f64, alpha: f64, power: f64) -> f64 {
    z_sum(alpha, power) * (2.0 * sd * sd / n).sqrt()
}

/// The smallest absolute change of a conversion rate `p_control` detectable with
/// `n` units per arm (both arms' variance taken at the control rate).
pub fn mde_proportions(p_control: f64, n: f64, alpha: f64, power: f64) -> f64 {
    z_sum(alpha, power) * (2.0 * p_control * (1.0 - p_control) / n).sqrt()
}

/// Power of the two-sided test for a standardised effect `d` (Cohen's d) with
/// `n` units per arm.
pub fn power_means(d: f64, n: f64, alpha: f64) -> f64 {
    let z = norm_ppf(1.0 - alpha / 2.0);
    let shift = d * (n / 2.0).sqrt();
    norm_cdf(shift - z) + norm_cdf(-shift - z)
}

/// Units per arm for power `power` at standardised effect `d`, solving the
/// two-tailed power equation exactly (as statsmodels' `NormalIndPower`), where
/// the closed forms above drop the far tail.
pub fn sample_size_effect(d: f64, alpha: f64, power: f64) -> f64 {
    if !(d != 0.0 && d.is_finite() && power > alpha / 2.0 && power < 1.0) {
        return f64::NAN;
    }
    // Bracket the root around the one-tailed closed form and bisect.
    let mut low = 2.0 * (z_sum(alpha, power) / d).powi(2) * 0.5;
    let mut high = low * 4.0 + 10.0;
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if power_means(d, mid, alpha) < power {
            low = mid;
        } else {
            high = mid;
        }
        if high - low <= 1e-12 * high {
            break;
        }
    }
    0.5 * (low + high)
}

/// Cohen's h between two proportions.
pub fn cohens_h(p_control: f64, p_treatment: f64) -> f64 {
    2.0 * p_treatment.sqrt().asin() - 2.0 * p_control.sqrt().asin()
}
