//! `bitmap_agg(user_id)`: an aggregate making a bitmap value of the users a
//! group's external ids (BIGINT or TEXT, as the user key) name. NULL ids are
//! skipped (a group of none but NULLs gives NULL); an id no user has is an
//! error naming it, since a bitmap can only hold users the dictionary knows.
//!
//! ```sql
//! SELECT country, bitmap_agg(user_id) FROM purchases GROUP BY country;
//! ```
//!
//! Partial aggregates carry their bitmap as BYTEA, united by the final one.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use cohortdb_engine::tags::Tags;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use roaring::RoaringBitmap;

use super::bitmap_set_op::SetOp;
use super::bitmap_union::{BitmapFoldAccumulator, bitmap_state_field};
use super::{coerce_user_id, ordinals_of};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

const NAME: &str = "bitmap_agg";

pub(crate) struct BitmapAggUdaf {
    access: Arc<UserAccess>,
    signature: Signature,
}

/// Without the catalog, which plans and errors would otherwise print whole.
impl std::fmt::Debug for BitmapAggUdaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitmapAggUdaf").finish_non_exhaustive()
    }
}

impl BitmapAggUdaf {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        BitmapAggUdaf {
            access: Arc::clone(access),
            // Stable, as the other audience functions: ids map to ordinals
            // through the dictionary as of the statement.
            signature: Signature::user_defined(Volatility::Stable),
        }
    }
}

impl PartialEq for BitmapAggUdaf {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for BitmapAggUdaf {}
impl std::hash::Hash for BitmapAggUdaf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl AggregateUDFImpl for BitmapAggUdaf {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [id] = arg_types else {
            return plan_err!("{NAME}(user_id) takes one argument");
        };
        Ok(vec![coerce_user_id(NAME, id)?])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(BitmapAggAccumulator::new(self.access.tags())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![bitmap_state_field(args.name)])
    }
}

/// Unites the ordinals of each batch's ids; partial states are bitmaps
/// merged as `bitmap_union` merges them.
#[derive(Debug)]
struct BitmapAggAccumulator {
    tags: Arc<Tags>,
    union: BitmapFoldAccumulator,
}

impl BitmapAggAccumulator {
    fn new(tags: Arc<Tags>) -> Self {
        BitmapAggAccumulator {
            tags,
            union: BitmapFoldAccumulator::new(SetOp::Or, false, NAME),
        }
    }
}

/// The ordinals of the non-NULL ids of `ids` (`None` if every id is NULL),
/// or an error naming the first id no user has.
fn ordinals(tags: &Tags, ids: &dyn Array) -> Result<Option<RoaringBitmap>> {
    if ids.logical_null_count() == ids.len() {
        return Ok(None);
    }
    let mut bitmap = RoaringBitmap::new();
    for (row, ordinal) in ordinals_of(tags, ids)?.into_iter().enumerate() {
        match ordinal {
            Some(ordinal) => {
                bitmap.insert(ordinal);
            }
            None if ids.is_null(row) => {}
            None => {
                return Err(to_datafusion(cohortdb_engine::Error::UserKey(format!(
                    "{NAME}: user id {} is not a known user",
                    id_text(ids, row)
                ))));
            }
        }
    }
    Ok(Some(bitmap))
}

/// Row `row` of a column of ids, as a message shows it.
fn id_text(ids: &dyn Array, row: usize) -> String {
    match ids.data_type() {
        DataType::Int64 => ids.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Utf8 => format!("'{}'", ids.as_string::<i32>().value(row)),
        _ => {
            ScalarValue::try_from_array(ids, row).map_or_else(|e| e.to_string(), |v| v.to_string())
        }
    }
}

impl Accumulator for BitmapAggAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(bitmap) = ordinals(&self.tags, values[0].as_ref())? {
            self.union.add(bitmap);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.union.merge_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.union.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.union.evaluate()
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) - std::mem::size_of_val(&self.union) + self.union.size()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use cohortdb_engine::users::{Dictionary, UserKeyType};

    use super::*;

    /// A tag store whose dictionary knows `ids`, in order.
    fn tags_of(key_type: UserKeyType, ids: &dyn Array) -> Tags {
        let dictionary = Dictionary::new(key_type);
        let assigned = dictionary.assign(ids).expect("ids");
        Tags {
            dictionary: Some(Arc::new(dictionary)),
            users: assigned.len() as u32,
            ..Tags::default()
        }
    }

    fn ordinals_vec(tags: &Tags, ids: &dyn Array) -> Result<Option<Vec<u32>>> {
        Ok(ordinals(tags, ids)?.map(|b| b.iter().collect()))
    }

    #[test]
    fn ids_become_their_ordinals() {
        let tags = tags_of(UserKeyType::BigInt, &Int64Array::from(vec![100, 7, 42]));
        let ids = Int64Array::from(vec![Some(42), None, Some(100), Some(42)]);
        assert_eq!(ordinals_vec(&tags, &ids).expect("known"), Some(vec![0, 2]));
        let nulls = Int64Array::from(vec![None, None]);
        assert_eq!(ordinals_vec(&tags, &nulls).expect("NULLs"), None);
    }

    #[test]
    fn an_unknown_id_is_an_error_naming_it() {
        let tags = tags_of(UserKeyType::BigInt, &Int64Array::from(vec![100, 7]));
        let message = ordinals_vec(&tags, &Int64Array::from(vec![7, 42]))
            .expect_err("42 is unknown")
            .to_string();
        assert!(
            message.contains("bitmap_agg: user id 42 is not a known user"),
            "{message}"
        );
        let tags = tags_of(UserKeyType::Text, &StringArray::from(vec!["ann"]));
        let message = ordinals_vec(&tags, &StringArray::from(vec!["bob"]))
            .expect_err("bob is unknown")
            .to_string();
        assert!(
            message.contains("bitmap_agg: user id 'bob' is not a known user"),
            "{message}"
        );
    }

    #[test]
    fn ids_assigned_after_the_statement_began_are_unknown() {
        let mut tags = tags_of(UserKeyType::Text, &StringArray::from(vec!["ann", "bob"]));
        tags.users = 1;
        assert!(ordinals_vec(&tags, &StringArray::from(vec!["bob"])).is_err());
    }

    #[test]
    fn partial_states_merge() {
        let tags = Arc::new(tags_of(
            UserKeyType::BigInt,
            &Int64Array::from(vec![10, 20, 30]),
        ));
        let mut last = BitmapAggAccumulator::new(Arc::clone(&tags));
        for ids in [vec![Some(30)], vec![None], vec![Some(10), Some(30)]] {
            let mut partial = BitmapAggAccumulator::new(Arc::clone(&tags));
            let ids: ArrayRef = Arc::new(Int64Array::from(ids));
            partial.update_batch(&[ids]).expect("known ids");
            let state =
                ScalarValue::iter_to_array(partial.state().expect("state")).expect("one value");
            last.merge_batch(&[state]).expect("a state");
        }
        let ScalarValue::Binary(Some(bytes)) = last.evaluate().expect("a result") else {
            panic!("not a bitmap");
        };
        let bitmap = super::super::bitmap_from_bytes(&bytes, "test").expect("a bitmap");
        assert_eq!(bitmap.iter().collect::<Vec<_>>(), vec![0, 2]);
    }
}
