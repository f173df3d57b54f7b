//! The settings registry: every run-time parameter a session knows, its default,
//! who may change it and how its values are checked and spelled. `SET`, `RESET`,
//! `SHOW`, `current_setting`, `set_config`, startup parameters and the server's
//! ParameterStatus messages all read this one table.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{
    ContextModifier, Expr, Ident, Reset, Set, Statement, UnaryOperator, Value,
};

use crate::error::{Error, Result};
use crate::names::position_of;
use crate::state::State;
use crate::transaction;

/// The PostgreSQL release cohortdb speaks as, and our own version.
pub const SERVER_VERSION: &str = concat!("16.6 (cohortdb ", env!("CARGO_PKG_VERSION"), ")");
/// `server_version_num` for [`SERVER_VERSION`].
pub const SERVER_VERSION_NUM: &str = "160006";

/// Who may change a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any session, with SET.
    User,
    /// Superusers only, with SET: what widens what a session may see.
    Superuser,
    /// Nobody: the value describes the server or the session.
    ReadOnly,
}

/// One registered setting.
struct Definition {
    /// The name as PostgreSQL spells it in SHOW and ParameterStatus.
    name: &'static str,
    default: &'static str,
    access: Access,
    /// Sent to the client in a ParameterStatus message when it changes.
    report: bool,
    /// Checks a value and returns its canonical spelling, or why it is refused.
    canonical: fn(&str) -> std::result::Result<String, String>,
    description: &'static str,
}

const fn setting(
    name: &'static str,
    default: &'static str,
    access: Access,
    report: bool,
    canonical: fn(&str) -> std::result::Result<String, String>,
    description: &'static str,
) -> Definition {
    Definition {
        name,
        default,
        access,
        report,
        canonical,
        description,
    }
}

use Access::{ReadOnly, Superuser, User};

