//! One client connection: a SQL session answering the simple and extended query
//! protocols.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use cohortdb_sql::{
    ClientCopy, Completion, Deallocation, Description, Message, ParamValue, ParsedStatement,
    SendableRecordBatchStream, Session, TransactionStatus,
};
use futures::{Sink, SinkExt, Stream, StreamExt, TryStreamExt};
use pgwire::api::DEFAULT_NAME;
use pgwire::api::copy::send_copy_in_response;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_ready_for_query,
};
use pgwire::api::results::{DescribeResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::{DataRow, RowDescription};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended, Sync as SyncMessage, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ReadyForQuery, TransactionStatus as ByteStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::ParameterStatus;

use crate::Shared;
use crate::encode;
use crate::startup::Scram;

/// The handlers of one connection, sharing its session.
pub(crate) struct Connection {
    pub(crate) session: Arc<Session>,
    parser: Arc<StatementParser>,
    pub(crate) shared: Arc<Shared>,
    /// Whether the connection counts against the connection limit.
    pub(crate) admitted: AtomicBool,
    /// The process id its cancel key is registered under.
    pub(crate) pid: AtomicI32,
    /// Names of the statements prepared with Parse, for DEALLOCATE.
    prepared: Mutex<BTreeSet<String>>,
    /// The SCRAM exchange of a login in progress.
    pub(crate) scram: Mutex<Scram>,
    /// The `COPY ... FROM STDIN` waiting for the client's data.
    pub(crate) copy_in: Mutex<Option<ClientCopy>>,
    /// The transaction status last given to pgwire's client state; pgwire
    /// turns it into Error when it raises an error of its own.
    reported: Mutex<ByteStatus>,
}

/// What the simple protocol does after a statement of a query string.
enum Step {
    /// Run the next statement.
    Next,
    /// Stop: the statement failed.
    Stop,
    /// Wait for the data of a `COPY ... FROM STDIN`.
    CopyIn,
}

impl Connection {
    pub(crate) fn new(session: Session, shared: Arc<Shared>) -> Connection {
        let session = Arc::new(session);
        Connection {
            parser: Arc::new(StatementParser {
                session: Arc::clone(&session),
            }),
            session,
            shared,
            admitted: AtomicBool::new(false),
            pid: AtomicI32::new(0),
            prepared: Mutex::new(BTreeSet::new()),
            scram: Mutex::new(Scram::Started),
            copy_in: Mutex::new(None),
            reported: Mutex::new(ByteStatus::Idle),
        }
    }

    /// Gives pgwire's client state the session's transaction status (pgwire
    /// answers its own errors, and a simple-protocol COPY, with it) and returns it.
    pub(crate) fn report_status<C: ClientInfo>(&self, client: &mut C) -> ByteStatus {
        let status = status_byte(self.session.transaction_status());
        client.set_transaction_status(status);
        *self.reported.lock().expect("reported status") = status;
        status
    }

    /// Does what a statement asks of the connection rather than the session:
    /// DEALLOCATE of a statement prepared with Parse, and DISCARD ALL's dropping
    /// of prepared statements and portals. Returns the command tag when the
    /// statement is done with.
    fn connection_statement<C>(&self, client: &C, statement: &ParsedStatement) -> Option<String>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let store = client.portal_store();
        let mut prepared = self.prepared.lock().expect("prepared statement names");
        match statement.deallocates()? {
            Deallocation::All | Deallocation::Discard => {
                for name in std::mem::take(&mut *prepared) {
                    store.rm_statement(&name);
                }
                store.clear_portals();
                None
            }
            Deallocation::Named(name) if prepared.remove(&name) => {
                store.rm_statement(&name);
                Some(statement.completion().command().to_string())
            }
            Deallocation::Named(_) => None,
        }
    }

    /// Sends the session's waiting notices and setting changes.
    async fn send_messages<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        for message in self.session.take_messages() {
            let message = match message {
                Message::Notice {
                    severity,
                    code,
                    message,
                } => PgWireBackendMessage::NoticeResponse(
                    ErrorInfo::new(severity.into(), code.into(), message).into(),
                ),
                Message::ParameterStatus { name, value } => {
                    PgWireBackendMessage::ParameterStatus(ParameterStatus::new(name, value))
                }
            };
            client.feed(message).await?;
        }
        Ok(())
    }

    /// Sends an error for a failed statement, which aborts the transaction block.
    pub(crate) async fn send_error<C>(
        &self,
        client: &mut C,
        error: &cohortdb_sql::Error,
        query: &str,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session.statement_failed();
        self.send_messages(client).await?;
        let info = error_info(error, Some(query));
        client
            .feed(PgWireBackendMessage::ErrorResponse(info.into()))
            .await?;
        Ok(())
    }

    /// Runs one statement of a simple query and sends its whole result. Returns
    /// what comes next: the rest of the query string runs only if it succeeded.
    async fn simple_statement<C>(
        &self,
        client: &mut C,
        statement: ParsedStatement,
        query: &str,
    ) -> PgWireResult<Step>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(tag) = self.connection_statement(client, &statement) {
            send_execution_response(client, Tag::new(&tag)).await?;
            return Ok(Step::Next);
        }
        if let Some(copy) = self.session.client_copy(&statement).await {
            return match copy {
                Err(e) => {
                    self.send_error(client, &e, query).await?;
                    Ok(Step::Stop)
                }
                Ok(copy) if copy.is_in() => {
                    self.start_copy_in(client, copy).await?;
                    Ok(Step::CopyIn)
                }
                Ok(copy) => Ok(match self.copy_out(client, copy).await? {
                    Ok(()) => Step::Next,
                    Err(e) => {
                        self.send_error(client, &e, query).await?;
                        Step::Stop
                    }
                }),
            };
        }
        let completion = statement.completion();
        let mut stream = match self.session.run(statement).await {
            Ok(stream) => stream,
            Err(e) => {
                self.send_error(client, &e, query).await?;
                return Ok(Step::Stop);
            }
        };
        self.send_messages(client).await?;
        let schema = stream.schema();
        if !completion.shows_rows(&schema) {
            let tag = match completion_tag(&completion, stream).await {
                Ok(tag) => tag,
                Err(e) => {
                    self.send_error(client, &e, query).await?;
                    return Ok(Step::Stop);
                }
            };
            self.send_messages(client).await?;
            send_execution_response(client, Tag::new(&tag)).await?;
            return Ok(Step::Next);
        }
        let fields = Arc::new(encode::fields(&schema, &Format::UnifiedText));
        client
            .feed(PgWireBackendMessage::RowDescription(RowDescription::new(
                fields.iter().map(Into::into).collect(),
            )))
            .await?;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let encoded = batch
                .map_err(cohortdb_sql::Error::from)
                .and_then(|batch| encode::rows(&batch, &fields).map_err(encode_error));
            match encoded {
                Ok(encoded) => {
                    rows += encoded.len() as u64;
                    for row in encoded {
                        client.feed(PgWireBackendMessage::DataRow(row)).await?;
                    }
                }
                Err(e) => {
                    self.send_error(client, &e, query).await?;
                    return Ok(Step::Stop);
                }
            }
        }
        self.send_messages(client).await?;
        let tag = completion.tag(&schema, rows);
        send_execution_response(client, Tag::new(&tag)).await?;
        Ok(Step::Next)
    }

    /// Runs one statement of the extended protocol and turns its result into a
    /// response pgwire sends (rows are read as the client asks for them).
    async fn respond(
        &self,
        statement: ParsedStatement,
        format: &Format,
        last_fields: &LastFields,
    ) -> Result<Response, cohortdb_sql::Error> {
        if let Some(copy) = self.session.client_copy(&statement).await {
            let copy = copy?;
            if !copy.is_in() {
                // on_execute sends COPY TO STDOUT itself.
                return Err(cohortdb_sql::Error::Unsupported {
                    feature: "COPY TO STDOUT from a portal run by another path".to_string(),
                    position: None,
                });
            }
            return Ok(self.copy_in_response(copy));
        }
        let completion = statement.completion();
        let stream = self.session.run(statement).await?;
        let schema = stream.schema();
        if !completion.shows_rows(&schema) {
            let tag = completion_tag(&completion, stream).await?;
            return Ok(Response::Execution(Tag::new(&tag)));
        }
        let fields = last_fields.get(&schema, format);
        let mut response = query_response(fields, stream);
        response.set_command_tag(completion.command());
        Ok(Response::Query(response))
    }
}

