//! `recommend_batch(recommender, audience, k [, options])`: the top k of
//! every user of an audience (an audience expression, or `'*'` for every
//! user with interactions), for a campaign list: (user_id, item_id, score,
//! rank, reason_item_id, source), users in ordinal order, each user's items
//! best first. The options are `recommend`'s; the users are shared among
//! the cores.
//!
//! ```sql
//! SELECT * FROM recommend_batch('for_you', 'city=beijing AND NOT opted_out', 3);
//! SELECT user_id, item_id FROM recommend_batch('for_you', '*', 10) WHERE rank = 1;
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use cohortdb_engine::recommend::Recommender;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;
use datafusion::execution::SessionState;

use super::{TopOptions, bound, recommender, top_args, top_columns, top_fields};
use crate::error::to_datafusion;
use crate::functions::audience::constant_text;
use crate::functions::deferred::{Compute, Deferred};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct RecommendBatchFunc {
    access: Arc<UserAccess>,
}

impl RecommendBatchFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        RecommendBatchFunc {
            access: Arc::clone(access),
        }
    }
}

const FUNCTION: &str = "recommend_batch";

impl TableFunctionImpl for RecommendBatchFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (name, audience, k, options) = top_args(&args, FUNCTION, "audience")?;
        let audience = constant_text(args.session(), audience, FUNCTION, "the audience")?;
        if audience.trim() != "*" {
            cohortdb_engine::audience::parse(&audience).map_err(to_datafusion)?;
        }
        let (_, model) = recommender(&self.access, &name)?;
        let key_type = self
            .access
            .tags()
            .dictionary()
            .map_err(to_datafusion)?
            .key_type()
            .data_type();
        let mut fields = vec![Field::new("user_id", key_type, false)];
        fields.extend(top_fields(&model));
        let schema = Arc::new(Schema::new(fields));
        Ok(Arc::new(Deferred {
            schema: Arc::clone(&schema),
            call: BatchCall {
                access: Arc::clone(&self.access),
                schema,
                model,
                audience,
                k,
                options,
            },
        }))
    }
}

#[derive(Debug)]
struct BatchCall {
    access: Arc<UserAccess>,
    schema: SchemaRef,
    model: Arc<Recommender>,
    audience: String,
    k: Option<usize>,
    options: TopOptions,
}

#[async_trait]
impl Compute for BatchCall {
    fn function(&self) -> &'static str {
        FUNCTION
    }

    async fn compute(&self, session: &SessionState) -> Result<RecordBatch> {
        let resolved = self.options.resolve(session, &self.model, FUNCTION).await?;
        let tags = self.access.tags();
        // An audience leaves out the suppressed users; so does every user.
        let users: Vec<u32> = if self.audience.trim() == "*" {
            let suppressed = tags
                .suppressed(&self.access.naming_users("recommend_batch")?)
                .map_err(to_datafusion)?
                .unwrap_or_default();
            let users = self.model.interactions.users().iter();
            users
                .filter(|&&u| !suppressed.contains(u))
                .copied()
                .collect()
        } else {
            tags.evaluate(
                &self.audience,
                &self.access.naming_users("recommend_batch")?,
            )
            .map_err(to_datafusion)?
            .iter()
            .collect()
        };
        let request = resolved.request(bound(&self.k, FUNCTION)?);
        let lists = self.model.recommend_many(&users, &request);
        let dictionary = tags.dictionary().map_err(to_datafusion)?;
        let user_ids = dictionary.ids(
            users
                .iter()
                .zip(&lists)
                .flat_map(|(&u, list)| std::iter::repeat_n(u, list.len())),
        );
        let mut columns: Vec<ArrayRef> = vec![user_ids];
        columns.extend(top_columns(&self.model, &lists));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
