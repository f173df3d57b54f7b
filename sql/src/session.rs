//! A SQL session: one DataFusion context over the shared engine catalog, plus the
//! statements cohortdb runs itself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use cohortdb_engine::Catalog;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, CopyTarget, DiscardObject, ObjectType, Query, Set, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};
use futures::{StreamExt, TryStreamExt};

use crate::cancel::{self, CancelHandle};
use crate::cursor::{self, Cursors};
use crate::error::{Error, Position, Result, TransactionError};
use crate::generic::{self, Generic};
use crate::names::{self, normalize, position_of};
use crate::pg_catalog::information_schema::{self, INFORMATION_SCHEMA};
use crate::pg_catalog::{self, PG_CATALOG, PgCatalogSchema, SystemSchema};
use crate::plan_cache::{self, KeptQuery};
use crate::prepare::Parameters;
use crate::provider::EngineSchema;
use crate::settings;
use crate::state::{Message, State, TransactionStatus};
use crate::transaction;
use crate::{copy, ddl, dml, roles};

/// The name of the one catalog (database) a session sees.
pub const CATALOG_NAME: &str = "cohortdb";
/// The name of the schema holding every table.
pub const SCHEMA_NAME: &str = "public";

/// Memory one statement of a session may use for its working state (hash tables,
/// sorts), unless the database says otherwise; past it the statement fails with
/// SQLSTATE 53200 instead of the process running out of memory.
pub const QUERY_MEMORY_DEFAULT: usize = 4 << 30;

/// Deepest nesting of expressions and subqueries the parser accepts.
const PARSER_RECURSION_MAX: usize = 64;

/// Schema metadata key by which a statement's result overrides its command tag
/// (COMMIT of an aborted block completes as `ROLLBACK`).
const COMMAND_TAG_KEY: &str = "cohortdb.command_tag";

/// A SQL session over a catalog. Sessions are cheap; each has its own settings,
/// transaction block and cursors.
pub struct Session {
    ctx: SessionContext,
    catalog: Arc<Catalog>,
    state: Arc<Mutex<State>>,
    pub(crate) cursors: Cursors,
    cancel: CancelHandle,
    /// What running a physical plan needs (configuration, functions, memory
    /// pool), built once rather than for every statement.
    task_ctx: Mutex<Option<Arc<TaskContext>>>,
}

impl Drop for Session {
    /// Kept plans hold the session's functions, which hold its state (and
    /// so the catalog): dropping the plans with the session breaks that
    /// cycle, so the database closes when its last session does.
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            state.plans = plan_cache::PlanCache::default();
        }
    }
}

impl Session {
    /// A session whose statements may each use [`QUERY_MEMORY_DEFAULT`] bytes.
    pub fn new(catalog: Arc<Catalog>) -> Session {
        Session::with_query_memory(catalog, QUERY_MEMORY_DEFAULT)
    }

    /// A session whose statements may each use `query_memory` bytes of working
    /// memory. Nothing spills to disk: a statement that needs more fails (53200).
    pub fn with_query_memory(catalog: Arc<Catalog>, query_memory: usize) -> Session {
        let mut config = SessionConfig::new()
            // cohortdb's own information_schema (PostgreSQL's columns and type
            // names) replaces DataFusion's.
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME);
        config.options_mut().sql_parser.collect_spans = true;
        // SQL that functions plan themselves (experiment_report) reads as ours does.
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(query_memory, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .expect("a runtime without files builds");
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let state = Arc::new(Mutex::new(State::default()));
        let schemas = MemoryCatalogProvider::new();
        let planner = crate::provider::Planner::default();
        schemas
            .register_schema(
                SCHEMA_NAME,
                Arc::new(EngineSchema::new(
                    crate::privacy::UserAccess::new(&catalog, &state),
                    planner.clone(),
                )),
            )
            .expect("a fresh catalog provider accepts a schema");
        let own = crate::functions::register(&ctx, &state, &catalog);
        let pg_catalog = Arc::new(PgCatalogSchema::new(
            Arc::clone(&catalog),
            Arc::clone(&state),
            crate::functions::catalog_rows(&ctx, &own),
        ));
        for udf in crate::functions::pg_catalog_functions(&pg_catalog, &state) {
            ctx.register_udf(udf);
        }
        for (name, schema) in [
            (
                PG_CATALOG,
                SystemSchema::pg_catalog(Arc::clone(&pg_catalog)),
            ),
            (
                INFORMATION_SCHEMA,
                SystemSchema::information_schema(pg_catalog),
            ),
        ] {
            schemas
                .register_schema(name, Arc::new(schema))
                .expect("a fresh catalog provider accepts a schema");
        }
        ctx.register_catalog(CATALOG_NAME, Arc::new(schemas));
        planner.set(&ctx);
        Session {
            ctx,
            catalog,
            state,
            cursors: Cursors::default(),
            cancel: CancelHandle::new(),
            task_ctx: Mutex::new(None),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("session state lock")
    }

    /// The user the session runs as (`session_authorization`).
    pub fn user(&self) -> String {
        self.lock().user()
    }

    /// Whether the session's user is a superuser.
    pub fn is_superuser(&self) -> bool {
        self.lock().superuser()
    }

    /// How the session selects users now (privacy.rs).
    pub(crate) fn policy(&self) -> cohortdb_engine::privacy::Policy {
        crate::privacy::policy(&self.catalog, &self.lock())
    }

    /// A handle that cancels the statement this session is running.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Checks that the session's transaction block lets `statement` run (not
    /// aborted; no writes in a READ ONLY block), as [`Session::run`] does.
    pub(crate) fn admit(&self, statement: &ParsedStatement) -> Result<()> {
        transaction::admit(&self.lock(), statement.statement())
    }

    /// Records that a statement failed outside [`Session::run`] (a syntax error,
    /// a bad parameter), which aborts the transaction block as any failure does.
    pub fn statement_failed(&self) {
        self.lock().fail();
    }

    /// The session's transaction block state.
    pub fn transaction_status(&self) -> TransactionStatus {
        self.lock().status()
    }

    /// The notices of the statement last run and the reported settings changed
    /// since the last call, oldest first.
    pub fn take_messages(&self) -> Vec<Message> {
        self.lock().take_messages()
    }

    /// Starts a client session: applies the settings the client sent at startup
    /// (`options` may carry `-c name=value` pairs) and records who the user is.
    /// Returns every reported setting's value, which the client must hear first.
    pub fn start(
        &self,
        user: &str,
        superuser: bool,
        parameters: &HashMap<String, String>,
    ) -> Result<Vec<(String, String)>> {
        let mut state = self.lock();
        state.settings.set_internal("session_authorization", user);
        state
            .settings
            .set_internal("is_superuser", if superuser { "on" } else { "off" });
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in parameters {
            match name.as_str() {
                "user" | "database" | "replication" => {}
                "options" => pairs.extend(settings::command_line_options(value)?),
                _ => pairs.push((name.clone(), value.clone())),
            }
        }
        for (name, value) in pairs {
            state
                .settings
                .set(&name, &value, settings::Scope::Session)?;
        }
        Ok(state.report_all())
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Parses a string of `;`-separated statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        if let Some(statements) = self.lock().parses.get(sql) {
            return Ok(statements);
        }
        let statements = parse_sql(sql)?;
        self.lock().parses.put(sql, &statements);
        Ok(statements)
    }

    /// Runs every statement in `sql` and returns the rows of the last one.
    pub async fn execute(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let stream = self.execute_stream(sql).await?;
        stream.try_collect().await.map_err(Error::from)
    }

    /// Runs every statement in `sql` but the last to completion and returns the
    /// last one's rows as a stream.
    pub async fn execute_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        let mut statements = self.parse(sql)?;
        let Some(last) = statements.pop() else {
            return Ok(empty_stream());
        };
        for statement in statements {
            let stream = self.run(statement).await?;
            let _: Vec<RecordBatch> = stream.try_collect().await?;
        }
        self.run(last).await
    }