/// Reads a result that shows no rows (a count, or nothing) and gives its tag.
async fn completion_tag(
    completion: &Completion,
    stream: SendableRecordBatchStream,
) -> Result<String, cohortdb_sql::Error> {
    let schema = stream.schema();
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    Ok(completion.tag(&schema, cohortdb_sql::changed_rows(&batches)))
}

/// The row description of a portal's result, `None` when it has no rows.
fn portal_fields(portal: &Portal<Prepared>) -> Option<Arc<Vec<FieldInfo>>> {
    let prepared = &portal.statement.statement;
    let schema = prepared.description.columns.as_ref()?;
    let fields = prepared.described.get(schema, &portal.result_column_format);
    (!fields.is_empty()).then_some(fields)
}

/// Sends the rows of an Execute, then PortalSuspended when the portal has more
/// (`suspended`) or else CommandComplete.
async fn send_rows<C>(
    client: &mut C,
    mut response: QueryResponse,
    suspended: bool,
) -> PgWireResult<()>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let mut rows = 0;
    while let Some(row) = response.data_rows().next().await {
        client.feed(PgWireBackendMessage::DataRow(row?)).await?;
        rows += 1;
    }
    let done = match suspended {
        true => PgWireBackendMessage::PortalSuspended(PortalSuspended::new()),
        false => {
            PgWireBackendMessage::CommandComplete(command_complete(response.command_tag(), rows))
        }
    };
    client.feed(done).await?;
    client.set_state(PgWireConnectionState::ReadyForQuery);
    Ok(())
}

