//! `bitmap_union(bitmap)` and `bitmap_union_count(bitmap)`: aggregates
//! uniting the bitmap values of a group, as a bitmap value or as how many
//! users it has (Doris's functions; ClickHouse's `groupBitmapOr` is
//! `bitmap_union_count`). NULL values are skipped; `bitmap_union` of a group
//! with none but NULLs is NULL, `bitmap_union_count` of it 0.
//!
//! ```sql
//! SELECT day, bitmap_union_count(users) FROM daily_active GROUP BY day;
//! ```
//!
//! Partial aggregates carry their bitmap as BYTEA (NULL for no value yet),
//! which the final aggregate unites again.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use roaring::RoaringBitmap;

use super::bitmap_set_op::SetOp;
use super::{bitmap_bytes, bitmap_from_bytes};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BitmapUnionUdaf {
    /// `bitmap_union_count` rather than `bitmap_union`.
    count: bool,
    signature: Signature,
    aliases: Vec<String>,
}

impl BitmapUnionUdaf {
    pub fn union() -> Self {
        Self::new(false)
    }

    pub fn union_count() -> Self {
        Self::new(true)
    }

    fn new(count: bool) -> Self {
        let aliases = if count {
            vec!["groupbitmapor".to_string()]
        } else {
            Vec::new()
        };
        BitmapUnionUdaf {
            count,
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
            aliases,
        }
    }

    /// The function's name, for the accumulator's messages.
    fn function(&self) -> &'static str {
        if self.count {
            "bitmap_union_count"
        } else {
            "bitmap_union"
        }
    }
}

impl AggregateUDFImpl for BitmapUnionUdaf {
    fn name(&self) -> &str {
        self.function()
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(if self.count {
            DataType::Int64
        } else {
            DataType::Binary
        })
    }

    fn is_nullable(&self) -> bool {
        !self.count
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        if self.count {
            Ok(ScalarValue::Int64(Some(0)))
        } else {
            ScalarValue::try_from(data_type)
        }
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(BitmapFoldAccumulator::new(
            SetOp::Or,
            self.count,
            self.function(),
        )))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![bitmap_state_field(args.name)])
    }
}

/// The state of the bitmap aggregates: one BYTEA bitmap, NULL before the
/// first value.
pub(crate) fn bitmap_state_field(name: &str) -> FieldRef {
    Arc::new(Field::new(
        format_state_name(name, "bitmap"),
        DataType::Binary,
        true,
    ))
}

/// Folds a group's bitmap values with a set operation. Values and partial
/// states are both bitmaps, so merging is folding again.
#[derive(Debug)]
pub(crate) struct BitmapFoldAccumulator {
    op: SetOp,
    /// Report how many users rather than the bitmap.
    count: bool,
    function: &'static str,
    /// `None` until the first value: the identity of AND is every ordinal.
    bitmap: Option<RoaringBitmap>,
}

impl BitmapFoldAccumulator {
    pub(crate) fn new(op: SetOp, count: bool, function: &'static str) -> Self {
        BitmapFoldAccumulator {
            op,
            count,
            function,
            bitmap: None,
        }
    }

    /// Folds in one bitmap.
    pub(crate) fn add(&mut self, bitmap: RoaringBitmap) {
        match &mut self.bitmap {
            None => self.bitmap = Some(bitmap),
            Some(acc) => self.op.apply(acc, &bitmap),
        }
    }

    /// Folds in every non-NULL bitmap value of `values`.
    fn add_values(&mut self, values: &ArrayRef) -> Result<()> {
        let DataType::Binary = values.data_type() else {
            return exec_err!(
                "{}: a bitmap must be BYTEA, got {}",
                self.function,
                values.data_type()
            );
        };
        for bytes in values.as_binary::<i32>().iter().flatten() {
            let bitmap = bitmap_from_bytes(bytes, self.function)?;
            self.add(bitmap);
        }
        Ok(())
    }
}

