//! `unnest_bitmap(bitmap)`: the users of a bitmap value as a table of
//! external user ids (one column, `user_id`), in ordinal order, like
//! `audience(expr)` for a bitmap. The argument is a constant expression
//! (evaluated once, when the statement is planned); NULL gives no rows.
//! Users of the suppression tag are not listed (docs/privacy.md).
//!
//! ```sql
//! SELECT u.* FROM unnest_bitmap(bitmap_from_base64('OjAAAAEAAAAAAAIAEAAAAAEAAgADAA=='))
//! JOIN users u USING (user_id);
//! ```

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use roaring::RoaringBitmap;

use super::{bitmap_from_bytes, user_ids_table};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

const NAME: &str = "unnest_bitmap";

pub(crate) struct UnnestBitmapFunc {
    access: Arc<UserAccess>,
}

/// Without the catalog, which plans and errors would otherwise print whole.
impl std::fmt::Debug for UnnestBitmapFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnnestBitmapFunc").finish_non_exhaustive()
    }
}

impl UnnestBitmapFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        UnnestBitmapFunc {
            access: Arc::clone(access),
        }
    }
}

impl TableFunctionImpl for UnnestBitmapFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [expr] = args.exprs() else {
            return plan_err!("{NAME}(bitmap) takes one argument");
        };
        let bitmap = match crate::functions::constant(args.session(), expr)? {
            ScalarValue::Binary(bytes)
            | ScalarValue::LargeBinary(bytes)
            | ScalarValue::BinaryView(bytes) => bytes,
            ScalarValue::Null => None,
            other => {
                return plan_err!(
                    "{NAME}: the bitmap must be a BYTEA constant, got {}",
                    other.data_type()
                );
            }
        };
        let bitmap = match bitmap {
            Some(bytes) => bitmap_from_bytes(&bytes, NAME)?,
            None => RoaringBitmap::new(),
        };
        let access = Arc::clone(&self.access);
        user_ids_table(&self.access, move || {
            // A bitmap made anywhere lists no suppressed user.
            let policy = access.naming_users(NAME)?;
            let tags = access.tags();
            let bitmap = tags
                .without_suppressed(bitmap.clone(), &policy)
                .map_err(to_datafusion)?;
            tags.user_ids(&bitmap).map_err(to_datafusion)
        })
    }
}