/// An encoding failure, as a statement error.
pub(crate) fn encode_error(e: PgWireError) -> cohortdb_sql::Error {
    cohortdb_sql::Error::Execution {
        message: e.to_string(),
    }
}

/// The protocol's transaction status byte for a session's state.
fn status_byte(status: TransactionStatus) -> pgwire::messages::response::TransactionStatus {
    use pgwire::messages::response::TransactionStatus as Byte;
    match status {
        TransactionStatus::Idle => Byte::Idle,
        TransactionStatus::InBlock => Byte::Transaction,
        TransactionStatus::Failed => Byte::Error,
    }
}

/// Rows of a result stream, encoded as they are read.
fn query_response(fields: Arc<Vec<FieldInfo>>, stream: SendableRecordBatchStream) -> QueryResponse {
    let rows = DataRows {
        batches: stream,
        fields: Arc::clone(&fields),
        encoded: Vec::new().into_iter(),
    };
    QueryResponse::new(fields, rows)
}

/// A statement's rows as DataRows, encoded a batch at a time.
struct DataRows {
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    /// The rest of the batch being sent.
    encoded: std::vec::IntoIter<DataRow>,
}

impl Stream for DataRows {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(row) = self.encoded.next() {
                return Poll::Ready(Some(Ok(row)));
            }
            let batch = match ready!(self.batches.poll_next_unpin(cx)) {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    let error = user_error(&cohortdb_sql::Error::from(e), None);
                    return Poll::Ready(Some(Err(error)));
                }
                None => return Poll::Ready(None),
            };
            match encode::rows(&batch, &self.fields) {
                Ok(rows) => self.encoded = rows.into_iter(),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// CommandComplete for `rows` rows of `command` (`SELECT 3`).
fn command_complete(command: &str, rows: usize) -> CommandComplete {
    let mut count = itoa::Buffer::new();
    let count = count.format(rows);
    let mut tag = String::with_capacity(command.len() + 1 + count.len());
    tag.push_str(command);
    tag.push(' ');
    tag.push_str(count);
    CommandComplete::new(tag)
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

/// PostgreSQL's error for a portal that does not exist (pgwire's own says 26000).
/// The unnamed portal is `DEFAULT_NAME` to pgwire and `""` to the client.
fn portal_not_found(name: &str) -> PgWireError {
    let name = if name == DEFAULT_NAME { "" } else { name };
    protocol_error("34000", format!("portal \"{name}\" does not exist"))
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
    /// Runs each statement of the query string in turn, sending its result
    /// before the next one starts, and stops at the first error, as PostgreSQL
    /// does. ReadyForQuery carries the session's transaction status.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let sql = query.query;
        match self.session.parse(&sql) {
            Err(e) => self.send_error(client, &e, &sql).await?,
            Ok(statements) if statements.is_empty() => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
            }
            Ok(statements) => {
                for statement in statements {
                    match self.simple_statement(client, statement, &sql).await? {
                        Step::Next => {}
                        Step::Stop => break,
                        // The copy handler ends the query when the data is in.
                        Step::CopyIn => return Ok(()),
                    }
                }
            }
        }
        self.send_messages(client).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let status = self.report_status(client);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        unreachable!("on_query answers simple queries itself")
    }
}

