//! `srm_test(counts, weights)`: sample ratio mismatch, a chi-square test of the
//! units per variation against the configured weights.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, ListArray, StringBuilder, StructArray};
use arrow::datatypes::{DataType, Field, Fields};
use cohortdb_engine::stats::checks;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{double_list, f64_list, is_numeric_list};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct SrmTestFunc {
    signature: Signature,
}

impl SrmTestFunc {
    pub fn new() -> Self {
        SrmTestFunc {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn fields() -> Fields {
        Fields::from(vec![
            Field::new("chi2", DataType::Float64, true),
            Field::new("df", DataType::Float64, true),
            Field::new("p_value", DataType::Float64, true),
            Field::new("error", DataType::Utf8, true),
        ])
    }
}

impl ScalarUDFImpl for SrmTestFunc {
    fn name(&self) -> &str {
        "srm_test"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 || !arg_types.iter().all(is_numeric_list) {
            return plan_err!("srm_test(counts, weights) expects two arrays of numbers");
        }
        Ok(vec![double_list(), double_list()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(Self::fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let lists: Vec<&ListArray> = arrays
            .iter()
            .map(|a| a.as_any().downcast_ref::<ListArray>().expect("DOUBLE[]"))
            .collect();
        let (mut chi2, mut df, mut p) = (
            Float64Builder::new(),
            Float64Builder::new(),
            Float64Builder::new(),
        );
        let mut errors = StringBuilder::new();
        let mut valid = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            match (f64_list(lists[0], row), f64_list(lists[1], row)) {
                (Some(counts), Some(weights)) => {
                    let r = checks::srm(&counts, &weights);
                    chi2.append_option(r.chi2.is_finite().then_some(r.chi2));
                    df.append_option(r.df.is_finite().then_some(r.df));
                    p.append_option(r.p_value.is_finite().then_some(r.p_value));
                    errors.append_option(r.error);
                    valid.push(true);
                }
                _ => {
                    chi2.append_null();
                    df.append_null();
                    p.append_null();
                    errors.append_null();
                    valid.push(false);
                }
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(chi2.finish()),
            Arc::new(df.finish()),
            Arc::new(p.finish()),
            Arc::new(errors.finish()),
        ];
        let array = StructArray::try_new(Self::fields(), columns, Some(valid.into()))?;
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}
