//! Every case of tests/fixtures/experiment_refs.json (a copy of
//! ../shared/refs/experiment_refs.json: scipy, statsmodels and gbstats values),
//! checked to 1e-9 relative.

use serde_json::Value;

use super::checks::{Adjustment, adjust_p_values, srm};
use super::inference::{
    Arm, BayesResult, Scale, TestResult, bayesian, cuped_welch, msprt, proportions_z, sequential,
    sequential_rho, welch,
};
use super::moments::{CoMoments, Moments};
use super::power;

const TOLERANCE: f64 = 1e-9;

fn refs() -> Value {
    serde_json::from_str(include_str!("../../../tests/fixtures/experiment_refs.json"))
        .expect("fixture parses")
}

fn case(id: &str) -> Value {
    let refs = refs();
    refs["primary_cases"]
        .as_array()
        .into_iter()
        .chain(refs["extra_cases"].as_array())
        .flatten()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("case {id} in fixture"))
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("number expected, got {v}"))
}

fn close(what: &str, actual: f64, expected: &Value) {
    super::assert_close(what, actual, num(expected), TOLERANCE);
}

fn check_test(what: &str, r: &TestResult, expected: &Value) {
    assert_eq!(r.error, None, "{what}");
    close(
        &format!("{what} estimate"),
        r.estimate,
        &expected["expected"],
    );
    close(&format!("{what} ci_low"), r.ci_low, &expected["ci"][0]);
    close(&format!("{what} ci_high"), r.ci_high, &expected["ci"][1]);
    close(&format!("{what} p"), r.p_value, &expected["p_value"]);
    if !expected["stddev"].is_null() {
        close(&format!("{what} se"), r.se, &expected["stddev"]);
    }
    if !expected["welch_dof"].is_null() {
        close(&format!("{what} df"), r.df, &expected["welch_dof"]);
    }
    if !expected["t_stat"].is_null() {
        close(&format!("{what} t"), r.statistic, &expected["t_stat"]);
    }
}

fn check_bayes(what: &str, r: &BayesResult, expected: &Value) {
    close(
        &format!("{what} chance_to_win"),
        r.chance_to_win,
        &expected["chance_to_win"],
    );
    close(
        &format!("{what} expected"),
        r.expected,
        &expected["expected"],
    );
    close(&format!("{what} ci_low"), r.ci_low, &expected["ci"][0]);
    close(&format!("{what} ci_high"), r.ci_high, &expected["ci"][1]);
    close(
        &format!("{what} risk_control"),
        r.risk_control,
        &expected["risk"][0],
    );
    close(
        &format!("{what} risk_treatment"),
        r.risk_treatment,
        &expected["risk"][1],
    );
    if !expected["stddev"].is_null() {
        close(&format!("{what} stddev"), r.stddev, &expected["stddev"]);
    }
}

fn mean_arms(inputs: &Value) -> (Arm, Arm) {
    let a = Moments::from_mean_sd(
        num(&inputs["ctrl_n"]),
        num(&inputs["ctrl_mean"]),
        num(&inputs["ctrl_sd"]),
    );
    let b = Moments::from_mean_sd(
        num(&inputs["trt_n"]),
        num(&inputs["trt_mean"]),
        num(&inputs["trt_sd"]),
    );
    (Arm::mean(&a), Arm::mean(&b))
}