/// A statement prepared with Parse: the parsed SQL and what it takes and returns.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    statement: ParsedStatement,
    description: Description,
    sql: String,
    /// The row description of its last execution.
    fields: Arc<LastFields>,
    /// That of its last Describe of a portal (its schema is the described
    /// one, not an execution's).
    described: Arc<LastFields>,
}

/// The row description of a statement's last execution, given again while its
/// result's schema and the formats asked for stay the same (a prepared query
/// run again and again) instead of being worked out for every execution.
#[derive(Debug, Default)]
struct LastFields(Mutex<Option<KeptFields>>);

/// A row description and the schema and formats it was worked out for.
#[derive(Debug)]
struct KeptFields {
    schema: SchemaRef,
    format: Format,
    fields: Arc<Vec<FieldInfo>>,
}

impl LastFields {
    fn get(&self, schema: &SchemaRef, format: &Format) -> Arc<Vec<FieldInfo>> {
        let mut last = self.0.lock().expect("last row description");
        if let Some(kept) = &*last
            && Arc::ptr_eq(&kept.schema, schema)
            && same_format(&kept.format, format)
        {
            return Arc::clone(&kept.fields);
        }
        let fields = Arc::new(encode::fields(schema, format));
        *last = Some(KeptFields {
            schema: Arc::clone(schema),
            format: format.clone(),
            fields: Arc::clone(&fields),
        });
        fields
    }
}

