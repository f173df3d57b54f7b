//! Table functions whose result is computed when the query runs, not when it
//! is planned: so the queries in their arguments (a seed query, an options
//! query) can run on the session, and EXPLAIN costs nothing.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, Partitioning, PlanProperties};
use futures::StreamExt;

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

/// What computes a [`Computed`] table's rows.
pub(crate) type RowsFn = Arc<dyn Fn() -> Result<RecordBatch> + Send + Sync>;

/// A table function's rows computed each time its plan runs, on the first
/// poll of its stream, so a plan with it can be kept for the query and run
/// again (plan_cache.rs): what they are computed from (tags, settings) is
/// what a kept plan's currency already covers.
pub(crate) struct Computed {
    schema: SchemaRef,
    rows: RowsFn,
}

impl Computed {
    pub(crate) fn new(schema: SchemaRef, rows: RowsFn) -> Computed {
        Computed { schema, rows }
    }
}

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Computed")
            .field("schema", &self.schema)
            .finish()
    }
}

#[async_trait]
impl TableProvider for Computed {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Arc::new(ComputedExec {
            schema,
            projection: projection.cloned(),
            rows: Arc::clone(&self.rows),
            properties: Arc::new(properties),
        }))
    }
}

/// The scan of a [`Computed`] table: its rows computed when first polled.
pub(crate) struct ComputedExec {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    rows: RowsFn,
    properties: Arc<PlanProperties>,
}

impl std::fmt::Debug for ComputedExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputedExec")
            .field("schema", &self.schema)
            .finish()
    }
}

impl DisplayAs for ComputedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "ComputedExec")
    }
}

impl ExecutionPlan for ComputedExec {
    fn name(&self) -> &'static str {
        "ComputedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    /// The rows come in batches of the session's batch size.
    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let rows = Arc::clone(&self.rows);
        let projection = self.projection.clone();
        let batch_rows = context.session_config().batch_size().max(1);
        let batches = futures::stream::once(async move {
            let batch = rows()?;
            match projection {
                Some(p) => Ok(batch.project(&p)?),
                None => Ok(batch),
            }
        })
        .flat_map(move |batch: Result<RecordBatch>| {
            let slices: Vec<Result<RecordBatch>> = match batch {
                Ok(batch) => (0..batch.num_rows().div_ceil(batch_rows).max(1))
                    .map(|i| {
                        let start = i * batch_rows;
                        Ok(batch.slice(start, batch_rows.min(batch.num_rows() - start)))
                    })
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(slices)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }
}
