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
