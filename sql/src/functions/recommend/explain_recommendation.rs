//! `explain_recommendation(recommender, user_id, item_id [, n])`: why an
//! item scores as it does for a user: the `n` (10 by default) items of the
//! user's history that add the most to its score, largest first:
//! (history_item_id, weight, contribution, share, rank). `weight` is the
//! user's weight of the history item, `contribution` that weight times the
//! model's item-to-item weight, `share` the contribution over the item's
//! whole score. A popularity recommender explains nothing (no rows).
//!
//! ```sql
//! SELECT * FROM explain_recommendation('for_you', 4242, 1042, 3);
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use cohortdb_engine::recommend::Recommender;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::execution::SessionState;

use super::{
    K_MAX, bound, constant_or_parameter, count_or_parameter, item_ids, item_index, item_type,
    personal_ordinal, recommender,
};
use crate::functions::audience::constant_text;
use crate::functions::deferred::{Compute, Deferred};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct ExplainRecommendationFunc {
    access: Arc<UserAccess>,
}

impl ExplainRecommendationFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        ExplainRecommendationFunc {
            access: Arc::clone(access),
        }
    }
}

const FUNCTION: &str = "explain_recommendation";

impl TableFunctionImpl for ExplainRecommendationFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let session = args.session();
        let (name, user, item, n) = match args.exprs() {
            [name, user, item] => (name, user, item, None),
            [name, user, item, n] => (name, user, item, Some(n)),
            _ => {
                return plan_err!(
                    "explain_recommendation(recommender, user_id, item_id [, n]) takes three or four arguments"
                );
            }
        };
        let name = constant_text(session, name, FUNCTION, "the recommender")?;
        let user = constant_or_parameter(session, user)?;
        let item = constant_or_parameter(session, item)?;
        let n = match n {
            Some(n) => count_or_parameter(session, n, FUNCTION, "n", K_MAX)?,
            None => Some(10),
        };
        let (_, model) = recommender(&self.access, &name)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("history_item_id", item_type(&model), false),
            Field::new("weight", DataType::Float64, false),
            Field::new("contribution", DataType::Float64, false),
            Field::new("share", DataType::Float64, false),
            Field::new("rank", DataType::Int64, false),
        ]));
        Ok(Arc::new(Deferred {
            schema: Arc::clone(&schema),
            call: ExplainCall {
                access: Arc::clone(&self.access),
                schema,
                model,
                user,
                item,
                n,
            },
        }))
    }
}

#[derive(Debug)]
struct ExplainCall {
    access: Arc<UserAccess>,
    schema: SchemaRef,
    model: Arc<Recommender>,
    user: Option<ScalarValue>,
    item: Option<ScalarValue>,
    n: Option<usize>,
}

#[async_trait]
impl Compute for ExplainCall {
    fn function(&self) -> &'static str {
        FUNCTION
    }

    async fn compute(&self, _session: &SessionState) -> Result<RecordBatch> {
        let tags = self.access.tags();
        let user = bound(&self.user, FUNCTION)?;
        let ordinal = personal_ordinal("explain_recommendation", &self.access, &tags, &user)?;
        let mut parts = match (
            ordinal,
            item_index(&self.model, &bound(&self.item, FUNCTION)?)?,
        ) {
            (Some(o), Some(i)) => self.model.explain(o, i, usize::MAX),
            _ => Vec::new(),
        };
        let total: f64 = parts.iter().map(|c| f64::from(c.contribution)).sum();
        parts.truncate(bound(&self.n, FUNCTION)?);
        let columns: Vec<ArrayRef> = vec![
            item_ids(&self.model, parts.iter().map(|c| Some(c.item))),
            Arc::new(Float64Array::from_iter_values(
                parts.iter().map(|c| f64::from(c.weight)),
            )),
            Arc::new(Float64Array::from_iter_values(
                parts.iter().map(|c| f64::from(c.contribution)),
            )),
            Arc::new(Float64Array::from_iter_values(parts.iter().map(|c| {
                if total != 0.0 {
                    f64::from(c.contribution) / total
                } else {
                    0.0
                }
            }))),
            Arc::new(Int64Array::from_iter_values(1..=parts.len() as i64)),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
