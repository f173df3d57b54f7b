//! `metric_moments(x)`: an aggregate reducing a metric to numerically stable
//! moments (count, mean, M2 and the sample variance) with Welford updates and
//! Chan merges, so `GROUP BY variation` gives exactly what the `*_test_stats`
//! functions take, even for values far from zero. NULLs are skipped.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use cohortdb_engine::stats::moments::Moments;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MetricMomentsUdaf {
    signature: Signature,
}

impl MetricMomentsUdaf {
    pub fn new() -> Self {
        MetricMomentsUdaf {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn fields() -> Fields {
        Fields::from(vec![
            Field::new("n", DataType::Float64, false),
            Field::new("mean", DataType::Float64, true),
            Field::new("m2", DataType::Float64, true),
            Field::new("variance", DataType::Float64, true),
        ])
    }
}

impl AggregateUDFImpl for MetricMomentsUdaf {
    fn name(&self) -> &str {
        "metric_moments"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 1
            || !(arg_types[0].is_numeric()
                || arg_types[0].is_null()
                || arg_types[0] == DataType::Boolean)
        {
            return plan_err!("metric_moments(x) takes one numeric argument");
        }
        Ok(vec![DataType::Float64])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(Self::fields()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(MomentsAccumulator::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(["n", "mean", "m2"]
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

#[derive(Debug, Default)]
struct MomentsAccumulator {
    moments: Moments,
}

fn doubles(array: &ArrayRef) -> &Float64Array {
    array
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("coerced to DOUBLE")
}

impl Accumulator for MomentsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for v in doubles(&values[0]).iter().flatten() {
            self.moments.push(v);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (n, mean, m2) = (
            doubles(&states[0]),
            doubles(&states[1]),
            doubles(&states[2]),
        );
        for i in 0..n.len() {
            let other = Moments {
                n: n.value(i),
                mean: mean.value(i),
                m2: m2.value(i),
            };
            self.moments = self.moments.merge(&other);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let m = self.moments;
        Ok(vec![
            ScalarValue::from(m.n),
            ScalarValue::from(m.mean),
            ScalarValue::from(m.m2),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let m = self.moments;
        let finite = |v: f64| v.is_finite().then_some(v);
        let mean = (m.n > 0.0).then_some(m.mean);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![m.n])),
            Arc::new(Float64Array::from(vec![mean])),
            Arc::new(Float64Array::from(vec![mean.map(|_| m.m2)])),
            Arc::new(Float64Array::from(vec![finite(m.variance())])),
        ];
        let array = arrow::array::StructArray::try_new(MetricMomentsUdaf::fields(), columns, None)?;
        Ok(ScalarValue::Struct(Arc::new(array)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}
