//! `lookalike(seed [, options])`: the users most like a seed audience, best
//! first: (user_id, score, rank, percentile). The seed is an audience
//! expression or a query returning user ids; the seed's users are not
//! candidates unless `include_seed=true`. `percentile` is the share of the
//! candidates the user ranks at or above, in percent (100 for the best).
//!
//! ```sql
//! SELECT * FROM lookalike('event_type=purchase', 'size=5%');
//! SELECT user_id FROM lookalike('vip', 'size=10000, method=ensemble, universe=country=cn');
//! CREATE TAG vip_lookalike AS SELECT user_id FROM lookalike('vip', 'size=1%');
//! ```
//!
//! Options: `size` (a count, a percentage or a fraction of the population;
//! the seed's size by default), `method`, `universe`, `exclude` (an audience
//! never returned), `include_seed`, `features`, `min_support`, `smoothing`,
//! `shrinkage`, `max_tags`, `c`, `negatives`, `random_seed` (docs/lookalike.md).

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use cohortdb_engine::lookalike::{fit, top};
use cohortdb_engine::sampling::Size;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;

use super::{Inputs, LookalikeCall, Options, call_args};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct LookalikeFunc {
    access: Arc<UserAccess>,
}

impl LookalikeFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        LookalikeFunc {
            access: Arc::clone(access),
        }
    }
}

impl TableFunctionImpl for LookalikeFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (seed, options) = call_args(&args, "lookalike", &["size", "exclude", "include_seed"])?;
        let key_type = self
            .access
            .tags()
            .dictionary()
            .map_err(to_datafusion)?
            .key_type()
            .data_type();
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", key_type, false),
            Field::new("score", DataType::Float64, false),
            Field::new("rank", DataType::Int64, false),
            Field::new("percentile", DataType::Float64, false),
        ]));
        Ok(LookalikeCall {
            function: "lookalike",
            access: Arc::clone(&self.access),
            seed,
            options,
            compute,
        }
        .provider(schema))
    }
}

fn compute(inputs: &Inputs<'_>, options: &Options) -> Result<RecordBatch> {
    let model = fit(
        &inputs.features,
        &inputs.seed,
        &inputs.universe,
        &options.settings,
    )
    .map_err(to_datafusion)?;
    let mut candidates = inputs.universe.clone();
    if !options.include_seed {
        candidates -= &inputs.seed;
    }
    if let Some(exclude) = &options.exclude {
        candidates -= inputs
            .tags
            .evaluate(exclude, &inputs.policy)
            .map_err(to_datafusion)?;
    }
    let scored = model.score(&inputs.features, &candidates);
    let n = scored.len();
    let size = match options.size {
        None => (&inputs.seed & &inputs.universe).len() as usize,
        Some(Size::Count(k)) => k as usize,
        Some(Size::Fraction(f)) => (f * inputs.universe.len() as f64).ceil() as usize,
    };
    let best = top(scored, size, options.settings.random_seed);
    let dictionary = inputs.tags.dictionary().map_err(to_datafusion)?;
    let columns: Vec<ArrayRef> = vec![
        dictionary.ids(best.iter().map(|(o, _)| *o)),
        Arc::new(Float64Array::from_iter_values(
            best.iter().map(|(_, s)| f64::from(*s)),
        )),
        Arc::new(Int64Array::from_iter_values(1..=best.len() as i64)),
        Arc::new(Float64Array::from_iter_values(
            (0..best.len()).map(|r| 100.0 * (n - r) as f64 / n as f64),
        )),
    ];
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", columns[0].data_type().clone(), false),
            Field::new("score", DataType::Float64, false),
            Field::new("rank", DataType::Int64, false),
            Field::new("percentile", DataType::Float64, false),
        ])),
        columns,
    )?)
}
