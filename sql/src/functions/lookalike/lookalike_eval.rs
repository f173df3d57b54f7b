//! `lookalike_eval(seed [, options])`: how well a scorer finds a seed's
//! users it was not shown. Each of `repetitions` splits (10 by default)
//! trains on a sample of the seed (`train`: a count, a percentage or a
//! fraction; 50% by default), hides the rest among the candidates and
//! measures: the AUC (the chance a hidden seed user outranks another
//! candidate) with its standard deviation over the splits, the lift in the
//! top 10% of candidates and the recall in the top 20%. `method=all`
//! evaluates every scorer on the same splits, one row each.
//!
//! ```sql
//! SELECT * FROM lookalike_eval('purchase', 'method=all, train=50');
//! ```
//!
//! The training seed of split r is `audience_sample(seed, train,
//! random_seed + r)`, so other tools can be evaluated on the same splits.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use cohortdb_engine::lookalike::{Evaluation, Method, evaluate};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;

use super::{Inputs, LookalikeCall, Options, call_args};
use crate::error::to_datafusion;
use crate::privacy::UserAccess;

#[derive(Debug)]
pub(crate) struct LookalikeEvalFunc {
    access: Arc<UserAccess>,
}

impl LookalikeEvalFunc {
    pub fn new(access: &Arc<UserAccess>) -> Self {
        LookalikeEvalFunc {
            access: Arc::clone(access),
        }
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("repetitions", DataType::Int64, false),
        Field::new("train_users", DataType::Int64, false),
        Field::new("hidden_users", DataType::Int64, false),
        Field::new("auc", DataType::Float64, false),
        Field::new("auc_stddev", DataType::Float64, false),
        Field::new("lift_at_10", DataType::Float64, false),
        Field::new("recall_at_20", DataType::Float64, false),
    ]))
}

impl TableFunctionImpl for LookalikeEvalFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (seed, options) = call_args(&args, "lookalike_eval", &["train", "repetitions"])?;
        Ok(LookalikeCall {
            function: "lookalike_eval",
            access: Arc::clone(&self.access),
            seed,
            options,
            compute,
        }
        .provider(schema()))
    }
}

fn compute(inputs: &Inputs<'_>, options: &Options) -> Result<RecordBatch> {
    let methods: Vec<Method> = if options.all_methods {
        Method::ALL.to_vec()
    } else {
        vec![options.settings.method]
    };
    let rows: Vec<Evaluation> = methods
        .into_iter()
        .map(|method| {
            let mut settings = options.settings.clone();
            settings.method = method;
            evaluate(
                &inputs.features,
                &inputs.seed,
                &inputs.universe,
                &settings,
                options.train,
                options.repetitions,
            )
            .map_err(to_datafusion)
        })
        .collect::<Result<_>>()?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|e| e.method.name()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|e| i64::from(e.repetitions)),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|e| e.train as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|e| e.hidden as i64),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|e| e.auc))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|e| e.auc_stddev),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|e| e.lift_at_10),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|e| e.recall_at_20),
        )),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}
