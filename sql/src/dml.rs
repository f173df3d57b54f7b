//! DELETE and UPDATE.
//!
//! Both are rewritten into a query over the table's row-id relation (see
//! [`crate::provider`]) that keeps the user's WHERE clause as written, so every
//! expression DataFusion supports works there, subqueries included, and errors
//! point into the user's text. The query yields the row ids to delete (and, for
//! UPDATE, the new rows); the engine then applies them in one commit.

use std::sync::Arc;

use arrow::array::RecordBatch;
use cohortdb_engine::catalog::row_ids;
use cohortdb_engine::roles::{Object, Privilege};
use cohortdb_engine::{Error as EngineError, ROW_ID_COLUMN, Table};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, DataType, Delete, Expr, FromTable, Ident, Insert, Query, SelectItem, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, Update, Value,
};
use futures::TryStreamExt;

use crate::ddl::cast_batches;
use crate::error::{Error, Result, to_datafusion};
use crate::names::{self, position_of, quote};
use crate::provider::{ROW_ID_RELATION_PREFIX, commit};
use crate::session::{Session, count_stream, parse_query, resolve_table};

/// INSERT runs through DataFusion, which types VALUES lists by the target
/// columns, NOT NULL included, and then rejects a NULL there with its own message
/// about "column1". This puts the PostgreSQL error, naming the table column, in
/// its place.
pub(crate) async fn insert(
    session: &Session,
    mut insert: Insert,
) -> Result<SendableRecordBatchStream> {
    let columns = match &insert.table {
        TableObject::TableName(name) => {
            let table = resolve_table(session, name)?;
            crate::grants::check(
                session,
                Privilege::Insert,
                &Object::Table(table.name().to_string()),
            )?;
            let columns: Vec<String> = if insert.columns.is_empty() {
                table
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            } else {
                insert
                    .columns
                    .iter()
                    .map(|c| {
                        c.0.last()
                            .and_then(|p| p.as_ident())
                            .map(names::normalize)
                            .unwrap_or_default()
                    })
                    .collect()
            };
            let schema = table.schema();
            let bytea: Vec<bool> = columns
                .iter()
                .map(|c| {
                    schema
                        .field_with_name(c)
                        .is_ok_and(|f| f.data_type() == &arrow::datatypes::DataType::Binary)
                })
                .collect();
            bytea_literals(&mut insert, &bytea);
            Some((table.name().to_string(), columns))
        }
        TableObject::TableFunction(_) | TableObject::TableQuery(_) => None,
    };
    let Some((table, columns)) = columns else {
        return session
            .run_datafusion(Arc::new(Statement::Insert(insert)), None)
            .await;
    };
    // DataFusion raises the error while planning small VALUES lists and while
    // executing larger ones; both are translated.
    let stream = session
        .run_datafusion(Arc::new(Statement::Insert(insert)), None)
        .await
        .map_err(
            |e| match values_null_error(&e.to_string(), &table, &columns) {
                Some(engine) => Error::from(engine),
                None => e,
            },
        )?;
    let schema = stream.schema();
    let mapped =
        stream.map_err(
            move |e| match values_null_error(&e.to_string(), &table, &columns) {
                Some(engine) => to_datafusion(engine),
                None => e,
            },
        );
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, mapped)))
}

/// String literals in a VALUES list bound for bytea columns are read in
/// PostgreSQL's bytea input form (`'\x0102'`), as casts to bytea are.
fn bytea_literals(insert: &mut Insert, bytea: &[bool]) {
    let Some(source) = insert.source.as_mut() else {
        return;
    };
    let SetExpr::Values(values) = source.body.as_mut() else {
        return;
    };
    for row in &mut values.rows {
        for (expr, is_bytea) in row.iter_mut().zip(bytea) {
            if *is_bytea
                && matches!(expr, Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)))
            {
                *expr = crate::pg_catalog::rewrite::cast(expr.clone(), DataType::Bytea);
            }
        }
    }
}