    /// Runs one parsed statement and returns its rows as a stream. The statement
    /// stops with SQLSTATE 57014 when canceled or past `statement_timeout`, and an
    /// error (now or from the stream) aborts the transaction block it is in.
    /// The statement is recorded in the audit log when it ends (audit.rs).
    pub async fn run(&self, statement: ParsedStatement) -> Result<SendableRecordBatchStream> {
        let audit = self.audit_start(&statement);
        let admitted = {
            let mut state = self.lock();
            // Notices nobody took belong to earlier statements; drop them so a
            // session whose caller never reads them does not hoard them.
            state.drop_notices();
            // As SHOW and current_setting report them.
            state.follow_catalog(&self.catalog);
            transaction::admit(&state, statement.statement())
        };
        let result = match admitted {
            Ok(()) => self.run_guarded(statement).await,
            Err(e) => Err(e),
        };
        {
            let mut state = self.lock();
            if result.is_err() {
                state.fail();
            }
            // Outside a block each statement is its own transaction.
            if state.block.is_none() {
                state.settings.end_transaction();
            }
        }
        match result {
            Ok(stream) => Ok(audit.stream(stream)),
            Err(e) => {
                audit.failed(&e);
                Err(e)
            }
        }
    }

    async fn run_guarded(&self, statement: ParsedStatement) -> Result<SendableRecordBatchStream> {
        let writes = transaction::write_command(statement.statement()).is_some();
        // Boxed, so that it is not moved again by value into `stoppable`
        // (run_statement boxes every future larger than a few hundred bytes
        // itself, so this box is small).
        let stream = self
            .stoppable(Box::pin(self.run_statement(statement)))
            .await?;
        if writes && let Some(block) = &mut self.lock().block {
            block.writes += 1;
        }
        Ok(stream)
    }

    /// Runs `start` and then its stream under the session's stop signal: a
    /// cancel request or `statement_timeout` ends either with SQLSTATE 57014.
    pub(crate) async fn stoppable(
        &self,
        start: impl std::future::Future<Output = Result<SendableRecordBatchStream>> + Unpin,
    ) -> Result<SendableRecordBatchStream> {
        let timeout = self.lock().settings.statement_timeout_ms();
        let mut stop = self.cancel.stop_signal(timeout);
        let stream = stop.run(start).await?;
        Ok(cancel::guard(stream, stop, Arc::clone(&self.state)))
    }

    /// The columns `SHOW variable` returns.
    pub(crate) fn show_schema(
        &self,
        variable: &[datafusion::sql::sqlparser::ast::Ident],
    ) -> Result<SchemaRef> {
        Ok(settings::show(&self.lock(), variable)?.schema())
    }

    /// The columns a FETCH from cursor `name` returns.
    pub(crate) fn cursor_schema(
        &self,
        name: &datafusion::sql::sqlparser::ast::Ident,
    ) -> Result<SchemaRef> {
        let name = normalize(name);
        cursor::schema(self, &name).ok_or(Error::UnknownCursor { name })
    }

    /// Runs one statement. A query with a kept plan or result runs without
    /// any other future; everything else is boxed where it is awaited, so that
    /// this future stays small: a future is moved by copying it whole, and
    /// planning's are tens of kilobytes (a statement other than a query, held
    /// by value while it runs, is 3 kilobytes by itself).
    async fn run_statement(&self, statement: ParsedStatement) -> Result<SendableRecordBatchStream> {
        if let Statement::Query(_) = statement.statement() {
            let Some(parameters) = &statement.parameters else {
                if let Some(stream) = self.run_kept(statement.text(), self.catalog.version())? {
                    return Ok(stream);
                }
                return Box::pin(self.run_datafusion(statement.shared(), Some(statement.text())))
                    .await;
            };
            if let Some(generic) = self
                .generic_plan(statement.statement(), statement.text())
                .await
                && let Some(plan) = generic.bind(&parameters.values, &parameters.declared)
            {
                return self.execute_physical(plan);
            }
            // No generic plan: the query is planned with its values in place.
            // (Shared at once: a Statement held here by value, even moved
            // out, would make this future 3 kilobytes larger.)
            let bound = Arc::new(crate::prepare::write_in(statement.statement(), parameters));
            let text = bound.to_string();
            if let Some(stream) = self.run_kept(&text, self.catalog.version())? {
                return Ok(stream);
            }
            return Box::pin(self.run_datafusion(bound, Some(&text))).await;
        }
        Box::pin(self.run_command(statement.statement)).await
    }

