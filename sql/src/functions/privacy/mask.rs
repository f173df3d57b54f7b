//! `mask_email(email)` and `mask_phone(phone [, visible_digits])`: a value
//! shown without giving it away, for people who need to recognise a contact
//! but not to reach it.
//!
//! - `mask_email` keeps the first character of the name and the whole domain:
//!   `alice.smith@example.com` → `a***@example.com` (always three stars, so
//!   the name's length is not shown). Text that is not `name@domain` becomes
//!   `***`.
//! - `mask_phone` replaces every digit but the last `visible_digits` (default
//!   4) with `*` and keeps the punctuation: `+1 (415) 555-0123` →
//!   `+* (***) ***-0123`. A number with no more digits than that is masked
//!   whole.
//!
//! NULL gives NULL.
//!
//! ```sql
//! SELECT mask_email(email), mask_phone(phone) FROM users;
//! ```

use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use cohortdb_engine::Error as EngineError;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::super::{result_value, strings, text_like};
use crate::error::to_datafusion;

/// What a mask function masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mask {
    Email,
    Phone,
}

/// The digits of a phone number left showing unless told otherwise.
const VISIBLE_DIGITS: i64 = 4;

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MaskFunc {
    mask: Mask,
    signature: Signature,
}

impl MaskFunc {
    pub fn new(mask: Mask) -> Self {
        MaskFunc {
            mask,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for MaskFunc {
    fn name(&self) -> &str {
        match self.mask {
            Mask::Email => "mask_email",
            Mask::Phone => "mask_phone",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        match (self.mask, arg_types) {
            (_, [value, ..]) if !text_like(value) || value.is_integer() => {
                plan_err!("{name} takes text, not {value}")
            }
            (_, [_]) => Ok(vec![DataType::Utf8]),
            (Mask::Phone, [_, visible]) if visible.is_integer() || visible.is_null() => {
                Ok(vec![DataType::Utf8, DataType::Int64])
            }
            (Mask::Phone, [_, visible]) => {
                plan_err!("mask_phone: visible_digits is an integer, not {visible}")
            }
            (Mask::Email, _) => plan_err!(
                "mask_email(email) takes 1 argument, got {}",
                arg_types.len()
            ),
            (Mask::Phone, _) => plan_err!(
                "mask_phone(phone [, visible_digits]) takes 1 or 2 arguments, got {}",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let values = strings(&arrays[0]);
        let visible = arrays
            .get(1)
            .map(|a| a.as_any().downcast_ref::<Int64Array>().expect("BIGINT"));
        let out = (0..values.len())
            .map(|row| {
                if values.is_null(row) {
                    return Ok(None);
                }
                let value = values.value(row);
                Ok(match self.mask {
                    Mask::Email => Some(mask_email(value)),
                    Mask::Phone => match visible {
                        Some(v) if v.is_null(row) => None,
                        Some(v) => Some(mask_phone(value, visible_digits(v.value(row))?)),
                        None => Some(mask_phone(value, VISIBLE_DIGITS as usize)),
                    },
                })
            })
            .collect::<Result<StringArray>>()?;
        result_value(&args.args, Arc::new(out))
    }
}

fn visible_digits(n: i64) -> Result<usize> {
    usize::try_from(n).map_err(|_| {
        to_datafusion(EngineError::InvalidArgument(format!(
            "mask_phone: visible_digits is 0 or more, not {n}"
        )))
    })
}

/// `name@domain` → the name's first character, `***@domain`.
fn mask_email(value: &str) -> String {
    match value.rsplit_once('@') {
        Some((name, domain)) if !domain.is_empty() => match name.chars().next() {
            Some(first) => format!("{first}***@{domain}"),
            None => "***".to_string(),
        },
        _ => "***".to_string(),
    }
}

/// Every digit but the last `visible` as `*`; all of them when there are no
/// more than `visible`.
fn mask_phone(value: &str, visible: usize) -> String {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let masked = match digits > visible {
        true => digits - visible,
        false => digits,
    };
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen <= masked { '*' } else { c }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_keep_a_first_letter_and_the_domain() {
        for (value, masked) in [
            ("alice.smith@example.com", "a***@example.com"),
            ("b@example.com", "b***@example.com"),
            ("Łukasz@example.pl", "Ł***@example.pl"),
            ("\"a@b\"@example.com", "\"***@example.com"),
            ("@example.com", "***"),
            ("alice@", "***"),
            ("not an email", "***"),
            ("", "***"),
        ] {
            assert_eq!(mask_email(value), masked, "{value}");
        }
    }

    #[test]
    fn phones_keep_the_last_digits_and_the_punctuation() {
        for (value, visible, masked) in [
            ("+1 (415) 555-0123", 4, "+* (***) ***-0123"),
            ("+86 138 0013 8000", 4, "+** *** **** 8000"),
            ("4155550123", 2, "********23"),
            ("4155550123", 0, "**********"),
            ("0123", 4, "****"),
            ("12", 4, "**"),
            ("ext. none", 4, "ext. none"),
        ] {
            assert_eq!(mask_phone(value, visible), masked, "{value} {visible}");
        }
    }
}
