//! Roles: CREATE ROLE, ALTER ROLE, DROP ROLE, and the SCRAM-SHA-256 verifiers
//! their passwords are stored as.
//!
//! A password never reaches the disk: `PASSWORD 'secret'` is turned into a
//! verifier (salt, iteration count, stored key, server key) exactly as
//! PostgreSQL 16 computes it, so a verifier copied from PostgreSQL's `pg_authid`
//! can be given as the password too.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cohortdb_engine::roles::Role;
use datafusion::sql::sqlparser::ast::{
    AlterRoleOperation, CreateRole, Expr, Ident, ObjectName, Password, ResetConfig, RoleOption,
    SetConfigValue, Value,
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::names::{normalize, position_of};
use crate::session::Session;

/// PBKDF2 iterations for new verifiers (PostgreSQL's default `scram_iterations`).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A SCRAM-SHA-256 verifier: what the server needs to check a login, and
/// nothing from which the password could be recovered cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// SHA-256(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl ScramVerifier {
    /// The verifier of `password` with `salt`.
    pub fn new(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let prepared = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let salted = salted_password(prepared.as_bytes(), salt, iterations);
        ScramVerifier {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(hmac(&salted, b"Client Key")).to_vec(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// The verifier of `password` with a fresh random salt.
    pub fn generate(password: &str) -> ScramVerifier {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the operating system provides random bytes");
        ScramVerifier::new(password, &salt, SCRAM_ITERATIONS)
    }
}

impl std::fmt::Display for ScramVerifier {
    /// PostgreSQL's text form: `SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(&self.stored_key),
            BASE64.encode(&self.server_key)
        )
    }
}

impl FromStr for ScramVerifier {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<ScramVerifier, String> {
        let bad = || "not a SCRAM-SHA-256 verifier".to_string();
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| BASE64.decode(s).map_err(|_| bad());
        let verifier = ScramVerifier {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: decode(salt)?,
            stored_key: decode(stored)?,
            server_key: decode(server)?,
        };
        if verifier.iterations == 0
            || verifier.stored_key.len() != 32
            || verifier.server_key.len() != 32
        {
            return Err(bad());
        }
        Ok(verifier)
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 5802's Hi(): PBKDF2-HMAC-SHA-256 with one output block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u.clone();
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(&u) {
            *o ^= x;
        }
    }
    out
}

/// What a login needs to know of a role.
#[derive(Debug, Clone)]
pub struct Login {
    pub superuser: bool,
    /// `None` when the role has no password (it cannot log in with one).
    pub verifier: Option<ScramVerifier>,
}

impl Session {
    /// The role `user` logs in as, if it exists and may log in.
    pub fn login(&self, user: &str) -> Option<Login> {
        let role = self.catalog().role(user).filter(|r| r.login)?;
        Some(Login {
            superuser: role.superuser,
            verifier: role.password.as_deref().and_then(|p| p.parse().ok()),
        })
    }
}

/// The stored form of a PASSWORD option: a verifier (new, or given as one).
fn password_text(password: &Password) -> Result<Option<String>> {
    match password {
        Password::NullPassword => Ok(None),
        Password::Password(Expr::Value(v)) => match &v.value {
            Value::SingleQuotedString(text) => Ok(Some(match text.parse::<ScramVerifier>() {
                Ok(verifier) => verifier.to_string(),
                Err(_) => ScramVerifier::generate(text).to_string(),
            })),
            _ => Err(Error::invalid("PASSWORD takes a string or NULL", None)),
        },
        Password::Password(other) => Err(Error::invalid(
            "PASSWORD takes a string or NULL",
            position_of(other),
        )),
    }
}

fn require_superuser(session: &Session, action: &str) -> Result<()> {
    if session.is_superuser() {
        Ok(())
    } else {
        Err(Error::PermissionDenied {
            message: format!("permission denied to {action}"),
        })
    }
}

fn role_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(normalize)
            .ok_or_else(|| Error::invalid(format!("invalid role name {name}"), position_of(name))),
        _ => Err(Error::invalid(
            format!("invalid role name {name}"),
            position_of(name),
        )),
    }
}

/// CREATE ROLE name [WITH] [LOGIN] [SUPERUSER] [PASSWORD 'secret' | NULL].
pub(crate) fn create_role(session: &Session, create: CreateRole) -> Result<()> {
    require_superuser(session, "create role")?;
    let password = create
        .password
        .as_ref()
        .map(password_text)
        .transpose()?
        .flatten();
    for name in &create.names {
        let name = role_name(name)?;
        if create.if_not_exists && session.catalog().role(&name).is_some() {
            continue;
        }
        session.catalog().create_role(Role::new(
            &name,
            create.superuser.unwrap_or(false),
            create.login.unwrap_or(false),
            password.clone(),
        ))?;
    }
    Ok(())
}

