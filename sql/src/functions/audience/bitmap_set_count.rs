//! `bitmap_and_count(b1, b2, ...)`, `bitmap_or_count(...)`,
//! `bitmap_xor_count(...)` and `bitmap_andnot_count(b1, b2, ...)`: how many
//! users `bitmap_and` and the others would return, counted without building
//! the last result (Doris's `bitmap_and_count` and the others; ClickHouse's
//! `bitmapAndCardinality` and the others take exactly two arguments, which
//! these accept too). Any NULL argument makes the result NULL.
//!
//! ```sql
//! SELECT bitmap_and_count(tag_bitmap('vip'), tag_bitmap('city=beijing'));
//! ```

use std::sync::Arc;

use arrow::array::Int64Builder;
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::bitmap_set_op::{SetOp, bitmaps_at, coerce_n_ary};
use super::{BitmapArg, result_rows, result_value};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BitmapSetCountFunc {
    op: SetOp,
    name: String,
    signature: Signature,
    aliases: Vec<String>,
}

impl BitmapSetCountFunc {
    pub fn new(op: SetOp) -> Self {
        let aliases: &[&str] = match op {
            SetOp::And => &["bitmapandcardinality"],
            SetOp::Or => &["bitmaporcardinality"],
            SetOp::Xor => &["bitmapxorcardinality"],
            SetOp::AndNot => &["bitmapandnotcardinality", "bitmap_and_not_count"],
        };
        BitmapSetCountFunc {
            op,
            name: format!("bitmap_{}_count", op.word()),
            signature: Signature::user_defined(Volatility::Immutable),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// How many users `bitmaps[0] op bitmaps[1] op ...` has: all but the last
/// combined, then counted against the last.
fn count(op: SetOp, bitmaps: &[&RoaringBitmap]) -> u64 {
    match bitmaps {
        [] => 0,
        [only] => only.len(),
        [first, second] => op.len(first, second),
        [first, middle @ .., last] => op.len(&op.fold(first, middle.iter().copied()), last),
    }
}

impl ScalarUDFImpl for BitmapSetCountFunc {
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
        Ok(DataType::Int64)
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
        let mut out = Int64Builder::with_capacity(rows);
        for row in 0..rows {
            let bitmaps = bitmaps_at(&inputs, row, &self.name)?;
            out.append_option(bitmaps.map(|bitmaps| {
                let bitmaps: Vec<&RoaringBitmap> = bitmaps.iter().map(|b| &**b).collect();
                count(self.op, &bitmaps) as i64
            }));
        }
        result_value(&args.args, Arc::new(out.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_equal_the_sizes_of_the_combined_sets() {
        let a: RoaringBitmap = (0..50_000).step_by(2).collect();
        let b: RoaringBitmap = (0..50_000).step_by(3).collect();
        let c: RoaringBitmap = (25_000..90_000).collect();
        for op in SetOp::ALL {
            assert_eq!(count(op, &[&a, &b]), op.fold(&a, [&b]).len(), "{op:?}");
            assert_eq!(
                count(op, &[&a, &b, &c]),
                op.fold(&a, [&b, &c]).len(),
                "{op:?}"
            );
        }
        assert_eq!(count(SetOp::And, &[&a, &b, &c]), 4_167);
        assert_eq!(count(SetOp::AndNot, &[&a, &b, &c]), 8_333);
    }
}
