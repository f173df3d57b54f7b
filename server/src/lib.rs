//! cohortdb-server: the PostgreSQL wire protocol over cohortdb-sql sessions.
//!
//! This crate owns all network IO: startup and authentication, TLS, the simple and
//! extended query protocols, COPY, cancellation and connection limits. It holds no
//! code yet; the wire-protocol work fills it in. It depends only on `cohortdb-sql`
//! (never on the engine directly), keeping dependencies flowing server → sql → engine.
