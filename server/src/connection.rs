//! One client connection: a SQL session answering the simple and extended query
//! protocols.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use cohortdb_sql::{Description, ParamValue, ParsedStatement, SendableRecordBatchStream, Session};
use futures::{Sink, StreamExt, TryStreamExt, stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use crate::encode;

/// The handlers of one connection, sharing its session.
pub(crate) struct Connection {
    session: Arc<Session>,
    parser: Arc<StatementParser>,
}

impl Connection {
    pub(crate) fn new(session: Session) -> Connection {
        let session = Arc::new(session);
        Connection {
            parser: Arc::new(StatementParser {
                session: Arc::clone(&session),
            }),
            session,
        }
    }

    /// Runs one statement and turns its result into a protocol response.
    async fn respond(
        &self,
        statement: ParsedStatement,
        format: &Format,
        materialize: bool,
    ) -> Result<Response, cohortdb_sql::Error> {
        let returns_count = statement.returns_count();
        let stream = self.session.run(statement.clone()).await?;
        if returns_count {
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            let rows = cohortdb_sql::changed_rows(&batches);
            return Ok(Response::Execution(Tag::new(&statement.command_tag(rows))));
        }
        let schema = stream.schema();
        if schema.fields().is_empty() {
            return Ok(Response::Execution(Tag::new(&statement.command_tag(0))));
        }
        let fields = Arc::new(encode::fields(&schema, format));
        let stream = if materialize {
            // Later statements of the same query string may change what this one
            // reads, so its rows are taken now.
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            cohortdb_sql::memory_stream(schema, batches)
        } else {
            stream
        };
        Ok(Response::Query(query_response(fields, stream)))
    }
}

/// Rows of a result stream, encoded as they are read.
fn query_response(fields: Arc<Vec<FieldInfo>>, stream: SendableRecordBatchStream) -> QueryResponse {
    let encode_fields = Arc::clone(&fields);
    let rows = stream
        .map(
            move |batch| -> PgWireResult<Vec<PgWireResult<pgwire::messages::data::DataRow>>> {
                let batch = batch.map_err(|e| user_error(&cohortdb_sql::Error::from(e), None))?;
                Ok(encode::rows(&batch, &encode_fields)?
                    .into_iter()
                    .map(Ok)
                    .collect())
            },
        )
        .flat_map(|rows| match rows {
            Ok(rows) => stream::iter(rows),
            Err(e) => stream::iter(vec![Err(e)]),
        });
    QueryResponse::new(fields, rows)
}

/// An error as PostgreSQL sends it: severity, SQLSTATE, message, and the
/// 1-based character position in the query text when known.
fn error_info(error: &cohortdb_sql::Error, query: Option<&str>) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".into(), error.sqlstate().into(), error.message());
    if let (Some(position), Some(query)) = (error.position(), query) {
        info.position =
            character_offset(query, position.line, position.column).map(|p| p.to_string());
    }
    info
}

pub(crate) fn user_error(error: &cohortdb_sql::Error, query: Option<&str>) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(error, query)))
}

/// An error the server itself raises, with its SQLSTATE.
fn protocol_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

