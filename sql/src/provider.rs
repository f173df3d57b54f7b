//! Engine tables as DataFusion tables.
//!
//! [`EngineSchema`] resolves names against the engine catalog; [`EngineTable`] scans
//! an engine snapshot with projection, filter and limit pushed down, and inserts
//! through [`EngineSink`], which commits all rows of a statement at once.
//!
//! For DELETE and UPDATE the sql layer needs row ids: a reserved relation name,
//! [`ROW_ID_RELATION_PREFIX`] + table name, resolves to the same table with the
//! hidden row-id column appended. It is never listed and cannot be created.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use cohortdb_engine::roles::{Object, Privilege};
use cohortdb_engine::views::View;
use cohortdb_engine::{Catalog, Predicate, ScanColumn, ScanSpec, ScanUnit, Table, TableSnapshot};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    SchemaProvider, Session as DfSession, TableProvider,
};
use datafusion::common::{DataFusionError, Result, ScalarValue, not_impl_err};
use datafusion::datasource::TableType;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

use crate::error::to_datafusion;
use crate::generic;
use crate::privacy::UserAccess;
use crate::pushdown;
use crate::scan::EngineScanExec;

/// Prefix of the reserved relation names that expose row ids.
pub(crate) const ROW_ID_RELATION_PREFIX: &str = "__cohortdb_rowid__";

/// Deepest nesting of views in views.
const VIEW_DEPTH_MAX: usize = 8;

/// The `public` schema: every engine table and view.
#[derive(Debug)]
pub(crate) struct EngineSchema {
    /// The catalog, as the session reads users from it (for `in_audience`
    /// filters pushed into scans), or as a view's owner reads its tables.
    pub access: Arc<UserAccess>,
    planner: Planner,
    /// The views whose queries this schema resolves names for, outermost
    /// first (empty for the session's own schema).
    expanding: Vec<String>,
}

/// The session's planning state, reached from its own schema to plan views.
/// Set once the session's context exists; held weakly (the context holds
/// the schema).
#[derive(Clone, Default)]
pub(crate) struct Planner(Arc<std::sync::OnceLock<StateSource>>);

type StateSource = Box<dyn Fn() -> Option<datafusion::execution::SessionState> + Send + Sync>;

impl Planner {
    pub(crate) fn set(&self, ctx: &datafusion::prelude::SessionContext) {
        let weak = ctx.state_weak_ref();
        let source: StateSource =
            Box::new(move || weak.upgrade().map(|state| state.read().clone()));
        let _ = self.0.set(source);
    }

    fn state(&self) -> Result<datafusion::execution::SessionState> {
        self.0
            .get()
            .and_then(|source| source())
            .ok_or_else(|| DataFusionError::Internal("the session is gone".into()))
    }
}

impl fmt::Debug for Planner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Planner")
    }
}

impl EngineSchema {
    pub(crate) fn new(access: Arc<UserAccess>, planner: Planner) -> EngineSchema {
        EngineSchema {
            access,
            planner,
            expanding: Vec::new(),
        }
    }

    /// The view `view` as a table: its query planned now, its tables read
    /// with its owner's privileges (a reader needs SELECT on the view only,
    /// checked here).
    async fn view_table(&self, view: &View) -> Result<Arc<dyn TableProvider>> {
        self.access
            .require(Privilege::Select, &Object::Table(view.name.clone()))?;
        let invalid = |message: String| {
            DataFusionError::External(Box::new(crate::error::Error::InvalidDefinition { message }))
        };
        if self.expanding.contains(&view.name) {
            return Err(invalid(format!(
                "infinite recursion detected in rules for relation \"{}\"",
                view.name
            )));
        }
        if self.expanding.len() >= VIEW_DEPTH_MAX {
            return Err(invalid(format!(
                "views nested more than {VIEW_DEPTH_MAX} deep (reading \"{}\")",
                view.name
            )));
        }
        let mut expanding = self.expanding.clone();
        expanding.push(view.name.clone());
        let owner = EngineSchema {
            access: self.access.as_owner(view.owner.as_deref()),
            planner: self.planner.clone(),
            expanding,
        };
        let schemas = MemoryCatalogProvider::new();
        schemas.register_schema(crate::session::SCHEMA_NAME, Arc::new(owner))?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(crate::session::CATALOG_NAME.into(), Arc::new(schemas));
        let state = SessionStateBuilder::new_from_existing(self.planner.state()?)
            .with_catalog_list(Arc::new(catalogs))
            .build();
        let to_datafusion = |e: crate::error::Error| DataFusionError::External(Box::new(e));
        // The text was written from a parsed query; a manifest edited by hand
        // may hold anything else.
        let mut statements = crate::session::parse_sql(&view.query).map_err(to_datafusion)?;
        let query = match (statements.pop(), statements.is_empty()) {
            (Some(statement), true)
                if matches!(
                    statement.statement(),
                    datafusion::sql::sqlparser::ast::Statement::Query(_)
                ) =>
            {
                statement.statement().clone()
            }
            _ => {
                return Err(invalid(format!(
                    "the query of view \"{}\" is not one SELECT",
                    view.name
                )));
            }
        };
        let plan = crate::session::plan_with(&state, &self.access.catalog, query)
            .await
            .map_err(to_datafusion)?;
        Ok(Arc::new(ViewTable::new(plan, Some(view.query.clone()))))
    }
}

