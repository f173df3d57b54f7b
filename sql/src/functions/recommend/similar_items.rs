//! `similar_items(recommender, item_id, k)`: the k items most like an item,
//! by the recommender's item-to-item weights (item-kNN: its similarity;
//! EASE: its weight; popularity: the cosine of co-occurrence), with how
//! often the two go together: (item_id, score, rank, co_count, support,
//! confidence, lift, cosine). `co_count` is the users with both items,
//! `support` their share of all users with interactions, `confidence` their
//! share of the given item's users, `lift` confidence over the other item's
//! share of users, `cosine` co_count / √(users of one × users of the other).
//! An item the recommender does not know has no similar items.
//!
//! ```sql
//! SELECT item_id, score, lift FROM similar_items('for_you', 1042, 5);
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
    recommender,
};
use crate::functions::audience::constant_text;
use crate::functions::deferred::{Compute, Deferred};
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct SimilarItemsFunc {
    access: Arc<UserAccess>,
}

impl SimilarItemsFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        SimilarItemsFunc {
            access: Arc::clone(access),
        }
    }
}

const FUNCTION: &str = "similar_items";

impl TableFunctionImpl for SimilarItemsFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [name, item, k] = args.exprs() else {
            return plan_err!("similar_items(recommender, item_id, k) takes three arguments");
        };
        let session = args.session();
        let name = constant_text(session, name, FUNCTION, "the recommender")?;
        let item = constant_or_parameter(session, item)?;
        let k = count_or_parameter(session, k, FUNCTION, "k", K_MAX)?;
        let (_, model) = recommender(&self.access, &name)?;
        let float = |name: &str| Field::new(name, DataType::Float64, false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("item_id", item_type(&model), false),
            float("score"),
            Field::new("rank", DataType::Int64, false),
            Field::new("co_count", DataType::Int64, false),
            float("support"),
            float("confidence"),
            float("lift"),
            float("cosine"),
        ]));
        Ok(Arc::new(Deferred {
            schema: Arc::clone(&schema),
            call: SimilarCall {
                schema,
                model,
                item,
                k,
            },
        }))
    }
}

#[derive(Debug)]
struct SimilarCall {
    schema: SchemaRef,
    model: Arc<Recommender>,
    item: Option<ScalarValue>,
    k: Option<usize>,
}

#[async_trait]
impl Compute for SimilarCall {
    fn function(&self) -> &'static str {
        FUNCTION
    }

    async fn compute(&self, _session: &SessionState) -> Result<RecordBatch> {
        let similar = match item_index(&self.model, &bound(&self.item, FUNCTION)?)? {
            Some(i) => self.model.similar(i, bound(&self.k, FUNCTION)?),
            None => Vec::new(),
        };
        let floats = |f: fn(&cohortdb_engine::recommend::Similar) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(similar.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            item_ids(&self.model, similar.iter().map(|s| Some(s.item))),
            floats(|s| f64::from(s.score)),
            Arc::new(Int64Array::from_iter_values(1..=similar.len() as i64)),
            Arc::new(Int64Array::from_iter_values(
                similar.iter().map(|s| i64::from(s.common)),
            )),
            floats(|s| s.support),
            floats(|s| s.confidence),
            floats(|s| s.lift),
            floats(|s| s.cosine),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
