//! Users and roles: who may log in, whether they are superusers, and their
//! password as a SCRAM-SHA-256 verifier (never the password itself). The SQL
//! layer computes verifiers and the server checks logins against them; the
//! engine only keeps roles durable with the rest of the catalog.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    /// Whether the role may open a session.
    pub login: bool,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`, as
    /// PostgreSQL stores it; `None`: no password, so no password login.
    pub password: Option<String>,
    /// The fewest users a count this role sees may have (`ALTER ROLE ... SET
    /// min_audience_size`); 0: no threshold. A role with one sees audiences
    /// only as counts, never as users (privacy.rs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_audience_size: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