fn values_null_error(text: &str, table: &str, columns: &[String]) -> Option<EngineError> {
    let position = text
        .split("Column 'column")
        .nth(1)
        .and_then(|rest| rest.split_once("' is declared as non-nullable"))
        .and_then(|(n, _)| n.parse::<usize>().ok())?;
    let column = columns.get(position.checked_sub(1)?)?;
    Some(EngineError::NotNullViolation {
        table: table.to_string(),
        column: column.clone(),
    })
}

pub(crate) async fn delete(session: &Session, delete: Delete) -> Result<SendableRecordBatchStream> {
    let position = position_of(&delete.delete_token.0);
    let from = match delete.from {
        FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
    };
    let unsupported = [
        (delete.using.is_some(), "DELETE ... USING"),
        (delete.returning.is_some(), "DELETE ... RETURNING"),
        (
            !delete.order_by.is_empty() || delete.limit.is_some(),
            "DELETE ... ORDER BY/LIMIT",
        ),
        (
            from.len() != 1 || !delete.tables.is_empty(),
            "DELETE from several tables",
        ),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
        return Err(Error::unsupported(*what, position));
    }
    let target = target(session, &from[0], Privilege::Delete)?;
    let count = retrying_conflicts(|| async {
        let query = row_query(&target, Vec::new(), delete.selection.clone())?;
        let batches = collect(session, query).await?;
        let ids = all_row_ids(&batches)?;
        Ok(
            commit(session.catalog(), &target.table, move |catalog, table| {
                catalog.delete(table, &ids)
            })
            .await?,
        )
    })
    .await?;
    Ok(count_stream(count))
}

/// Times a DELETE or UPDATE is run again when the rows it read were replaced
/// before it wrote (by a checkpoint, a compaction or another statement).
const CONFLICT_ATTEMPTS: usize = 4;

/// Runs `statement` (which reads rows, then writes by row id) again while it
/// fails because the rows it read were replaced meanwhile (SQLSTATE 40001):
/// each run reads the table afresh. After the last attempt the conflict is
/// the statement's error.
async fn retrying_conflicts<F, Fut>(statement: F) -> Result<u64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut attempt = 1;
    loop {
        match statement().await {
            Err(Error::Engine {
                source: EngineError::Conflict(_),
                ..
            }) if attempt < CONFLICT_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

pub(crate) async fn update(session: &Session, update: Update) -> Result<SendableRecordBatchStream> {
    let position = position_of(&update.update_token.0);
    let unsupported = [
        (update.from.is_some(), "UPDATE ... FROM"),
        (update.returning.is_some(), "UPDATE ... RETURNING"),
        (update.or.is_some(), "UPDATE OR ..."),
        (
            !update.order_by.is_empty() || update.limit.is_some(),
            "UPDATE ... ORDER BY/LIMIT",
        ),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
        return Err(Error::unsupported(*what, position));
    }
    let target = target(session, &update.table, Privilege::Update)?;
    let schema = target.table.schema();
    // One new value per table column: the assigned expression or the old value.
    let mut values: Vec<Option<Expr>> = vec![None; schema.fields().len()];
    for assignment in update.assignments {
        let AssignmentTarget::ColumnName(name) = &assignment.target else {
            return Err(Error::unsupported(
                "assigning to a tuple of columns",
                position_of(&assignment.value),
            ));
        };
        let column_name = names::normalize(
            name.0
                .last()
                .and_then(|p| p.as_ident())
                .expect("column names are identifiers"),
        );
        let index = schema.index_of(&column_name).map_err(|_| {
            Error::engine_at(
                EngineError::ColumnNotFound {
                    table: target.table.name().to_string(),
                    column: column_name.clone(),
                },
                position_of(name),
            )
        })?;
        if values[index].is_some() {
            return Err(Error::invalid(
                format!("multiple assignments to same column \"{column_name}\""),
                position_of(name),
            ));
        }
        values[index] = Some(assignment.value);
    }
    let count = retrying_conflicts(|| async {
        let query = row_query(&target, values.clone(), update.selection.clone())?;
        let batches = collect(session, query).await?;
        let ids = all_row_ids(&batches)?;
        let rows: Vec<RecordBatch> = batches
            .iter()
            .map(|b| b.project(&(1..b.num_columns()).collect::<Vec<_>>()))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Execution {
                message: e.to_string(),
            })?;
        let rows = cast_batches(&schema, rows)?;
        Ok(
            commit(session.catalog(), &target.table, move |catalog, table| {
                catalog.update(table, &ids, rows)
            })
            .await?,
        )
    })
    .await?;
    Ok(count_stream(count))
}

/// The table a DELETE or UPDATE changes and the name its WHERE clause uses for it.
struct Target {
    table: Arc<Table>,
    alias: Ident,
}

/// The table a DELETE or UPDATE changes, if the session holds `privilege`
/// on it (reading the rows to change needs SELECT too, checked by the scan).
fn target(session: &Session, from: &TableWithJoins, privilege: Privilege) -> Result<Target> {
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return Err(Error::unsupported(
            "changing rows of anything but a table",
            position_of(&from.relation),
        ));
    };
    if !from.joins.is_empty() {
        return Err(Error::unsupported(
            "joins in DELETE or UPDATE",
            position_of(&from.relation),
        ));
    }
    let table = resolve_table(session, name)?;
    crate::grants::check(session, privilege, &Object::Table(table.name().to_string()))?;
    let alias = match alias {
        Some(alias) => alias.name.clone(),
        None => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .expect("table names are identifiers")
            .clone(),
    };
    Ok(Target { table, alias })
}