    /// Runs a statement other than a query.
    async fn run_command(&self, statement: Arc<Statement>) -> Result<SendableRecordBatchStream> {
        match Arc::unwrap_or_clone(statement) {
            Statement::StartTransaction {
                modes, statements, ..
            } if statements.is_empty() => {
                transaction::begin(&mut self.lock(), &modes)?;
                Ok(empty_stream())
            }
            Statement::Commit { chain: false, .. } => {
                let tag = transaction::commit(&mut self.lock());
                self.cursors.end_transaction(tag == "ROLLBACK");
                Ok(tagged_empty_stream(tag))
            }
            Statement::Rollback {
                chain: false,
                savepoint: None,
            } => {
                transaction::rollback(&mut self.lock());
                self.cursors.end_transaction(true);
                Ok(empty_stream())
            }
            Statement::Rollback {
                chain: false,
                savepoint: Some(name),
            } => {
                transaction::rollback_to(&mut self.lock(), &normalize(&name))?;
                Ok(empty_stream())
            }
            Statement::Savepoint { name } => {
                transaction::savepoint(&mut self.lock(), &normalize(&name))?;
                Ok(empty_stream())
            }
            Statement::ReleaseSavepoint { name } => {
                transaction::release(&mut self.lock(), &normalize(&name))?;
                Ok(empty_stream())
            }
            // The query engine's own options are engine-internal: superusers may
            // tune them, with DataFusion checking the values.
            statement @ Statement::Set(Set::SingleAssignment { .. })
                if settings::is_query_engine_option(&statement) =>
            {
                if !self.lock().superuser() {
                    return Err(Error::PermissionDenied {
                        message: "permission denied to set query engine options".into(),
                    });
                }
                // Kept plans were made under the options as they were.
                self.lock().plans = plan_cache::PlanCache::default();
                Box::pin(self.run_datafusion(Arc::new(statement), None)).await
            }
            Statement::Set(set) => {
                settings::set_statement(&mut self.lock(), set)?;
                Ok(empty_stream())
            }
            Statement::Reset(reset) => {
                settings::reset_statement(&mut self.lock(), reset.reset)?;
                Ok(empty_stream())
            }
            Statement::ShowVariable { variable } => {
                let batch = settings::show(&self.lock(), &variable)?;
                Ok(memory_stream(batch.schema(), vec![batch]))
            }
            Statement::Discard { object_type } => {
                if object_type == DiscardObject::ALL {
                    let mut state = self.lock();
                    if state.block.is_some() {
                        return Err(Error::Transaction(TransactionError::InsideBlock {
                            statement: "DISCARD ALL",
                        }));
                    }
                    state.settings.reset_all();
                    self.cursors.close_all();
                }
                Ok(empty_stream())
            }
            statement if crate::tag_ddl::carried(&statement).is_some() => {
                let tag = crate::tag_ddl::carried(&statement).expect("checked in the guard");
                Box::pin(crate::tag_ddl::run(self, tag)).await
            }
            statement if is_checkpoint(&statement) => {
                if !self.lock().superuser() {
                    return Err(Error::PermissionDenied {
                        message:
                            "must be superuser or have privileges of pg_checkpoint to do CHECKPOINT"
                                .into(),
                    });
                }
                self.catalog.checkpoint()?;
                Ok(empty_stream())
            }
            Statement::Vacuum(vacuum) => {
                ddl::vacuum(self, vacuum)?;
                Ok(empty_stream())
            }
            Statement::Declare { mut stmts } if stmts.len() == 1 => {
                let in_block = self.lock().block.is_some();
                Box::pin(cursor::declare(self, stmts.remove(0), in_block)).await?;
                Ok(empty_stream())
            }
            Statement::Fetch {
                name,
                direction,
                into: None,
                ..
            } => Box::pin(cursor::fetch(self, &normalize(&name), &direction)).await,
            Statement::Close { cursor } => {
                cursor::close(self, &cursor)?;
                Ok(empty_stream())
            }
            // Statements prepared with the protocol were dropped by the server;
            // those prepared with SQL PREPARE are DataFusion's.
            Statement::Deallocate { name, .. }
                if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
            {
                Ok(empty_stream())
            }
            // Notifications are not supported, so there is never anything to stop
            // listening to; poolers send this when they reset a connection.
            Statement::UNLISTEN { .. } => Ok(empty_stream()),
            Statement::CreateTable(create) => Box::pin(ddl::create_table(self, create)).await,
            Statement::CreateView(create) => Box::pin(ddl::create_view(self, create)).await,
            Statement::Drop {
                object_type: ObjectType::View,
                if_exists,
                names,
                ..
            } => ddl::drop_relations(self, ddl::Relation::View, &names, if_exists),
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => ddl::drop_relations(self, ddl::Relation::Table, &names, if_exists),
            Statement::Drop {
                object_type: ObjectType::Role | ObjectType::User,
                if_exists,
                names,
                ..
            } => {
                roles::drop_roles(self, &names, if_exists)?;
                Ok(empty_stream())
            }
            Statement::CreateRole(create) => {
                roles::create_role(self, create)?;
                Ok(empty_stream())
            }
            Statement::AlterRole { name, operation } => {
                roles::alter_role(self, &name, operation)?;
                Ok(empty_stream())
            }
            Statement::Insert(insert) => Box::pin(dml::insert(self, insert)).await,
            Statement::Delete(delete) => Box::pin(dml::delete(self, delete)).await,
            Statement::Update(update) => Box::pin(dml::update(self, update)).await,
            statement @ Statement::Copy { .. } => Box::pin(copy::copy(self, statement)).await,
            other => Box::pin(self.run_datafusion(Arc::new(other), None)).await,
        }
    }

