//! Experiment statistics: deterministic assignment compatible with GrowthBook's
//! SDKs, numerically stable moments, frequentist, sequential and Bayesian tests,
//! sample-ratio checks, power and multiple-testing adjustment.
//!
//! Pure functions over numbers, no SQL: the sql crate wraps them as functions.

pub mod assignment;
pub mod checks;
pub mod distributions;
pub mod inference;
pub mod moments;
pub mod power;

#[cfg(test)]
mod reference_tests;

/// Asserts `actual` is within `tolerance` of `expected`, relatively (absolutely
/// when `expected` is 0); `what` names the quantity in the failure message.
#[cfg(test)]
pub(crate) fn assert_close(what: &str, actual: f64, expected: f64, tolerance: f64) {
    let error = if expected == 0.0 {
        actual.abs()
    } else {
        ((actual - expected) / expected).abs()
    };
    assert!(
        error <= tolerance,
        "{what}: {actual} vs {expected} (relative error {error:e})"
    );
}
