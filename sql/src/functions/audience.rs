//! The audience and bitmap functions: SQL over the tag store
//! (`cohortdb_engine::tags`). Each function is in its own file under
//! `audience/`; what they share is here: reading the tag store as of the
//! statement, the day `DURING LAST n DAYS` counts from, constant arguments,
//! and bitmap values (BYTEA holding a portable roaring bitmap of user
//! ordinals, the format Java, Go, C and Python roaring libraries read).

mod audience_count;
mod audience_overlap;
mod audience_profile;
mod audience_sample;
mod audience_table;
mod bitmap_agg;
mod bitmap_contains;
mod bitmap_count;
mod bitmap_from_base64;
mod bitmap_intersect;
mod bitmap_set_count;
mod bitmap_set_op;
mod bitmap_to_array;
mod bitmap_to_base64;
mod bitmap_union;
mod in_audience;
mod tag_bitmap;
mod unnest_bitmap;

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};
use datafusion::prelude::SessionContext;
use roaring::RoaringBitmap;

use crate::privacy::UserAccess;

/// Registers the audience functions on a session; returns their names.
pub(crate) fn register(ctx: &SessionContext, access: &Arc<UserAccess>) -> Vec<String> {
    let mut scalars = vec![
        ScalarUDF::from(audience_count::AudienceCountFunc::new(access)),
        ScalarUDF::from(in_audience::InAudienceFunc::new(access)),
        ScalarUDF::from(tag_bitmap::TagBitmapFunc::new(access)),
        ScalarUDF::from(bitmap_count::BitmapCountFunc::new()),
        ScalarUDF::from(bitmap_contains::BitmapContainsFunc::new(access)),
        ScalarUDF::from(bitmap_to_array::BitmapToArrayFunc::new(access)),
        ScalarUDF::from(bitmap_to_base64::BitmapToBase64Func::new()),
        ScalarUDF::from(bitmap_from_base64::BitmapFromBase64Func::new()),
    ];
    for op in bitmap_set_op::SetOp::ALL {
        scalars.push(ScalarUDF::from(bitmap_set_op::BitmapSetOpFunc::new(op)));
        scalars.push(ScalarUDF::from(bitmap_set_count::BitmapSetCountFunc::new(
            op,
        )));
    }
    let aggregates = [
        datafusion::logical_expr::AggregateUDF::from(bitmap_agg::BitmapAggUdaf::new(access)),
        datafusion::logical_expr::AggregateUDF::from(bitmap_union::BitmapUnionUdaf::union()),
        datafusion::logical_expr::AggregateUDF::from(bitmap_union::BitmapUnionUdaf::union_count()),
        datafusion::logical_expr::AggregateUDF::from(bitmap_intersect::BitmapIntersectUdaf::new()),
    ];
    let mut names: Vec<String> = Vec::new();
    for udf in scalars {
        names.push(udf.name().to_string());
        names.extend(udf.aliases().iter().cloned());
        ctx.register_udf(udf);
    }
    for udaf in aggregates {
        names.push(udaf.name().to_string());
        names.extend(udaf.aliases().iter().cloned());
        ctx.register_udaf(udaf);
    }
    ctx.register_udtf(
        "audience",
        Arc::new(audience_table::AudienceFunc::new(access)),
    );
    names.push("audience".to_string());
    ctx.register_udtf(
        "audience_profile",
        Arc::new(audience_profile::AudienceProfileFunc::new(access)),
    );
    ctx.register_udtf(
        "audience_overlap",
        Arc::new(audience_overlap::AudienceOverlapFunc::new(access)),
    );
    ctx.register_udtf(
        "audience_sample",
        Arc::new(audience_sample::AudienceSampleFunc::new(access)),
    );
    names.extend(["audience_profile", "audience_overlap", "audience_sample"].map(String::from));
    ctx.register_udtf(
        "unnest_bitmap",
        Arc::new(unnest_bitmap::UnnestBitmapFunc::new(access)),
    );
    names.push("unnest_bitmap".to_string());
    names
}

pub(crate) use super::{result_rows, result_value};
pub(crate) use cohortdb_engine::tags::today;

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
    RoaringBitmap::deserialize_from(bytes)
        .or_else(|e| exec_err!("{function}: the value is not a portable roaring bitmap ({e})"))
}

/// A bitmap argument of a scalar function: a constant is decoded once, a
/// column row by row.
pub(crate) enum BitmapArg<'a> {
    Constant(Option<RoaringBitmap>),
    Column(&'a arrow::array::BinaryArray),
}