/// The 1-based character offset of a line and column in `text`.
fn character_offset(text: &str, line: u64, column: u64) -> Option<usize> {
    let mut offset = 0;
    for (i, content) in text.split('\n').enumerate() {
        if i as u64 + 1 == line {
            return Some(offset + column as usize);
        }
        offset += content.chars().count() + 1;
    }
    None
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match self.session.parse(query) {
            Ok(statements) => statements,
            Err(e) => return Err(user_error(&e, Some(query))),
        };
        let mut responses = Vec::with_capacity(statements.len());
        let last = statements.len().saturating_sub(1);
        for (i, statement) in statements.into_iter().enumerate() {
            match self
                .respond(statement, &Format::UnifiedText, i < last)
                .await
            {
                Ok(response) => responses.push(response),
                Err(e) => {
                    // PostgreSQL stops at the first failing statement.
                    responses.push(Response::Error(Box::new(error_info(&e, Some(query)))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A statement prepared with Parse: the parsed SQL and what it takes and returns.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    statement: ParsedStatement,
    description: Description,
    sql: String,
}

pub(crate) struct StatementParser {
    session: Arc<Session>,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self
            .session
            .parse(sql)
            .map_err(|e| user_error(&e, Some(sql)))?;
        let statement = match statements.len() {
            0 => return Ok(None),
            1 => statements.remove(0),
            _ => {
                return Err(protocol_error(
                    "42601",
                    "cannot insert multiple commands into a prepared statement".into(),
                ));
            }
        };
        let mut description = self
            .session
            .describe(&statement)
            .await
            .map_err(|e| user_error(&e, Some(sql)))?;
        // Types the client gave win over inferred ones.
        for (i, given) in types.iter().enumerate() {
            if let (Some(t), Some(slot)) = (
                given.as_ref().and_then(encode::arrow_type),
                description.parameters.get_mut(i),
            ) {
                *slot = Some(t);
            }
        }
        Ok(Some(Prepared {
            statement,
            description,
            sql: sql.to_string(),
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .description
            .parameters
            .iter()
            .map(|t| t.as_ref().map_or(Type::TEXT, encode::pg_type))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.description.columns {
            Some(schema) => encode::fields(schema, column_format.unwrap_or(&Format::UnifiedText)),
            None => Vec::new(),
        })
    }
}

/// The parameters of a portal, in the form the SQL layer binds.
fn parameters(portal: &Portal<Prepared>, types: &[Type]) -> PgWireResult<Vec<ParamValue>> {
    (0..portal.parameter_len())
        .map(|i| {
            let pg = types.get(i).cloned().unwrap_or(Type::TEXT);
            let text = |v: Option<String>| v.map_or(ParamValue::Null, ParamValue::Text);
            if !portal.parameter_format.is_binary(i) {
                let raw = portal.parameters[i].as_ref();
                return Ok(match raw {
                    None => ParamValue::Null,
                    Some(bytes) => {
                        ParamValue::Text(String::from_utf8(bytes.to_vec()).map_err(|_| {
                            protocol_error(
                                "22021",
                                format!("parameter ${} is not valid UTF-8", i + 1),
                            )
                        })?)
                    }
                });
            }
            Ok(match pg {
                Type::BOOL => text(portal.parameter::<bool>(i, &pg)?.map(|v| v.to_string())),
                Type::INT2 => text(portal.parameter::<i16>(i, &pg)?.map(|v| v.to_string())),
                Type::INT4 => text(portal.parameter::<i32>(i, &pg)?.map(|v| v.to_string())),
                Type::INT8 => text(portal.parameter::<i64>(i, &pg)?.map(|v| v.to_string())),
                Type::FLOAT4 => text(portal.parameter::<f32>(i, &pg)?.map(|v| v.to_string())),
                Type::FLOAT8 => text(portal.parameter::<f64>(i, &pg)?.map(|v| v.to_string())),
                Type::NUMERIC => text(
                    portal
                        .parameter::<rust_decimal::Decimal>(i, &pg)?
                        .map(|v| v.to_string()),
                ),
                Type::DATE => text(
                    portal
                        .parameter::<chrono::NaiveDate>(i, &pg)?
                        .map(|v| v.to_string()),
                ),
                Type::TIMESTAMP => text(
                    portal
                        .parameter::<chrono::NaiveDateTime>(i, &pg)?
                        .map(|v| v.to_string()),
                ),
                Type::TIMESTAMPTZ => text(
                    portal
                        .parameter::<chrono::DateTime<chrono::FixedOffset>>(i, &pg)?
                        .map(|v| v.to_rfc3339()),
                ),
                Type::BYTEA => portal
                    .parameter::<Vec<u8>>(i, &pg)?
                    .map_or(ParamValue::Null, ParamValue::Bytes),
                _ => text(portal.parameter::<String>(i, &pg)?),
            })
        })
        .collect()
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stored: &StoredStatement<Prepared> = &portal.statement;
        let prepared = &stored.statement;
        let types: Vec<Type> = (0..portal.parameter_len())
            .map(|i| {
                stored
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| {
                        prepared
                            .description
                            .parameters
                            .get(i)
                            .cloned()
                            .flatten()
                            .map(|t| encode::pg_type(&t))
                    })
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let values = parameters(portal, &types)?;
        let sql = Some(prepared.sql.as_str());
        let bound = self
            .session
            .bind(
                &prepared.statement,
                &values,
                &prepared.description.parameters,
            )
            .map_err(|e| user_error(&e, sql))?;
        self.respond(bound, &portal.result_column_format, false)
            .await
            .map_err(|e| user_error(&e, sql))
    }
}

impl NoopStartupHandler for Connection {}

/// The handlers pgwire asks for, all backed by one connection.
pub(crate) struct Handlers(pub(crate) Arc<Connection>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.0)
    }
}
