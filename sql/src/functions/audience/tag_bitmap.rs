//! `tag_bitmap(expr)`: the users of a tag, segment or any audience expression
//! as a bitmap value (BYTEA: a portable roaring bitmap of user ordinals), for
//! the `bitmap_*` functions, for saving with `CREATE TAG ... FROM BITMAP`, and
//! for export to other roaring libraries.
//!
//! ```sql
//! SELECT bitmap_count(tag_bitmap('vip'));
//! ```

use std::sync::Arc;

use arrow::array::BinaryBuilder;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{bitmap_bytes, text_at};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct TagBitmapFunc {
    access: Arc<UserAccess>,
    signature: Signature,
}

impl TagBitmapFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        TagBitmapFunc {
            access: Arc::clone(access),
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        }
    }
}

impl PartialEq for TagBitmapFunc {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for TagBitmapFunc {}
impl std::hash::Hash for TagBitmapFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for TagBitmapFunc {
    fn name(&self) -> &str {
        "tag_bitmap"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tags = self.access.tags();
        let policy = self.access.naming_users("tag_bitmap")?;
        let mut out = BinaryBuilder::new();
        for row in 0..args.number_rows {
            match text_at(&args.args[0], row, "tag_bitmap", "the tag")? {
                None => out.append_null(),
                Some(text) => {
                    let users = tags.evaluate(&text, &policy).map_err(to_datafusion)?;
                    out.append_value(bitmap_bytes(&users));
                }
            }
        }
        let array = out.finish();
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(array)),
        })
    }
}
