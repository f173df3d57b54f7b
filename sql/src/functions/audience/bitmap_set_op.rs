//! `bitmap_and(b1, b2, ...)`, `bitmap_or(...)`, `bitmap_xor(...)` and
//! `bitmap_andnot(b1, b2, ...)` (b1 minus all the others): bitmap values
//! combined, left to right, into a new bitmap value. Any NULL argument makes
//! the result NULL. They take two or more arguments (ClickHouse's
//! `bitmapAnd` and the others take exactly two, which these accept too).
//!
//! ```sql
//! SELECT bitmap_count(bitmap_andnot(tag_bitmap('vip'), tag_bitmap('opted_out')));
//! ```

use std::sync::Arc;

use arrow::array::BinaryBuilder;
use arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::{BitmapArg, bitmap_bytes, coerce_bitmaps, result_rows, result_value};

/// A set operation on bitmaps, applied left to right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SetOp {
    And,
    Or,
    Xor,
    /// The first minus the second.
    AndNot,
}

impl SetOp {
    pub(crate) const ALL: [SetOp; 4] = [SetOp::And, SetOp::Or, SetOp::Xor, SetOp::AndNot];

    /// The operation's word in function names: `bitmap_{word}`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            SetOp::And => "and",
            SetOp::Or => "or",
            SetOp::Xor => "xor",
            SetOp::AndNot => "andnot",
        }
    }

    /// `acc = acc op next`.
    pub(crate) fn apply(self, acc: &mut RoaringBitmap, next: &RoaringBitmap) {
        match self {
            SetOp::And => *acc &= next,
            SetOp::Or => *acc |= next,
            SetOp::Xor => *acc ^= next,
            SetOp::AndNot => *acc -= next,
        }
    }

    /// `first op rest[0] op rest[1] ...`, left to right.
    pub(crate) fn fold<'a>(
        self,
        first: &RoaringBitmap,
        rest: impl IntoIterator<Item = &'a RoaringBitmap>,
    ) -> RoaringBitmap {
        let mut acc = first.clone();
        for next in rest {
            // An empty intersection or difference stays empty.
            if acc.is_empty() && matches!(self, SetOp::And | SetOp::AndNot) {
                break;
            }
            self.apply(&mut acc, next);
        }
        acc
    }

    /// How many users `a op b` has, counted without building it.
    pub(crate) fn len(self, a: &RoaringBitmap, b: &RoaringBitmap) -> u64 {
        match self {
            SetOp::And => a.intersection_len(b),
            SetOp::Or => a.union_len(b),
            SetOp::Xor => a.symmetric_difference_len(b),
            SetOp::AndNot => a.difference_len(b),
        }
    }
}

/// The bitmaps of row `row` of `args`, or `None` if one is NULL.
pub(crate) fn bitmaps_at<'a>(
    args: &'a [BitmapArg<'_>],
    row: usize,
    function: &str,
) -> Result<Option<Vec<std::borrow::Cow<'a, RoaringBitmap>>>> {
    let mut bitmaps = Vec::with_capacity(args.len());
    for arg in args {
        match arg.at(row, function)? {
            Some(bitmap) => bitmaps.push(bitmap),
            None => return Ok(None),
        }
    }
    Ok(Some(bitmaps))
}

/// The coerced types of an n-ary bitmap function's arguments, at least two.
pub(crate) fn coerce_n_ary(function: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    if arg_types.len() < 2 {
        return plan_err!(
            "{function} takes at least two bitmaps, got {}",
            arg_types.len()
        );
    }
    coerce_bitmaps(function, arg_types)
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BitmapSetOpFunc {
    op: SetOp,
    name: String,
    signature: Signature,
    aliases: Vec<String>,
}

impl BitmapSetOpFunc {
    pub fn new(op: SetOp) -> Self {
        // ClickHouse's names, and Doris's for AND NOT (SQL folds them to
        // lower case).
        let aliases: &[&str] = match op {
            SetOp::And => &["bitmapand"],
            SetOp::Or => &["bitmapor"],
            SetOp::Xor => &["bitmapxor"],
            SetOp::AndNot => &["bitmapandnot", "bitmap_and_not"],
        };
        BitmapSetOpFunc {
            op,
            name: format!("bitmap_{}", op.word()),
            signature: Signature::user_defined(Volatility::Immutable),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }
}

impl ScalarUDFImpl for BitmapSetOpFunc {
    fn name(&self) -> &str {
        &self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_n_ary(&self.name, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let inputs = args
            .args
            .iter()
            .map(|a| BitmapArg::new(a, &self.name))
            .collect::<Result<Vec<_>>>()?;
        let rows = result_rows(&args.args, args.number_rows);
        let mut out = BinaryBuilder::new();
        for row in 0..rows {
            match bitmaps_at(&inputs, row, &self.name)? {
                None => out.append_null(),
                Some(bitmaps) => {
                    let result = self.op.fold(&bitmaps[0], bitmaps[1..].iter().map(|b| &**b));
                    out.append_value(bitmap_bytes(&result));
                }
            }
        }
        result_value(&args.args, Arc::new(out.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(values: &[u32]) -> RoaringBitmap {
        values.iter().copied().collect()
    }

    #[test]
    fn n_ary_operations_fold_left_to_right() {
        let a = bitmap(&[1, 2, 3, 4, 100_000]);
        let b = bitmap(&[2, 3, 5, 100_000]);
        let c = bitmap(&[3, 6, 100_000]);
        let fold = |op: SetOp| op.fold(&a, [&b, &c]);
        assert_eq!(fold(SetOp::And), bitmap(&[3, 100_000]));
        assert_eq!(fold(SetOp::Or), bitmap(&[1, 2, 3, 4, 5, 6, 100_000]));
        // ((a ^ b) ^ c): in an odd number of the three.
        assert_eq!(fold(SetOp::Xor), bitmap(&[1, 3, 4, 5, 6, 100_000]));
        // a minus b minus c.
        assert_eq!(fold(SetOp::AndNot), bitmap(&[1, 4]));
    }

    #[test]
    fn an_empty_intersection_stops_early_with_the_same_result() {
        let a = bitmap(&[1]);
        let b = bitmap(&[2]);
        let c = bitmap(&[1, 2]);
        assert!(SetOp::And.fold(&a, [&b, &c]).is_empty());
        assert!(SetOp::AndNot.fold(&a, [&c, &b]).is_empty());
    }

    #[test]
    fn counts_match_the_built_sets() {
        let a: RoaringBitmap = (0..200_000).step_by(3).collect();
        let b: RoaringBitmap = (100_000..300_000).step_by(2).collect();
        for op in SetOp::ALL {
            assert_eq!(op.len(&a, &b), op.fold(&a, [&b]).len(), "{op:?}");
        }
    }

    #[test]
    fn fewer_than_two_arguments_is_a_plan_error_naming_the_function() {
        let error = coerce_n_ary("bitmap_and", &[DataType::Binary])
            .expect_err("one argument")
            .to_string();
        assert!(
            error.contains("bitmap_and takes at least two bitmaps, got 1"),
            "{error}"
        );
        let error = coerce_n_ary("bitmap_or", &[DataType::Binary, DataType::Int64])
            .expect_err("an integer")
            .to_string();
        assert!(
            error.contains("bitmap_or: a bitmap must be BYTEA, got Int64"),
            "{error}"
        );
        assert_eq!(
            coerce_n_ary("bitmap_or", &[DataType::Binary, DataType::Null]).expect("coerced"),
            vec![DataType::Binary, DataType::Binary]
        );
    }
}