    /// Plans a query with DataFusion (used for SELECTs inside our own statements).
    pub(crate) async fn plan_query(&self, query: Query) -> Result<LogicalPlan> {
        self.plan(Statement::Query(Box::new(query))).await
    }

    /// Plans a statement DataFusion runs, after rewriting the PostgreSQL syntax
    /// it lacks and naming result columns as PostgreSQL does.
    pub(crate) async fn plan(&self, mut statement: Statement) -> Result<LogicalPlan> {
        if let Some(query) = information_schema::show_query(&statement, self) {
            statement = Statement::Query(Box::new(query?));
        }
        plan_with(&self.ctx.state(), &self.catalog, statement).await
    }

    /// Runs a plan and returns its rows. A query is optimized and planned on one
    /// copy of the session's planning state and runs with the session's task
    /// context, built once; other plans (DataFusion's SET, PREPARE) go through
    /// the context, and a SET of a query engine option rebuilds that task context.
    pub(crate) async fn stream_plan(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        let stream = if matches!(plan, LogicalPlan::Statement(_) | LogicalPlan::Ddl(_)) {
            let stream = self
                .ctx
                .execute_logical_plan(plan)
                .await?
                .execute_stream()
                .await?;
            *self.task_ctx.lock().expect("task context") = None;
            stream
        } else {
            let physical = self.ctx.state().create_physical_plan(&plan).await?;
            return self.execute_physical(physical);
        };
        Ok(client_stream(stream))
    }

    /// Runs a physical plan with the session's task context, built once.
    fn execute_physical(
        &self,
        physical: Arc<dyn ExecutionPlan>,
    ) -> Result<SendableRecordBatchStream> {
        let task_ctx = Arc::clone(
            self.task_ctx
                .lock()
                .expect("task context")
                .get_or_insert_with(|| self.ctx.task_ctx()),
        );
        let stream = datafusion::physical_plan::execute_stream(physical, task_ctx)?;
        Ok(client_stream(stream))
    }

    /// The generic plan (generic.rs) of a query with parameters: planned on
    /// its first execution and kept like other plans; `None` when it has none.
    async fn generic_plan(&self, statement: &Statement, query: &str) -> Option<Generic> {
        let version = self.catalog.version();
        let kept = {
            let state = self.lock();
            state.plans.get_generic(query, version, &state.settings)
        };
        match kept {
            Some(generic) => generic,
            None => Box::pin(self.new_generic_plan(statement, query, version)).await,
        }
    }

    /// Makes and keeps the generic plan of a query planned at catalog
    /// version `version`.
    async fn new_generic_plan(
        &self,
        statement: &Statement,
        query: &str,
        version: u64,
    ) -> Option<Generic> {
        let planning = self.ctx.state();
        // Failing here is for the statement with its values to report.
        let generic = Box::pin(generic::plan(&planning, &self.catalog, statement.clone()))
            .await
            .ok()
            .flatten();
        let mut state = self.lock();
        let state = &mut *state;
        state
            .plans
            .put_generic(query.to_string(), generic.clone(), version, &state.settings);
        generic
    }

    /// Runs the plan or rows kept for `query` at catalog version `version`,
    /// if there are any: a query planned before runs its kept plan while
    /// nothing the plan was made from has changed (plan_cache.rs).
    fn run_kept(&self, query: &str, version: u64) -> Result<Option<SendableRecordBatchStream>> {
        let kept = {
            let state = self.lock();
            state.plans.get(query, version, &state.settings)
        };
        Ok(match kept {
            Some(KeptQuery::Plan(physical)) => Some(self.execute_physical(physical)?),
            Some(KeptQuery::Rows(schema, rows)) => Some(memory_stream(schema, rows)),
            None => None,
        })
    }

    /// Plans and runs a statement DataFusion runs. A query's plan is kept by
    /// `text`, the query's text, when that is given; the caller has looked
    /// for one kept before (`run_kept`), before making this future.
    pub(crate) async fn run_datafusion(
        &self,
        statement: Arc<Statement>,
        text: Option<&str>,
    ) -> Result<SendableRecordBatchStream> {
        // The version is read before planning: a change shown meanwhile makes
        // the plan kept out of date.
        let query = text.filter(|_| matches!(*statement, Statement::Query(_)));
        let version = self.catalog.version();
        if query.is_some() {
            // A query sent as text whose WHERE compares columns with
            // literals runs on the generic plan of its shape (generic.rs).
            if let Some((shape, literals)) = generic::parameterize(&statement)
                && let Some(generic) = self.generic_plan(&shape, &shape.to_string()).await
                && let Some(plan) = generic.bind_literals(&literals)
            {
                return self.execute_physical(plan);
            }
        }
        let position = position_of(&*statement);
        let plan = Box::pin(self.plan(Arc::unwrap_or_clone(statement))).await?;
        if let LogicalPlan::Ddl(ddl) = &plan {
            return Err(Error::unsupported(statement_name(ddl.name()), position));
        }
        match query {
            Some(query) if plan_cache::reusable_logical(&plan) => {
                let physical = Box::pin(self.ctx.state().create_physical_plan(&plan)).await?;
                if !plan_cache::reusable_physical(&physical) {
                    return self.execute_physical(physical);
                }
                let kept = match plan_cache::constant(&plan) {
                    true => {
                        let stream = self.execute_physical(physical)?;
                        let schema = stream.schema();
                        let rows: Vec<RecordBatch> = stream.try_collect().await?;
                        KeptQuery::Rows(schema, rows.into())
                    }
                    false => KeptQuery::Plan(physical),
                };
                {
                    let mut state = self.lock();
                    let state = &mut *state;
                    state
                        .plans
                        .put(query.to_string(), kept.clone(), version, &state.settings);
                }
                match kept {
                    KeptQuery::Plan(physical) => self.execute_physical(physical),
                    KeptQuery::Rows(schema, rows) => Ok(memory_stream(schema, rows)),
                }
            }
            _ => Box::pin(self.stream_plan(plan)).await,
        }
    }
}

