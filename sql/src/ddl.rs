//! CREATE TABLE [AS], DROP TABLE, CREATE/DROP VIEW and the mapping from SQL type
//! names to column types.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BinaryArray, RecordBatch};
use arrow::compute::{CastOptions, cast, cast_with_options};
use arrow::datatypes::DataType as ArrowType;
use arrow::error::ArrowError;
use cohortdb_engine::{ColumnDef, ColumnType};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{
    self, ColumnOption, CreateTable, CreateView, DataType, ExactNumberInfo, ObjectName,
    TimezoneInfo,
};
use futures::TryStreamExt;

use crate::error::{Error, Position, Result, TransactionError};
use crate::names::{self, position_of};
use crate::pg_catalog::types::bytea_input;
use crate::session::{Session, count_stream, empty_stream};

/// Checks that the session may create `relations` (tables or views: only
/// superusers) and uses none of the `unsupported` options that are set.
fn check_create(
    session: &Session,
    relations: &str,
    position: Option<Position>,
    unsupported: &[(bool, &str)],
) -> Result<()> {
    if !session.is_superuser() {
        return Err(Error::PermissionDenied {
            message: format!(
                "permission denied for schema public (only superusers create {relations})"
            ),
        });
    }
    match unsupported.iter().find(|(set, _)| *set) {
        Some((_, what)) => Err(Error::unsupported(*what, position)),
        None => Ok(()),
    }
}

/// Precision and scale of a DECIMAL/NUMERIC declared without them.
const DEFAULT_DECIMAL: (u8, i8) = (38, 10);

pub(crate) async fn create_table(
    session: &Session,
    create: CreateTable,
) -> Result<SendableRecordBatchStream> {
    let position = position_of(&create.name);
    check_create(
        session,
        "tables",
        position,
        &[
            (create.or_replace, "CREATE OR REPLACE TABLE"),
            (create.temporary, "CREATE TEMPORARY TABLE"),
            (create.external, "CREATE EXTERNAL TABLE"),
            (create.like.is_some(), "CREATE TABLE ... LIKE"),
            (
                !create.constraints.is_empty(),
                "table constraints (PRIMARY KEY, UNIQUE, CHECK, FOREIGN KEY)",
            ),
        ],
    )?;
    let name = names::table_name(&create.name)?;
    match create.query {
        Some(query) => {
            create_table_as(
                session,
                &name,
                create.columns.is_empty(),
                *query,
                create.if_not_exists,
                position,
            )
            .await
        }
        None => {
            let columns = create
                .columns
                .iter()
                .map(column_def)
                .collect::<Result<Vec<_>>>()?;
            session
                .catalog()
                .create_table(&name, &columns, create.if_not_exists)
                .map_err(|e| Error::engine_at(e, position))?;
            Ok(empty_stream())
        }
    }
}

/// CREATE TABLE name AS query: the table takes the query's column names and types.
async fn create_table_as(
    session: &Session,
    name: &str,
    no_column_list: bool,
    query: ast::Query,
    if_not_exists: bool,
    position: Option<crate::Position>,
) -> Result<SendableRecordBatchStream> {
    if !no_column_list {
        return Err(Error::unsupported(
            "a column list with CREATE TABLE ... AS",
            position,
        ));
    }
    if if_not_exists && session.catalog().has_relation(name) {
        return Ok(count_stream(0));
    }
    let plan = session.plan_query(query).await?;
    // The query's columns, all nullable: a query's output carries no constraints.
    let columns: Vec<ColumnDef> =
        cohortdb_engine::types::columns_of(&crate::names::client_schema(plan.schema().inner()))
            .map_err(|e| Error::engine_at(e, position))?
            .into_iter()
            .map(|c| ColumnDef {
                nullable: true,
                ..c
            })
            .collect();
    let batches: Vec<RecordBatch> = session.stream_plan(plan).await?.try_collect().await?;
    let catalog = session.catalog();
    catalog
        .create_table(name, &columns, false)
        .map_err(|e| Error::engine_at(e, position))?;
    let table = catalog.table(name)?;
    let rows =
        cast_batches(&table.schema(), batches).and_then(|rows| Ok(catalog.append(&table, rows)?));
    match rows {
        Ok(count) => Ok(count_stream(count)),
        Err(e) => {
            // Leave no empty table behind a failed CREATE TABLE AS.
            let _ = catalog.drop_table(name, true);
            Err(e)
        }
    }
}