/// Every setting, sorted by lower-case name.
const REGISTRY: &[Definition] = &[
    setting(
        "application_name",
        "",
        User,
        true,
        any,
        "Sets the application name reported in statistics and logs.",
    ),
    setting(
        "bytea_output",
        "hex",
        User,
        false,
        bytea_output,
        "Sets the output format for bytea (hex only).",
    ),
    setting(
        "client_encoding",
        "UTF8",
        User,
        true,
        encoding,
        "Sets the client's character set encoding (UTF8 only).",
    ),
    setting(
        "client_min_messages",
        "notice",
        User,
        false,
        message_level,
        "Sets the message levels that are sent to the client.",
    ),
    setting(
        "DateStyle",
        "ISO, MDY",
        User,
        true,
        date_style,
        "Sets the display format for date and time values (ISO output).",
    ),
    setting(
        "default_transaction_isolation",
        "read committed",
        User,
        false,
        isolation,
        "Sets the isolation level of each new transaction.",
    ),
    setting(
        "default_transaction_read_only",
        "off",
        User,
        true,
        boolean,
        "Sets the default read-only status of new transactions.",
    ),
    setting(
        "extra_float_digits",
        "1",
        User,
        false,
        float_digits,
        "Sets the number of digits displayed for floating-point values.",
    ),
    setting(
        "idle_in_transaction_session_timeout",
        "0",
        User,
        false,
        duration,
        "Accepted for compatibility; idle sessions are not ended.",
    ),
    setting(
        "in_hot_standby",
        "off",
        ReadOnly,
        true,
        any,
        "Shows whether hot standby is currently active.",
    ),
    setting(
        "include_suppressed",
        "off",
        Superuser,
        false,
        boolean,
        "Keeps the suppression tag's users in audiences, for compliance reporting (superusers only).",
    ),
    setting(
        "integer_datetimes",
        "on",
        ReadOnly,
        true,
        any,
        "Shows whether datetimes are integer based.",
    ),
    setting(
        "IntervalStyle",
        "postgres",
        User,
        true,
        interval_style,
        "Sets the display format for interval values.",
    ),
    setting(
        "is_superuser",
        "on",
        ReadOnly,
        true,
        any,
        "Shows whether the current user is a superuser.",
    ),
    setting(
        "jit",
        "off",
        User,
        false,
        boolean,
        "Accepted for compatibility; queries are not JIT-compiled.",
    ),
    setting(
        "lc_messages",
        "C",
        User,
        false,
        any,
        "Sets the language in which messages are displayed.",
    ),
    setting(
        "lock_timeout",
        "0",
        User,
        false,
        duration,
        "Accepted for compatibility; statements do not wait for locks.",
    ),
    setting(
        "max_identifier_length",
        "63",
        ReadOnly,
        false,
        any,
        "Shows the maximum identifier length.",
    ),
    setting(
        "min_audience_size",
        "0",
        ReadOnly,
        false,
        any,
        "Shows the fewest users a count this role is shown may have (ALTER ROLE ... SET min_audience_size).",
    ),
    setting(
        "search_path",
        "\"$user\", public",
        User,
        false,
        any,
        "Sets the schema search order for names that are not schema-qualified.",
    ),
    setting(
        "server_encoding",
        "UTF8",
        ReadOnly,
        true,
        any,
        "Shows the server (database) character set encoding.",
    ),
    setting(
        "server_version",
        SERVER_VERSION,
        ReadOnly,
        true,
        any,
        "Shows the server version.",
    ),
    setting(
        "server_version_num",
        SERVER_VERSION_NUM,
        ReadOnly,
        false,
        any,
        "Shows the server version as an integer.",
    ),
    setting(
        "session_authorization",
        "cohortdb",
        ReadOnly,
        true,
        any,
        "Shows the session user name.",
    ),
    setting(
        "standard_conforming_strings",
        "on",
        User,
        true,
        always_on,
        "Causes '...' strings to treat backslashes literally.",
    ),
    setting(
        "statement_timeout",
        "0",
        User,
        false,
        duration,
        "Sets the maximum allowed duration of any statement; 0 turns it off.",
    ),
    setting(
        "suppression_tag",
        "opted_out",
        ReadOnly,
        false,
        any,
        "Shows the tag whose users audiences leave out (ALTER SYSTEM SET suppression_tag).",
    ),
    setting(
        "TimeZone",
        "UTC",
        User,
        true,
        any,
        "Sets the time zone reported to clients; timestamps are sent in UTC with their offset.",
    ),
    setting(
        "transaction_isolation",
        "read committed",
        User,
        false,
        isolation,
        "Sets the current transaction's isolation level.",
    ),
    setting(
        "transaction_read_only",
        "off",
        User,
        false,
        boolean,
        "Sets the current transaction's read-only status.",
    ),
];

/// Whether a setting is called `name`.
pub(crate) fn is_registered(name: &str) -> bool {
    find(name).is_some()
}

/// The definition of setting `name`, in any case. Looked up for every
/// statement (its timeout, the role), so by hash rather than along the list.
fn find(name: &str) -> Option<&'static Definition> {
    static BY_NAME: LazyLock<HashMap<String, &'static Definition>> = LazyLock::new(|| {
        REGISTRY
            .iter()
            .map(|d| (d.name.to_ascii_lowercase(), d))
            .collect()
    });
    match BY_NAME.get(name) {
        Some(def) => Some(def),
        None if name.bytes().any(|b| b.is_ascii_uppercase()) => {
            BY_NAME.get(&name.to_ascii_lowercase()).copied()
        }
        None => None,
    }
}

/// A custom (placeholder) setting: a dotted name outside the namespaces of the
/// engine (`cohortdb.`) and of its query engine (`datafusion.`, whose options
/// are not exposed), which applications may set and read back
/// (`SET myapp.tenant = '7'`).
fn is_custom(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.contains('.') && !lower.starts_with("cohortdb.") && !lower.starts_with("datafusion.")
}

