//! `audience_count(expr)`: how many users an audience expression selects,
//! counted from tag bitmaps without building the set.
//!
//! ```sql
//! SELECT audience_count('gender=f AND city IN (beijing, shanghai) AND NOT opted_out');
//! ```

use std::sync::Arc;

use arrow::array::Int64Builder;
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::text_at;
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct AudienceCountFunc {
    access: Arc<UserAccess>,
    signature: Signature,
}

impl AudienceCountFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        AudienceCountFunc {
            access: Arc::clone(access),
            // Volatile, so that the optimizer does not fold it into a
            // constant while planning: a plan that counts when it runs can
            // be kept and run again (the plan cache), where planning cost
            // more than most counts.
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        }
    }
}

impl PartialEq for AudienceCountFunc {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for AudienceCountFunc {}
impl std::hash::Hash for AudienceCountFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for AudienceCountFunc {
    fn name(&self) -> &str {
        "audience_count"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tags = self.access.tags();
        let policy = self.access.policy();
        let mut out = Int64Builder::with_capacity(args.number_rows);
        let mut last: Option<(String, Option<i64>)> = None;
        for row in 0..args.number_rows {
            match text_at(&args.args[0], row, "audience_count", "the audience")? {
                None => out.append_null(),
                Some(text) => {
                    let count = match &last {
                        Some((seen, count)) if *seen == text => *count,
                        _ => {
                            // Below the role's minimum audience size: NULL.
                            let count = tags
                                .reportable_count(&text, &policy)
                                .map_err(to_datafusion)?
                                .map(|n| n as i64);
                            last = Some((text, count));
                            count
                        }
                    };
                    out.append_option(count);
                }
            }
        }
        let array = out.finish();
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&array, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(array)),
        })
    }
}
