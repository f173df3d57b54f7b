//! `bitmap_contains(bitmap, user_id)`: whether a bitmap value holds a user,
//! given by external id (BIGINT or TEXT, as the user key), mapped to its
//! ordinal through the user-key dictionary. An id no user has is in no
//! bitmap: false.
//!
//! ```sql
//! SELECT user_id, bitmap_contains(tag_bitmap('vip'), user_id) FROM orders;
//! ```

use std::sync::Arc;

use arrow::array::BooleanBuilder;
use arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{BitmapArg, coerce_bitmaps, coerce_user_id, ordinals_of, result_rows, result_value};
use crate::privacy::UserAccess;

const NAME: &str = "bitmap_contains";

pub(crate) struct BitmapContainsFunc {
    access: Arc<UserAccess>,
    signature: Signature,
    aliases: Vec<String>,
}

/// Without the catalog, which plans and errors would otherwise print whole.
impl std::fmt::Debug for BitmapContainsFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitmapContainsFunc").finish_non_exhaustive()
    }
}

impl BitmapContainsFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        BitmapContainsFunc {
            access: Arc::clone(access),
            // Stable, as the other audience functions: ids map to ordinals
            // through the dictionary as of the statement.
            signature: Signature::user_defined(Volatility::Stable),
            aliases: vec!["bitmapcontains".to_string()],
        }
    }
}

impl PartialEq for BitmapContainsFunc {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for BitmapContainsFunc {}
impl std::hash::Hash for BitmapContainsFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for BitmapContainsFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [bitmap, id] = arg_types else {
            return plan_err!("{NAME}(bitmap, user_id) takes two arguments");
        };
        let mut types = coerce_bitmaps(NAME, std::slice::from_ref(bitmap))?;
        types.push(coerce_user_id(NAME, id)?);
        Ok(types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tags = self.access.tags();
        let bitmaps = BitmapArg::new(&args.args[0], NAME)?;
        let rows = result_rows(&args.args, args.number_rows);
        let ids = args.args[1].to_array(rows)?;
        let ordinals = ordinals_of(&tags, ids.as_ref())?;
        let mut out = BooleanBuilder::with_capacity(rows);
        for (row, ordinal) in ordinals.into_iter().enumerate() {
            if ids.is_null(row) {
                out.append_null();
                continue;
            }
            match bitmaps.at(row, NAME)? {
                None => out.append_null(),
                Some(bitmap) => out.append_value(ordinal.is_some_and(|o| bitmap.contains(o))),
            }
        }
        result_value(&args.args, Arc::new(out.finish()))
    }
}