/// The canonical name of a setting (see [`Settings::canonical_name`]), borrowed
/// from the registry for a registered one.
fn canonical(name: &str) -> Result<Cow<'static, str>> {
    if let Some(def) = find(name) {
        return Ok(Cow::Borrowed(def.name));
    }
    if is_custom(name) {
        return Ok(Cow::Owned(name.to_ascii_lowercase()));
    }
    Err(Error::UnknownSetting {
        name: name.to_string(),
    })
}

/// The names of settings that are reported to clients, with their defaults.
pub(crate) fn reported() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().filter(|d| d.report).map(|d| d.name)
}

/// Values a session has set, layered over the registry's defaults.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Values set for the session (canonical name → value).
    session: BTreeMap<String, String>,
    /// Values set with SET LOCAL, gone when the transaction block ends.
    local: BTreeMap<String, String>,
    /// Which change made these values: a number no other change in the
    /// process was given (0 for the defaults), kept by copies. Two settings
    /// with the same version hold the same values, so a session knows without
    /// comparing them that nothing changed since it last looked.
    version: u64,
    /// What every statement reads, worked out again at each change.
    every_statement: EveryStatement,
}

/// The settings every statement reads (its timeout, whether the transaction
/// is read-only, the role and application it is audited as), kept worked out
/// so that a statement does not look up and parse them again.
#[derive(Debug, Clone, Default)]
struct EveryStatement {
    statement_timeout_ms: u64,
    read_only: bool,
    /// Shared with the audit records of the session's statements.
    user: Arc<str>,
    application_name: Option<Arc<str>>,
}

impl Default for Settings {
    fn default() -> Settings {
        let mut settings = Settings {
            session: BTreeMap::new(),
            local: BTreeMap::new(),
            version: 0,
            every_statement: EveryStatement::default(),
        };
        settings.every_statement = settings.work_out_every_statement();
        settings
    }
}

impl PartialEq for Settings {
    /// The same values, whatever change made them: the same version says so
    /// at once.
    fn eq(&self, other: &Settings) -> bool {
        self.version == other.version
            || (self.session == other.session && self.local == other.local)
    }
}

/// The last version given to a change of any session's settings.
static VERSIONS: AtomicU64 = AtomicU64::new(0);

/// How long a SET lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Session,
    Local,
}

impl Settings {
    /// Which change made the current values (see the field).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Marks the values as changed.
    fn changed(&mut self) {
        self.version = VERSIONS.fetch_add(1, Ordering::Relaxed) + 1;
        self.every_statement = self.work_out_every_statement();
    }

    fn work_out_every_statement(&self) -> EveryStatement {
        let value = |name| self.get(name).ok().flatten();
        EveryStatement {
            statement_timeout_ms: value("statement_timeout")
                .and_then(|v| duration_ms(&v).ok())
                .unwrap_or(0),
            read_only: self.flag("transaction_read_only"),
            user: value("session_authorization").unwrap_or_default().into(),
            application_name: value("application_name")
                .filter(|name| !name.is_empty())
                .map(Into::into),
        }
    }

    /// The canonical name of a setting, or 42704 if nothing is called that.
    pub(crate) fn canonical_name(name: &str) -> Result<String> {
        Ok(canonical(name)?.into_owned())
    }

    /// The current value of a setting; `None` for a custom setting never set.
    pub(crate) fn get(&self, name: &str) -> Result<Option<String>> {
        let name = canonical(name)?;
        if let Some(value) = self.local.get(name.as_ref()) {
            return Ok(Some(value.clone()));
        }
        // A transaction's characteristics start as the session's defaults.
        if let Some(default) = transaction_default(&name) {
            return self.get(default);
        }
        if let Some(value) = self.session.get(name.as_ref()) {
            return Ok(Some(value.clone()));
        }
        Ok(find(&name).map(|d| d.default.to_string()))
    }