/// ALTER ROLE name [WITH] option ...: superusers change any role; others only
/// their own password.
pub(crate) fn alter_role(
    session: &Session,
    name: &Ident,
    operation: AlterRoleOperation,
) -> Result<()> {
    let position = crate::error::Position::from_location(name.span.start);
    let name = normalize(name);
    let options = match operation {
        AlterRoleOperation::WithOptions { options } => options,
        AlterRoleOperation::Set {
            config_name,
            config_value,
            in_database: None,
        } => {
            let value = match config_value {
                SetConfigValue::Value(expr) => Some(expr),
                SetConfigValue::Default => None,
                SetConfigValue::FromCurrent => {
                    return Err(Error::unsupported("ALTER ROLE ... FROM CURRENT", position));
                }
            };
            return alter_role_setting(session, &name, &config_name, value);
        }
        AlterRoleOperation::Reset {
            config_name: ResetConfig::ConfigName(config_name),
            in_database: None,
        } => return alter_role_setting(session, &name, &config_name, None),
        AlterRoleOperation::Reset {
            config_name: ResetConfig::ALL,
            in_database: None,
        } => {
            require_superuser(session, "alter role")?;
            session
                .catalog()
                .alter_role(&name, |role| role.min_audience_size = 0)?;
            return Ok(());
        }
        _ => return Err(Error::unsupported("this form of ALTER ROLE", position)),
    };
    let own_password_only =
        options.iter().all(|o| matches!(o, RoleOption::Password(_))) && session.user() == name;
    if !own_password_only {
        require_superuser(session, "alter role")?;
    }
    let (mut login, mut superuser, mut password) = (None, None, None);
    for option in options {
        match option {
            RoleOption::Login(value) => login = Some(value),
            RoleOption::SuperUser(value) => superuser = Some(value),
            RoleOption::Password(value) => password = Some(password_text(&value)?),
            other => {
                return Err(Error::unsupported(format!("ALTER ROLE {other}"), position));
            }
        }
    }
    session.catalog().alter_role(&name, |role| {
        role.login = login.unwrap_or(role.login);
        role.superuser = superuser.unwrap_or(role.superuser);
        if let Some(password) = password {
            role.password = password;
        }
    })?;
    Ok(())
}

/// ALTER ROLE name SET setting { = | TO } value (RESET and DEFAULT: `None`).
/// A role's own setting is `min_audience_size`, the threshold below which it
/// is shown no count (docs/privacy.md); superusers set it.
fn alter_role_setting(
    session: &Session,
    role: &str,
    setting: &ObjectName,
    value: Option<Expr>,
) -> Result<()> {
    require_superuser(session, "alter role")?;
    let name = setting.to_string().to_ascii_lowercase();
    if name != "min_audience_size" {
        return Err(match crate::settings::is_registered(&name) {
            true => Error::unsupported(
                format!("ALTER ROLE ... SET {name} (only min_audience_size is kept with a role)"),
                position_of(setting),
            ),
            false => Error::UnknownSetting { name },
        });
    }
    let threshold = match &value {
        None => 0,
        Some(Expr::Value(v)) => match &v.value {
            Value::Number(n, _) => n.parse::<u64>().ok(),
            Value::SingleQuotedString(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::invalid(
                format!("min_audience_size is a whole number of users, 0 or more, not {v}"),
                position_of(v),
            )
        })?,
        Some(other) => {
            return Err(Error::invalid(
                format!("min_audience_size is a whole number of users, 0 or more, not {other}"),
                position_of(other),
            ));
        }
    };
    session
        .catalog()
        .alter_role(role, |r| r.min_audience_size = threshold)?;
    Ok(())
}

/// DROP ROLE [IF EXISTS] name, ...
pub(crate) fn drop_roles(session: &Session, names: &[ObjectName], if_exists: bool) -> Result<()> {
    require_superuser(session, "drop role")?;
    for name in names {
        let name = role_name(name)?;
        if name == session.user() {
            return Err(Error::ObjectInUse {
                message: "current user cannot be dropped".into(),
            });
        }
        session.catalog().drop_role(&name, if_exists)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 § 3's example exchange: user "user", password "pencil", salt
    /// "W22ZaJ0SNY7soEsUEjb6gQ==", 4096 iterations. Its ClientProof and
    /// ServerSignature follow from these keys.
    #[test]
    fn verifier_matches_rfc_7677() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let verifier = ScramVerifier::new("pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let client_signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let proof = BASE64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("proof");
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(Sha256::digest(&client_key).to_vec(), verifier.stored_key);
    }

    #[test]
    fn verifiers_round_trip_through_text() {
        let verifier = ScramVerifier::generate("secret");
        let text = verifier.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(text.parse::<ScramVerifier>(), Ok(verifier));
        assert!("md5abc".parse::<ScramVerifier>().is_err());
        assert!(
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA"
                .parse::<ScramVerifier>()
                .is_err()
        );
    }
}