/// A result stream with its columns named for the client.
fn client_stream(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = names::client_schema(&stream.schema());
    if Arc::ptr_eq(&schema, &stream.schema()) {
        return stream;
    }
    // Columns renamed for the client: the same arrays under its names.
    let output = Arc::clone(&schema);
    let renamed = stream.map(move |batch| {
        let batch = batch?;
        Ok(RecordBatch::try_new(
            Arc::clone(&output),
            batch.columns().to_vec(),
        )?)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, renamed))
}

/// Plans `statement` on `state` (a session's, or one reading as a view's
/// owner), after rewriting the PostgreSQL syntax DataFusion lacks and naming
/// result columns as PostgreSQL does.
pub(crate) async fn plan_with(
    state: &datafusion::execution::SessionState,
    catalog: &Catalog,
    mut statement: Statement,
) -> Result<LogicalPlan> {
    let is_table = |name: &str| catalog.has_relation(name);
    let names = match &mut statement {
        Statement::Query(query) => Some(names::name_columns(query)),
        _ => None,
    };
    pg_catalog::rewrite::rewrite(&mut statement, &is_table);
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement)))
        .await?;
    Ok(match names {
        Some(names) => names::rename_output(plan, &names)?,
        None => plan,
    })
}

pub(crate) fn parse_sql(sql: &str) -> Result<Vec<ParsedStatement>> {
    let statements = parse_statements(sql)?;
    if statements.iter().any(|s| {
        matches!(
            s.statement(),
            Statement::Copy {
                to: false,
                target: CopyTarget::Stdin,
                ..
            }
        )
    }) {
        statements_end_at_copy_from_stdin(sql)?;
    }
    Ok(statements)
}

/// The parser reads whatever follows `COPY ... FROM STDIN;` as the COPY's inline
/// rows (as in a dump file), so statements after it would vanish unseen. Over
/// the protocol the rows come separately, so such a COPY must end its string.
fn statements_end_at_copy_from_stdin(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| Error::Syntax {
            message: e.to_string(),
            position: None,
        })?;
    let is_word = |token: &Token, word: &str| matches!(token, Token::Word(w) if w.value.eq_ignore_ascii_case(word));
    let significant: Vec<&Token> = tokens
        .iter()
        .filter(|t| {
            !matches!(
                t,
                Token::Whitespace(
                    Whitespace::Space
                        | Whitespace::Newline
                        | Whitespace::Tab
                        | Whitespace::SingleLineComment { .. }
                        | Whitespace::MultiLineComment(_)
                )
            )
        })
        .collect();
    let stdin = significant
        .windows(2)
        .position(|pair| is_word(pair[0], "from") && is_word(pair[1], "stdin"));
    let Some(at) = stdin else {
        return Ok(());
    };
    let after: Vec<&&Token> = significant[at + 2..]
        .iter()
        .skip_while(|t| !matches!(t, Token::SemiColon))
        .skip(1)
        .filter(|t| !matches!(t, Token::SemiColon | Token::EOF))
        .collect();
    if after.is_empty() {
        Ok(())
    } else {
        Err(Error::unsupported(
            "statements after COPY FROM STDIN in one query string (send the COPY on its own)",
            None,
        ))
    }
}

fn parse_statements(sql: &str) -> Result<Vec<ParsedStatement>> {
    let dialect = PostgreSqlDialect {};
    Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(ParserError::from)
        .and_then(|tokens| {
            // Logged as written: before the rewrites below, which put
            // literals where the client wrote words (`USER KEY`).
            let mut offsets = Offsets::new(sql);
            let texts: Vec<Arc<str>> = statement_groups(&tokens)
                .iter()
                .map(|group| crate::audit::logged_text(group, &mut offsets).into())
                .collect();
            let tokens = checkpoint_as_pragma(crate::tag_ddl::user_key_as_comment(tokens));
            let statements = match crate::tag_ddl::split(sql, &tokens)? {
                Some(statements) => statements,
                None => Parser::new(&dialect)
                    .with_recursion_limit(PARSER_RECURSION_MAX)
                    .with_tokens_with_locations(tokens)
                    .parse_statements()?,
            };
            Ok(with_texts(texts, statements))
        })
        .map_err(|e| match Error::from(e) {
            // The parser gives no location for an unexpected end of input: it is
            // just past the last character.
            Error::Syntax {
                message,
                position: None,
            } if message.ends_with("found: EOF") => Error::Syntax {
                message,
                position: Some(end_of(sql)),
            },
            other => other,
        })
}

/// Each statement with its text as the audit log records it: `texts`, of the
/// text between each `;`, as the parser splits statements. Should the counts
/// differ (the inline rows of a COPY FROM STDIN are no statements), every
/// statement's own rendering is recorded instead.
fn with_texts(texts: Vec<Arc<str>>, statements: Vec<Statement>) -> Vec<ParsedStatement> {
    let texts = match texts.len() == statements.len() {
        true => texts,
        false => statements
            .iter()
            .map(|s| crate::audit::logged(&s.to_string()).into())
            .collect(),
    };
    statements
        .into_iter()
        .zip(texts)
        .map(|(statement, logged)| ParsedStatement {
            parameters: None,
            statement: Arc::new(statement),
            logged,
            derived: Arc::default(),
        })
        .collect()
}