impl<'a> BitmapArg<'a> {
    /// Argument `value` of `function`, coerced to BYTEA by its signature.
    pub(crate) fn new(value: &'a ColumnarValue, function: &str) -> Result<BitmapArg<'a>> {
        match value {
            ColumnarValue::Scalar(
                ScalarValue::Binary(bytes)
                | ScalarValue::LargeBinary(bytes)
                | ScalarValue::BinaryView(bytes),
            ) => Ok(BitmapArg::Constant(
                bytes
                    .as_deref()
                    .map(|bytes| bitmap_from_bytes(bytes, function))
                    .transpose()?,
            )),
            ColumnarValue::Scalar(ScalarValue::Null) => Ok(BitmapArg::Constant(None)),
            ColumnarValue::Array(array) if *array.data_type() == DataType::Binary => {
                Ok(BitmapArg::Column(array.as_binary::<i32>()))
            }
            other => exec_err!(
                "{function}: a bitmap must be BYTEA, got {}",
                other.data_type()
            ),
        }
    }

    /// The bitmap of row `row`: `None` for NULL.
    pub(crate) fn at(
        &self,
        row: usize,
        function: &str,
    ) -> Result<Option<std::borrow::Cow<'_, RoaringBitmap>>> {
        use std::borrow::Cow;
        match self {
            BitmapArg::Constant(bitmap) => Ok(bitmap.as_ref().map(Cow::Borrowed)),
            BitmapArg::Column(array) if array.is_null(row) => Ok(None),
            BitmapArg::Column(array) => Ok(Some(Cow::Owned(bitmap_from_bytes(
                array.value(row),
                function,
            )?))),
        }
    }
}

/// The types bitmap arguments are coerced to: BYTEA.
pub(crate) fn coerce_bitmaps(function: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    arg_types
        .iter()
        .map(|t| match t {
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null => {
                Ok(DataType::Binary)
            }
            other => {
                datafusion::common::plan_err!("{function}: a bitmap must be BYTEA, got {other}")
            }
        })
        .collect()
}

/// The type a user id argument is coerced to: BIGINT for integers, TEXT for
/// text (the two kinds of user key).
pub(crate) fn coerce_user_id(function: &str, id: &DataType) -> Result<DataType> {
    match id {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Ok(DataType::Int64),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => Ok(DataType::Int64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        other => datafusion::common::plan_err!(
            "{function}: user_id must be an integer or text, got {other}"
        ),
    }
}

/// The ordinal of each id of `ids` (`None` for NULL and unknown ids). A
/// column of NULLs needs no dictionary, so it has no user key type to match.
pub(crate) fn ordinals_of(
    tags: &cohortdb_engine::tags::Tags,
    ids: &dyn Array,
) -> Result<Vec<Option<u32>>> {
    if ids.logical_null_count() == ids.len() {
        return Ok(vec![None; ids.len()]);
    }
    tags.ordinals(ids).map_err(crate::error::to_datafusion)
}

/// A table of external user ids, one column `user_id` of the user key's
/// type, for the table functions that list users: `ids` lists them each time
/// the plan runs (deferred.rs [`Computed`]), so a plan over it is kept like
/// any other. Without a user key there is nothing to list: an error.
///
/// [`Computed`]: crate::functions::deferred::Computed
pub(crate) fn user_ids_table(
    access: &UserAccess,
    ids: impl Fn() -> Result<arrow::array::ArrayRef> + Send + Sync + 'static,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    use arrow::array::RecordBatch;
    use arrow::datatypes::{Field, Schema};
    let tags = access.tags();
    let dictionary = tags.dictionary().map_err(crate::error::to_datafusion)?;
    let schema = Arc::new(Schema::new(vec![Field::new(
        "user_id",
        dictionary.key_type().data_type(),
        false,
    )]));
    let rows_schema = Arc::clone(&schema);
    let rows = move || {
        Ok(RecordBatch::try_new(
            Arc::clone(&rows_schema),
            vec![ids()?],
        )?)
    };
    Ok(Arc::new(crate::functions::deferred::Computed::new(
        schema,
        Arc::new(rows),
    )))
}

/// The text of a constant text argument of a table function.
pub(crate) fn constant_text(
    session: &dyn datafusion::catalog::Session,
    expr: &datafusion::logical_expr::Expr,
    function: &str,
    what: &str,
) -> Result<String> {
    match crate::functions::constant(session, expr)?.try_as_str() {
        Some(Some(text)) => Ok(text.to_string()),
        _ => datafusion::common::plan_err!("{function}: {what} must be a text constant"),
    }
}
