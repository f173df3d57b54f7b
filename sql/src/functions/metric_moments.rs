//! `metric_moments(x)` and `metric_comoments(x, y)`: aggregates reducing a metric
//! (or a pair: numerator and denominator of a ratio metric, or pre-period
//! covariate and metric for CUPED) to numerically stable moments with Welford
//! updates and Chan merges, so `GROUP BY variation` gives exactly what the test
//! functions take, even for values far from zero. Rows with a NULL input are
//! skipped.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use cohortdb_engine::stats::moments::{CoMoments, Moments};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

/// The fields of `metric_comoments`' result, which `ratio_test` and `cuped_test`
/// read back.
pub(crate) const COMOMENT_FIELDS: [&str; 9] = [
    "n",
    "x_mean",
    "x_m2",
    "x_variance",
    "y_mean",
    "y_m2",
    "y_variance",
    "cxy",
    "covariance",
];

const MOMENT_FIELDS: [&str; 4] = ["n", "mean", "m2", "variance"];

/// The result struct's fields: co-moments for `metric_comoments`, else moments.
fn result_fields(pair: bool) -> Fields {
    let names: &[&str] = if pair {
        &COMOMENT_FIELDS
    } else {
        &MOMENT_FIELDS
    };
    names
        .iter()
        .map(|n| Field::new(*n, DataType::Float64, *n != "n"))
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MetricMomentsUdaf {
    /// `metric_comoments` (two variables) rather than `metric_moments`.
    pair: bool,
    signature: Signature,
}

impl MetricMomentsUdaf {
    pub fn single() -> Self {
        Self::new(false)
    }

    pub fn pair() -> Self {
        Self::new(true)
    }

    fn new(pair: bool) -> Self {
        MetricMomentsUdaf {
            pair,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn arity(&self) -> usize {
        if self.pair { 2 } else { 1 }
    }

    fn fields(&self) -> Fields {
        result_fields(self.pair)
    }

    /// What partial aggregates carry between threads.
    fn state_names(&self) -> &'static [&'static str] {
        if self.pair {
            &["n", "x_mean", "x_m2", "y_mean", "y_m2", "cxy"]
        } else {
            &["n", "mean", "m2"]
        }
    }
}

impl AggregateUDFImpl for MetricMomentsUdaf {
    fn name(&self) -> &str {
        if self.pair {
            "metric_comoments"
        } else {
            "metric_moments"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let numeric = |t: &DataType| t.is_numeric() || t.is_null() || *t == DataType::Boolean;
        if arg_types.len() != self.arity() || !arg_types.iter().all(numeric) {
            return if self.pair {
                plan_err!("metric_comoments(x, y) takes two numeric arguments")
            } else {
                plan_err!("metric_moments(x) takes one numeric argument")
            };
        }
        Ok(vec![DataType::Float64; arg_types.len()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(MomentsAccumulator {
            pair: self.pair,
            moments: CoMoments::default(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(self
            .state_names()
            .iter()
            .map(|n| {
                Arc::new(Field::new(
                    format!("{}_{n}", args.name),
                    DataType::Float64,
                    false,
                ))
            })
            .collect())
    }
}

/// Both kinds keep co-moments; `metric_moments` pushes its value as x and 0 as y
/// and reports x only.
#[derive(Debug)]
struct MomentsAccumulator {
    pair: bool,
    moments: CoMoments,
}

fn doubles(array: &ArrayRef) -> &Float64Array {
    array
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("coerced to DOUBLE")
}

impl Accumulator for MomentsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let x = doubles(&values[0]);
        if self.pair {
            let y = doubles(&values[1]);
            for (x, y) in x.iter().zip(y.iter()) {
                if let (Some(x), Some(y)) = (x, y) {
                    self.moments.push(x, y);
                }
            }
        } else {
            for x in x.iter().flatten() {
                self.moments.push(x, 0.0);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let states: Vec<&Float64Array> = states.iter().map(doubles).collect();
        for i in 0..states[0].len() {
            let v = |k: usize| states[k].value(i);
            let x = Moments {
                n: v(0),
                mean: v(1),
                m2: v(2),
            };
            let other = if self.pair {
                CoMoments {
                    x,
                    y: Moments {
                        n: v(0),
                        mean: v(3),
                        m2: v(4),
                    },
                    cxy: v(5),
                }
            } else {
                CoMoments {
                    x,
                    y: Moments {
                        n: x.n,
                        ..Moments::default()
                    },
                    cxy: 0.0,
                }
            };
            self.moments = self.moments.merge(&other);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let CoMoments { x, y, cxy } = self.moments;
        let values = if self.pair {
            vec![x.n, x.mean, x.m2, y.mean, y.m2, cxy]
        } else {
            vec![x.n, x.mean, x.m2]
        };
        Ok(values.into_iter().map(ScalarValue::from).collect())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let CoMoments { x, y, cxy } = self.moments;
        // Means and sums of squares are NULL for an empty group, variances below
        // two rows.
        let some = |v: f64| (x.n > 0.0).then_some(v);
        let finite = |v: f64| v.is_finite().then_some(v);
        let values: Vec<Option<f64>> = if self.pair {
            vec![
                Some(x.n),
                some(x.mean),
                some(x.m2),
                finite(x.variance()),
                some(y.mean),
                some(y.m2),
                finite(y.variance()),
                some(cxy),
                finite(self.moments.covariance()),
            ]
        } else {
            vec![Some(x.n), some(x.mean), some(x.m2), finite(x.variance())]
        };
        let fields = result_fields(self.pair);
        let columns: Vec<ArrayRef> = values
            .into_iter()
            .map(|v| Arc::new(Float64Array::from(vec![v])) as ArrayRef)
            .collect();
        let array = StructArray::try_new(fields, columns, None)?;
        Ok(ScalarValue::Struct(Arc::new(array)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}
