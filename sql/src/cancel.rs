//! Stopping a running statement: a cancel request or `statement_timeout`.
//!
//! A statement watches one stop signal ([`Stop`]) from the moment it starts:
//! it fires when the session's [`CancelHandle`] is used or the timeout passes.
//! It covers planning and work done before the first row, and the returned
//! stream is wrapped so that it stops with SQLSTATE 57014 mid-stream too;
//! dropping the stream drops DataFusion's execution, which stops its tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
        Stop {
            cancels: self.0.subscribe(),
            deadline: (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms)),
            wake: None,
        }
    }
}

/// Fires when a statement must stop: a cancel request made after it started,
/// or its timeout passed. A statement checks it at every step, which costs
/// two reads; it asks to be woken by it only when it waits, so that a
/// statement done at once never registers with the cancel channel or the
/// timer.
pub(crate) struct Stop {
    cancels: watch::Receiver<u64>,
    deadline: Option<Instant>,
    /// Resolves when the signal fires; made the first time the statement waits.
    wake: Option<Pin<Box<dyn Future<Output = CancelReason> + Send>>>,
}

impl Stop {
    /// Why the statement must stop, if it must now.
    fn fired(&self) -> Option<CancelReason> {
        // The sender lives as long as the session; if it is gone, nobody can
        // cancel any more.
        if self.cancels.has_changed().unwrap_or(false) {
            return Some(CancelReason::User);
        }
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Some(CancelReason::Timeout);
        }
        None
    }

    /// [`Stop::fired`], and if it has not fired, `cx` is woken when it does.
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<CancelReason> {
        if let Some(reason) = self.fired() {
            return Poll::Ready(reason);
        }
        let wake = self.wake.get_or_insert_with(|| {
            let mut cancels = self.cancels.clone();
            let deadline = self.deadline;
            Box::pin(async move {
                let canceled = async {
                    if cancels.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    CancelReason::User
                };
                let Some(deadline) = deadline else {
                    return canceled.await;
                };
                tokio::select! {
                    reason = canceled => reason,
                    () = tokio::time::sleep_until(deadline.into()) => CancelReason::Timeout,
                }
            })
        });
        wake.poll_unpin(cx)
    }

    /// Runs `start` until it is done or the signal fires. `start` is polled
    /// first: work done at once is not stopped by a signal it did not wait for.
    pub(crate) async fn run<T>(
        &mut self,
        mut start: impl Future<Output = crate::error::Result<T>> + Unpin,
    ) -> crate::error::Result<T> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = start.poll_unpin(cx) {
                return Poll::Ready(result);
            }
            self.poll_fired(cx)
                .map(|reason| Err(Error::Canceled { reason }))
        })
        .await
    }
}

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
        let canceled = |reason| DataFusionError::External(Box::new(Error::Canceled { reason }));
        if let Some(reason) = self.stop.as_ref().and_then(Stop::fired) {
            return self.failed(canceled(reason));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(e))) => self.failed(e),
            Poll::Ready(None) => {
                self.done = true;
                self.stop = None;
                Poll::Ready(None)
            }
            Poll::Pending => match self.stop.as_mut().map(|stop| stop.poll_fired(cx)) {
                Some(Poll::Ready(reason)) => self.failed(canceled(reason)),
                _ => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl RecordBatchStream for Guarded {
    fn schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.schema)
    }
}
