//! `bitmap_intersect(bitmap)`: an aggregate intersecting the bitmap values of
//! a group (Doris's function): the users in every one of them. NULL values
//! are skipped; a group with none but NULLs gives NULL.
//!
//! ```sql
//! -- Users active on each of the last 7 days.
//! SELECT bitmap_count(bitmap_intersect(users)) FROM daily_active
//! WHERE day > current_date - 7;
//! ```

use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use super::bitmap_set_op::SetOp;
use super::bitmap_union::{BitmapFoldAccumulator, bitmap_state_field};

const NAME: &str = "bitmap_intersect";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BitmapIntersectUdaf {
    signature: Signature,
}

impl BitmapIntersectUdaf {
    pub fn new() -> Self {
        BitmapIntersectUdaf {
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for BitmapIntersectUdaf {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(BitmapFoldAccumulator::new(
            SetOp::And,
            false,
            NAME,
        )))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![bitmap_state_field(args.name)])
    }
}
