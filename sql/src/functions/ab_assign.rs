//! `ab_assign(user_id, experiment, weights [, coverage [, hash_version]])`,
//! `ab_in_namespace(user_id, namespace, start, end)`, `gb_hash(seed, value,
//! hash_version)` and `fnv1a32(text)`: GrowthBook-compatible
//! assignment (see `cohortdb_engine::stats::assignment`).

use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int32Array, Int64Array, ListArray};
use arrow::datatypes::DataType;
use cohortdb_engine::stats::assignment;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{double_list, f64_list, is_numeric_list, strings, text_like};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct AbAssignFunc {
    signature: Signature,
}

impl AbAssignFunc {
    pub fn new() -> Self {
        AbAssignFunc {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AbAssignFunc {
    fn name(&self) -> &str {
        "ab_assign"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(3..=5).contains(&arg_types.len()) {
            return plan_err!(
                "ab_assign(user_id, experiment, weights [, coverage [, hash_version]]) takes 3 to 5 arguments, got {}",
                arg_types.len()
            );
        }
        if !text_like(&arg_types[0]) || !text_like(&arg_types[1]) {
            return plan_err!("ab_assign: user_id and experiment must be text or integers");
        }
        if !is_numeric_list(&arg_types[2]) {
            return plan_err!(
                "ab_assign: weights must be an array of numbers, e.g. ARRAY[0.5, 0.5]"
            );
        }
        let mut types = vec![DataType::Utf8, DataType::Utf8, double_list()];
        if arg_types.len() > 3 {
            types.push(DataType::Float64);
        }
        if arg_types.len() > 4 {
            types.push(DataType::Int64);
        }
        Ok(types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (users, seeds) = (strings(&arrays[0]), strings(&arrays[1]));
        let weights = arrays[2]
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("coerced to DOUBLE[]");
        let coverage = arrays
            .get(3)
            .map(|a| a.as_any().downcast_ref::<Float64Array>().expect("DOUBLE"));
        let version = arrays
            .get(4)
            .map(|a| a.as_any().downcast_ref::<Int64Array>().expect("BIGINT"));
        let out: Int32Array = (0..args.number_rows)
            .map(|row| {
                if users.is_null(row) || seeds.is_null(row) {
                    return None;
                }
                let weights = f64_list(weights, row)?;
                let coverage = match coverage {
                    Some(c) if c.is_null(row) => return None,
                    Some(c) => c.value(row),
                    None => 1.0,
                };
                let version = match version {
                    Some(v) if v.is_null(row) => return None,
                    Some(v) => u32::try_from(v.value(row)).ok()?,
                    None => 1,
                };
                assignment::assign(
                    users.value(row),
                    seeds.value(row),
                    &weights,
                    coverage,
                    version,
                )
                .map(|i| i as i32)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct GbHashFunc {
    signature: Signature,
}

impl GbHashFunc {
    pub fn new() -> Self {
        GbHashFunc {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for GbHashFunc {
    fn name(&self) -> &str {
        "gb_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 3
            || !text_like(&arg_types[0])
            || !text_like(&arg_types[1])
            || !(arg_types[2].is_integer() || arg_types[2].is_null())
        {
            return plan_err!(
                "gb_hash(seed TEXT, value TEXT, hash_version INT) expects 3 arguments"
            );
        }
        Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (seeds, values) = (strings(&arrays[0]), strings(&arrays[1]));
        let versions = arrays[2]
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("BIGINT");
        let out: Float64Array = (0..args.number_rows)
            .map(|row| {
                if seeds.is_null(row) || values.is_null(row) || versions.is_null(row) {
                    return None;
                }
                assignment::hash(
                    seeds.value(row),
                    values.value(row),
                    u32::try_from(versions.value(row)).ok()?,
                )
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Fnv1a32Func {
    signature: Signature,
}

impl Fnv1a32Func {
    pub fn new() -> Self {
        Fnv1a32Func {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Fnv1a32Func {
    fn name(&self) -> &str {
        "fnv1a32"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 1 || !text_like(&arg_types[0]) {
            return plan_err!("fnv1a32(text) expects one text argument");
        }
        Ok(vec![DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = strings(&arrays[0]);
        let out: Int64Array = text
            .iter()
            .map(|v| v.map(|s| i64::from(assignment::fnv1a32(s))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `ab_in_namespace(user_id, namespace, start, end)`: whether the user falls in
/// the [start, end) slice of a GrowthBook namespace (mutually exclusive
/// experiments share a namespace and take disjoint slices).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct AbInNamespaceFunc {
    signature: Signature,
}

impl AbInNamespaceFunc {
    pub fn new() -> Self {
        AbInNamespaceFunc {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AbInNamespaceFunc {
    fn name(&self) -> &str {
        "ab_in_namespace"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let numeric = |t: &DataType| t.is_numeric() || t.is_null();
        if arg_types.len() != 4
            || !text_like(&arg_types[0])
            || !text_like(&arg_types[1])
            || !numeric(&arg_types[2])
            || !numeric(&arg_types[3])
        {
            return plan_err!(
                "ab_in_namespace(user_id, namespace TEXT, start DOUBLE, end DOUBLE) expects 4 arguments"
            );
        }
        Ok(vec![
            DataType::Utf8,
            DataType::Utf8,
            DataType::Float64,
            DataType::Float64,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (users, namespaces) = (strings(&arrays[0]), strings(&arrays[1]));
        let starts = arrays[2]
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("DOUBLE");
        let ends = arrays[3]
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("DOUBLE");
        let out: arrow::array::BooleanArray = (0..args.number_rows)
            .map(|row| {
                if users.is_null(row)
                    || namespaces.is_null(row)
                    || starts.is_null(row)
                    || ends.is_null(row)
                {
                    return None;
                }
                Some(assignment::in_namespace(
                    users.value(row),
                    namespaces.value(row),
                    starts.value(row),
                    ends.value(row),
                ))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