/// `SELECT row_id [, new values...] FROM <row-id relation> AS alias WHERE ...`,
/// built from a template and then given the user's own expressions (with their
/// positions in the original text).
fn row_query(target: &Target, values: Vec<Option<Expr>>, selection: Option<Expr>) -> Result<Query> {
    let schema = target.table.schema();
    let mut projection = vec![quote(ROW_ID_COLUMN)];
    for (field, value) in schema.fields().iter().zip(&values) {
        projection.push(match value {
            Some(_) => "NULL".to_string(),
            None => format!("{}.{}", target.alias, quote(field.name())),
        });
    }
    let relation = quote(&format!("{ROW_ID_RELATION_PREFIX}{}", target.table.name()));
    let template = format!(
        "SELECT {} FROM {relation} AS {}",
        projection.join(", "),
        target.alias
    );
    let mut query = parse_query(&template)?;
    let SetExpr::Select(select) = query.body.as_mut() else {
        unreachable!("the template is a plain SELECT");
    };
    select.selection = selection;
    for (item, value) in select.projection.iter_mut().skip(1).zip(values) {
        if let (SelectItem::UnnamedExpr(expr), Some(value)) = (item, value) {
            *expr = value;
        }
    }
    Ok(query)
}

async fn collect(session: &Session, query: Query) -> Result<Vec<RecordBatch>> {
    let plan = session.plan_query(query).await.map_err(hide_row_id)?;
    Ok(session.stream_plan(plan).await?.try_collect().await?)
}

/// Planning errors list the relation's columns; the hidden row id is not one of
/// the user's.
fn hide_row_id(error: Error) -> Error {
    match error {
        Error::Plan { message, position } if message.contains(ROW_ID_COLUMN) => {
            let message = message
                .split(", ")
                .filter(|part| !part.contains(ROW_ID_COLUMN))
                .collect::<Vec<_>>()
                .join(", ");
            let message = if message.ends_with('.') {
                message
            } else {
                format!("{message}.")
            };
            Error::Plan { message, position }
        }
        other => other,
    }
}

fn all_row_ids(batches: &[RecordBatch]) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for batch in batches {
        ids.extend(row_ids(batch.column(0).as_ref())?);
    }
    Ok(ids)
}