/// Casts batches to a table's column types (checked: overflow is an error).
/// A text column read as bytea values ([`bytea_input`]).
fn bytea_column(column: &ArrayRef) -> std::result::Result<ArrayRef, ArrowError> {
    let text = cast(column, &ArrowType::Utf8)?;
    let values = text
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(bytea_input).transpose())
        .collect::<std::result::Result<BinaryArray, String>>()
        .map_err(ArrowError::CastError)?;
    Ok(Arc::new(values))
}

pub(crate) fn cast_batches(
    schema: &arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    batches
        .into_iter()
        .map(|batch| {
            let columns = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(
                    |(field, column)| match (column.data_type(), field.data_type()) {
                        // Text into bytea is PostgreSQL's text input form.
                        (
                            ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View,
                            ArrowType::Binary,
                        ) => bytea_column(column),
                        _ => cast_with_options(column, field.data_type(), &options),
                    },
                )
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Execution {
                    message: e.to_string(),
                })?;
            let loose = Arc::new(arrow::datatypes::Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ));
            RecordBatch::try_new(loose, columns).map_err(|e| Error::Execution {
                message: e.to_string(),
            })
        })
        .collect()
}

/// What a DROP drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    Table,
    View,
}

impl Relation {
    fn name(self) -> &'static str {
        match self {
            Relation::Table => "table",
            Relation::View => "view",
        }
    }
}

