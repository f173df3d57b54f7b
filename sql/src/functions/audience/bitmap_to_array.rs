//! `bitmap_to_array(bitmap)`: the external user ids of a bitmap value as an
//! array (`BIGINT[]` or `TEXT[]`, as the user key), in ordinal order.
//! Ordinals no user has (in a bitmap made elsewhere) are left out, and so
//! are users of the suppression tag (docs/privacy.md).
//!
//! ```sql
//! SELECT bitmap_to_array(bitmap_and(tag_bitmap('vip'), tag_bitmap('city=beijing')));
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, new_empty_array};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{BitmapArg, result_rows, result_value};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

const NAME: &str = "bitmap_to_array";

pub(crate) struct BitmapToArrayFunc {
    access: Arc<UserAccess>,
    signature: Signature,
    aliases: Vec<String>,
}

/// Without the catalog, which plans and errors would otherwise print whole.
impl std::fmt::Debug for BitmapToArrayFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitmapToArrayFunc").finish_non_exhaustive()
    }
}

impl BitmapToArrayFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        BitmapToArrayFunc {
            access: Arc::clone(access),
            // Stable, as the other audience functions: ordinals map to ids
            // through the dictionary as of the statement.
            signature: Signature::exact(vec![DataType::Binary], Volatility::Stable),
            aliases: vec!["bitmaptoarray".to_string()],
        }
    }
}

impl PartialEq for BitmapToArrayFunc {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for BitmapToArrayFunc {}
impl std::hash::Hash for BitmapToArrayFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for BitmapToArrayFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// An array of the user key's type: known once a table has a user key.
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        let tags = self.access.tags();
        let key = tags.dictionary().map_err(to_datafusion)?.key_type();
        Ok(DataType::new_list(key.data_type(), true))
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::List(item) = args.return_type() else {
            return exec_err!("{NAME}: planned to return {}", args.return_type());
        };
        let item = Arc::clone(item);
        let tags = self.access.tags();
        let suppressed = tags
            .suppressed(&self.access.naming_users("bitmap_to_array")?)
            .map_err(to_datafusion)?;
        let bitmaps = BitmapArg::new(&args.args[0], NAME)?;
        let rows = result_rows(&args.args, args.number_rows);
        let mut lengths = Vec::with_capacity(rows);
        let mut valid = Vec::with_capacity(rows);
        let mut parts: Vec<ArrayRef> = Vec::new();
        for row in 0..rows {
            match bitmaps.at(row, NAME)? {
                None => {
                    lengths.push(0);
                    valid.push(false);
                }
                Some(bitmap) => {
                    let ids = match &suppressed {
                        Some(suppressed) => tags.user_ids(&(bitmap.as_ref() - suppressed)),
                        None => tags.user_ids(bitmap.as_ref()),
                    }
                    .map_err(to_datafusion)?;
                    lengths.push(ids.len());
                    valid.push(true);
                    parts.push(ids);
                }
            }
        }
        let values = concat_ids(&parts, &item)?;
        let list = ListArray::try_new(
            item,
            OffsetBuffer::from_lengths(lengths),
            values,
            Some(NullBuffer::from(valid)),
        )?;
        result_value(&args.args, Arc::new(list))
    }
}

/// The ids of every row, one after the other, of the type planned.
fn concat_ids(parts: &[ArrayRef], item: &Field) -> Result<ArrayRef> {
    if let Some(part) = parts.iter().find(|p| p.data_type() != item.data_type()) {
        return exec_err!(
            "{NAME}: user ids are {} where {} was planned (the user key changed)",
            part.data_type(),
            item.data_type()
        );
    }
    match parts {
        [] => Ok(new_empty_array(item.data_type())),
        [one] => Ok(Arc::clone(one)),
        _ => {
            let parts: Vec<&dyn arrow::array::Array> = parts.iter().map(|p| p.as_ref()).collect();
            Ok(arrow::compute::concat(&parts)?)
        }
    }
}
