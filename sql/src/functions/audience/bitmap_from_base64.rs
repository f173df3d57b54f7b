//! `bitmap_from_base64(text)`: the bitmap value whose portable roaring bytes
//! the base64 text holds (standard alphabet, padded), as `bitmap_to_base64`
//! writes and as other roaring libraries' bytes are easily carried. The text
//! must decode, and the bytes must be exactly one valid portable roaring
//! bitmap (container keys sorted, cardinalities matching their contents, no
//! bytes after it).
//!
//! ```sql
//! SELECT bitmap_count(bitmap_from_base64('OjAAAAEAAAAAAAIAEAAAAAEAAgADAA=='));
//! ```

use std::sync::Arc;

use arrow::array::{AsArray, BinaryBuilder};
use arrow::datatypes::DataType;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::{result_rows, result_value};

const NAME: &str = "bitmap_from_base64";

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BitmapFromBase64Func {
    signature: Signature,
}

impl BitmapFromBase64Func {
    pub fn new() -> Self {
        BitmapFromBase64Func {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for BitmapFromBase64Func {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = result_rows(&args.args, args.number_rows);
        let values = args.args[0].to_array(rows)?;
        let DataType::Utf8 = values.data_type() else {
            return exec_err!("{NAME}: the text must be TEXT, got {}", values.data_type());
        };
        let mut out = BinaryBuilder::new();
        for text in values.as_string::<i32>() {
            match text {
                None => out.append_null(),
                Some(text) => out.append_value(decode(text)?),
            }
        }
        result_value(&args.args, Arc::new(out.finish()))
    }
}

/// The bitmap bytes base64 `text` holds, checked to be exactly one portable
/// roaring bitmap.
fn decode(text: &str) -> Result<Vec<u8>> {
    let bytes = match STANDARD.decode(text) {
        Ok(bytes) => bytes,
        Err(e) => return exec_err!("{NAME}: the text is not base64 ({e})"),
    };
    let mut rest = bytes.as_slice();
    if let Err(e) = RoaringBitmap::deserialize_from(&mut rest) {
        return exec_err!("{NAME}: the bytes are not a portable roaring bitmap ({e})");
    }
    if !rest.is_empty() {
        return exec_err!(
            "{NAME}: the bytes are not a portable roaring bitmap ({} bytes follow it)",
            rest.len()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::bitmap_bytes;
    use super::super::bitmap_to_base64::encode;
    use super::*;

    fn error(text: &str) -> String {
        decode(text).expect_err("not a bitmap").to_string()
    }

    #[test]
    fn base64_round_trips() {
        let bitmaps: [RoaringBitmap; 4] = [
            RoaringBitmap::new(),
            [1, 2, 3].into_iter().collect(),
            (0..100_000).step_by(7).collect(),
            // Run containers (the run cookie of the format).
            {
                let mut b: RoaringBitmap = (10..70_000).collect();
                b.optimize();
                b
            },
        ];
        for bitmap in bitmaps {
            let bytes = bitmap_bytes(&bitmap);
            let text = encode(&bytes).expect("a bitmap");
            let back = decode(&text).expect("base64 of a bitmap");
            assert_eq!(back, bytes);
            assert_eq!(
                RoaringBitmap::deserialize_from(back.as_slice()).expect("valid"),
                bitmap
            );
        }
        let small: RoaringBitmap = [1, 2, 3].into_iter().collect();
        assert_eq!(
            encode(&bitmap_bytes(&small)).expect("a bitmap"),
            "OjAAAAEAAAAAAAIAEAAAAAEAAgADAA=="
        );
    }

    #[test]
    fn text_that_is_not_base64_is_refused() {
        assert!(
            error("not base64!").contains("bitmap_from_base64: the text is not base64"),
            "{}",
            error("not base64!")
        );
    }

    #[test]
    fn bytes_that_are_not_a_bitmap_are_refused() {
        let refused = |bytes: &[u8]| error(&STANDARD.encode(bytes));
        // Empty, and an unknown cookie.
        assert!(refused(b"").contains("not a portable roaring bitmap"));
        assert!(refused(b"hello world").contains("not a portable roaring bitmap"));
        // A bitmap cut short.
        let bytes = bitmap_bytes(&(0..1000).collect());
        assert!(refused(&bytes[..bytes.len() - 1]).contains("not a portable roaring bitmap"));
        // A bitmap followed by more bytes.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0, 0]);
        assert!(
            refused(&longer).contains("(2 bytes follow it)"),
            "{}",
            refused(&longer)
        );
        // Container keys out of order: two containers, keys 1 then 0.
        let two: RoaringBitmap = [1, 65_537].into_iter().collect();
        let mut swapped = bitmap_bytes(&two);
        // Cookie (4) + container count (4), then key/cardinality pairs.
        swapped[8] = 1;
        swapped[12] = 0;
        assert!(
            refused(&swapped).contains("not sorted"),
            "{}",
            refused(&swapped)
        );
    }

    #[test]
    fn bytea_that_is_not_a_bitmap_is_not_written_as_base64() {
        let message = encode(b"abc").expect_err("not a bitmap").to_string();
        assert!(
            message.contains("bitmap_to_base64: the value is not a portable roaring bitmap"),
            "{message}"
        );
    }
}
