//! `popular_items(recommender [, k [, options]])`: the k (10 by default)
//! most popular items, best first: (item_id, score, rank, users). `score`
//! is the items' summed interaction weights when the recommender has a
//! weight column or time decay (`half_life`), else `users`, the number of
//! users with the item. Option `audience` ranks by popularity among an
//! audience's users only (a segment's favourites).
//!
//! ```sql
//! SELECT * FROM popular_items('for_you', 10);
//! SELECT * FROM popular_items('for_you', 5, 'audience=city=beijing AND age_band=18-24');
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use cohortdb_engine::recommend::{Recommender, top_items};
use cohortdb_engine::{Error as EngineError, options};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::execution::SessionState;

use super::{K_MAX, bound, count_or_parameter, item_ids, item_type, recommender};
use crate::error::to_datafusion;
use crate::functions::audience::constant_text;
use crate::functions::deferred::{Compute, Deferred};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct PopularItemsFunc {
    access: Arc<UserAccess>,
}

impl PopularItemsFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        PopularItemsFunc {
            access: Arc::clone(access),
        }
    }
}

const FUNCTION: &str = "popular_items";

impl TableFunctionImpl for PopularItemsFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let session = args.session();
        let (name, k, text) = match args.exprs() {
            [name] => (name, None, None),
            [name, k] => (name, Some(k), None),
            [name, k, options] => (name, Some(k), Some(options)),
            _ => {
                return plan_err!(
                    "popular_items(recommender [, k [, options]]) takes one to three arguments"
                );
            }
        };
        let name = constant_text(session, name, FUNCTION, "the recommender")?;
        let k = match k {
            Some(k) => count_or_parameter(session, k, FUNCTION, "k", K_MAX)?,
            None => Some(10),
        };
        let mut audience = None;
        if let Some(text) = text {
            let text = constant_text(session, text, FUNCTION, "the options")?;
            for (key, value, position) in options::split(FUNCTION, &text).map_err(to_datafusion)? {
                if key != "audience" {
                    return Err(to_datafusion(EngineError::InvalidArgument(format!(
                        "{FUNCTION}: unknown option {key:?} at character {position} (options: audience)"
                    ))));
                }
                cohortdb_engine::audience::parse(&value).map_err(to_datafusion)?;
                audience = Some(value);
            }
        }
        let (stored, model) = recommender(&self.access, &name)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("item_id", item_type(&model), false),
            Field::new("score", DataType::Float64, false),
            Field::new("rank", DataType::Int64, false),
            Field::new("users", DataType::Int64, false),
        ]));
        Ok(Arc::new(Deferred {
            schema: Arc::clone(&schema),
            call: PopularCall {
                access: Arc::clone(&self.access),
                schema,
                model,
                weighted: stored.entry.definition.weighted(),
                k,
                audience,
            },
        }))
    }
}

#[derive(Debug)]
struct PopularCall {
    access: Arc<UserAccess>,
    schema: SchemaRef,
    model: Arc<Recommender>,
    weighted: bool,
    k: Option<usize>,
    audience: Option<String>,
}

#[async_trait]
impl Compute for PopularCall {
    fn function(&self) -> &'static str {
        FUNCTION
    }

    async fn compute(&self, _session: &SessionState) -> Result<RecordBatch> {
        let data = &self.model.interactions;
        let (scores, users) = match &self.audience {
            None => (
                self.model.popularity.clone(),
                (0..data.items() as u32)
                    .map(|i| data.item_users(i) as f32)
                    .collect(),
            ),
            Some(audience) => {
                let members = self
                    .access
                    .tags()
                    .evaluate(audience, &self.access.naming_users("popular_items")?)
                    .map_err(to_datafusion)?;
                let (users, _) = self.model.popularity_among(&members, false);
                let scores = if self.weighted {
                    self.model.popularity_among(&members, true).0
                } else {
                    users.clone()
                };
                (scores, users)
            }
        };
        let best = top_items(&scores, bound(&self.k, FUNCTION)?);
        let columns: Vec<ArrayRef> = vec![
            item_ids(&self.model, best.iter().map(|&(i, _)| Some(i))),
            Arc::new(Float64Array::from_iter_values(
                best.iter().map(|&(_, s)| f64::from(s)),
            )),
            Arc::new(Int64Array::from_iter_values(1..=best.len() as i64)),
            Arc::new(Int64Array::from_iter_values(
                best.iter().map(|&(i, _)| users[i as usize] as i64),
            )),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
