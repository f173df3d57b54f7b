//! `recommend_eval(recommender, test_query, k)`: how well the recommender
//! ranks held-out interactions. `test_query` returns (user_id, item_id)
//! pairs the recommender was not built from; for every test user with at
//! least one test item the recommender knows, the top k of their history
//! (seen items excluded, popular items filling in) is compared with their
//! test items. Items the recommender does not know are dropped from the
//! test. One row: (k, users, precision, recall, ndcg, hit_rate, map,
//! coverage), each metric the mean over the users (coverage: the share of
//! the known items recommended to anyone).
//!
//! ```sql
//! SELECT * FROM recommend_eval('for_you_train',
//!     'SELECT user_id, item_id FROM ratings WHERE fold = 0', 10);
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use cohortdb_engine::recommend::{Interaction, Interactions, Recommender, evaluate};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::execution::SessionState;

use super::{K_MAX, item_indices, query_columns, recommender};
use crate::error::to_datafusion;
use crate::functions::audience::{constant_text, ordinals_of};
use crate::functions::deferred::{Compute, Deferred};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct RecommendEvalFunc {
    access: Arc<UserAccess>,
}

impl RecommendEvalFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        RecommendEvalFunc {
            access: Arc::clone(access),
        }
    }
}

const FUNCTION: &str = "recommend_eval";

impl TableFunctionImpl for RecommendEvalFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [name, query, k] = args.exprs() else {
            return plan_err!("recommend_eval(recommender, test_query, k) takes three arguments");
        };
        let session = args.session();
        let name = constant_text(session, name, FUNCTION, "the recommender")?;
        let query = constant_text(session, query, FUNCTION, "the test query")?;
        let k = crate::functions::constant_count(session, k, FUNCTION, "k", K_MAX)?;
        if k == 0 {
            return plan_err!("{FUNCTION}: k is at least 1");
        }
        let (_, model) = recommender(&self.access, &name)?;
        let mut fields = vec![
            Field::new("k", DataType::Int64, false),
            Field::new("users", DataType::Int64, false),
        ];
        for metric in ["precision", "recall", "ndcg", "hit_rate", "map", "coverage"] {
            fields.push(Field::new(metric, DataType::Float64, false));
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(Arc::new(Deferred {
            schema: Arc::clone(&schema),
            call: EvalCall {
                access: Arc::clone(&self.access),
                schema,
                model,
                query,
                k,
            },
        }))
    }
}

#[derive(Debug)]
struct EvalCall {
    access: Arc<UserAccess>,
    schema: SchemaRef,
    model: Arc<Recommender>,
    query: String,
    k: usize,
}

#[async_trait]
impl Compute for EvalCall {
    fn function(&self) -> &'static str {
        FUNCTION
    }

    async fn compute(&self, session: &SessionState) -> Result<RecordBatch> {
        let [users, items] =
            query_columns(session, &self.query, FUNCTION, "the test query").await?;
        let tags = self.access.tags();
        let ordinals = ordinals_of(&tags, users.as_ref())?;
        let indices = item_indices(&self.model, &items)?;
        let test: Vec<Interaction> = ordinals
            .into_iter()
            .zip(indices)
            .filter_map(|(user, item)| {
                Some(Interaction {
                    user: user?,
                    item: item?,
                    weight: 1.0,
                })
            })
            .collect();
        let test =
            Interactions::new(self.model.interactions.items(), test).map_err(to_datafusion)?;
        let q = evaluate(
            &self.model.model,
            &self.model.interactions,
            &test,
            self.k,
            Some(self.model.popular()),
        );
        let metric = |v: f64| Arc::new(Float64Array::from(vec![v])) as ArrayRef;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![self.k as i64])),
            Arc::new(Int64Array::from(vec![q.users as i64])),
            metric(q.precision),
            metric(q.recall),
            metric(q.ndcg),
            metric(q.hit_rate),
            metric(q.map),
            metric(q.coverage),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