    /// Sets a setting for the session or the transaction, after checking the
    /// value and that it may be changed at all.
    pub(crate) fn set(&mut self, name: &str, value: &str, scope: Scope) -> Result<String> {
        let canonical = Settings::canonical_name(name)?;
        let value = match find(&canonical) {
            Some(def) => {
                if def.access == ReadOnly {
                    return Err(Error::ReadOnlySetting {
                        name: def.name.to_string(),
                    });
                }
                if def.access == Superuser && !self.flag("is_superuser") {
                    return Err(Error::PermissionDenied {
                        message: format!(
                            "permission denied to set parameter \"{}\": only superusers may",
                            def.name
                        ),
                    });
                }
                (def.canonical)(value).map_err(|reason| Error::InvalidSetting {
                    name: def.name.to_string(),
                    value: value.to_string(),
                    reason,
                })?
            }
            None => value.to_string(),
        };
        // A transaction's characteristics last as long as the transaction.
        let scope = if transaction_default(&canonical).is_some() {
            Scope::Local
        } else {
            scope
        };
        self.local.remove(&canonical);
        match scope {
            Scope::Session => self.session.insert(canonical, value.clone()),
            Scope::Local => self.local.insert(canonical, value.clone()),
        };
        self.changed();
        Ok(value)
    }

    /// Puts a setting back to its default (RESET name).
    pub(crate) fn reset(&mut self, name: &str) -> Result<()> {
        let canonical = Settings::canonical_name(name)?;
        if let Some(def) = find(&canonical) {
            self.set(&canonical, def.default, Scope::Session)?;
        }
        self.session.remove(&canonical);
        self.local.remove(&canonical);
        self.changed();
        Ok(())
    }

    /// Puts every setting a user may change back to its default (RESET ALL).
    pub(crate) fn reset_all(&mut self) {
        let keep = |name: &String| find(name).is_some_and(|d| d.access == ReadOnly);
        self.session.retain(|name, _| keep(name));
        self.local.clear();
        self.changed();
    }

    /// Sets a value the session itself owns (is_superuser, session_authorization),
    /// which users cannot SET.
    pub(crate) fn set_internal(&mut self, name: &str, value: &str) {
        let def = find(name).expect("internal settings are registered");
        if self.session.get(def.name).is_some_and(|v| v == value) {
            return;
        }
        self.session.insert(def.name.to_string(), value.to_string());
        self.changed();
    }

    /// Ends a transaction block: SET LOCAL values lapse.
    pub(crate) fn end_transaction(&mut self) {
        if !self.local.is_empty() {
            self.local.clear();
            self.changed();
        }
    }

    /// Every registered setting with its current value and description, plus the
    /// custom settings this session has set (SHOW ALL).
    pub(crate) fn all(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = REGISTRY
            .iter()
            .map(|d| {
                let value = self.get(d.name).ok().flatten().unwrap_or_default();
                (d.name.to_string(), value, d.description.to_string())
            })
            .collect();
        for name in self.session.keys().chain(self.local.keys()) {
            if find(name).is_none() && !rows.iter().any(|r| &r.0 == name) {
                let value = self.get(name).ok().flatten().unwrap_or_default();
                rows.push((name.clone(), value, String::new()));
            }
        }
        rows.sort_by_key(|r| r.0.to_ascii_lowercase());
        rows
    }

    /// The statement timeout in milliseconds; 0 means none.
    pub(crate) fn statement_timeout_ms(&self) -> u64 {
        self.every_statement.statement_timeout_ms
    }

    /// Whether the transaction is read-only (`transaction_read_only`).
    pub(crate) fn read_only(&self) -> bool {
        self.every_statement.read_only
    }

    /// The session's role (`session_authorization`).
    pub(crate) fn user(&self) -> &Arc<str> {
        &self.every_statement.user
    }

    /// `application_name`, unless empty.
    pub(crate) fn application_name(&self) -> Option<&Arc<str>> {
        self.every_statement.application_name.as_ref()
    }

    /// A boolean setting's value.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name).ok().flatten().as_deref() == Some("on")
    }
}