/// `DROP TABLE | VIEW [IF EXISTS] name, ...` (superusers; a view's grants go
/// with it). Every name is checked first so that a failing DROP of several
/// drops none: 42P01 for a missing one (unless `if_exists`), 42809 for one of
/// the other kind.
pub(crate) fn drop_relations(
    session: &Session,
    kind: Relation,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<SendableRecordBatchStream> {
    let noun = kind.name();
    if let (false, Some(name)) = (session.is_superuser(), names.first()) {
        return Err(Error::PermissionDenied {
            message: format!("must be owner of {noun} {name} (only superusers drop {noun}s)"),
        });
    }
    let catalog = session.catalog();
    let mut checked = Vec::with_capacity(names.len());
    for name in names {
        let relation = names::table_name(name)?;
        let is_table = catalog.table(&relation).is_ok();
        let is_view = catalog.view(&relation).is_some();
        let (is_kind, is_other) = match kind {
            Relation::Table => (is_table, is_view),
            Relation::View => (is_view, is_table),
        };
        let error = if is_other {
            Some(cohortdb_engine::Error::WrongObjectType {
                name: relation.clone(),
                kind: noun,
            })
        } else if !is_kind && !if_exists {
            Some(cohortdb_engine::Error::TableNotFound(relation.clone()))
        } else {
            None
        };
        if let Some(error) = error {
            return Err(Error::engine_at(error, position_of(name)));
        }
        checked.push(relation);
    }
    for relation in checked {
        match kind {
            Relation::Table => catalog.drop_table(&relation, if_exists)?,
            Relation::View => catalog.drop_view(&relation, if_exists)?,
        };
    }
    Ok(empty_stream())
}

/// `CREATE [OR REPLACE] VIEW name AS query` (superusers): the query is planned
/// now, to check it and learn its columns, and kept as text; reading the
/// view plans it again, reading its tables with its owner's privileges.
pub(crate) async fn create_view(
    session: &Session,
    create: CreateView,
) -> Result<SendableRecordBatchStream> {
    let position = position_of(&create.name);
    check_create(
        session,
        "views",
        position,
        &[
            (create.materialized, "CREATE MATERIALIZED VIEW"),
            (create.temporary, "CREATE TEMPORARY VIEW"),
            (
                !create.columns.is_empty(),
                "column names after the view name (name the columns in its query)",
            ),
            (create.if_not_exists, "CREATE VIEW IF NOT EXISTS"),
        ],
    )?;
    let name = names::table_name(&create.name)?;
    let plan = session.plan_query(*create.query.clone()).await?;
    let mut columns: Vec<cohortdb_engine::views::ViewColumn> = Vec::new();
    // The names a client sees: repeats are not made unique there.
    for field in names::client_schema(plan.schema().inner()).fields() {
        if columns.iter().any(|c| c.name == *field.name()) {
            return Err(Error::engine_at(
                cohortdb_engine::Error::DuplicateColumn {
                    column: field.name().clone(),
                },
                position_of(create.query.as_ref()),
            ));
        }
        columns.push(cohortdb_engine::views::ViewColumn {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
        });
    }
    let view = cohortdb_engine::views::View {
        name,
        query: create.query.to_string(),
        columns,
        owner: Some(session.user()).filter(|user| session.catalog().role(user).is_some()),
    };
    session
        .catalog()
        .put_view(view, create.or_replace)
        .map_err(|e| Error::engine_at(e, position))?;
    Ok(empty_stream())
}

/// `VACUUM [FULL] [table]`: rewrites the segment files holding deleted rows,
/// of one table or all, so that those rows are gone from disk, and merges
/// small segment files. Like PostgreSQL's, it cannot run in a transaction
/// block.
pub(crate) fn vacuum(session: &Session, vacuum: ast::VacuumStatement) -> Result<()> {
    let ast::VacuumStatement {
        full: _,
        sort_only,
        delete_only,
        reindex,
        recluster,
        table_name,
        threshold,
        boost,
    } = vacuum;
    if sort_only || delete_only || reindex || recluster || threshold.is_some() || boost {
        return Err(Error::unsupported(
            "VACUUM options other than FULL and a table name",
            None,
        ));
    }
    if session.lock().block.is_some() {
        return Err(Error::Transaction(TransactionError::InsideBlock {
            statement: "VACUUM",
        }));
    }
    let table = match &table_name {
        Some(name) => Some(crate::session::resolve_table(session, name)?),
        None => None,
    };
    session.catalog().vacuum(table.as_ref().map(|t| t.name()))?;
    Ok(())
}

fn column_def(column: &ast::ColumnDef) -> Result<ColumnDef> {
    let position = Position::from_location(column.name.span.start);
    let column_type = column_type(&column.data_type).map_err(|e| match e {
        Error::Unsupported { feature, .. } => Error::Unsupported { feature, position },
        other => other,
    })?;
    let mut nullable = true;
    let mut user_key = false;
    for option in &column.options {
        match &option.option {
            ColumnOption::Null => nullable = true,
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Comment(c) if c == crate::tag_ddl::USER_KEY_COMMENT => user_key = true,
            other => {
                return Err(Error::unsupported(
                    format!("column option {other}"),
                    position,
                ));
            }
        }
    }
    let column = ColumnDef::new(names::normalize(&column.name), column_type, nullable);
    Ok(if user_key { column.user_key() } else { column })
}

/// The column type a SQL type name declares.
pub(crate) fn column_type(data_type: &DataType) -> Result<ColumnType> {
    Ok(match data_type {
        DataType::Boolean | DataType::Bool => ColumnType::Boolean,
        DataType::SmallInt(_) | DataType::Int2(_) => ColumnType::SmallInt,
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => ColumnType::Int,
        DataType::BigInt(_) | DataType::Int8(_) => ColumnType::BigInt,
        DataType::Real | DataType::Float4 => ColumnType::Real,
        DataType::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => ColumnType::Real,
        DataType::Float(_) | DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 => {
            ColumnType::Double
        }
        DataType::Decimal(info) | DataType::Numeric(info) | DataType::Dec(info) => decimal(info)?,
        DataType::Text
        | DataType::Varchar(_)
        | DataType::CharacterVarying(_)
        | DataType::CharVarying(_)
        | DataType::String(_) => ColumnType::Text,
        DataType::Date => ColumnType::Date,
        DataType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            ColumnType::Timestamp
        }
        DataType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            ColumnType::TimestampTz
        }
        DataType::Bytea => ColumnType::Bytea,
        other => return Err(Error::unsupported(format!("type {other}"), None)),
    })
}

fn decimal(info: &ExactNumberInfo) -> Result<ColumnType> {
    let (precision, scale) = match info {
        ExactNumberInfo::None => DEFAULT_DECIMAL,
        ExactNumberInfo::Precision(p) => (narrow(*p)?, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (
            narrow(*p)?,
            narrow(u64::try_from(*s).unwrap_or(u64::MAX))? as i8,
        ),
    };
    Ok(ColumnType::decimal(precision, scale)?)
}

fn narrow(value: u64) -> Result<u8> {
    u8::try_from(value)
        .ok()
        .filter(|v| *v <= 38)
        .ok_or_else(|| {
            Error::invalid(
                format!("DECIMAL precision and scale must be at most 38, got {value}"),
                None,
            )
        })
}
