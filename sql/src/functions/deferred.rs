//! Table functions whose result is computed when the query runs, not when it
//! is planned: so the queries in their arguments (a seed query, an options
//! query) can run on the session, and EXPLAIN costs nothing.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// Runs a query given in a function's arguments, which must return `N`
/// columns (`wrong_count` makes the error from the count it returns); each
/// column whole.
pub(crate) async fn query_columns<const N: usize>(
    session: &SessionState,
    query: &str,
    wrong_count: impl FnOnce(usize) -> DataFusionError,
) -> Result<[ArrayRef; N]> {
    let plan = session.create_logical_plan(query).await?;
    let found = plan.schema().fields().len();
    if found != N {
        return Err(wrong_count(found));
    }
    let schema = Arc::clone(plan.schema().inner());
    let physical = session.create_physical_plan(&plan).await?;
    let batches = datafusion::physical_plan::collect(physical, session.task_ctx()).await?;
    let batch = arrow::compute::concat_batches(&schema, &batches)?;
    Ok(std::array::from_fn(|i| Arc::clone(batch.column(i))))
}

/// One call of a table function, ready to compute its rows.
#[async_trait]
pub(crate) trait Compute: std::fmt::Debug + Send + Sync {
    /// The function's name, for errors.
    fn function(&self) -> &'static str;

    /// The rows, in the provider's schema.
    async fn compute(&self, session: &SessionState) -> Result<RecordBatch>;
}

/// A table function's result, computed by `call` when scanned.
#[derive(Debug)]
pub(crate) struct Deferred<C> {
    pub schema: SchemaRef,
    pub call: C,
}

#[async_trait]
impl<C: Compute + 'static> TableProvider for Deferred<C> {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(session) = state.as_any().downcast_ref::<SessionState>() else {
            return internal_err!("{} needs a SQL session", self.call.function());
        };
        let batch = self.call.compute(session).await?;
        MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