#[async_trait]
impl SchemaProvider for EngineSchema {
    fn table_names(&self) -> Vec<String> {
        self.access.catalog.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (name, with_row_id) = match name.strip_prefix(ROW_ID_RELATION_PREFIX) {
            Some(base) => (base, true),
            None => (name, false),
        };
        if !with_row_id && let Some(view) = self.access.catalog.view(name) {
            return self.view_table(&view).await.map(Some);
        }
        match self.access.catalog.table(name) {
            Ok(table) => Ok(Some(Arc::new(EngineTable::new(
                Arc::clone(&self.access),
                table,
                with_row_id,
            )))),
            Err(cohortdb_engine::Error::TableNotFound(_)) => Ok(None),
            Err(e) => Err(to_datafusion(e)),
        }
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        not_impl_err!("registering relation \"{name}\" (views and external tables)")
    }

    fn table_exist(&self, name: &str) -> bool {
        self.access.catalog.has_relation(name)
    }
}

/// A scan of a prepared query whose pushed filters hold parameters: what it
/// reads once they are bound.
#[derive(Debug)]
pub(crate) struct UnboundScan {
    table: EngineTable,
    snapshot: Arc<TableSnapshot>,
    columns: Vec<ScanColumn>,
    filters: Vec<Expr>,
}

impl UnboundScan {
    /// The scan's spec and units with `values[i]` in place of `$(i+1)`;
    /// `None` when a filter with its values is not one the engine evaluates
    /// (a NULL, say), and the query must be planned with them.
    pub(crate) fn bind(&self, values: &[ScalarValue]) -> Result<Option<(ScanSpec, Vec<ScanUnit>)>> {
        let filters = self
            .filters
            .iter()
            .map(|f| generic::bind_logical(f, values))
            .collect::<Result<Vec<_>>>()?;
        let Some(predicate) = self.table.predicate(&filters) else {
            return Ok(None);
        };
        let spec = ScanSpec::with_columns(&self.snapshot, self.columns.clone(), Some(predicate))
            .map_err(to_datafusion)?;
        let units = spec.units(&self.snapshot).map_err(to_datafusion)?;
        Ok(Some((spec, units)))
    }
}

/// One engine table seen by DataFusion.
#[derive(Debug, Clone)]
pub(crate) struct EngineTable {
    access: Arc<UserAccess>,
    table: Arc<Table>,
    with_row_id: bool,
    schema: SchemaRef,
}

impl EngineTable {
    fn new(access: Arc<UserAccess>, table: Arc<Table>, with_row_id: bool) -> EngineTable {
        let schema = table
            .snapshot()
            .scan_schema(None, with_row_id)
            .expect("a table's own schema projects");
        EngineTable {
            access,
            table,
            with_row_id,
            schema,
        }
    }

    /// The engine predicate for the filters DataFusion pushed down.
    fn predicate(&self, filters: &[Expr]) -> Option<Predicate> {
        let table_schema = self.table.schema();
        let (tags, policy) = (self.access.tags(), self.access.policy());
        let parts: Vec<Predicate> = filters
            .iter()
            .map(|f| pushdown::translate(f, &table_schema, &tags, &policy))
            .collect::<Option<_>>()?;
        match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(Predicate::And(parts)),
        }
    }
}

