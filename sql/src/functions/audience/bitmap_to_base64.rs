//! `bitmap_to_base64(bitmap)`: a bitmap value as base64 text (standard
//! alphabet, padded) of its portable roaring bytes, for moving a bitmap
//! through text-only channels; `bitmap_from_base64` reads it back.
//!
//! ```sql
//! SELECT bitmap_to_base64(tag_bitmap('vip'));
//! ```

use std::sync::Arc;

use arrow::array::{AsArray, StringBuilder};
use arrow::datatypes::DataType;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{bitmap_from_bytes, result_rows, result_value};

const NAME: &str = "bitmap_to_base64";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BitmapToBase64Func {
    signature: Signature,
}

impl BitmapToBase64Func {
    pub fn new() -> Self {
        BitmapToBase64Func {
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for BitmapToBase64Func {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = result_rows(&args.args, args.number_rows);
        let values = args.args[0].to_array(rows)?;
        let DataType::Binary = values.data_type() else {
            return exec_err!("{NAME}: a bitmap must be BYTEA, got {}", values.data_type());
        };
        let mut out = StringBuilder::new();
        for bytes in values.as_binary::<i32>() {
            match bytes {
                None => out.append_null(),
                Some(bytes) => out.append_value(encode(bytes)?),
            }
        }
        result_value(&args.args, Arc::new(out.finish()))
    }
}

/// The base64 text of a bitmap value's bytes, which must hold a bitmap: text
/// that `bitmap_from_base64` would refuse is never written.
pub(crate) fn encode(bytes: &[u8]) -> Result<String> {
    bitmap_from_bytes(bytes, NAME)?;
    Ok(STANDARD.encode(bytes))
}
