//! `recommend(recommender, user_id, k [, options])`: a user's top k, best
//! first: (item_id, score, rank, reason_item_id, source). `reason_item_id`
//! is the item of the user's history that added the most to the score
//! ("because you bought X"); `source` is `personal` for items the model
//! ranked from the history and `popular` for items the fallback added (a
//! user without enough history, or fewer than k scored items pass the
//! filters), whose score is their popularity.
//!
//! ```sql
//! SELECT * FROM recommend('for_you', 4242, 10);
//! SELECT item_id FROM recommend('for_you', 4242, 5,
//!     'exclude_seen=false, include=(SELECT item_id FROM products WHERE in_stock)');
//! ```
//!
//! Options: `exclude_seen` (default true), `include`, `exclude` (lists like
//! `(1, 2)` or queries in parentheses), `categories` (a query of item,
//! category) with `per_category`, `boost` (a query of item, factor),
//! `min_history` (default 1), `fallback` (`popular`, the default, or
//! `none`); filters apply before the top k, so k rows come back whenever k
//! items pass.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use cohortdb_engine::recommend::{Recommender, Scores};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::SessionState;

use super::{
    TopOptions, bound, constant_or_parameter, personal_ordinal, recommender, top_args, top_columns,
    top_fields,
};
use crate::functions::deferred::{Compute, Deferred};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct RecommendFunc {
    access: Arc<UserAccess>,
}

impl RecommendFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        RecommendFunc {
            access: Arc::clone(access),
        }
    }
}

const FUNCTION: &str = "recommend";

impl TableFunctionImpl for RecommendFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (name, user, k, options) = top_args(&args, FUNCTION, "user_id")?;
        let user = constant_or_parameter(args.session(), user)?;
        let (_, model) = recommender(&self.access, &name)?;
        let schema = Arc::new(Schema::new(top_fields(&model)));
        Ok(Arc::new(Deferred {
            schema: Arc::clone(&schema),
            call: RecommendCall {
                access: Arc::clone(&self.access),
                schema,
                model,
                user,
                k,
                options,
            },
        }))
    }
}

#[derive(Debug)]
struct RecommendCall {
    access: Arc<UserAccess>,
    schema: SchemaRef,
    model: Arc<Recommender>,
    user: Option<ScalarValue>,
    k: Option<usize>,
    options: TopOptions,
}

#[async_trait]
impl Compute for RecommendCall {
    fn function(&self) -> &'static str {
        FUNCTION
    }

    async fn compute(&self, session: &SessionState) -> Result<RecordBatch> {
        let resolved = self.options.resolve(session, &self.model, FUNCTION).await?;
        let tags = self.access.tags();
        let user = bound(&self.user, FUNCTION)?;
        let ordinal = personal_ordinal("recommend", &self.access, &tags, &user)?;
        let request = resolved.request(bound(&self.k, FUNCTION)?);
        let list = self
            .model
            .recommend(ordinal, &request, &mut Scores::default());
        Ok(RecordBatch::try_new(
            Arc::clone(&self.schema),
            top_columns(&self.model, &[list]),
        )?)
    }
}