impl Accumulator for BitmapFoldAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add_values(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.add_values(&states[0])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(
            self.bitmap.as_ref().map(bitmap_bytes),
        )])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(if self.count {
            ScalarValue::Int64(Some(self.bitmap.as_ref().map_or(0, |b| b.len() as i64)))
        } else {
            ScalarValue::Binary(self.bitmap.as_ref().map(bitmap_bytes))
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.bitmap.as_ref().map_or(0, |b| b.serialized_size())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::BinaryArray;

    use super::*;

    fn values(bitmaps: &[Option<&[u32]>]) -> ArrayRef {
        let bytes: Vec<Option<Vec<u8>>> = bitmaps
            .iter()
            .map(|b| b.map(|values| bitmap_bytes(&values.iter().copied().collect())))
            .collect();
        Arc::new(BinaryArray::from_iter(bytes))
    }

    fn bitmap_of(value: ScalarValue) -> Option<Vec<u32>> {
        match value {
            ScalarValue::Binary(bytes) => bytes.map(|bytes| {
                bitmap_from_bytes(&bytes, "test")
                    .expect("a bitmap")
                    .iter()
                    .collect()
            }),
            other => panic!("not a bitmap: {other:?}"),
        }
    }

    /// Aggregates `groups` in separate partial accumulators, merged by a
    /// final one, as DataFusion's two-phase aggregation does.
    fn two_phase(op: SetOp, count: bool, partitions: &[ArrayRef]) -> ScalarValue {
        let mut last = BitmapFoldAccumulator::new(op, count, "test");
        for values in partitions {
            let mut partial = BitmapFoldAccumulator::new(op, count, "test");
            partial
                .update_batch(&[Arc::clone(values)])
                .expect("bitmaps");
            let state = partial.state().expect("state");
            let state = ScalarValue::iter_to_array(state).expect("one value");
            last.merge_batch(&[state]).expect("a state");
        }
        last.evaluate().expect("a result")
    }

    #[test]
    fn union_merges_partial_states() {
        let partitions = [
            values(&[Some(&[1, 2]), None, Some(&[70_000])]),
            values(&[None]),
            values(&[Some(&[2, 3])]),
        ];
        assert_eq!(
            bitmap_of(two_phase(SetOp::Or, false, &partitions)),
            Some(vec![1, 2, 3, 70_000])
        );
        assert_eq!(
            two_phase(SetOp::Or, true, &partitions),
            ScalarValue::Int64(Some(4))
        );
    }

    #[test]
    fn a_group_of_nulls_is_null_or_counts_zero() {
        let partitions = [values(&[None, None]), values(&[])];
        assert_eq!(bitmap_of(two_phase(SetOp::Or, false, &partitions)), None);
        assert_eq!(
            two_phase(SetOp::Or, true, &partitions),
            ScalarValue::Int64(Some(0))
        );
        assert_eq!(bitmap_of(two_phase(SetOp::And, false, &partitions)), None);
    }

    #[test]
    fn intersection_starts_from_the_first_value_of_any_partition() {
        let partitions = [
            values(&[None]),
            values(&[Some(&[1, 2, 3, 70_000]), Some(&[2, 3, 70_000])]),
            values(&[]),
            values(&[Some(&[3, 70_000, 80_000])]),
        ];
        assert_eq!(
            bitmap_of(two_phase(SetOp::And, false, &partitions)),
            Some(vec![3, 70_000])
        );
        // An empty bitmap is a value: the intersection is empty, not NULL.
        let partitions = [values(&[Some(&[1])]), values(&[Some(&[])])];
        assert_eq!(
            bitmap_of(two_phase(SetOp::And, false, &partitions)),
            Some(vec![])
        );
    }

    #[test]
    fn bytes_that_are_not_a_bitmap_are_an_error_naming_the_function() {
        let mut acc = BitmapFoldAccumulator::new(SetOp::Or, false, "bitmap_union");
        let values: ArrayRef = Arc::new(BinaryArray::from_iter_values([b"nope".as_slice()]));
        let message = acc
            .update_batch(&[values])
            .expect_err("not a bitmap")
            .to_string();
        assert!(
            message.contains("bitmap_union: the value is not a portable roaring bitmap"),
            "{message}"
        );
    }
}
