//! Checks over a whole experiment: sample ratio mismatch and multiple-testing
//! adjustment of p-values.

use super::distributions::chi2_sf;

/// Chi-square goodness of fit of observed units per variation against the
/// configured weights (normalised to sum to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct SrmResult {
    pub chi2: f64,
    pub df: f64,
    pub p_value: f64,
    pub error: Option<String>,
}

pub fn srm(observed: &[f64], weights: &[f64]) -> SrmResult {
    let failed = |reason: &str| SrmResult {
        chi2: f64::NAN,
        df: f64::NAN,
        p_value: f64::NAN,
        error: Some(reason.to_string()),
    };
    if observed.len() != weights.len() || observed.len() < 2 {
        return failed("needs one weight per variation and at least two variations");
    }
    let total: f64 = observed.iter().sum();
    let weight_total: f64 = weights.iter().sum();
    if total <= 0.0 || weight_total <= 0.0 || weights.iter().any(|w| *w <= 0.0) {
        return failed("needs positive weights and at least one unit");
    }
    let chi2: f64 = observed
        .iter()
        .zip(weights)
        .map(|(o, w)| {
            let expected = total * w / weight_total;
            (o - expected).powi(2) / expected
        })
        .sum();
    let df = (observed.len() - 1) as f64;
    SrmResult {
        chi2,
        df,
        p_value: chi2_sf(chi2, df),
        error: None,
    }
}

/// Multiple-testing corrections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    Bonferroni,
    /// Holm's step-down (family-wise error rate).
    Holm,
    /// Benjamini–Hochberg step-up (false discovery rate).
    BenjaminiHochberg,
}

impl Adjustment {
    pub fn parse(name: &str) -> Option<Adjustment> {
        match name.to_ascii_lowercase().as_str() {
            "bonferroni" => Some(Adjustment::Bonferroni),
            "holm" => Some(Adjustment::Holm),
            "bh" | "fdr_bh" | "benjamini-hochberg" | "benjamini_hochberg" => {
                Some(Adjustment::BenjaminiHochberg)
            }
            _ => None,
        }
    }
}

/// Adjusted p-values, in the order given (as statsmodels' `multipletests`).
pub fn adjust_p_values(p: &[f64], method: Adjustment) -> Vec<f64> {
    let m = p.len() as f64;
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![f64::NAN; p.len()];
    match method {
        Adjustment::Bonferroni => {
            for (i, v) in p.iter().enumerate() {
                adjusted[i] = (v * m).min(1.0);
            }
        }
        Adjustment::Holm => {
            let mut running: f64 = 0.0;
            for (rank, &i) in order.iter().enumerate() {
                running = running.max(((m - rank as f64) * p[i]).min(1.0));
                adjusted[i] = running;
            }
        }
        Adjustment::BenjaminiHochberg => {
            let mut running: f64 = 1.0;
            for (rank, &i) in order.iter().enumerate().rev() {
                running = running.min((m / (rank as f64 + 1.0) * p[i]).min(1.0));
                adjusted[i] = running;
            }
        }
    }
    adjusted
}