/// The tokens of each statement in `tokens`: split at every `;`, without
/// the end of input, statements of only whitespace and comments left out (the
/// parser skips them).
pub(crate) fn statement_groups(tokens: &[TokenWithSpan]) -> Vec<&[TokenWithSpan]> {
    let tokens = match tokens.last() {
        Some(last) if last.token == Token::EOF => &tokens[..tokens.len() - 1],
        _ => tokens,
    };
    tokens
        .split(|t| t.token == Token::SemiColon)
        .filter(|group| {
            group
                .iter()
                .any(|t| !matches!(t.token, Token::Whitespace(_)))
        })
        .collect()
}

/// The text the significant tokens of `group` span, as written in the text
/// `offsets` walks (groups taken in order cost one pass over it).
pub(crate) fn source_text(group: &[TokenWithSpan], offsets: &mut Offsets<'_>) -> String {
    let Some((first, last)) = bounds(group) else {
        return String::new();
    };
    let start = offsets.at(first.span.start);
    offsets.sql[start..offsets.at(last.span.end)].to_string()
}

/// The first and last significant tokens of `group`; `None` when it has none.
pub(crate) fn bounds(group: &[TokenWithSpan]) -> Option<(&TokenWithSpan, &TokenWithSpan)> {
    let significant = |t: &&TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    Some((
        group.iter().find(significant)?,
        group.iter().rfind(significant)?,
    ))
}

/// Byte offsets in a text of tokenizer locations (line and column count from
/// 1, columns in characters). Each is found by walking on from the one before,
/// so locations asked for in order cost one pass over the text in all, however
/// many there are (a script of many statements, a statement of many literals).
pub(crate) struct Offsets<'a> {
    pub(crate) sql: &'a str,
    /// The last location found, and its byte offset.
    line: u64,
    column: u64,
    byte: usize,
}

impl<'a> Offsets<'a> {
    pub(crate) fn new(sql: &'a str) -> Offsets<'a> {
        Offsets {
            sql,
            line: 1,
            column: 1,
            byte: 0,
        }
    }

    /// The byte offset of `location` (the end of the text when it is past it).
    pub(crate) fn at(
        &mut self,
        location: datafusion::sql::sqlparser::tokenizer::Location,
    ) -> usize {
        let (line, column) = (location.line.max(1), location.column.max(1));
        if (line, column) < (self.line, self.column) {
            *self = Offsets::new(self.sql);
        }
        while self.line < line {
            match self.sql[self.byte..].find('\n') {
                Some(i) => {
                    self.byte += i + 1;
                    self.line += 1;
                    self.column = 1;
                }
                None => {
                    self.byte = self.sql.len();
                    return self.byte;
                }
            }
        }
        let ahead = (column - self.column) as usize;
        self.byte += self.sql[self.byte..]
            .char_indices()
            .nth(ahead)
            .map_or(self.sql.len() - self.byte, |(i, _)| i);
        self.column = column;
        self.byte
    }
}

/// Whether `statement` is `CHECKPOINT` (see [`checkpoint_as_pragma`]).
fn is_checkpoint(statement: &Statement) -> bool {
    matches!(statement, Statement::Pragma { name, value: None, is_eq: false }
        if name.to_string().eq_ignore_ascii_case("checkpoint"))
}

/// PostgreSQL's `CHECKPOINT` statement, which the SQL parser does not know,
/// reaches it as `PRAGMA checkpoint` (at the same position), the form the
/// session runs as a checkpoint.
fn checkpoint_as_pragma(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    let mut out = Vec::with_capacity(tokens.len() + 2);
    for (i, token) in tokens.iter().enumerate() {
        let is_checkpoint = matches!(&token.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("checkpoint"));
        let before = tokens[..i].iter().rev().find(|t| significant(t));
        let after = tokens[i + 1..].iter().find(|t| significant(t));
        let alone = before.is_none_or(|t| t.token == Token::SemiColon)
            && after.is_none_or(|t| matches!(t.token, Token::SemiColon | Token::EOF));
        if is_checkpoint && alone {
            for word in [
                Token::make_keyword("PRAGMA"),
                Token::make_word("checkpoint", None),
            ] {
                out.push(TokenWithSpan::new(word, token.span));
                out.push(TokenWithSpan::new(
                    Token::Whitespace(Whitespace::Space),
                    token.span,
                ));
            }
        } else {
            out.push(token.clone());
        }
    }
    out
}

fn end_of(sql: &str) -> Position {
    let line = sql.lines().count().max(1);
    let last = if sql.ends_with('\n') {
        ""
    } else {
        sql.lines().last().unwrap_or("")
    };
    Position {
        line: (line + usize::from(sql.ends_with('\n'))) as u64,
        column: last.chars().count() as u64 + 1,
    }
}

/// Parses an expression the sql layer writes itself.
pub(crate) fn parse_expr(sql: &str) -> datafusion::sql::sqlparser::ast::Expr {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|e| unreachable!("internal expression {sql} parses: {e}"))
}

/// Parses SQL the sql layer writes itself (templates that must be one query).
pub(crate) fn parse_query(sql: &str) -> Result<Query> {
    match parse_sql(sql)?
        .pop()
        .map(|s| Arc::unwrap_or_clone(s.statement))
    {
        Some(Statement::Query(query)) => Ok(*query),
        _ => unreachable!("internal query templates are one SELECT: {sql}"),
    }
}

/// Prepared statements a statement drops (see [`ParsedStatement::deallocates`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocation {
    /// DEALLOCATE name.
    Named(String),
    /// DEALLOCATE ALL.
    All,
    /// DISCARD ALL, which also drops portals, cursors and settings.
    Discard,
}

/// One statement of a script, parsed, ready for [`Session::run`].
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    /// Shared: a statement is kilobytes, and a query whose plan is kept runs
    /// without a copy of it (the parse cache holds the same one).
    statement: Arc<Statement>,
    /// Its text as the audit log records it (audit.rs): as the client wrote
    /// it, every literal replaced by `?`. Taken once, when it is parsed.
    logged: Arc<str>,
    /// A prepared query's parameters, bound: `statement` is then the query
    /// with its placeholders, run on its generic plan (generic.rs) or, when
    /// it has none, with the values written in.
    parameters: Option<Arc<Parameters>>,
    /// Worked out from `statement` when first needed and shared by its copies
    /// (the parse cache's, a prepared statement's), which run again and again.
    derived: Arc<Derived>,
}