#[test]
fn case1_proportions() {
    let c = case("case1_proportion_conversion");
    let (i, o) = (&c["inputs"], &c["outputs"]);
    let a = Arm::proportion(num(&i["ctrl_n"]), num(&i["ctrl_conv"]));
    let b = Arm::proportion(num(&i["trt_n"]), num(&i["trt_conv"]));
    let pooled = proportions_z(&a, &b, true, 0.05);
    close(
        "pooled z",
        pooled.statistic,
        &o["statsmodels_pooled_ztest"]["z"],
    );
    close(
        "pooled p",
        pooled.p_value,
        &o["statsmodels_pooled_ztest"]["p_value"],
    );
    let wald = proportions_z(&a, &b, false, 0.05);
    let w = &o["statsmodels_wald_unpooled"];
    close("wald z", wald.statistic, &w["z"]);
    close("wald p", wald.p_value, &w["p_value"]);
    close("wald ci_low", wald.ci_low, &w["ci95_abs_diff"][0]);
    close("wald ci_high", wald.ci_high, &w["ci95_abs_diff"][1]);
    check_test(
        "gb abs",
        &welch(&a, &b, Scale::Absolute, 0.05),
        &o["gbstats_frequentist_absolute"],
    );
    check_test(
        "gb rel",
        &welch(&a, &b, Scale::Relative, 0.05),
        &o["gbstats_frequentist_relative"],
    );
    check_bayes(
        "bayes rel",
        &bayesian(&a, &b, Scale::Relative, None, 0.05),
        &o["gbstats_bayesian_relative_flat_prior"],
    );
    check_bayes(
        "bayes abs",
        &bayesian(&a, &b, Scale::Absolute, None, 0.05),
        &o["gbstats_bayesian_absolute_flat_prior"],
    );
}

#[test]
fn case2_welch() {
    let c = case("case2_welch_continuous");
    let (i, o) = (&c["inputs"], &c["outputs"]);
    let (a, b) = mean_arms(i);
    // The same arms from sums and sums of squares.
    let from_sums = Arm::mean(&Moments::from_sums(
        num(&i["ctrl_n"]),
        num(&i["ctrl_sum"]),
        num(&i["ctrl_sum_squares"]),
    ));
    close(
        "variance from sums",
        from_sums.variance,
        &serde_json::json!(a.variance),
    );
    let r = welch(&a, &b, Scale::Absolute, 0.05);
    let s = &o["scipy_welch"];
    close("scipy t", r.statistic, &s["t"]);
    close("scipy p", r.p_value, &s["p_value"]);
    close("scipy df", r.df, &s["welch_dof"]);
    close("scipy se", r.se, &s["se_abs"]);
    close("scipy ci_low", r.ci_low, &s["ci95_abs"][0]);
    check_test("gb abs", &r, &o["gbstats_frequentist_absolute"]);
    check_test(
        "gb rel",
        &welch(&a, &b, Scale::Relative, 0.05),
        &o["gbstats_frequentist_relative"],
    );
}

#[test]
fn case3_sequential_and_priors() {
    let c = case("case3_sequential_and_bayes_prior");
    let (i, o) = (&c["inputs"], &c["outputs"]);
    let (a, b) = mean_arms(i);
    let (alpha, tuning) = (num(&i["alpha"]), num(&i["sequential_tuning_parameter"]));
    close(
        "rho",
        sequential_rho(alpha, tuning),
        &o["gbstats_sequential_absolute"]["rho"],
    );
    for (scale, key) in [
        (Scale::Absolute, "gbstats_sequential_absolute"),
        (Scale::Relative, "gbstats_sequential_relative"),
    ] {
        let r = sequential(&a, &b, scale, alpha, tuning);
        close(&format!("{key} estimate"), r.estimate, &o[key]["expected"]);
        close(&format!("{key} ci_low"), r.ci_low, &o[key]["ci"][0]);
        close(&format!("{key} ci_high"), r.ci_high, &o[key]["ci"][1]);
        close(&format!("{key} p"), r.p_value, &o[key]["p_value"]);
    }
    // The same sequence as an mSPRT with mixing variance ρ²σ² (σ² = se²·N).
    let se = welch(&a, &b, Scale::Absolute, alpha).se;
    let tau2 = sequential_rho(alpha, tuning).powi(2) * se * se * (a.n + b.n);
    let m = msprt(&a, &b, Scale::Absolute, alpha, tau2);
    close(
        "msprt ci_low",
        m.ci_low,
        &o["gbstats_sequential_absolute"]["ci"][0],
    );
    close(
        "msprt p",
        m.p_value,
        &o["gbstats_sequential_absolute"]["p_value"],
    );
    assert_eq!(
        msprt(&a, &b, Scale::Absolute, alpha, 0.0).error.as_deref(),
        Some("the mixing variance must be positive")
    );
    let e_value = 1.0 / sequential(&a, &b, Scale::Absolute, alpha, tuning).p_value;
    close(
        "e-value",
        e_value,
        &refs()["independent_checks"]["case3_sequential_abs_manual"]["e_value"],
    );
    check_bayes(
        "flat",
        &bayesian(&a, &b, Scale::Relative, None, 0.05),
        &o["gbstats_bayesian_relative_flat"],
    );
    let prior = Some((num(&i["prior_mean"]), num(&i["prior_variance"])));
    check_bayes(
        "prior",
        &bayesian(&a, &b, Scale::Relative, prior, 0.05),
        &o["gbstats_bayesian_relative_prior_N0_0p09"],
    );
}

