//! Admitting a connection: protocol version, connection limit, the client's
//! startup settings, and the cancel key that lets another connection stop this
//! one's statements.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, PidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::connection::Connection;

/// An error that ends the connection, as PostgreSQL's FATAL ones do.
pub(crate) fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

/// The reported settings, sent as ParameterStatus messages after authentication.
struct Reported(HashMap<String, String>);

impl ServerParameterProvider for Reported {
    fn server_parameters<C: ClientInfo>(&self, _client: &C) -> Option<HashMap<String, String>> {
        Some(self.0.clone())
    }
}

impl Connection {
    /// Counts this connection against the limit, or refuses it.
    fn admit(&self) -> PgWireResult<()> {
        let limit = self.shared.options.max_connections;
        if self.shared.sessions.fetch_add(1, Ordering::SeqCst) >= limit {
            self.shared.sessions.fetch_sub(1, Ordering::SeqCst);
            return Err(fatal("53300", "sorry, too many clients already".into()));
        }
        self.admitted.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, &startup).await?;
        save_startup_parameters_to_metadata(client, &startup);
        self.admit()?;
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        let reported = self
            .session
            .start(&user, true, client.metadata())
            .map_err(|e| fatal(e.sqlstate(), e.message()))?;
        let (pid, key) = self.shared.keys.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        self.pid.store(pid, Ordering::SeqCst);
        self.shared
            .cancels
            .lock()
            .expect("cancel registry lock")
            .insert(pid, (key, self.session.cancel_handle()));
        finish_authentication(client, &Reported(reported.into_iter().collect())).await
    }
}

/// Answers cancel requests, which arrive on a connection of their own.
#[async_trait]
impl CancelHandler for Connection {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let cancels = self.shared.cancels.lock().expect("cancel registry lock");
        if let Some((key, handle)) = cancels.get(&request.pid)
            && key.eq_value(&request.secret_key)
        {
            handle.cancel();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.admitted.load(Ordering::SeqCst) {
            self.shared.sessions.fetch_sub(1, Ordering::SeqCst);
            let pid = self.pid.load(Ordering::SeqCst);
            self.shared
                .cancels
                .lock()
                .expect("cancel registry lock")
                .remove(&pid);
        }
    }
}