/// What is worked out from a parsed statement, once.
#[derive(Debug, Default)]
struct Derived {
    /// Its text, by which its plans are kept (plan_cache.rs).
    text: OnceLock<String>,
    /// The highest `$n` in it.
    parameter_count: OnceLock<usize>,
}

impl ParsedStatement {
    /// `statement` in place of this one's, parsed from the same text (a
    /// prepared statement with its parameters written in).
    pub(crate) fn bound(&self, statement: Statement) -> ParsedStatement {
        ParsedStatement {
            statement: Arc::new(statement),
            logged: Arc::clone(&self.logged),
            parameters: None,
            derived: Arc::default(),
        }
    }

    /// This prepared query with `parameters` bound to its placeholders.
    pub(crate) fn with_parameters(&self, parameters: Parameters) -> ParsedStatement {
        ParsedStatement {
            parameters: Some(Arc::new(parameters)),
            ..self.clone()
        }
    }

    /// The statement's text, by which its plans are kept.
    pub(crate) fn text(&self) -> &str {
        self.derived.text.get_or_init(|| self.statement.to_string())
    }

    /// The highest `$n` in the statement.
    pub(crate) fn parameter_count(&self) -> usize {
        *self
            .derived
            .parameter_count
            .get_or_init(|| crate::prepare::parameter_count(&self.statement))
    }

    /// The statement, shared.
    pub(crate) fn shared(&self) -> Arc<Statement> {
        Arc::clone(&self.statement)
    }

    pub(crate) fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The statement's text as the audit log records it: every literal
    /// replaced by `?`.
    pub fn logged_text(&self) -> &str {
        &self.logged
    }

    /// The same text, shared (for the audit record).
    pub(crate) fn logged_shared(&self) -> Arc<str> {
        Arc::clone(&self.logged)
    }

    /// What the client is told when the statement finishes. Taken before the
    /// statement is moved into [`Session::run`].
    pub fn completion(&self) -> Completion {
        Completion {
            command: self.command(),
            returns_count: self.returns_count(),
        }
    }

    /// The command name PostgreSQL reports for this statement (`SELECT`, `INSERT`,
    /// `CREATE TABLE`, ...), the start of its command tag.
    fn command(&self) -> Cow<'static, str> {
        match self.statement() {
            Statement::Query(_) => "SELECT".into(),
            Statement::Insert(_) => "INSERT".into(),
            Statement::Delete(_) => "DELETE".into(),
            Statement::Update(_) => "UPDATE".into(),
            Statement::Copy { .. } => "COPY".into(),
            Statement::CreateTable(c) if c.query.is_some() => "SELECT".into(),
            Statement::CreateTable(_) => "CREATE TABLE".into(),
            Statement::CreateRole(_) => "CREATE ROLE".into(),
            Statement::CreateView(_) => "CREATE VIEW".into(),
            Statement::AlterRole { .. } => "ALTER ROLE".into(),
            Statement::Drop { object_type, .. } => format!("DROP {object_type}").into(),
            Statement::StartTransaction { begin: true, .. } => "BEGIN".into(),
            Statement::StartTransaction { .. } => "START TRANSACTION".into(),
            Statement::Commit { .. } => "COMMIT".into(),
            Statement::Rollback { .. } => "ROLLBACK".into(),
            Statement::Discard { object_type } => format!("DISCARD {object_type}").into(),
            statement if is_checkpoint(statement) => "CHECKPOINT".into(),
            statement if let Some(tag) = crate::tag_ddl::carried(statement) => tag.command().into(),
            Statement::Vacuum(_) => "VACUUM".into(),
            Statement::Declare { .. } => "DECLARE CURSOR".into(),
            Statement::Close {
                cursor: CloseCursor::All,
            } => "CLOSE CURSOR ALL".into(),
            Statement::Close { .. } => "CLOSE CURSOR".into(),
            Statement::Deallocate { name, .. }
                if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
            {
                "DEALLOCATE ALL".into()
            }
            other => {
                let text = other.to_string();
                text.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_uppercase()
                    .into()
            }
        }
    }

    /// Whether the statement is `COPY ... TO STDOUT`, whose rows go to the client
    /// as COPY data rather than as a result.
    pub fn copies_to_client(&self) -> bool {
        matches!(
            self.statement(),
            Statement::Copy {
                to: true,
                target: CopyTarget::Stdout,
                ..
            }
        )
    }

    /// What the statement deallocates of the prepared statements a protocol
    /// layer keeps: DEALLOCATE name | ALL, and DISCARD ALL.
    pub fn deallocates(&self) -> Option<Deallocation> {
        match self.statement() {
            Statement::Deallocate { name, .. }
                if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
            {
                Some(Deallocation::All)
            }
            Statement::Deallocate { name, .. } => Some(Deallocation::Named(normalize(name))),
            Statement::Discard {
                object_type: DiscardObject::ALL,
            } => Some(Deallocation::Discard),
            _ => None,
        }
    }

    /// Whether the statement's result is a one-row `count` of changed rows
    /// rather than rows to show.
    fn returns_count(&self) -> bool {
        matches!(
            self.statement(),
            Statement::Insert(_)
                | Statement::Delete(_)
                | Statement::Update(_)
                | Statement::Copy { .. }
        ) || matches!(self.statement(), Statement::CreateTable(c) if c.query.is_some())
    }
}

/// How a statement completes: its command name and whether its result is a
/// one-row `count` of changed rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    command: Cow<'static, str>,
    returns_count: bool,
}

