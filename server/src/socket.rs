//! The message loop of one client connection: pgwire's own loop, with one
//! difference. pgwire's decoders trust the counts inside a message (a Bind that
//! announces more parameters than its body holds makes them read past its end
//! and panic), and its loop drops a connection whose frame it cannot read
//! without a word. Here either ends the connection with `FATAL 08P01`, as
//! PostgreSQL answers a malformed message, and the server prints nothing.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use pgwire::api::{ClientInfo, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;

/// How long a client may take from connecting to being logged in (pgwire's).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client until it leaves, breaks the protocol or fails FATALly.
pub(crate) async fn serve_socket(
    socket: TcpStream,
    acceptor: Option<TlsAcceptor>,
    handlers: impl PgWireServerHandlers,
) -> io::Result<()> {
    quiet_decoder_panics();
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        socket = negotiate_tls(socket, acceptor) => socket?,
    };
    // A client that opened with direct TLS when the server has none.
    let Some(mut socket) = negotiated else {
        return Ok(());
    };
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = AssertUnwindSafe(Decoding(socket.next())).catch_unwind();
        let next = if starting {
            tokio::select! {
                _ = &mut startup_timeout => return Ok(()),
                next = next => next,
            }
        } else {
            next.await
        };
        let message = match next {
            Ok(Some(Ok(message))) => message,
            // The client hung up, or its connection broke.
            Ok(None) | Ok(Some(Err(pgwire::error::PgWireError::IoError(_)))) => return Ok(()),
            Ok(Some(Err(e))) => return malformed(&mut socket, &e.to_string()).await,
            Err(_panic) => return malformed(&mut socket, "invalid message format").await,
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let in_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        // A cancel request comes on a connection of its own, which then ends.
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let result = process_message(
            message,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await;
        if let Err(e) = result {
            let fatal = e.is_fatal();
            process_error(&mut socket, e, in_extended_query).await?;
            if fatal {
                return Ok(());
            }
        }
        if is_cancel {
            return Ok(());
        }
    }
}

/// Tells the client its message could not be read, and ends the connection.
async fn malformed<S>(socket: &mut S, message: &str) -> io::Result<()>
where
    S: futures::Sink<PgWireBackendMessage, Error = io::Error> + Unpin,
{
    let error = ErrorInfo::new("FATAL".into(), "08P01".into(), message.into());
    socket
        .send(PgWireBackendMessage::ErrorResponse(error.into()))
        .await
}

thread_local! {
    /// Set while this thread decodes a client's message.
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// A future whose polls run with [`DECODING`] set.
struct Decoding<F>(F);

impl<F: Future + Unpin> Future for Decoding<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                DECODING.with(|decoding| decoding.set(false));
            }
        }
        DECODING.with(|decoding| decoding.set(true));
        let _reset = Reset;
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Keeps a decoder's panic (caught, and answered with 08P01) off stderr; every
/// other panic goes to the hook that was there before, an embedding
/// application's included.
fn quiet_decoder_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}
