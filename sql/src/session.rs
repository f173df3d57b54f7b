//! A SQL session: one DataFusion context over the shared engine catalog, plus the
//! statements cohortdb runs itself.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use cohortdb_engine::Catalog;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Query, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::TryStreamExt;

use crate::error::{Error, Position, Result};
use crate::names::{self, position_of};
use crate::provider::EngineSchema;
use crate::{copy, ddl, dml};

/// The name of the one catalog (database) a session sees.
pub const CATALOG_NAME: &str = "cohortdb";
/// The name of the schema holding every table.
pub const SCHEMA_NAME: &str = "public";

/// Deepest nesting of expressions and subqueries the parser accepts.
const PARSER_RECURSION_MAX: usize = 64;

/// A SQL session over a catalog. Sessions are cheap; each has its own settings.
pub struct Session {
    ctx: SessionContext,
    catalog: Arc<Catalog>,
}

impl Session {
    pub fn new(catalog: Arc<Catalog>) -> Session {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_NAME);
        config.options_mut().sql_parser.collect_spans = true;
        // SQL that functions plan themselves (experiment_report) reads as ours does.
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        let ctx = SessionContext::new_with_config(config);
        let schemas = MemoryCatalogProvider::new();
        schemas
            .register_schema(
                SCHEMA_NAME,
                Arc::new(EngineSchema {
                    catalog: Arc::clone(&catalog),
                }),
            )
            .expect("a fresh catalog provider accepts a schema");
        ctx.register_catalog(CATALOG_NAME, Arc::new(schemas));
        crate::functions::register(&ctx);
        Session { ctx, catalog }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Parses a string of `;`-separated statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        Ok(parse_sql(sql)?.into_iter().map(ParsedStatement).collect())
    }

    /// Runs every statement in `sql` and returns the rows of the last one.
    pub async fn execute(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let stream = self.execute_stream(sql).await?;
        stream.try_collect().await.map_err(Error::from)
    }

    /// Runs every statement in `sql` but the last to completion and returns the
    /// last one's rows as a stream.
    pub async fn execute_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        let mut statements = parse_sql(sql)?;
        let Some(last) = statements.pop() else {
            return Ok(empty_stream());
        };
        for statement in statements {
            let stream = self.run_statement(statement).await?;
            let _: Vec<RecordBatch> = stream.try_collect().await?;
        }
        self.run_statement(last).await
    }

    /// Runs one parsed statement and returns its rows as a stream.
    pub async fn run(&self, statement: ParsedStatement) -> Result<SendableRecordBatchStream> {
        self.run_statement(statement.0).await
    }

    async fn run_statement(&self, statement: Statement) -> Result<SendableRecordBatchStream> {
        match statement {
            Statement::CreateTable(create) => ddl::create_table(self, create).await,
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => ddl::drop_tables(self, &names, if_exists),
            Statement::Insert(insert) => dml::insert(self, insert).await,
            Statement::Delete(delete) => dml::delete(self, delete).await,
            Statement::Update(update) => dml::update(self, update).await,
            statement @ Statement::Copy { .. } => copy::copy(self, statement).await,
            other => self.run_datafusion(other).await,
        }
    }

    /// Plans a query with DataFusion (used for SELECTs inside our own statements).
    pub(crate) async fn plan_query(&self, query: Query) -> Result<LogicalPlan> {
        self.plan(Statement::Query(Box::new(query))).await
    }

    pub(crate) async fn plan(&self, statement: Statement) -> Result<LogicalPlan> {
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await?;
        Ok(plan)
    }

    /// Runs a plan and returns its rows.
    pub(crate) async fn stream_plan(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        let frame = self.ctx.execute_logical_plan(plan).await?;
        Ok(frame.execute_stream().await?)
    }

    pub(crate) async fn run_datafusion(
        &self,
        statement: Statement,
    ) -> Result<SendableRecordBatchStream> {
        let position = position_of(&statement);
        let plan = self.plan(statement).await?;
        if let LogicalPlan::Ddl(ddl) = &plan {
            return Err(Error::unsupported(statement_name(ddl.name()), position));
        }
        self.stream_plan(plan).await
    }
}

fn parse_sql(sql: &str) -> Result<Vec<Statement>> {
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(PARSER_RECURSION_MAX)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements())
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

/// Parses SQL the sql layer writes itself (templates that must be one query).
pub(crate) fn parse_query(sql: &str) -> Result<Query> {
    match parse_sql(sql)?.pop() {
        Some(Statement::Query(query)) => Ok(*query),
        _ => unreachable!("internal query templates are one SELECT: {sql}"),
    }
}

/// One statement of a script, parsed, ready for [`Session::run`].
#[derive(Debug, Clone)]
pub struct ParsedStatement(Statement);

impl ParsedStatement {
    pub(crate) fn from_statement(statement: Statement) -> ParsedStatement {
        ParsedStatement(statement)
    }

    pub(crate) fn statement(&self) -> &Statement {
        &self.0
    }

    /// The command name PostgreSQL reports for this statement (`SELECT`, `INSERT`,
    /// `CREATE TABLE`, ...), the start of its command tag.
    pub fn command(&self) -> String {
        match &self.0 {
            Statement::Query(_) => "SELECT".into(),
            Statement::Insert(_) => "INSERT".into(),
            Statement::Delete(_) => "DELETE".into(),
            Statement::Update(_) => "UPDATE".into(),
            Statement::Copy { .. } => "COPY".into(),
            Statement::CreateTable(c) if c.query.is_some() => "SELECT".into(),
            Statement::CreateTable(_) => "CREATE TABLE".into(),
            Statement::Drop { object_type, .. } => format!("DROP {object_type}"),
            other => {
                let text = other.to_string();
                text.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_uppercase()
            }
        }
    }

    /// Whether the statement's result is a one-row `count` of changed rows
    /// rather than rows to show.
    pub fn returns_count(&self) -> bool {
        matches!(
            &self.0,
            Statement::Insert(_)
                | Statement::Delete(_)
                | Statement::Update(_)
                | Statement::Copy { .. }
        ) || matches!(&self.0, Statement::CreateTable(c) if c.query.is_some())
    }

    /// The PostgreSQL command tag for a finished statement (`INSERT 0 3`,
    /// `SELECT 5`, `CREATE TABLE`); `rows` is the count or the number of rows sent.
    pub fn command_tag(&self, rows: u64) -> String {
        let command = self.command();
        match command.as_str() {
            "INSERT" => format!("INSERT 0 {rows}"),
            "SELECT" | "DELETE" | "UPDATE" | "COPY" => format!("{command} {rows}"),
            _ => command,
        }
    }
}

impl std::fmt::Display for ParsedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
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

/// A stream over batches already in memory.
pub fn memory_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
    Box::pin(MemoryStream::try_new(batches, schema, None).expect("batches match their schema"))
}

/// A stream with no columns and no rows (the result of DDL).
pub(crate) fn empty_stream() -> SendableRecordBatchStream {
    Box::pin(
        MemoryStream::try_new(Vec::new(), Arc::new(Schema::empty()), None)
            .expect("an empty stream is valid"),
    )
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
    Box::pin(MemoryStream::try_new(vec![batch], schema, None).expect("a one-batch stream is valid"))
}

/// The catalog name of a table reference, checked to exist.
pub(crate) fn resolve_table(
    session: &Session,
    name: &datafusion::sql::sqlparser::ast::ObjectName,
) -> Result<Arc<cohortdb_engine::Table>> {
    let table = names::table_name(name)?;
    session
        .catalog
        .table(&table)
        .map_err(|e| Error::engine_at(e, position_of(name)))
}
