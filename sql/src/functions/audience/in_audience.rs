//! `in_audience(user_id, expr)`: whether a user is in an audience, for
//! filtering any table with a user id column. The expression is evaluated
//! once per statement (kept while the tag store is unchanged); each row costs
//! one dictionary lookup and one bitmap probe.
//!
//! ```sql
//! SELECT event_type, count(*) FROM events
//! WHERE in_audience(user_id, 'city=beijing AND NOT opted_out') GROUP BY 1;
//! ```

use std::sync::{Arc, Mutex};

use arrow::array::BooleanArray;
use arrow::datatypes::DataType;
use cohortdb_engine::privacy::Policy;
use cohortdb_engine::tags::Tags;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::text_at;
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

/// An evaluated audience: its text, the tag store it was evaluated over, and
/// its users.
type Evaluated = (String, Arc<Tags>, Policy, Arc<RoaringBitmap>);

#[derive(Debug)]
pub(crate) struct InAudienceFunc {
    access: Arc<UserAccess>,
    signature: Signature,
    last: Mutex<Option<Evaluated>>,
}

impl InAudienceFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        InAudienceFunc {
            access: Arc::clone(access),
            signature: Signature::user_defined(Volatility::Stable),
            last: Mutex::new(None),
        }
    }

    /// The users of `text` over `tags`, evaluated once while the text, the
    /// tags and the session's policy stay.
    fn users(&self, tags: &Arc<Tags>, text: &str) -> Result<Arc<RoaringBitmap>> {
        let policy = self.access.naming_users("in_audience")?;
        let mut last = self.last.lock().expect("cache lock");
        if let Some((seen, over, under, users)) = last.as_ref()
            && seen == text
            && Arc::ptr_eq(over, tags)
            && *under == policy
        {
            return Ok(Arc::clone(users));
        }
        let users = Arc::new(tags.evaluate(text, &policy).map_err(to_datafusion)?);
        *last = Some((
            text.to_string(),
            Arc::clone(tags),
            policy,
            Arc::clone(&users),
        ));
        Ok(users)
    }
}

impl PartialEq for InAudienceFunc {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for InAudienceFunc {}
impl std::hash::Hash for InAudienceFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for InAudienceFunc {
    fn name(&self) -> &str {
        "in_audience"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [id, expr] = arg_types else {
            return plan_err!("in_audience(user_id, expr) takes two arguments");
        };
        let id = match id {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => DataType::Int64,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => DataType::Int64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                DataType::Utf8
            }
            other => {
                return plan_err!("in_audience: user_id must be an integer or text, got {other}");
            }
        };
        if !matches!(
            expr,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return plan_err!("in_audience: the audience must be text, got {expr}");
        }
        Ok(vec![id, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tags = self.access.tags();
        let ColumnarValue::Scalar(_) = &args.args[1] else {
            return exec_err!("in_audience: the audience must be a constant");
        };
        let Some(text) = text_at(&args.args[1], 0, "in_audience", "the audience")? else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
        };
        let users = self.users(&tags, &text)?;
        let ids = args.args[0].to_array(args.number_rows)?;
        let ordinals = tags.ordinals(ids.as_ref()).map_err(to_datafusion)?;
        let result: BooleanArray = ordinals
            .iter()
            .enumerate()
            .map(|(row, o)| {
                if ids.is_null(row) {
                    None
                } else {
                    Some(o.is_some_and(|o| users.contains(o)))
                }
            })
            .collect();
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(result)),
        })
    }
}