/// The session default a transaction characteristic starts from.
fn transaction_default(name: &str) -> Option<&'static str> {
    match name {
        "transaction_read_only" => Some("default_transaction_read_only"),
        "transaction_isolation" => Some("default_transaction_isolation"),
        _ => None,
    }
}

fn any(value: &str) -> std::result::Result<String, String> {
    Ok(value.to_string())
}

fn boolean(value: &str) -> std::result::Result<String, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Ok("on".into()),
        "off" | "false" | "no" | "0" | "f" | "n" => Ok("off".into()),
        _ => Err("a Boolean value is required (on or off)".into()),
    }
}

fn always_on(value: &str) -> std::result::Result<String, String> {
    match boolean(value)?.as_str() {
        "on" => Ok("on".into()),
        _ => Err("cohortdb always treats backslashes in strings literally".into()),
    }
}

fn encoding(value: &str) -> std::result::Result<String, String> {
    // Any spelling PostgreSQL accepts: `utf-8`, `'utf-8'` (asyncpg quotes it).
    let name = value
        .trim()
        .trim_matches('\'')
        .to_ascii_uppercase()
        .replace(['-', '_'], "");
    match name.as_str() {
        "UTF8" | "UNICODE" => Ok("UTF8".into()),
        _ => Err("cohortdb speaks UTF8 only".into()),
    }
}

fn bytea_output(value: &str) -> std::result::Result<String, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "hex" => Ok("hex".into()),
        _ => Err("bytea values are sent in hex format only".into()),
    }
}

fn date_style(value: &str) -> std::result::Result<String, String> {
    let mut order = "MDY";
    let mut iso = true;
    for part in value.split(',').map(|p| p.trim().to_ascii_uppercase()) {
        match part.as_str() {
            "ISO" => iso = true,
            "MDY" | "US" | "NONEURO" | "NONEUROPEAN" => order = "MDY",
            "DMY" | "EURO" | "EUROPEAN" => order = "DMY",
            "YMD" => order = "YMD",
            "SQL" | "POSTGRES" | "GERMAN" => iso = false,
            _ => return Err(format!("unrecognized DateStyle key word \"{part}\"")),
        }
    }
    if !iso {
        return Err("dates and times are sent in ISO format only".into());
    }
    Ok(format!("ISO, {order}"))
}

fn interval_style(value: &str) -> std::result::Result<String, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "postgres" => Ok("postgres".into()),
        _ => Err("intervals are sent in postgres style only".into()),
    }
}

fn isolation(value: &str) -> std::result::Result<String, String> {
    let words = value.split_whitespace().collect::<Vec<_>>().join(" ");
    match words.to_ascii_lowercase().as_str() {
        level @ ("read uncommitted" | "read committed" | "repeatable read" | "serializable") => {
            Ok(level.to_string())
        }
        _ => Err("the isolation levels are read uncommitted, read committed, repeatable read and serializable".into()),
    }
}

fn message_level(value: &str) -> std::result::Result<String, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "debug" => Ok("debug2".into()),
        level @ ("debug5" | "debug4" | "debug3" | "debug2" | "debug1" | "log" | "notice"
        | "warning" | "error") => Ok(level.to_string()),
        _ => Err("the levels are debug5..debug1, log, notice, warning and error".into()),
    }
}

fn float_digits(value: &str) -> std::result::Result<String, String> {
    match value.trim().parse::<i32>() {
        Ok(n) if (-15..=3).contains(&n) => Ok(n.to_string()),
        _ => Err("an integer from -15 to 3 is required".into()),
    }
}

/// Milliseconds per duration unit, largest first, as PostgreSQL spells them.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("min", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A duration setting (`5000`, `'5s'`, `'1 min'`) in canonical form: the largest
/// unit that divides it, as PostgreSQL shows it.
fn duration(value: &str) -> std::result::Result<String, String> {
    let ms = duration_ms(value)?;
    if ms == 0 {
        return Ok("0".into());
    }
    let (unit, size) = DURATION_UNITS
        .iter()
        .find(|(_, size)| ms % size == 0)
        .expect("every whole number of milliseconds divides by 1");
    Ok(format!("{}{unit}", ms / size))
}

