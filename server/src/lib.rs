//! cohortdb-server: the PostgreSQL wire protocol over cohortdb-sql sessions.
//!
//! This crate owns all network IO: startup, the simple and extended query
//! protocols, cancel requests and connection limits (and, as they land,
//! authentication, TLS and COPY). It depends only on `cohortdb-sql` (never on
//! the engine directly), keeping dependencies flowing server → sql → engine.
//!
//! Each connection gets its own [`Session`](cohortdb_sql::Session) from the
//! factory given to [`serve`]; [`startup`] admits it, [`connection`] answers its
//! messages and [`encode`] is the one mapping between Arrow and PostgreSQL types.

mod connection;
mod copy;
mod encode;
mod socket;
mod startup;
mod tls;

pub use encode::{float_text, text_rows, timestamp_text};
pub use tls::Tls;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use cohortdb_sql::{CancelHandle, Session};
use pgwire::api::RandomPidSecretKeyGenerator;
use pgwire::messages::startup::SecretKey;
use tokio::net::TcpListener;

use connection::{Connection, Handlers};

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// SCRAM-SHA-256 against the roles' stored verifiers; a wrong password, an
    /// unknown user or a role without LOGIN is refused with SQLSTATE 28P01.
    Scram,
    /// Everyone is admitted as the superuser they name. For local development
    /// (the demo) only.
    Trust,
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Most client sessions at once; one more is refused with SQLSTATE 53300.
    pub max_connections: usize,
    pub auth: Auth,
    /// TLS for clients that ask for it (sslmode=prefer/require/verify-*).
    pub tls: Option<Tls>,
    /// Refuse clients that do not use TLS (FATAL 28000).
    pub require_tls: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            // PostgreSQL's default.
            max_connections: 100,
            auth: Auth::Scram,
            tls: None,
            require_tls: false,
        }
    }
}

/// What all connections of one server share.
pub(crate) struct Shared {
    pub(crate) options: ServerOptions,
    /// Sessions admitted and not yet ended.
    pub(crate) sessions: AtomicUsize,
    /// The cancel key and handle of every admitted session, by process id.
    pub(crate) cancels: Mutex<HashMap<i32, (SecretKey, CancelHandle)>>,
    pub(crate) keys: RandomPidSecretKeyGenerator,
}

/// Accepts connections on `listener` until the task is dropped, each served on
/// its own task with a fresh session from `sessions`.
///
/// Fails at once, before accepting anything, when `require_tls` is set without
/// TLS.
pub async fn serve<F>(listener: TcpListener, options: ServerOptions, sessions: F) -> io::Result<()>
where
    F: Fn() -> Session + Send + Sync + 'static,
{
    if options.require_tls && options.tls.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TLS is required but no certificate and key were given",
        ));
    }
    let acceptor = options.tls.as_ref().map(Tls::acceptor);
    let shared = Arc::new(Shared {
        options,
        sessions: AtomicUsize::new(0),
        cancels: Mutex::new(HashMap::new()),
        keys: RandomPidSecretKeyGenerator::default(),
    });
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let handlers = Handlers(Arc::new(Connection::new(sessions(), Arc::clone(&shared))));
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A connection's failure (a client that vanished, a malformed
            // message, a failed TLS handshake) ends that connection only.
            let _ = socket::serve_socket(socket, acceptor, handlers).await;
        });
    }
}