#[test]
fn case4_srm() {
    let c = case("case4_srm_chisquare");
    for out in c["outputs"].as_array().expect("srm outputs") {
        let users: Vec<f64> = out["inputs"]["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(num)
            .collect();
        let weights: Vec<f64> = out["inputs"]["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(num)
            .collect();
        let r = srm(&users, &weights);
        close("chi2", r.chi2, &out["chi2"]);
        close("df", r.df, &out["df"]);
        close("p", r.p_value, &out["p_value_scipy"]);
    }
}

#[test]
fn case5_multiple_testing() {
    let c = case("case5_multiple_testing");
    let p: Vec<f64> = c["inputs"]["p_values"]
        .as_array()
        .expect("p")
        .iter()
        .map(num)
        .collect();
    for (method, key) in [
        (Adjustment::Holm, "holm_statsmodels"),
        (Adjustment::BenjaminiHochberg, "bh_statsmodels"),
        (Adjustment::Bonferroni, "bonferroni_statsmodels"),
    ] {
        let adjusted = adjust_p_values(&p, method);
        for (k, value) in adjusted.iter().enumerate() {
            close(key, *value, &c["outputs"][key][k]);
        }
    }
}

fn co_moments(v: &Value, x: &str, y: &str, xy: &str) -> CoMoments {
    CoMoments::from_sums(
        num(&v["n"]),
        num(&v[format!("{x}_sum")]),
        num(&v[format!("{x}_sum_sq")]),
        num(&v[format!("{y}_sum")]),
        num(&v[format!("{y}_sum_sq")]),
        num(&v[xy]),
    )
}

#[test]
fn case6_ratio_metric() {
    let c = case("case6_ratio_metric_delta_method");
    let (i, o) = (&c["inputs"], &c["outputs"]);
    let a = Arm::ratio(&co_moments(&i["ctrl"], "m", "d", "md_sum"));
    let b = Arm::ratio(&co_moments(&i["trt"], "m", "d", "md_sum"));
    close("ratio ctrl", a.mean, &o["manual"]["ratio_ctrl"]);
    close(
        "var ratio ctrl",
        a.variance / a.n,
        &o["manual"]["var_ratio_ctrl"],
    );
    close(
        "var ratio trt",
        b.variance / b.n,
        &o["manual"]["var_ratio_trt"],
    );
    check_test(
        "gb abs",
        &welch(&a, &b, Scale::Absolute, 0.05),
        &o["gbstats_frequentist_absolute"],
    );
    check_test(
        "gb rel",
        &welch(&a, &b, Scale::Relative, 0.05),
        &o["gbstats_frequentist_relative"],
    );
}

#[test]
fn case7_cuped() {
    let c = case("case7_cuped_regression_adjustment");
    let (i, o) = (&c["inputs"], &c["outputs"]);
    // CoMoments x = covariate (pre-period), y = metric.
    let a = co_moments(&i["ctrl"], "x", "y", "xy_sum");
    let b = co_moments(&i["trt"], "x", "y", "xy_sum");
    let (theta, abs) = cuped_welch(&a, &b, Scale::Absolute, 0.05);
    close("theta", theta, &o["theta"]);
    check_test("cuped abs", &abs, &o["gbstats_cuped_absolute"]);
    let (_, rel) = cuped_welch(&a, &b, Scale::Relative, 0.05);
    check_test("cuped rel", &rel, &o["gbstats_cuped_relative"]);
    let unadjusted = welch(&Arm::mean(&a.y), &Arm::mean(&b.y), Scale::Absolute, 0.05);
    check_test("unadjusted", &unadjusted, &o["gbstats_unadjusted_absolute"]);
}

#[test]
fn case8_power() {
    let c = case("case8_power_sample_size");
    let (i, o) = (&c["inputs"], &c["outputs"]);
    let (alpha, target) = (num(&i["alpha"]), num(&i["power"]));
    let (p1, p2) = (num(&i["p_ctrl"]), num(&i["p_trt"]));
    close(
        "n proportions",
        power::sample_size_proportions(p1, p2, alpha, target),
        &o["n_per_arm_unpooled_closed_form"],
    );
    let h = power::cohens_h(p1, p2);
    close("cohen's h", h, &o["cohens_h"]);
    // statsmodels NormalIndPower solves the two-tailed power equation for n.
    close(
        "n cohen's h",
        power::sample_size_effect(h, alpha, target),
        &o["n_per_arm_statsmodels_NormalIndPower_cohens_h"],
    );
    close(
        "mde",
        power::mde_means(num(&i["sd"]), num(&i["n_per_arm"]), alpha, target),
        &o["mde_abs_sd12_n5000"],
    );
    close(
        "power",
        power::power_means(num(&i["cohen_d"]), num(&i["n_per_arm"]), alpha),
        &o["power_normal_d0p05_n5000"],
    );
}

#[test]
fn properties() {
    let (a, b) = (
        Arm {
            n: 1000.0,
            mean: 10.0,
            variance: 4.0,
        },
        Arm {
            n: 1200.0,
            mean: 10.3,
            variance: 5.0,
        },
    );
    // Swapping arms negates the absolute effect and keeps the p-value.
    let ab = welch(&a, &b, Scale::Absolute, 0.05);
    let ba = welch(&b, &a, Scale::Absolute, 0.05);
    assert!((ab.estimate + ba.estimate).abs() < 1e-15 && (ab.p_value - ba.p_value).abs() < 1e-15);
    assert!(ab.ci_low < ab.estimate && ab.estimate < ab.ci_high);
    // A larger effect gives a smaller p-value.
    let mut last = 1.0;
    for lift in [0.0, 0.1, 0.2, 0.4, 0.8] {
        let r = welch(
            &a,
            &Arm {
                mean: 10.0 + lift,
                ..b
            },
            Scale::Absolute,
            0.05,
        );
        assert!(r.p_value <= last, "p not monotone at {lift}");
        last = r.p_value;
    }
    // Relative lift keeps its sign under a negative baseline (divides by |mean|).
    let neg = welch(
        &Arm { mean: -10.0, ..a },
        &Arm { mean: -9.0, ..b },
        Scale::Relative,
        0.05,
    );
    assert!(neg.estimate > 0.0, "{neg:?}");
    // Degenerate inputs say why.
    let one = welch(&Arm { n: 1.0, ..a }, &b, Scale::Absolute, 0.05);
    assert_eq!(
        one.error.as_deref(),
        Some("each arm needs at least two units")
    );
    let flat = welch(
        &Arm { variance: 0.0, ..a },
        &Arm { variance: 0.0, ..b },
        Scale::Absolute,
        0.05,
    );
    assert_eq!(flat.error.as_deref(), Some("the effect has zero variance"));
    let zero = welch(&Arm { mean: 0.0, ..a }, &b, Scale::Relative, 0.05);
    assert_eq!(
        zero.error.as_deref(),
        Some("relative lift needs a non-zero control mean")
    );
    // Extreme effects keep tiny p-values instead of rounding to zero.
    let huge = welch(
        &Arm { n: 1e6, ..a },
        &Arm {
            n: 1e6,
            mean: 10.1,
            ..b
        },
        Scale::Absolute,
        0.05,
    );
    assert!(
        huge.p_value > 0.0 && huge.p_value < 1e-200,
        "{}",
        huge.p_value
    );
}
