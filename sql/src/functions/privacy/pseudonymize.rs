//! `pseudonymize(value [, key])`: the pseudonym of a value — the HMAC-SHA-256
//! of its text under the server's pseudonym key `key` (default: the key named
//! `default`), as 64 lowercase hex digits. The same value under the same key
//! always has the same pseudonym, so pseudonymised columns still join and
//! count distinct; without the key nobody can compute one or turn it back.
//! Integers are taken as their digits (`pseudonymize(42)` is
//! `pseudonymize('42')`); other types are cast to text by the caller
//! (`pseudonymize(signup_date::text)`).
//!
//! ```sql
//! SELECT pseudonymize(email) AS email, city FROM users;
//! SELECT pseudonymize(user_id, 'partner_x') FROM audience('vip');
//! ```

use std::sync::Arc;

use arrow::array::{Array, StringBuilder};
use arrow::datatypes::DataType;
use cohortdb_engine::privacy::{DEFAULT_PSEUDONYM_KEY, to_hex};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::super::{result_value, strings, text_like};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct PseudonymizeFunc {
    access: Arc<UserAccess>,
    signature: Signature,
}

impl PseudonymizeFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        PseudonymizeFunc {
            access: Arc::clone(access),
            // Stable, not immutable: a key may be rotated between statements.
            signature: Signature::user_defined(Volatility::Stable),
        }
    }
}

impl PartialEq for PseudonymizeFunc {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for PseudonymizeFunc {}
impl std::hash::Hash for PseudonymizeFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for PseudonymizeFunc {
    fn name(&self) -> &str {
        "pseudonymize"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [value] | [value, _] if !text_like(value) => plan_err!(
                "pseudonymize takes text or an integer, not {value}; cast it to text first \
                 (pseudonymize(value::text))"
            ),
            [_] => Ok(vec![DataType::Utf8]),
            [_, key] if text_like(key) && !key.is_integer() => {
                Ok(vec![DataType::Utf8, DataType::Utf8])
            }
            [_, key] => plan_err!("pseudonymize: the key is named by text, not {key}"),
            _ => plan_err!(
                "pseudonymize(value [, key]) takes 1 or 2 arguments, got {}",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tags = self.access.tags();
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let values = strings(&arrays[0]);
        let keys = arrays.get(1).map(strings);
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 64);
        for row in 0..values.len() {
            let key = match keys {
                Some(keys) if keys.is_null(row) => None,
                Some(keys) => Some(keys.value(row)),
                None => Some(DEFAULT_PSEUDONYM_KEY),
            };
            match key {
                Some(key) if !values.is_null(row) => {
                    let key = tags.privacy.pseudonym_key(key).map_err(to_datafusion)?;
                    out.append_value(to_hex(&key.pseudonymize(values.value(row).as_bytes())));
                }
                _ => out.append_null(),
            }
        }
        let array = out.finish();
        result_value(&args.args, Arc::new(array))
    }
}