fn duration_ms(value: &str) -> std::result::Result<u64, String> {
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "a duration such as 5000, '5s' or '1min' is required".to_string())?;
    let unit = unit.trim();
    let size = if unit.is_empty() {
        1
    } else {
        DURATION_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, size)| *size)
            .ok_or_else(|| {
                format!("valid units for this parameter are \"ms\", \"s\", \"min\", \"h\", and \"d\", not \"{unit}\"")
            })?
    };
    number
        .checked_mul(size)
        .filter(|ms| *ms <= i32::MAX as u64)
        .ok_or_else(|| "the duration is out of range (at most 2147483647ms)".to_string())
}

/// The `name=value` pairs of a startup `options` string (`-c a=1 --b=2`).
pub(crate) fn command_line_options(options: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let pair = match word {
            "-c" => words.next().unwrap_or(""),
            other => other
                .strip_prefix("--")
                .or_else(|| other.strip_prefix("-c"))
                .unwrap_or(""),
        };
        let Some((name, value)) = pair.split_once('=') else {
            return Err(Error::invalid(
                format!("invalid startup option \"{word}\": expected -c name=value"),
                None,
            ));
        };
        pairs.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(pairs)
}

/// Whether a statement sets one of DataFusion's own options (`datafusion.*`).
pub(crate) fn is_query_engine_option(statement: &Statement) -> bool {
    matches!(statement, Statement::Set(Set::SingleAssignment { variable, .. })
        if variable.to_string().to_ascii_lowercase().starts_with("datafusion."))
}

/// Runs a SET statement.
pub(crate) fn set_statement(state: &mut State, set: Set) -> Result<()> {
    match set {
        Set::SingleAssignment {
            scope,
            hivevar: false,
            variable,
            values,
        } => {
            let name = variable.to_string();
            let local = matches!(scope, Some(ContextModifier::Local));
            let value = match values.as_slice() {
                [Expr::Identifier(ident)]
                    if ident.quote_style.is_none()
                        && ident.value.eq_ignore_ascii_case("default") =>
                {
                    None
                }
                [single] => Some(value_text(single)?),
                many if Settings::canonical_name(&name)? == "search_path" => Some(
                    many.iter()
                        .map(value_text)
                        .collect::<Result<Vec<_>>>()?
                        .join(", "),
                ),
                _ => {
                    return Err(Error::invalid(
                        format!("SET {name} takes only one argument"),
                        position_of(&variable),
                    ));
                }
            };
            assign(state, &name, value.as_deref(), local)
        }
        Set::SetTimeZone { local, value } => {
            let value = match &value {
                Expr::Identifier(i)
                    if i.quote_style.is_none()
                        && (i.value.eq_ignore_ascii_case("local")
                            || i.value.eq_ignore_ascii_case("default")) =>
                {
                    None
                }
                other => Some(value_text(other)?),
            };
            assign(state, "TimeZone", value.as_deref(), local)
        }
        Set::SetNames { charset_name, .. } => {
            assign(state, "client_encoding", Some(&charset_name.value), false)
        }
        Set::SetTransaction {
            modes,
            snapshot: None,
            session,
        } => transaction::set_characteristics(state, &modes, session),
        other => Err(Error::unsupported(
            format!("{}", other)
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            None,
        )),
    }
}

/// SET name = value (`None`: DEFAULT) for the session or, with LOCAL, the block.
pub(crate) fn assign(
    state: &mut State,
    name: &str,
    value: Option<&str>,
    local: bool,
) -> Result<()> {
    if local && state.block.is_none() {
        // Outside a block the statement is its own transaction: nothing to do.
        state.notice(
            "WARNING",
            "25P01",
            "SET LOCAL can only be used in transaction blocks".into(),
        );
        Settings::canonical_name(name)?;
        return Ok(());
    }
    let scope = if local { Scope::Local } else { Scope::Session };
    match value {
        Some(value) => state.settings.set(name, value, scope).map(drop),
        None => state.settings.reset(name),
    }
}

