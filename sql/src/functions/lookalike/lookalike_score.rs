//! `lookalike_score(model, user_id)`: a user's score under a stored model
//! (`CREATE MODEL m AS LOOKALIKE(...)`), with the tags users have now and
//! the weights as trained; NULL for a NULL id, the intercept alone for an id
//! the database does not know. Higher is more like the seed (for an
//! ensemble, the mean percentile rank of its scorers, 0 to 1).
//!
//! ```sql
//! SELECT user_id, lookalike_score('buyers_like', user_id) AS score
//! FROM users WHERE city = 'beijing' ORDER BY score DESC LIMIT 100;
//! ```

use std::sync::Arc;

use arrow::array::Float64Array;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::stored_model;
use crate::error::to_datafusion;
use crate::functions::audience::{coerce_user_id, ordinals_of, text_at};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct LookalikeScoreFunc {
    access: Arc<UserAccess>,
    signature: Signature,
}

impl LookalikeScoreFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        LookalikeScoreFunc {
            access: Arc::clone(access),
            signature: Signature::user_defined(Volatility::Stable),
        }
    }
}

impl PartialEq for LookalikeScoreFunc {
    fn eq(&self, other: &Self) -> bool {
        self.access == other.access
    }
}
impl Eq for LookalikeScoreFunc {}
impl std::hash::Hash for LookalikeScoreFunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for LookalikeScoreFunc {
    fn name(&self) -> &str {
        "lookalike_score"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [model, id] = arg_types else {
            return plan_err!("lookalike_score(model, user_id) takes two arguments");
        };
        if !matches!(
            model,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return plan_err!("lookalike_score: the model is named by text, got {model}");
        }
        Ok(vec![DataType::Utf8, coerce_user_id("lookalike_score", id)?])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ColumnarValue::Scalar(_) = &args.args[0] else {
            return exec_err!("lookalike_score: the model must be a constant");
        };
        let Some(name) = text_at(&args.args[0], 0, "lookalike_score", "the model")? else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Float64(None)));
        };
        let tags = self.access.tags();
        let policy = self.access.naming_users("lookalike_score")?;
        let model = stored_model(&tags, &name, &policy)?;
        let source = tags.source(policy.today);
        let bitmaps = model.tags(&source).map_err(to_datafusion)?;
        let ids = args.args[1].to_array(args.number_rows)?;
        let mut ordinals = ordinals_of(&tags, ids.as_ref())?;
        // An id the dictionary does not know has no tags: the intercept.
        let unknown = u32::MAX;
        for (row, o) in ordinals.iter_mut().enumerate() {
            if o.is_none() && !ids.is_null(row) {
                *o = Some(unknown);
            }
        }
        // A suppressed user is not scored: NULL.
        tags.forget_suppressed(&mut ordinals, &policy)
            .map_err(to_datafusion)?;
        let scores = Float64Array::from(model.score(&bitmaps, &ordinals));
        Ok(match &args.args[1] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&scores, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(scores)),
        })
    }
}