#[async_trait]
impl TableProvider for EngineTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let table_schema = self.table.schema();
        let (tags, policy) = (self.access.tags(), self.access.policy());
        Ok(filters
            .iter()
            .map(|f| {
                // A filter on parameters (`id = $1`) is pushed when it would be
                // with values in their place: the scan is bound to them later.
                let Some(f) = generic::with_sample_values(f) else {
                    return TableProviderFilterPushDown::Unsupported;
                };
                match pushdown::translate(&f, &table_schema, &tags, &policy) {
                    Some(_) => TableProviderFilterPushDown::Exact,
                    None => TableProviderFilterPushDown::Unsupported,
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = self.table.schema().fields().len();
        // DataFusion's projection indexes the provider schema, where the row id
        // (row-id relation only) follows the table columns.
        let scan_columns: Vec<ScanColumn> = match projection {
            Some(p) => p
                .iter()
                .map(|&i| {
                    if i < columns {
                        ScanColumn::Table(i)
                    } else {
                        ScanColumn::RowId
                    }
                })
                .collect(),
            None => {
                let mut all: Vec<ScanColumn> = (0..columns).map(ScanColumn::Table).collect();
                if self.with_row_id {
                    all.push(ScanColumn::RowId);
                }
                all
            }
        };
        // Every read of a table, whatever planned it (a query, COPY TO, a
        // cursor, a query inside a function's argument), comes here.
        self.access.require(
            Privilege::Select,
            &Object::Table(self.table.name().to_string()),
        )?;
        let snapshot = self.table.snapshot();
        let target_partitions = state.config().target_partitions();
        if filters.iter().any(generic::has_placeholder) {
            // A prepared query's scan: what it reads is settled when its
            // parameters are bound (generic.rs); until then, everything.
            let spec = ScanSpec::with_columns(&snapshot, scan_columns.clone(), None)
                .map_err(to_datafusion)?;
            let units = spec.units(&snapshot).map_err(to_datafusion)?;
            let unbound = UnboundScan {
                table: self.clone(),
                snapshot,
                columns: scan_columns,
                filters: filters.to_vec(),
            };
            return Ok(Arc::new(
                EngineScanExec::new(
                    self.table.name().to_string(),
                    spec,
                    units,
                    target_partitions,
                    limit,
                )
                .unbound(unbound),
            ));
        }
        let spec = ScanSpec::with_columns(&snapshot, scan_columns, self.predicate(filters))
            .map_err(to_datafusion)?;
        let units = spec.units(&snapshot).map_err(to_datafusion)?;
        Ok(Arc::new(EngineScanExec::new(
            self.table.name().to_string(),
            spec,
            units,
            target_partitions,
            limit,
        )))
    }

    async fn insert_into(
        &self,
        _state: &dyn DfSession,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!("{insert_op} into a table");
        }
        self.access.require(
            Privilege::Insert,
            &Object::Table(self.table.name().to_string()),
        )?;
        // The sink declares every column nullable so that DataFusion leaves NOT NULL
        // to the engine, whose error names the column and table.
        let table_schema = self.table.schema();
        let nullable: Vec<_> = table_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let sink = EngineSink {
            catalog: Arc::clone(&self.access.catalog),
            table: Arc::clone(&self.table),
            schema: Arc::new(arrow::datatypes::Schema::new(nullable)),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Collects every row of an INSERT and appends them to the table in one commit.
#[derive(Debug)]
struct EngineSink {
    catalog: Arc<Catalog>,
    table: Arc<Table>,
    schema: SchemaRef,
}

impl DisplayAs for EngineSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "EngineSink: table={}", self.table.name())
    }
}

#[async_trait]
impl DataSink for EngineSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        // The rows stream to a blocking task that appends them (a large
        // INSERT ... SELECT goes to a segment file as it comes, not through
        // memory); the channel's bound holds the query back when it is ahead.
        // `None` marks the end: without it (the query failed) nothing commits.
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Option<RecordBatch>>(2);
        let appending = commit(&self.catalog, &self.table, move |catalog, table| {
            let mut appender = catalog.appender(table);
            loop {
                match receiver.blocking_recv() {
                    Some(Some(batch)) => appender.push(batch)?,
                    Some(None) => return appender.commit(),
                    None => return Ok(0),
                }
            }
        });
        let feeding = async move {
            while let Some(batch) = data.next().await {
                if sender.send(Some(batch?)).await.is_err() {
                    // The appender stopped on an error, which it reports.
                    return Ok(());
                }
            }
            let _ = sender.send(None).await;
            Ok::<(), DataFusionError>(())
        };
        let (fed, appended) = futures::join!(feeding, appending);
        fed?;
        appended
    }
}

/// Runs a catalog write off the async workers: commits sync files.
pub(crate) async fn commit<F>(catalog: &Arc<Catalog>, table: &Arc<Table>, write: F) -> Result<u64>
where
    F: FnOnce(&Catalog, &Table) -> cohortdb_engine::Result<u64> + Send + 'static,
{
    let table = Arc::clone(table);
    blocking(catalog, move |catalog| write(catalog, &table)).await
}

/// Runs a catalog call that blocks (a commit's syncs, a recommender's build)
/// off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    catalog: &Arc<Catalog>,
    call: impl FnOnce(&Catalog) -> cohortdb_engine::Result<T> + Send + 'static,
) -> Result<T> {
    let catalog = Arc::clone(catalog);
    datafusion::common::runtime::SpawnedTask::spawn_blocking(move || call(&catalog))
        .join()
        .await
        .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?
        .map_err(to_datafusion)
}