/// Runs a RESET statement.
pub(crate) fn reset_statement(state: &mut State, reset: Reset) -> Result<()> {
    match reset {
        Reset::ALL => {
            state.settings.reset_all();
            Ok(())
        }
        Reset::ConfigurationParameter(name) => state.settings.reset(&name.to_string()),
    }
}

/// The rows of SHOW name | ALL.
pub(crate) fn show(state: &State, variable: &[Ident]) -> Result<RecordBatch> {
    let words: Vec<String> = variable
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect();
    let name = match words.join(" ").as_str() {
        "all" => return Ok(show_all(&state.settings)),
        "transaction isolation level" => "transaction_isolation".to_string(),
        "time zone" => "TimeZone".to_string(),
        "session authorization" => "session_authorization".to_string(),
        _ => variable
            .iter()
            .map(|i| i.value.as_str())
            .collect::<Vec<_>>()
            .join("."),
    };
    let canonical = Settings::canonical_name(&name)?;
    let value = state
        .settings
        .get(&canonical)?
        .ok_or(Error::UnknownSetting { name })?;
    let schema = Arc::new(Schema::new(vec![Field::new(
        canonical,
        DataType::Utf8,
        false,
    )]));
    Ok(
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![value]))])
            .expect("one text column"),
    )
}

fn show_all(settings: &Settings) -> RecordBatch {
    let rows = settings.all();
    let column = |pick: fn(&(String, String, String)) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(pick)))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("setting", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![column(|r| &r.0), column(|r| &r.1), column(|r| &r.2)],
    )
    .expect("three text columns")
}

