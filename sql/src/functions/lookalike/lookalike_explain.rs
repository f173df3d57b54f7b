//! `lookalike_explain(model, user_id [, n])`: why a stored model scores a
//! user as it does: the `n` (10 by default) weighed tags the user has, with
//! the largest weights first: (tag, weight, lift), lift being the seed's
//! share with the tag over the population's when the model was trained.
//! For an ensemble, the weights are its log-odds scorer's.
//!
//! ```sql
//! SELECT * FROM lookalike_explain('buyers_like', 4242, 5);
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::stored_model;
use crate::error::to_datafusion;
use crate::functions::audience::{constant_text, ordinals_of};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct LookalikeExplainFunc {
    access: Arc<UserAccess>,
}

impl LookalikeExplainFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        LookalikeExplainFunc {
            access: Arc::clone(access),
        }
    }
}

impl TableFunctionImpl for LookalikeExplainFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (model, id, n) = match args.exprs() {
            [model, id] => (model, id, None),
            [model, id, n] => (model, id, Some(n)),
            _ => {
                return plan_err!(
                    "lookalike_explain(model, user_id [, n]) takes two or three arguments"
                );
            }
        };
        let name = constant_text(args.session(), model, "lookalike_explain", "the model")?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("tag", DataType::Utf8, false),
            Field::new("weight", DataType::Float64, false),
            Field::new("lift", DataType::Float64, true),
        ]));
        let id = crate::functions::constant_or_parameter(args.session(), id)?;
        let n = match n {
            Some(n) => crate::functions::count_or_parameter(
                args.session(),
                n,
                "lookalike_explain",
                "n",
                100_000,
            )?,
            None => Some(10),
        };
        let tags = self.access.tags();
        let (Some(id), Some(n)) = (id, n) else {
            // Described before its parameters are bound: only the columns
            // matter (the bound statement is planned again).
            return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
        };
        let policy = self.access.naming_users("lookalike_explain")?;
        let model = stored_model(&tags, &name, &policy)?;
        let source = tags.source(policy.today);
        let bitmaps = model.tags(&source).map_err(to_datafusion)?;
        let mut ordinals = ordinals_of(&tags, id.to_array()?.as_ref())?;
        // A suppressed user is explained by nothing.
        tags.forget_suppressed(&mut ordinals, &policy)
            .map_err(to_datafusion)?;
        let ordinal = ordinals.first().copied().flatten();
        let mut parts = ordinal.map_or_else(Vec::new, |o| model.explain(&bitmaps, o));
        parts.truncate(n);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                parts.iter().map(|w| w.tag.as_str()),
            )),
            Arc::new(Float64Array::from_iter_values(
                parts.iter().map(|w| w.weight),
            )),
            Arc::new(Float64Array::from_iter(parts.iter().map(|w| w.lift))),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