impl Completion {
    /// The command name (`SELECT`, `INSERT`, `CREATE TABLE`, ...).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The command name, taken.
    pub(crate) fn into_command(self) -> Cow<'static, str> {
        self.command
    }

    /// Whether the result is a one-row `count` of changed rows rather than rows
    /// to show.
    pub fn returns_count(&self) -> bool {
        self.returns_count
    }

    /// Whether a result with `schema` has rows to show (not a count, not empty).
    pub fn shows_rows(&self, schema: &Schema) -> bool {
        !self.returns_count && !schema.fields().is_empty()
    }

    /// The PostgreSQL command tag for the finished statement (`INSERT 0 3`,
    /// `SELECT 5`, `CREATE TABLE`): the tag the statement chose at run time, if
    /// its result `schema` carries one (COMMIT of an aborted block says
    /// `ROLLBACK`), else built from `rows`, the count or the number of rows sent.
    pub fn tag(&self, schema: &Schema, rows: u64) -> String {
        if let Some(tag) = schema.metadata().get(COMMAND_TAG_KEY) {
            return tag.clone();
        }
        let command = &self.command;
        match command.as_ref() {
            "INSERT" => format!("INSERT 0 {rows}"),
            "SELECT" | "DELETE" | "UPDATE" | "COPY" | "FETCH" => format!("{command} {rows}"),
            _ => command.to_string(),
        }
    }
}

impl std::fmt::Display for ParsedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.statement.fmt(f)
    }
}

/// "CreateView" → "CREATE VIEW", for messages about DataFusion's DDL.
fn statement_name(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The number of rows a row-changing statement reports in its `count` result.
pub fn changed_rows(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0)
}

/// A stream over batches already in memory. Shared batches (the rows a query
/// keeps, plan_cache.rs) are read again without copying the list of them.
pub fn memory_stream(
    schema: SchemaRef,
    batches: impl Into<Arc<[RecordBatch]>>,
) -> SendableRecordBatchStream {
    Box::pin(InMemory {
        schema,
        batches: batches.into(),
        next: 0,
    })
}

/// The stream of [`memory_stream`].
struct InMemory {
    schema: SchemaRef,
    batches: Arc<[RecordBatch]>,
    /// The batch to give next.
    next: usize,
}

impl futures::Stream for InMemory {
    type Item = datafusion::common::Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let batch = self.batches.get(self.next).cloned();
        self.next += usize::from(batch.is_some());
        std::task::Poll::Ready(batch.map(Ok))
    }
}

impl RecordBatchStream for InMemory {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// A stream with no columns and no rows (the result of DDL).
pub(crate) fn empty_stream() -> SendableRecordBatchStream {
    memory_stream(Arc::new(Schema::empty()), [])
}

/// An empty result whose command tag is `tag`.
fn tagged_empty_stream(tag: &str) -> SendableRecordBatchStream {
    let metadata = HashMap::from([(COMMAND_TAG_KEY.to_string(), tag.to_string())]);
    let schema = Arc::new(Schema::new_with_metadata(Vec::<Field>::new(), metadata));
    memory_stream(schema, [])
}

/// The one-row `count` result of a statement that changes rows, as INSERT has.
pub(crate) fn count_stream(count: u64) -> SendableRecordBatchStream {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt64Array::from(vec![count]))],
    )
    .expect("count batch matches its schema");
    memory_stream(schema, [batch])
}

/// The catalog name of a table reference, checked to exist.
pub(crate) fn resolve_table(
    session: &Session,
    name: &datafusion::sql::sqlparser::ast::ObjectName,
) -> Result<Arc<cohortdb_engine::Table>> {
    let table = names::table_name(name)?;
    if session.catalog.view(&table).is_some() {
        return Err(Error::engine_at(
            cohortdb_engine::Error::WrongObjectType {
                name: table,
                kind: "table",
            },
            position_of(name),
        ));
    }
    session
        .catalog
        .table(&table)
        .map_err(|e| Error::engine_at(e, position_of(name)))
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::tokenizer::Location;

    use super::Offsets;

    /// A future is moved by copying it whole, several times on its way from
    /// the server to a kept plan, and each level holds the next one: these
    /// stay small because everything large (planning, statements other than
    /// queries, a Statement held by value) is boxed where it is awaited. A
    /// `SELECT 1` run again copied 30 kilobytes of futures per execution when
    /// one of them was not. The bounds are for unoptimised builds, whose
    /// futures are larger.
    #[test]
    fn futures_on_the_way_to_a_kept_plan_stay_small() -> crate::Result<()> {
        use std::mem::size_of_val;
        let session =
            super::Session::new(std::sync::Arc::new(cohortdb_engine::Catalog::in_memory()));
        let statement = session.parse("SELECT 1")?.remove(0);
        let run = size_of_val(&session.run(statement.clone()));
        let run_statement = size_of_val(&session.run_statement(statement.clone()));
        let generic_plan = size_of_val(&session.generic_plan(statement.statement(), "SELECT 1"));
        assert!(run <= 1024, "Session::run's future is {run} bytes");
        assert!(
            run_statement <= 512,
            "run_statement's future is {run_statement} bytes"
        );
        assert!(
            generic_plan <= 256,
            "generic_plan's future is {generic_plan} bytes"
        );
        Ok(())
    }

    #[test]
    fn offsets_walk_forward_and_start_over_when_asked_for_an_earlier_place() {
        let sql = "SELECT 'é',\n  ü; -- x\nSELECT 2";
        let mut offsets = Offsets::new(sql);
        let at = |offsets: &mut Offsets<'_>, line, column| offsets.at(Location::new(line, column));
        assert_eq!(at(&mut offsets, 1, 1), 0);
        assert_eq!(at(&mut offsets, 1, 8), 7); // 'é'
        assert_eq!(at(&mut offsets, 1, 11), 11); // ',' after the two-byte é
        assert_eq!(at(&mut offsets, 2, 3), 15); // ü
        assert_eq!(at(&mut offsets, 3, 8), sql.len() - 1); // 2
        assert_eq!(at(&mut offsets, 2, 4), 17); // ';', found again from the start
        assert_eq!(at(&mut offsets, 9, 1), sql.len()); // past the end
    }
}
