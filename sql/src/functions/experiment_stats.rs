//! The experiment tests over summary statistics, as SQL functions returning a
//! struct: `welch_test_stats`, `z_test_stats`, `proportion_test_stats`,
//! `sequential_test_stats`, `msprt_test_stats`, `bayes_test_stats`, `ratio_test_stats`,
//! `cuped_test_stats`, and the design functions
//! `sample_size_proportions`, `sample_size_means`, `mde_means`, `power_means`.
//!
//! They share one shape — numeric arguments (some optional, with defaults), a row
//! of numbers out — so one `ScalarUDFImpl`, [`NumericFunc`], serves them all from
//! the table in [`all`]. Every argument is coerced to DOUBLE; a NULL argument gives
//! a NULL result.

use std::sync::Arc;

use super::metric_moments::COMOMENT_FIELDS;
use arrow::array::{Array, ArrayRef, Float64Array, StringBuilder, StructArray};
use arrow::datatypes::{DataType, Field, Fields};
use cohortdb_engine::stats::inference::{self, Arm, BayesResult, Scale, TestResult};
use cohortdb_engine::stats::moments::{CoMoments, Moments};
use cohortdb_engine::stats::power;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// What a function computes from its (defaulted) arguments.
type Compute = fn(&[f64]) -> Outcome;

/// A row of outputs, or the reason there is none (reported in `error`).
pub(crate) struct Outcome {
    values: Vec<f64>,
    error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct NumericFunc {
    name: &'static str,
    /// Parameter names; the trailing ones with defaults are optional.
    params: &'static [(&'static str, Option<f64>)],
    /// Output field names; a struct when more than one, else a DOUBLE.
    outputs: &'static [&'static str],
    compute: Compute,
    signature: Signature,
}