/// Whether two format requests are the same (pgwire's `Format` has no `==`).
fn same_format(a: &Format, b: &Format) -> bool {
    match (a, b) {
        (Format::UnifiedText, Format::UnifiedText) => true,
        (Format::UnifiedBinary, Format::UnifiedBinary) => true,
        (Format::Individual(a), Format::Individual(b)) => a == b,
        _ => false,
    }
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
            fields: Arc::default(),
            described: Arc::default(),
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

/// A binary array parameter in PostgreSQL's text form: `{1,NULL,"a b"}`.
fn array_text<T: ToString>(items: Option<Vec<Option<T>>>) -> Option<String> {
    let items = items?;
    let items: Vec<String> = items
        .iter()
        .map(|item| match item {
            None => "NULL".to_string(),
            Some(v) => {
                let text = v.to_string();
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    Some(format!("{{{}}}", items.join(",")))
}

/// The type of each parameter of a statement: the one the client gave at Parse,
/// else the one inferred, else text.
fn parameter_types(stored: &StoredStatement<Prepared>) -> Vec<Type> {
    let inferred = &stored.statement.description.parameters;
    (0..stored.parameter_types.len().max(inferred.len()))
        .map(|i| {
            stored
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .or_else(|| {
                    inferred
                        .get(i)
                        .cloned()
                        .flatten()
                        .map(|t| encode::pg_type(&t))
                })
                .unwrap_or(Type::TEXT)
        })
        .collect()
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
                Type::OID => text(portal.parameter::<u32>(i, &pg)?.map(|v| v.to_string())),
                Type::BYTEA => portal
                    .parameter::<Vec<u8>>(i, &pg)?
                    .map_or(ParamValue::Null, ParamValue::Bytes),
                Type::BOOL_ARRAY => {
                    text(array_text(portal.parameter::<Vec<Option<bool>>>(i, &pg)?))
                }
                Type::INT2_ARRAY => text(array_text(portal.parameter::<Vec<Option<i16>>>(i, &pg)?)),
                Type::INT4_ARRAY => text(array_text(portal.parameter::<Vec<Option<i32>>>(i, &pg)?)),
                Type::INT8_ARRAY => text(array_text(portal.parameter::<Vec<Option<i64>>>(i, &pg)?)),
                Type::OID_ARRAY => text(array_text(portal.parameter::<Vec<Option<u32>>>(i, &pg)?)),
                Type::FLOAT4_ARRAY => {
                    text(array_text(portal.parameter::<Vec<Option<f32>>>(i, &pg)?))
                }
                Type::FLOAT8_ARRAY => {
                    text(array_text(portal.parameter::<Vec<Option<f64>>>(i, &pg)?))
                }
                Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => {
                    text(array_text(portal.parameter::<Vec<Option<String>>>(i, &pg)?))
                }
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

    /// Parses and stores a statement, remembering its name for DEALLOCATE. A
    /// named statement cannot be replaced while it exists, as in PostgreSQL.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.clone().unwrap_or_default();
        if !name.is_empty() && client.portal_store().get_statement(&name).is_some() {
            self.session.statement_failed();
            return Err(protocol_error(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        let parsed = StoredStatement::parse(client, &message, self.query_parser()).await;
        let parsed = parsed.inspect_err(|_| self.session.statement_failed())?;
        match parsed {
            Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
            None => client.portal_store().put_empty_statement(&name),
        }
        if !name.is_empty() {
            self.prepared
                .lock()
                .expect("prepared statement names")
                .insert(name);
        }
        // Queued, not flushed: like PostgreSQL, the replies to an extended
        // exchange go out together at Sync (or a Flush).
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// Makes a portal of a statement and its parameters; pgwire's own, but
    /// with BindComplete queued for Sync instead of written alone (one write
    /// and one wake-up of the client less per execution).
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement) {
            Some(Entry::Value(stored)) => {
                let portal = Portal::try_new(&message, stored)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(protocol_error(
                        "08P01",
                        format!(
                            "bind message supplies {} parameters, but prepared statement \"{statement}\" requires 0",
                            message.parameters.len()
                        ),
                    ));
                }
                let portal = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
                client.portal_store().put_empty_portal(portal);
            }
            None => return Err(PgWireError::StatementNotFound(statement.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    /// Runs a portal. pgwire's own `_on_execute` writes CommandComplete (and
    /// PortalSuspended) to the socket at once; here every reply is queued for
    /// Sync, as PostgreSQL does, so an exchange of Bind, Execute and Sync costs
    /// the client one wake-up. `COPY ... TO STDOUT` is sent here rather than
    /// through pgwire's copy-out path, which answers a failure mid-way with
    /// CopyFail (a client's message) where PostgreSQL sends an ErrorResponse.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                // An empty query: it stays valid for another Execute.
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(());
            }
            None => return Err(portal_not_found(name)),
        };
        let prepared = &portal.statement.statement;
        if prepared.statement.copies_to_client() {
            // Boxed, as the rare paths are: this future is moved whole for
            // every Execute, and COPY's are tens of kilobytes.
            let result = match Box::pin(self.session.client_copy(&prepared.statement)).await {
                Some(Ok(copy)) => Box::pin(self.copy_out(client, copy)).await?,
                Some(Err(e)) => Err(e),
                None => unreachable!("copies_to_client said this is a COPY TO STDOUT"),
            };
            self.send_messages(client).await?;
            return result.map_err(|e| {
                self.session.statement_failed();
                user_error(&e, Some(&prepared.sql))
            });
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let state = portal.state();
        let mut state = state.lock().await;
        // A first Execute without a row limit sends all the rows at once,
        // straight from the statement's stream (pgwire's fetch would gather
        // them first); any other goes through the portal's fetch.
        if let PortalExecutionState::Initial = *state {
            match ExtendedQueryHandler::do_query(self, client, &portal, max_rows).await? {
                Response::Query(results) if max_rows > 0 => {
                    *state = PortalExecutionState::Suspended(results);
                }
                Response::Query(results) => {
                    *state = PortalExecutionState::Finished;
                    drop(state);
                    return send_rows(client, results, false).await;
                }
                Response::Execution(tag) => {
                    send_execution_response(client, tag).await?;
                    client.set_state(PgWireConnectionState::ReadyForQuery);
                    return Ok(());
                }
                Response::CopyIn(copy) => {
                    client.set_state(PgWireConnectionState::CopyInProgress(true));
                    return send_copy_in_response(client, copy).await;
                }
                _ => unreachable!("do_query answers with rows, a tag or COPY FROM STDIN"),
            }
        }
        drop(state);
        let fetched = portal.fetch(max_rows).await?;
        send_rows(client, fetched.response, fetched.suspended).await
    }

    /// Describes a statement or portal, the replies queued for Sync like
    /// Execute's (pgwire's own `_on_describe` writes each one at once). A
    /// statement that returns no rows (INSERT with parameters) gets NoData, as
    /// in PostgreSQL, not an empty RowDescription, which drivers would read as
    /// a result set (pgjdbc then counts no updates).
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        // The parameters' types (statements only) and the columns, if any.
        let (parameters, columns) = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stored)) => {
                    let described = self.do_describe_statement(client, &stored).await?;
                    let rows =
                        stored.statement.description.columns.is_some() && !described.is_no_data();
                    let fields = rows.then(|| Arc::new(described.fields));
                    (Some(described.parameters), fields)
                }
                Some(Entry::Empty) => (Some(Vec::new()), None),
                None => return Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            // Described for every execution by libpq-style clients: the row
            // description is kept, like Execute's.
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => (None, portal_fields(&portal)),
                Some(Entry::Empty) => (None, None),
                None => return Err(portal_not_found(name)),
            },
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        if let Some(types) = parameters {
            let oids = types.iter().map(Type::oid).collect();
            client
                .feed(PgWireBackendMessage::ParameterDescription(
                    ParameterDescription::new(oids),
                ))
                .await?;
        }
        let columns = match columns {
            Some(fields) => PgWireBackendMessage::RowDescription(RowDescription::new(
                fields.iter().map(Into::into).collect(),
            )),
            None => PgWireBackendMessage::NoData(NoData::new()),
        };
        client.feed(columns).await?;
        Ok(())
    }

    /// Closes a prepared statement or portal; CloseComplete is queued for Sync
    /// like the other replies. Closing what does not exist is no error.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                client.portal_store().rm_statement(name);
                self.prepared
                    .lock()
                    .expect("prepared statement names")
                    .remove(name);
            }
            TARGET_TYPE_BYTE_PORTAL => client.portal_store().rm_portal(name),
            other => return Err(PgWireError::InvalidTargetType(other)),
        }
        client
            .feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    /// Ends an extended-query exchange with the session's transaction status.
    async fn on_sync<C>(&self, client: &mut C, _message: SyncMessage) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // An error pgwire raised itself (a Bind to a missing statement) aborts
        // the block too; an Error status already reported is no news (a
        // ROLLBACK TO since then has repaired the block).
        let reported = *self.reported.lock().expect("reported status");
        if client.transaction_status() == ByteStatus::Error && reported != ByteStatus::Error {
            self.session.statement_failed();
        }
        self.send_messages(client).await?;
        let status = self.report_status(client);
        // As in PostgreSQL, the unnamed portal (pgwire's `DEFAULT_NAME`) lasts
        // until its transaction ends: here, unless a block is open.
        if status == ByteStatus::Idle {
            client.portal_store().rm_portal(DEFAULT_NAME);
        }
        // `send` writes out everything queued since the last Sync.
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
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
        let values = match portal.parameter_len() {
            0 => Ok(Vec::new()),
            _ => parameters(portal, &parameter_types(stored)),
        };
        let sql = Some(prepared.sql.as_str());
        let result = match values {
            Ok(values) => {
                let bound = self.session.bind(
                    &prepared.statement,
                    &values,
                    &prepared.description.parameters,
                );
                match bound {
                    Ok(bound) => match self.connection_statement(client, &bound) {
                        Some(tag) => Ok(Response::Execution(Tag::new(&tag))),
                        None => self
                            .respond(bound, &portal.result_column_format, &prepared.fields)
                            .await
                            .map_err(|e| user_error(&e, sql)),
                    },
                    Err(e) => Err(user_error(&e, sql)),
                }
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.session.statement_failed();
        }
        self.send_messages(client).await?;
        result
    }
}

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

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.0)
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        Arc::clone(&self.0)
    }
}
