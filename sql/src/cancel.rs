//! Stopping a running statement: a cancel request or `statement_timeout`.
//!
//! A statement watches one "stop" future from the moment it starts: it fires
//! when the session's [`CancelHandle`] is used or the timeout passes. It covers
//! planning and work done before the first row, and the returned stream is
//! wrapped so that it stops with SQLSTATE 57014 mid-stream too; dropping the
//! stream drops DataFusion's execution, which stops its tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{FutureExt, Stream};
use tokio::sync::watch;

use crate::error::{CancelReason, Error};
use crate::state::State;

/// Cancels whatever statement its session is running. Cheap to clone; a
/// server keeps one per connection to answer cancel requests.
#[derive(Debug, Clone)]
pub struct CancelHandle(Arc<watch::Sender<u64>>);

impl CancelHandle {
    pub(crate) fn new() -> CancelHandle {
        CancelHandle(Arc::new(watch::channel(0).0))
    }

    /// Stops the session's running statement, if any, with SQLSTATE 57014. A
    /// statement that starts later is not affected.
    pub fn cancel(&self) {
        self.0.send_modify(|generation| *generation += 1);
    }

    /// The stop signal of a statement starting now, with its timeout (0: none).
    pub(crate) fn stop_signal(&self, timeout_ms: u64) -> Stop {
        let mut cancels = self.0.subscribe();
        cancels.mark_unchanged();
        Box::pin(async move {
            let canceled = async {
                // The sender lives as long as the session; if it is gone, nobody
                // can cancel any more.
                if cancels.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                CancelReason::User
            };
            if timeout_ms == 0 {
                return canceled.await;
            }
            tokio::select! {
                reason = canceled => reason,
                () = tokio::time::sleep(Duration::from_millis(timeout_ms)) => CancelReason::Timeout,
            }
        })
    }
}

/// Resolves when a statement must stop, with the reason.
pub(crate) type Stop = Pin<Box<dyn Future<Output = CancelReason> + Send>>;

/// A result stream that stops when its statement's stop signal fires, and that
/// marks the transaction block failed when it ends in an error.
struct Guarded {
    inner: SendableRecordBatchStream,
    schema: SchemaRef,
    stop: Option<Stop>,
    state: Arc<Mutex<State>>,
    done: bool,
}

/// Wraps a statement's result stream with its stop signal.
pub(crate) fn guard(
    inner: SendableRecordBatchStream,
    stop: Stop,
    state: Arc<Mutex<State>>,
) -> SendableRecordBatchStream {
    Box::pin(Guarded {
        schema: inner.schema(),
        inner,
        stop: Some(stop),
        state,
        done: false,
    })
}

impl Guarded {
    fn failed(
        &mut self,
        error: DataFusionError,
    ) -> Poll<Option<Result<RecordBatch, DataFusionError>>> {
        self.done = true;
        self.state.lock().expect("session state lock").fail();
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for Guarded {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(stop) = self.stop.as_mut()
            && let Poll::Ready(reason) = stop.poll_unpin(cx)
        {
            let error = Error::Canceled { reason };
            return self.failed(DataFusionError::External(Box::new(error)));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(e))) => self.failed(e),
            Poll::Ready(None) => {
                self.done = true;
                self.stop = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl RecordBatchStream for Guarded {
    fn schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.schema)
    }
}
