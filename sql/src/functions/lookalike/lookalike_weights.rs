//! `lookalike_weights(seed [, options])`: what tells a seed audience apart,
//! tag by tag — the "audience insights" table. One row per tag with seed
//! users: the tag (as an audience expression writes it), its family (column
//! or stored tag), the seed's users and the population's users with it, the
//! lift (the seed's share with the tag over the population's: 4.0 means seed
//! users are 4× as likely to have it), the tag's weight in the scorer and
//! its information value. Highest weight first.
//!
//! ```sql
//! SELECT tag, lift, weight FROM lookalike_weights('vip') ORDER BY iv DESC LIMIT 20;
//! ```
//!
//! `weight` is the smoothed log odds ratio, shrunk by its signal-to-noise
//! ratio (`shrinkage`), for `log_odds`, `iv` and `ensemble`, the regression
//! coefficient for `logistic`; NULL for a tag the scorer leaves out (fewer
//! seed users than `min_support`, or not among `iv`'s `max_tags`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use cohortdb_engine::lookalike::fit;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;

use super::{Inputs, LookalikeCall, Options, call_args};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct LookalikeWeightsFunc {
    access: Arc<UserAccess>,
}

impl LookalikeWeightsFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        LookalikeWeightsFunc {
            access: Arc::clone(access),
        }
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("tag", DataType::Utf8, false),
        Field::new("family", DataType::Utf8, false),
        Field::new("seed_users", DataType::Int64, false),
        Field::new("population_users", DataType::Int64, false),
        Field::new("lift", DataType::Float64, true),
        Field::new("weight", DataType::Float64, true),
        Field::new("iv", DataType::Float64, false),
    ]))
}

impl TableFunctionImpl for LookalikeWeightsFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (seed, options) = call_args(&args, "lookalike_weights", &[])?;
        Ok(LookalikeCall {
            function: "lookalike_weights",
            access: Arc::clone(&self.access),
            seed,
            options,
            compute,
        }
        .provider(schema()))
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
    let weights: HashMap<usize, f64> = model
        .components
        .first()
        .map(|c| c.linear.weights.iter().copied().collect())
        .unwrap_or_default();
    let mut rows: Vec<usize> = (0..inputs.features.len())
        .filter(|&j| model.stats[j].seed > 0)
        .collect();
    rows.sort_by(|&a, &b| {
        let (wa, wb) = (weights.get(&a), weights.get(&b));
        wb.is_some()
            .cmp(&wa.is_some())
            .then_with(|| wb.unwrap_or(&0.0).total_cmp(wa.unwrap_or(&0.0)))
            .then_with(|| inputs.features[a].name.cmp(&inputs.features[b].name))
    });
    let stat = |j: usize| &model.stats[j];
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&j| inputs.features[j].name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&j| inputs.features[j].family.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&j| stat(j).seed as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|&j| stat(j).population as i64),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|&j| stat(j).lift))),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|j| weights.get(j).copied()),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|&j| stat(j).iv),
        )),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}
