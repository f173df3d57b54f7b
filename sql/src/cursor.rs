//! Cursors: DECLARE ... CURSOR, FETCH and CLOSE.
//!
//! A cursor is a query's result stream, read a few rows at a time. Cursors are
//! forward-only. One declared WITHOUT HOLD (the default) lives until its
//! transaction block ends; one declared WITH HOLD lives until it is closed or the
//! session ends.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{CloseCursor, Declare, FetchDirection, Value};
use futures::StreamExt;

use crate::error::{Error, Position, Result, TransactionError};
use crate::names::normalize;
use crate::session::{Session, memory_stream};

struct Cursor {
    stream: SendableRecordBatchStream,
    /// Rows read from the stream but not yet fetched.
    pending: Option<RecordBatch>,
    hold: bool,
    /// Whether the transaction that declared it has committed; a rollback closes
    /// the cursors its transaction declared, held or not.
    committed: bool,
}

/// A session's open cursors.
#[derive(Default)]
pub(crate) struct Cursors(Mutex<HashMap<String, Cursor>>);

impl Cursors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cursor>> {
        self.0.lock().expect("cursor lock")
    }

    /// Closes the cursors a transaction block's end closes: all but WITH HOLD
    /// ones on COMMIT; on ROLLBACK also the held ones the block declared.
    pub(crate) fn end_transaction(&self, rolled_back: bool) {
        let mut cursors = self.lock();
        cursors.retain(|_, c| c.hold && (c.committed || !rolled_back));
        for cursor in cursors.values_mut() {
            cursor.committed = true;
        }
    }

    pub(crate) fn close_all(&self) {
        self.lock().clear();
    }
}

/// DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH HOLD] FOR query.
pub(crate) async fn declare(session: &Session, declare: Declare, in_block: bool) -> Result<()> {
    let position = declare
        .names
        .first()
        .and_then(|n| Position::from_location(n.span.start));
    if declare.binary == Some(true) {
        return Err(Error::unsupported("DECLARE BINARY CURSOR", position));
    }
    if declare.scroll == Some(true) {
        return Err(Error::unsupported(
            "SCROLL cursors (cursors read forward only)",
            position,
        ));
    }
    let hold = declare.hold == Some(true);
    if !hold && !in_block {
        return Err(Error::Transaction(TransactionError::OutsideBlock {
            statement: "DECLARE CURSOR",
        }));
    }
    let [name] = declare.names.as_slice() else {
        return Err(Error::invalid("DECLARE names one cursor", position));
    };
    let Some(query) = declare.for_query else {
        return Err(Error::invalid("DECLARE CURSOR needs FOR <query>", position));
    };
    let name = normalize(name);
    if session.cursors.lock().contains_key(&name) {
        return Err(Error::DuplicateCursor { name });
    }
    let plan = session.plan_query(*query).await?;
    let stream = session.stream_plan(plan).await?;
    session.cursors.lock().insert(
        name,
        Cursor {
            stream,
            pending: None,
            hold,
            committed: !in_block,
        },
    );
    Ok(())
}

/// FETCH [count | NEXT | ALL | FORWARD [count | ALL]] FROM name: the next rows.
pub(crate) async fn fetch(
    session: &Session,
    name: &str,
    direction: &FetchDirection,
) -> Result<SendableRecordBatchStream> {
    let wanted = match direction {
        FetchDirection::Next => 1,
        FetchDirection::All | FetchDirection::ForwardAll => u64::MAX,
        FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => {
            count(&limit.value)?
        }
        FetchDirection::Forward { limit: None } => 1,
        other => {
            return Err(Error::unsupported(
                format!("FETCH {other} (cursors read forward only)"),
                None,
            ));
        }
    };
    let mut cursor = session
        .cursors
        .lock()
        .remove(name)
        .ok_or_else(|| Error::UnknownCursor {
            name: name.to_string(),
        })?;
    let schema = cursor.stream.schema();
    let batches = read(&mut cursor, wanted).await?;
    session.cursors.lock().insert(name.to_string(), cursor);
    Ok(memory_stream(schema, batches))
}

fn count(value: &Value) -> Result<u64> {
    match value {
        Value::Number(n, _) => n.parse::<u64>().map_err(|_| {
            Error::invalid(format!("FETCH count must be a whole number, not {n}"), None)
        }),
        other => Err(Error::invalid(
            format!("FETCH count must be a whole number, not {other}"),
            None,
        )),
    }
}

/// Reads up to `wanted` rows, keeping any surplus for the next FETCH.
async fn read(cursor: &mut Cursor, wanted: u64) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    let mut left = wanted;
    while left > 0 {
        let batch = match cursor.pending.take() {
            Some(batch) => batch,
            None => match cursor.stream.next().await {
                Some(batch) => batch?,
                None => break,
            },
        };
        let rows = batch.num_rows() as u64;
        if rows > left {
            let take = left as usize;
            cursor.pending = Some(batch.slice(take, batch.num_rows() - take));
            batches.push(batch.slice(0, take));
            left = 0;
        } else {
            left -= rows;
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// CLOSE name | ALL.
pub(crate) fn close(session: &Session, cursor: &CloseCursor) -> Result<()> {
    match cursor {
        CloseCursor::All => session.cursors.close_all(),
        CloseCursor::Specific { name } => {
            let name = normalize(name);
            if session.cursors.lock().remove(&name).is_none() {
                return Err(Error::UnknownCursor { name });
            }
        }
    }
    Ok(())
}

/// The schema a FETCH from `name` returns, for Describe.
pub(crate) fn schema(session: &Session, name: &str) -> Option<SchemaRef> {
    session.cursors.lock().get(name).map(|c| c.stream.schema())
}
