//! The audience and bitmap functions: SQL over the tag store
//! (`cohortdb_engine::tags`). Each function is in its own file under
//! `audience/`; what they share is here: reading the tag store as of the
//! statement, the day `DURING LAST n DAYS` counts from, constant arguments,
//! and bitmap values (BYTEA holding a portable roaring bitmap of user
//! ordinals, the format Java, Go, C and Python roaring libraries read).

mod audience_count;
mod audience_table;
mod in_audience;
mod tag_bitmap;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use cohortdb_engine::Catalog;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};
use datafusion::prelude::SessionContext;
use roaring::RoaringBitmap;

/// Registers the audience functions on a session; returns their names.
pub(crate) fn register(ctx: &SessionContext, catalog: &Arc<Catalog>) -> Vec<String> {
    let scalars = [
        ScalarUDF::from(audience_count::AudienceCountFunc::new(catalog)),
        ScalarUDF::from(in_audience::InAudienceFunc::new(catalog)),
        ScalarUDF::from(tag_bitmap::TagBitmapFunc::new(catalog)),
    ];
    let mut names: Vec<String> = scalars.iter().map(|f| f.name().to_string()).collect();
    for udf in scalars {
        ctx.register_udf(udf);
    }
    ctx.register_udtf(
        "audience",
        Arc::new(audience_table::AudienceFunc::new(catalog)),
    );
    names.push("audience".to_string());
    names
}

/// Today, in days since 1970-01-01 UTC: where `DURING LAST n DAYS` ends.
pub(crate) fn today() -> i32 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (seconds / 86_400) as i32
}

/// The text of argument `index` of `function` for row `row`: `None` for
/// NULL.
pub(crate) fn text_at(
    value: &ColumnarValue,
    row: usize,
    function: &str,
    what: &str,
) -> Result<Option<String>> {
    match value {
        ColumnarValue::Scalar(scalar) => match scalar {
            ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                Ok(v.clone())
            }
            ScalarValue::Null => Ok(None),
            other => exec_err!("{function}: {what} must be text, got {}", other.data_type()),
        },
        ColumnarValue::Array(array) => {
            if array.is_null(row) {
                return Ok(None);
            }
            Ok(Some(match array.data_type() {
                DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
                DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
                DataType::Utf8View => array.as_string_view().value(row).to_string(),
                other => return exec_err!("{function}: {what} must be text, got {other}"),
            }))
        }
    }
}

/// The portable roaring bytes of `bitmap`: a BYTEA bitmap value.
pub(crate) fn bitmap_bytes(bitmap: &RoaringBitmap) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    bitmap
        .serialize_into(&mut bytes)
        .expect("writing to a Vec does not fail");
    bytes
}

/// The bitmap a BYTEA value holds.
pub(crate) fn bitmap_from_bytes(bytes: &[u8], function: &str) -> Result<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes).or_else(|e| {
        exec_err!("{function}: the value is not a portable roaring bitmap ({e})")
    })
}
