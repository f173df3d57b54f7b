//! COPY with the client: `COPY ... FROM STDIN` collects the CopyData messages
//! the client sends and commits them as one statement on CopyDone (nothing is
//! kept when the client sends CopyFail or the data is bad); `COPY ... TO STDOUT`
//! sends one CopyData message per row, each row written as in a simple query's
//! text results and laid out by the statement's format (text or CSV).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cohortdb_sql::{ClientCopy, SendableRecordBatchStream};
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::Format;
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyInResponse, CopyOutResponse};

use crate::connection::{Connection, encode_error};
use crate::encode;

impl Connection {
    /// Starts `COPY ... FROM STDIN` for the simple protocol: the client is told
    /// to send its rows, which the copy handler collects.
    pub(crate) async fn start_copy_in<C>(
        &self,
        client: &mut C,
        copy: ClientCopy,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let columns = copy.columns();
        self.await_copy(copy);
        let formats = vec![0; columns];
        client
            .send(PgWireBackendMessage::CopyInResponse(CopyInResponse::new(
                0,
                i16::try_from(columns).unwrap_or(i16::MAX),
                formats,
            )))
            .await?;
        client.set_state(PgWireConnectionState::CopyInProgress(false));
        Ok(())
    }

    fn await_copy(&self, copy: ClientCopy) {
        *self.copy_in.lock().expect("copy lock") = Some(copy);
    }

    /// Sends the rows of `COPY ... TO STDOUT`, in either protocol. A statement
    /// error, before the rows or mid-way, is returned (the inner `Err`) for the
    /// caller to send as its protocol does; the outer one is the connection's.
    pub(crate) async fn copy_out<C>(
        &self,
        client: &mut C,
        mut copy: ClientCopy,
    ) -> PgWireResult<Result<(), cohortdb_sql::Error>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stream = match self.session.copy_out(&mut copy).await {
            Ok(stream) => stream,
            Err(e) => return Ok(Err(e)),
        };
        let formats = vec![0; copy.columns()];
        client
            .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                0,
                i16::try_from(copy.columns()).unwrap_or(i16::MAX),
                formats,
            )))
            .await?;
        let mut lines = copy_lines(copy, stream);
        let mut rows = 0u64;
        while let Some(line) = lines.next().await {
            match line {
                Ok(Line::Row(data)) => {
                    rows += 1;
                    client.feed(PgWireBackendMessage::CopyData(data)).await?;
                }
                Ok(Line::Header(data)) => client.feed(PgWireBackendMessage::CopyData(data)).await?,
                Err(e) => return Ok(Err(e)),
            }
        }
        client
            .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows as usize).into(),
            ))
            .await?;
        Ok(Ok(()))
    }

    /// The extended protocol's answer to `COPY ... FROM STDIN`: the client is
    /// told to send its rows, which the copy handler collects. (COPY TO STDOUT
    /// is sent by `copy_out` from `on_execute`, so an error mid-way is an
    /// ErrorResponse, not pgwire's CopyFail.)
    pub(crate) fn copy_in_response(&self, copy: ClientCopy) -> Response {
        let columns = copy.columns();
        self.await_copy(copy);
        Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
    }
}

/// A line of COPY output.
enum Line {
    Header(CopyData),
    Row(CopyData),
}

/// The lines of `COPY ... TO STDOUT`: the header when asked for, then a line
/// per row.
fn copy_lines(
    copy: ClientCopy,
    stream: SendableRecordBatchStream,
) -> impl futures::Stream<Item = Result<Line, cohortdb_sql::Error>> + Send {
    let schema = stream.schema();
    let format = copy.format().clone();
    let header = format.header().then(|| {
        let names: Vec<Option<String>> = schema
            .fields()
            .iter()
            .map(|f| Some(f.name().clone()))
            .collect();
        Ok(Line::Header(data(format.line(&names))))
    });
    let fields = Arc::new(encode::fields(&schema, &Format::UnifiedText));
    let rows = stream.flat_map(move |batch| {
        let lines: Vec<Result<Line, cohortdb_sql::Error>> = match batch
            .map_err(cohortdb_sql::Error::from)
            .and_then(|batch| encode::text_cells(&batch, &fields).map_err(encode_error))
        {
            Ok(rows) => rows
                .iter()
                .map(|cells| Ok(Line::Row(data(format.line(cells)))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        stream::iter(lines)
    });
    stream::iter(header).chain(rows)
}

fn data(line: String) -> CopyData {
    CopyData::new(Bytes::from(line))
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(copy) = self.copy_in.lock().expect("copy lock").as_mut() {
            copy.push(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = self.copy_in.lock().expect("copy lock").take();
        let Some(copy) = pending else {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".to_string(),
                "08P01".to_string(),
                "CopyDone without a COPY FROM STDIN in progress".to_string(),
            ))));
        };
        let result = self.session.copy_in(copy).await;
        match result {
            Ok(rows) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("COPY").with_rows(rows as usize).into(),
                    ))
                    .await?;
            }
            Err(e) => self.send_error(client, &e, "").await?,
        }
        self.report_status(client);
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy_in.lock().expect("copy lock").take();
        self.session.statement_failed();
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            "57014".to_string(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
