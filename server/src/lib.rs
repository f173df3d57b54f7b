//! cohortdb-server: the PostgreSQL wire protocol over cohortdb-sql sessions.
//!
//! This crate owns all network IO: startup, the simple and extended query
//! protocols, and (as they land) authentication, TLS, COPY, cancellation and
//! connection limits. It depends only on `cohortdb-sql` (never on the engine
//! directly), keeping dependencies flowing server → sql → engine.
//!
//! Each connection gets its own [`Session`](cohortdb_sql::Session) from the
//! factory given to [`serve`]; [`connection`] answers its messages and
//! [`encode`] is the one mapping between Arrow and PostgreSQL types.

mod connection;
mod encode;

use std::io;
use std::sync::Arc;

use cohortdb_sql::Session;
use tokio::net::TcpListener;

use connection::{Connection, Handlers};

/// Accepts connections on `listener` until the task is dropped, each served on
/// its own task with a fresh session from `sessions`.
pub async fn serve<F>(listener: TcpListener, sessions: F) -> io::Result<()>
where
    F: Fn() -> Session + Send + Sync + 'static,
{
    loop {
        let (socket, _) = listener.accept().await?;
        let handlers = Handlers(Arc::new(Connection::new(sessions())));
        tokio::spawn(async move {
            // A connection's failure (a client that vanished, a malformed
            // message) ends that connection only.
            let _ = pgwire::tokio::process_socket(socket, None, handlers).await;
        });
    }
}
