//! Admitting a connection: protocol version, connection limit, authentication
//! (SCRAM-SHA-256 against the roles' verifiers, or trust), the client's startup
//! settings, and the cancel key that lets another connection stop this one's
//! statements.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use cohortdb_sql::ScramVerifier;
use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::scram::{
    ScramSecret, ScramServerAuth, ScramServerAuthWaitingForClientFinal,
};
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::Auth;
use crate::connection::Connection;

/// The one SASL mechanism offered.
const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

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

/// Where a SCRAM login stands.
#[derive(Default)]
pub(crate) enum Scram {
    /// AuthenticationSASL sent; waiting for the client's first message.
    #[default]
    Started,
    /// Server-first sent; waiting for the client's proof. `superuser` is `None`
    /// when the user cannot log in (unknown, no LOGIN, no password): the
    /// exchange runs to the end on a made-up verifier, so a client learns
    /// nothing from where it fails.
    WaitingForProof {
        exchange: Box<ScramServerAuthWaitingForClientFinal>,
        superuser: Option<bool>,
    },
}

impl Connection {
    /// The error a failed password login ends with, recorded in the audit log.
    fn login_failed(&self, user: &str) -> PgWireError {
        const CODE: &str = "28P01";
        if let Err(e) = self.session.audit_login(user, Some(CODE)) {
            return fatal(e.sqlstate(), e.message());
        }
        fatal(
            CODE,
            format!("password authentication failed for user \"{user}\""),
        )
    }

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

    /// Starts the session as `user` and sends AuthenticationOk, the reported
    /// settings, the cancel key and ReadyForQuery.
    async fn complete<C>(&self, client: &mut C, user: &str, superuser: bool) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let reported = self.session.start(user, superuser, client.metadata());
        let login = self
            .session
            .audit_login(user, reported.as_ref().err().map(|e| e.sqlstate()));
        let reported = reported
            .and_then(|reported| login.map(|()| reported))
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

    /// One step of a SCRAM-SHA-256 exchange.
    async fn scram_step<C>(
        &self,
        client: &mut C,
        message: PasswordMessageFamily,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        let state = std::mem::take(&mut *self.scram.lock().expect("scram state lock"));
        match state {
            Scram::Started => {
                let initial = message.into_sasl_initial_response()?;
                if initial.auth_method != SCRAM_SHA_256 {
                    return Err(fatal(
                        "28000",
                        format!("unsupported SASL mechanism {}", initial.auth_method),
                    ));
                }
                let data = initial.data.unwrap_or_default();
                let login = self.session.login(&user);
                let (verifier, superuser) = match login {
                    Some(cohortdb_sql::Login {
                        superuser,
                        verifier: Some(verifier),
                    }) => (verifier, Some(superuser)),
                    _ => (ScramVerifier::generate(&user), None),
                };
                let secret = ScramSecret::Verifier {
                    salt: verifier.salt,
                    iterations: verifier.iterations as usize,
                    stored_key: verifier.stored_key,
                    server_key: verifier.server_key,
                };
                let (server_first, exchange) = ScramServerAuth::new()
                    .on_client_first_message_with_secret(&data, secret)
                    .map_err(|_| self.login_failed(&user))?;
                *self.scram.lock().expect("scram state lock") = Scram::WaitingForProof {
                    exchange: Box::new(exchange),
                    superuser,
                };
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLContinue(server_first.into()),
                    ))
                    .await?;
                Ok(())
            }
            Scram::WaitingForProof {
                exchange,
                superuser,
            } => {
                let response = message.into_sasl_response()?;
                let server_final = exchange
                    .on_client_final_message(&response.data)
                    .map_err(|_| self.login_failed(&user))?;
                let superuser = superuser.ok_or_else(|| self.login_failed(&user))?;
                client
                    .feed(PgWireBackendMessage::Authentication(
                        Authentication::SASLFinal(server_final.into()),
                    ))
                    .await?;
                self.complete(client, &user, superuser).await
            }
        }
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
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                self.session
                    .set_client_address(&client.socket_addr().to_string());
                if self.shared.options.require_tls && !client.is_secure() {
                    return Err(fatal(
                        "28000",
                        "this server accepts TLS connections only (connect with sslmode=require)"
                            .into(),
                    ));
                }
                self.admit()?;
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                match self.shared.options.auth {
                    Auth::Trust => self.complete(client, &user, true).await,
                    Auth::Scram => {
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                                vec![SCRAM_SHA_256.to_string()],
                            )))
                            .await?;
                        Ok(())
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message)
                if self.shared.options.auth == Auth::Scram =>
            {
                self.scram_step(client, message).await
            }
            _ => Err(fatal("08P01", "unexpected message during startup".into())),
        }
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
