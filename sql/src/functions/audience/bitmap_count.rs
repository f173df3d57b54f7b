//! `bitmap_count(bitmap)`: how many users a bitmap value holds
//! (ClickHouse's `bitmapCardinality`).
//!
//! ```sql
//! SELECT bitmap_count(tag_bitmap('city=beijing'));
//! ```

use std::sync::Arc;

use arrow::array::Int64Builder;
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{BitmapArg, result_rows, result_value};

const NAME: &str = "bitmap_count";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BitmapCountFunc {
    signature: Signature,
    aliases: Vec<String>,
}

impl BitmapCountFunc {
    pub fn new() -> Self {
        BitmapCountFunc {
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
            aliases: vec!["bitmapcardinality".to_string()],
        }
    }
}

impl ScalarUDFImpl for BitmapCountFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bitmaps = BitmapArg::new(&args.args[0], NAME)?;
        let rows = result_rows(&args.args, args.number_rows);
        let mut out = Int64Builder::with_capacity(rows);
        for row in 0..rows {
            out.append_option(bitmaps.at(row, NAME)?.map(|b| b.len() as i64));
        }
        result_value(&args.args, Arc::new(out.finish()))
    }
}