impl PartialEq for NumericFunc {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for NumericFunc {}

impl std::hash::Hash for NumericFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl NumericFunc {
    fn udf(
        name: &'static str,
        params: &'static [(&'static str, Option<f64>)],
        outputs: &'static [&'static str],
        compute: Compute,
    ) -> ScalarUDF {
        ScalarUDF::from(NumericFunc {
            name,
            params,
            outputs,
            compute,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    }

    fn is_struct(&self) -> bool {
        self.outputs.len() > 1
    }

    fn fields(&self) -> Fields {
        fields_of(self.outputs)
    }

    fn required(&self) -> usize {
        self.params
            .iter()
            .filter(|(_, default)| default.is_none())
            .count()
    }
}

impl ScalarUDFImpl for NumericFunc {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let (min, max) = (self.required(), self.params.len());
        if arg_types.len() < min || arg_types.len() > max {
            let names: Vec<&str> = self.params.iter().map(|(n, _)| *n).collect();
            return plan_err!(
                "{}({}) takes {min} to {max} arguments, got {}",
                self.name,
                names.join(", "),
                arg_types.len()
            );
        }
        for (t, (param, _)) in arg_types.iter().zip(self.params) {
            if !(t.is_numeric() || t.is_null()) {
                return plan_err!("{}: argument {param} must be a number, got {t}", self.name);
            }
        }
        Ok(vec![DataType::Float64; arg_types.len()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(if self.is_struct() {
            DataType::Struct(self.fields())
        } else {
            DataType::Float64
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let columns: Vec<&Float64Array> = arrays
            .iter()
            .map(|a| {
                a.as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("arguments are coerced to DOUBLE")
            })
            .collect();
        let mut inputs = vec![0.0; self.params.len()];
        let outcomes = (0..rows).map(|row| {
            for (i, (_, default)) in self.params.iter().enumerate() {
                inputs[i] = match columns.get(i) {
                    Some(c) if c.is_null(row) => return None,
                    Some(c) => c.value(row),
                    None => default.expect("missing arguments have defaults"),
                };
            }
            Some((self.compute)(&inputs))
        });
        let mut result = outcome_columns(self.outputs.len(), rows, outcomes);
        if !self.is_struct() {
            return Ok(ColumnarValue::Array(result.columns.remove(0)));
        }
        Ok(ColumnarValue::Array(result.into_struct(self.fields())?))
    }
}

/// Result columns built row by row from outcomes (`None`: a NULL row).
struct OutcomeColumns {
    columns: Vec<ArrayRef>,
    errors: ArrayRef,
    valid: Vec<bool>,
}

fn outcome_columns(
    width: usize,
    rows: usize,
    outcomes: impl Iterator<Item = Option<Outcome>>,
) -> OutcomeColumns {
    let mut outputs: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(rows); width];
    let mut errors = StringBuilder::new();
    let mut valid = Vec::with_capacity(rows);
    for outcome in outcomes {
        match outcome {
            None => {
                outputs.iter_mut().for_each(|o| o.push(None));
                errors.append_null();
                valid.push(false);
            }
            Some(outcome) => {
                for (o, v) in outputs.iter_mut().zip(&outcome.values) {
                    o.push(v.is_finite().then_some(*v));
                }
                errors.append_option(outcome.error);
                valid.push(true);
            }
        }
    }
    OutcomeColumns {
        columns: outputs
            .into_iter()
            .map(|o| Arc::new(Float64Array::from(o)) as ArrayRef)
            .collect(),
        errors: Arc::new(errors.finish()),
        valid,
    }
}

impl OutcomeColumns {
    /// The numbers followed by `error`, as a struct that is NULL on NULL rows.
    fn into_struct(mut self, fields: Fields) -> Result<ArrayRef> {
        self.columns.push(self.errors);
        let nulls = arrow::buffer::NullBuffer::from(self.valid);
        Ok(Arc::new(StructArray::try_new(
            fields,
            self.columns,
            Some(nulls),
        )?))
    }
}

/// Shared by the table's functions and the struct-argument forms.
fn fields_of(outputs: &[&str]) -> Fields {
    let mut fields: Vec<Field> = outputs
        .iter()
        .map(|n| Field::new(*n, DataType::Float64, true))
        .collect();
    fields.push(Field::new("error", DataType::Utf8, true));
    Fields::from(fields)
}

const ARMS: [(&str, Option<f64>); 6] = [
    ("n_a", None),
    ("mean_a", None),
    ("var_a", None),
    ("n_b", None),
    ("mean_b", None),
    ("var_b", None),
];

const TEST_FIELDS: &[&str] = &[
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "statistic",
    "df",
    "p_value",
    "rel_estimate",
    "rel_se",
    "rel_ci_low",
    "rel_ci_high",
    "rel_p_value",
];

const CUPED_FIELDS: &[&str] = &[
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "statistic",
    "df",
    "p_value",
    "rel_estimate",
    "rel_se",
    "rel_ci_low",
    "rel_ci_high",
    "rel_p_value",
    "theta",
];

fn arms(v: &[f64]) -> (Arm, Arm) {
    (
        Arm {
            n: v[0],
            mean: v[1],
            variance: v[2],
        },
        Arm {
            n: v[3],
            mean: v[4],
            variance: v[5],
        },
    )
}

/// Absolute and relative results side by side; the first error wins.
fn both(absolute: TestResult, relative: TestResult) -> Outcome {
    Outcome {
        values: vec![
            absolute.estimate,
            absolute.se,
            absolute.ci_low,
            absolute.ci_high,
            absolute.statistic,
            absolute.df,
            absolute.p_value,
            relative.estimate,
            relative.se,
            relative.ci_low,
            relative.ci_high,
            relative.p_value,
        ],
        error: absolute.error.or(relative.error),
    }
}

/// Per-arm sums of two variables: n, Σx, Σx², Σy, Σy², Σxy (control then treatment).
const SUMS: &[(&str, Option<f64>)] = &[
    ("n_a", None),
    ("x_sum_a", None),
    ("x_sum_squares_a", None),
    ("y_sum_a", None),
    ("y_sum_squares_a", None),
    ("xy_sum_a", None),
    ("n_b", None),
    ("x_sum_b", None),
    ("x_sum_squares_b", None),
    ("y_sum_b", None),
    ("y_sum_squares_b", None),
    ("xy_sum_b", None),
    ("alpha", Some(0.05)),
];

fn co_moments(v: &[f64]) -> (CoMoments, CoMoments) {
    (
        CoMoments::from_sums(v[0], v[1], v[2], v[3], v[4], v[5]),
        CoMoments::from_sums(v[6], v[7], v[8], v[9], v[10], v[11]),
    )
}

/// Ratio metric Σx/Σy per arm (x numerator, y denominator), delta method.
fn ratio(a: &CoMoments, b: &CoMoments, alpha: f64) -> Outcome {
    let (a, b) = (Arm::ratio(a), Arm::ratio(b));
    both(
        inference::welch(&a, &b, Scale::Absolute, alpha),
        inference::welch(&a, &b, Scale::Relative, alpha),
    )
}

/// CUPED: x is the pre-period covariate, y the metric.
fn cuped(a: &CoMoments, b: &CoMoments, alpha: f64) -> Outcome {
    let (theta, absolute) = inference::cuped_welch(a, b, Scale::Absolute, alpha);
    let (_, relative) = inference::cuped_welch(a, b, Scale::Relative, alpha);
    let mut outcome = both(absolute, relative);
    outcome.values.push(theta);
    outcome
}

fn bayes_outcome(r: BayesResult) -> Outcome {
    Outcome {
        values: vec![
            r.chance_to_win,
            r.expected,
            r.stddev,
            r.ci_low,
            r.ci_high,
            r.risk_control,
            r.risk_treatment,
        ],
        error: r.error,
    }
}

fn single(value: f64) -> Outcome {
    Outcome {
        values: vec![value],
        error: None,
    }
}

macro_rules! params {
    ($($extra:expr),* $(,)?) => {{
        const P: &[(&str, Option<f64>)] = &[ARMS[0], ARMS[1], ARMS[2], ARMS[3], ARMS[4], ARMS[5], $($extra),*];
        P
    }};
}

/// Every function of this family.
pub(crate) fn all() -> Vec<ScalarUDF> {
    vec![
        NumericFunc::udf(
            "welch_test_stats",
            params![("alpha", Some(0.05))],
            TEST_FIELDS,
            |v| {
                let (a, b) = arms(v);
                both(
                    inference::welch(&a, &b, Scale::Absolute, v[6]),
                    inference::welch(&a, &b, Scale::Relative, v[6]),
                )
            },
        ),
        NumericFunc::udf(
            "z_test_stats",
            params![("alpha", Some(0.05))],
            TEST_FIELDS,
            |v| {
                let (a, b) = arms(v);
                both(
                    inference::z_test(&a, &b, Scale::Absolute, v[6]),
                    inference::z_test(&a, &b, Scale::Relative, v[6]),
                )
            },
        ),
        NumericFunc::udf(
            "sequential_test_stats",
            params![("alpha", Some(0.05)), ("tuning", Some(5000.0))],
            TEST_FIELDS,
            |v| {
                let (a, b) = arms(v);
                both(
                    inference::sequential(&a, &b, Scale::Absolute, v[6], v[7]),
                    inference::sequential(&a, &b, Scale::Relative, v[6], v[7]),
                )
            },
        ),
        NumericFunc::udf(
            "bayes_test_stats",
            params![
                ("prior_mean", Some(0.0)),
                ("prior_variance", Some(0.0)),
                ("alpha", Some(0.05))
            ],
            &[
                "chance_to_win",
                "expected",
                "stddev",
                "ci_low",
                "ci_high",
                "risk_control",
                "risk_treatment",
            ],
            |v| {
                let (a, b) = arms(v);
                let prior = (v[7] > 0.0).then_some((v[6], v[7]));
                bayes_outcome(inference::bayesian(&a, &b, Scale::Relative, prior, v[8]))
            },
        ),
        NumericFunc::udf(
            "proportion_test_stats",
            &[
                ("n_a", None),
                ("conversions_a", None),
                ("n_b", None),
                ("conversions_b", None),
                ("alpha", Some(0.05)),
            ],
            &[
                "estimate",
                "se",
                "ci_low",
                "ci_high",
                "statistic",
                "p_value",
                "statistic_unpooled",
                "p_value_unpooled",
                "rel_estimate",
                "rel_se",
                "rel_ci_low",
                "rel_ci_high",
                "rel_p_value",
            ],
            |v| {
                let (a, b) = (Arm::proportion(v[0], v[1]), Arm::proportion(v[2], v[3]));
                let pooled = inference::proportions_z(&a, &b, true, v[4]);
                let unpooled = inference::proportions_z(&a, &b, false, v[4]);
                let relative = inference::z_test(&a, &b, Scale::Relative, v[4]);
                Outcome {
                    values: vec![
                        unpooled.estimate,
                        unpooled.se,
                        unpooled.ci_low,
                        unpooled.ci_high,
                        pooled.statistic,
                        pooled.p_value,
                        unpooled.statistic,
                        unpooled.p_value,
                        relative.estimate,
                        relative.se,
                        relative.ci_low,
                        relative.ci_high,
                        relative.p_value,
                    ],
                    error: pooled.error.or(relative.error),
                }
            },
        ),
        // mSPRT; tau is the mixing standard deviation as a fraction of the
        // control mean, so it serves the absolute and the relative scale alike.
        NumericFunc::udf(
            "msprt_test_stats",
            params![("tau", None), ("alpha", Some(0.05))],
            TEST_FIELDS,
            |v| {
                let (a, b) = arms(v);
                let (tau, alpha) = (v[6], v[7]);
                let absolute_tau = tau * a.mean.abs();
                both(
                    inference::msprt(&a, &b, Scale::Absolute, alpha, absolute_tau * absolute_tau),
                    inference::msprt(&a, &b, Scale::Relative, alpha, tau * tau),
                )
            },
        ),
        NumericFunc::udf("ratio_test_stats", SUMS, TEST_FIELDS, |v| {
            let (a, b) = co_moments(v);
            ratio(&a, &b, v[12])
        }),
        NumericFunc::udf("cuped_test_stats", SUMS, CUPED_FIELDS, |v| {
            let (a, b) = co_moments(v);
            cuped(&a, &b, v[12])
        }),
        NumericFunc::udf(
            "sample_size_proportions",
            &[
                ("p_a", None),
                ("p_b", None),
                ("alpha", Some(0.05)),
                ("power", Some(0.8)),
            ],
            &["n_per_arm"],
            |v| single(power::sample_size_proportions(v[0], v[1], v[2], v[3])),
        ),
        NumericFunc::udf(
            "sample_size_means",
            &[
                ("sd", None),
                ("effect", None),
                ("alpha", Some(0.05)),
                ("power", Some(0.8)),
            ],
            &["n_per_arm"],
            |v| single(power::sample_size_means(v[0], v[1], v[2], v[3])),
        ),
        NumericFunc::udf(
            "mde_means",
            &[
                ("sd", None),
                ("n_per_arm", None),
                ("alpha", Some(0.05)),
                ("power", Some(0.8)),
            ],
            &["mde"],
            |v| single(power::mde_means(v[0], v[1], v[2], v[3])),
        ),
        NumericFunc::udf(
            "mde_proportions",
            &[
                ("p_a", None),
                ("n_per_arm", None),
                ("alpha", Some(0.05)),
                ("power", Some(0.8)),
            ],
            &["mde"],
            |v| single(power::mde_proportions(v[0], v[1], v[2], v[3])),
        ),
        NumericFunc::udf(
            "power_means",
            &[
                ("effect_size", None),
                ("n_per_arm", None),
                ("alpha", Some(0.05)),
            ],
            &["power"],
            |v| single(power::power_means(v[0], v[1], v[2])),
        ),
    ]
}

/// `ratio_test(a, b [, alpha])` and `cuped_test(a, b [, alpha])`: the ratio and
/// CUPED tests over two `metric_comoments` results (control, treatment), so they
/// come straight from `GROUP BY variation` without sums that lose digits.
#[derive(Debug)]
pub(crate) struct CoMomentsTestFunc {
    name: &'static str,
    outputs: &'static [&'static str],
    compute: fn(&CoMoments, &CoMoments, f64) -> Outcome,
    signature: Signature,
}

impl PartialEq for CoMomentsTestFunc {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CoMomentsTestFunc {}

impl std::hash::Hash for CoMomentsTestFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// Both struct-argument functions.
pub(crate) fn comoment_tests() -> Vec<ScalarUDF> {
    let udf = |name, outputs, compute| {
        ScalarUDF::from(CoMomentsTestFunc {
            name,
            outputs,
            compute,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    };
    vec![
        udf("ratio_test", TEST_FIELDS, ratio),
        udf("cuped_test", CUPED_FIELDS, cuped),
    ]
}

/// Whether `t` is a struct with every field `metric_comoments` returns, as DOUBLE.
fn is_comoments(t: &DataType) -> bool {
    match t {
        DataType::Struct(fields) => COMOMENT_FIELDS.iter().all(|name| {
            fields
                .iter()
                .any(|f| f.name() == name && *f.data_type() == DataType::Float64)
        }),
        _ => false,
    }
}

impl ScalarUDFImpl for CoMomentsTestFunc {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let ok = matches!(arg_types.len(), 2 | 3)
            && arg_types[..2].iter().all(is_comoments)
            && arg_types
                .get(2)
                .is_none_or(|t| t.is_numeric() || t.is_null());
        if !ok {
            return plan_err!(
                "{}(a, b [, alpha]) takes two results of metric_comoments(x, y) and an optional alpha",
                self.name
            );
        }
        let mut types = arg_types[..2].to_vec();
        if arg_types.len() == 3 {
            types.push(DataType::Float64);
        }
        Ok(types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(fields_of(self.outputs)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let field = |arm: usize, name: &str| -> &Float64Array {
            arrays[arm]
                .as_any()
                .downcast_ref::<StructArray>()
                .and_then(|s| s.column_by_name(name))
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .expect("arguments are checked to be metric_comoments results")
        };
        let arm = |arm: usize, row: usize| -> Option<CoMoments> {
            if arrays[arm].is_null(row) {
                return None;
            }
            let v = |name| {
                let column = field(arm, name);
                // NULL sums of squares only occur in empty groups, where n = 0.
                if column.is_null(row) {
                    0.0
                } else {
                    column.value(row)
                }
            };
            let n = v("n");
            Some(CoMoments {
                x: Moments {
                    n,
                    mean: v("x_mean"),
                    m2: v("x_m2"),
                },
                y: Moments {
                    n,
                    mean: v("y_mean"),
                    m2: v("y_m2"),
                },
                cxy: v("cxy"),
            })
        };
        let alpha = arrays.get(2).map(|a| {
            a.as_any()
                .downcast_ref::<Float64Array>()
                .expect("alpha is coerced to DOUBLE")
        });
        let outcomes = (0..rows).map(|row| {
            let alpha = match alpha {
                Some(a) if a.is_null(row) => return None,
                Some(a) => a.value(row),
                None => 0.05,
            };
            Some((self.compute)(&arm(0, row)?, &arm(1, row)?, alpha))
        });
        let result = outcome_columns(self.outputs.len(), rows, outcomes);
        Ok(ColumnarValue::Array(
            result.into_struct(fields_of(self.outputs))?,
        ))
    }
}