/// The text of a SET value: a string, number, identifier or keyword.
fn value_text(expr: &Expr) -> Result<String> {
    Ok(match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) if ident.quote_style.is_some() => {
            let plain = ident
                .value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if plain {
                ident.value.clone()
            } else {
                crate::names::quote(&ident.value)
            }
        }
        Expr::Identifier(ident) => ident.value.to_ascii_lowercase(),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => format!("-{}", value_text(expr)?),
        other => {
            return Err(Error::invalid(
                format!("SET takes a literal value, not {other}"),
                position_of(other),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_defaults_are_canonical() {
        let names: Vec<String> = REGISTRY
            .iter()
            .map(|d| d.name.to_ascii_lowercase())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for def in REGISTRY {
            if def.access != ReadOnly {
                assert_eq!(
                    (def.canonical)(def.default).as_deref(),
                    Ok(def.default),
                    "{}",
                    def.name
                );
            }
        }
    }

    #[test]
    fn durations_print_in_their_largest_unit() {
        assert_eq!(duration("5000"), Ok("5s".into()));
        assert_eq!(duration("90s"), Ok("90s".into()));
        assert_eq!(duration("120 s"), Ok("2min".into()));
        assert_eq!(duration("1500"), Ok("1500ms".into()));
        assert_eq!(duration("0"), Ok("0".into()));
        assert_eq!(duration("2h"), Ok("2h".into()));
        assert!(
            duration("5 parsecs")
                .expect_err("refused")
                .contains("not \"parsecs\"")
        );
        assert!(duration("-1").is_err());
        assert!(duration("9999999999").is_err());
    }

    #[test]
    fn values_are_checked_and_spelled_canonically() {
        let mut s = Settings::default();
        assert_eq!(
            s.set("datestyle", "iso", Scope::Session).expect("accepted"),
            "ISO, MDY"
        );
        assert_eq!(
            s.get("DATESTYLE").expect("accepted").expect("accepted"),
            "ISO, MDY"
        );
        assert_eq!(
            s.set("client_encoding", "utf-8", Scope::Session)
                .expect("accepted"),
            "UTF8"
        );
        let e = s
            .set("client_encoding", "LATIN1", Scope::Session)
            .expect_err("refused");
        assert_eq!(e.sqlstate(), "22023");
        assert_eq!(
            e.to_string(),
            "invalid value for parameter \"client_encoding\": \"LATIN1\" (cohortdb speaks UTF8 only)"
        );
        let e = s
            .set("server_version", "1", Scope::Session)
            .expect_err("refused");
        assert_eq!(
            (e.sqlstate(), e.to_string().as_str()),
            ("55P02", "parameter \"server_version\" cannot be changed")
        );
        let e = s
            .set("cohortdb.nothing", "10", Scope::Session)
            .expect_err("refused");
        assert_eq!(e.sqlstate(), "42704");
        let e = s.get("no_such_thing").expect_err("refused");
        assert_eq!(
            (e.sqlstate(), e.to_string().as_str()),
            (
                "42704",
                "unrecognized configuration parameter \"no_such_thing\""
            )
        );
        assert_eq!(s.get("myapp.tenant").expect("accepted"), None);
        s.set("myapp.Tenant", "7", Scope::Session)
            .expect("accepted");
        assert_eq!(
            s.get("MYAPP.tenant").expect("accepted").as_deref(),
            Some("7")
        );
    }

    #[test]
    fn local_values_lapse_and_reset_restores_defaults() {
        let mut s = Settings::default();
        s.set("statement_timeout", "1s", Scope::Session)
            .expect("accepted");
        s.set("statement_timeout", "2s", Scope::Local)
            .expect("accepted");
        assert_eq!(s.statement_timeout_ms(), 2000);
        s.end_transaction();
        assert_eq!(s.statement_timeout_ms(), 1000);
        s.reset("statement_timeout").expect("accepted");
        assert_eq!(
            s.get("statement_timeout").expect("accepted").as_deref(),
            Some("0")
        );
        s.set_internal("is_superuser", "off");
        s.set("application_name", "x", Scope::Session)
            .expect("accepted");
        s.reset_all();
        assert_eq!(
            s.get("application_name").expect("accepted").as_deref(),
            Some("")
        );
        assert_eq!(
            s.get("is_superuser").expect("accepted").as_deref(),
            Some("off")
        );
    }

    #[test]
    fn every_change_gets_a_version_no_other_change_has() -> Result<()> {
        let mut s = Settings::default();
        let defaults = s.version();
        s.set("application_name", "one", Scope::Session)?;
        let one = s.version();
        assert_ne!(one, defaults);
        // A copy (a transaction's snapshot) keeps the version of its values.
        let snapshot = s.clone();
        assert_eq!(snapshot.version(), one);
        // Setting an internal value to what it is, or ending a transaction
        // without SET LOCAL, changes nothing.
        s.set_internal("is_superuser", "on");
        let superuser = s.version();
        assert_ne!(superuser, one);
        s.set_internal("is_superuser", "on");
        s.end_transaction();
        assert_eq!(s.version(), superuser);
        s.set("application_name", "two", Scope::Local)?;
        let two = s.version();
        s.end_transaction();
        let ended = s.version();
        assert!(ended != two && ended != superuser);
        // Back to the snapshot (a rollback), then changed again: the new
        // values are not mistaken for any seen before.
        s = snapshot;
        s.set("application_name", "three", Scope::Session)?;
        assert!(![defaults, one, superuser, two, ended].contains(&s.version()));
        s.reset("application_name")?;
        let reset = s.version();
        s.reset_all();
        assert_ne!(s.version(), reset);
        // Equality is of the values, whatever their versions.
        let mut a = Settings::default();
        a.set("application_name", "x", Scope::Session)?;
        let mut b = Settings::default();
        b.set("application_name", "x", Scope::Session)?;
        assert_ne!(a.version(), b.version());
        assert_eq!(a, b);
        Ok(())
    }
}
