//! `p_adjust(p_values, method)`: multiple-testing adjustment of an array of
//! p-values ('holm', 'bh' / 'fdr_bh', 'bonferroni'), order preserved.

use std::sync::Arc;

use arrow::array::{Array, Float64Builder, ListArray, ListBuilder, StringArray};
use arrow::datatypes::DataType;
use cohortdb_engine::stats::checks::{self, Adjustment};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{double_list, f64_list, is_numeric_list};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PAdjustFunc {
    signature: Signature,
}

impl PAdjustFunc {
    pub fn new() -> Self {
        PAdjustFunc {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PAdjustFunc {
    fn name(&self) -> &str {
        "p_adjust"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 || !is_numeric_list(&arg_types[0]) {
            return plan_err!(
                "p_adjust(p_values DOUBLE[], method TEXT) expects an array and a method name"
            );
        }
        Ok(vec![double_list(), DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(double_list())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let lists = arrays[0]
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("DOUBLE[]");
        let methods = arrays[1]
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("TEXT");
        let mut out = ListBuilder::new(Float64Builder::new());
        for row in 0..args.number_rows {
            let (Some(p), false) = (f64_list(lists, row), methods.is_null(row)) else {
                out.append_null();
                continue;
            };
            let Some(method) = Adjustment::parse(methods.value(row)) else {
                return exec_err!(
                    "p_adjust: unknown method {:?} (use holm, bh or bonferroni)",
                    methods.value(row)
                );
            };
            if p.iter().any(|v| !(0.0..=1.0).contains(v)) {
                return exec_err!("p_adjust: p-values must lie in [0, 1]");
            }
            for v in checks::adjust_p_values(&p, method) {
                out.values().append_value(v);
            }
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
