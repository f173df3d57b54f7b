//! The SQL layer's error type and the one table that maps errors to SQLSTATE codes.
//!
//! Engine errors raised inside DataFusion execution travel as
//! `DataFusionError::External` and are downcast back here, never flattened to text.

use std::fmt;

use cohortdb_engine::Error as EngineError;
use datafusion::common::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::Location;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A position in the SQL text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub(crate) fn from_location(location: Location) -> Option<Position> {
        (location.line > 0).then_some(Position {
            line: location.line,
            column: location.column,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Formats an optional position as a message suffix.
struct At(Option<Position>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " (at {p})"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not valid SQL.
    #[error("syntax error: {message}{}", At(*.position))]
    Syntax {
        message: String,
        position: Option<Position>,
    },

    /// Valid SQL that names something unknown or mixes types.
    #[error("{message}{}", At(*.position))]
    Plan {
        message: String,
        position: Option<Position>,
    },

    /// Valid SQL asking for something cohortdb does not do (yet).
    #[error("{feature} is not supported{}", At(*.position))]
    Unsupported {
        feature: String,
        position: Option<Position>,
    },

    /// A bad argument or option value.
    #[error("{message}{}", At(*.position))]
    InvalidArgument {
        message: String,
        position: Option<Position>,
    },

    /// An object whose definition cannot be used (a view naming itself).
    #[error("{message}")]
    InvalidDefinition { message: String },

    /// A statement used against its protocol (wrong number of bound parameters).
    #[error("{message}")]
    Protocol { message: String },

    /// A failure while running a statement (overflow, division by zero, bad cast).
    #[error("{message}")]
    Execution { message: String },

    /// SET, SHOW or current_setting named no known setting.
    #[error("unrecognized configuration parameter \"{name}\"")]
    UnknownSetting { name: String },

    /// A setting given a value it does not take.
    #[error("invalid value for parameter \"{name}\": \"{value}\" ({reason})")]
    InvalidSetting {
        name: String,
        value: String,
        reason: String,
    },

    /// A setting that describes the server or session and cannot be SET.
    #[error("parameter \"{name}\" cannot be changed")]
    ReadOnlySetting { name: String },

    /// The session's role may not do this.
    #[error("{message}")]
    PermissionDenied { message: String },

    /// A privilege that does not apply to the object granted on.
    #[error("{message}")]
    InvalidGrant { message: String },

    /// A statement at odds with the transaction block it runs in (or outside).
    #[error("{0}")]
    Transaction(TransactionError),

    /// The object is in use (the session's own role cannot be dropped).
    #[error("{message}")]
    ObjectInUse { message: String },

    /// A name a cast to an object-identifier type (`'x'::regtype`) did not find.
    #[error("{message}")]
    UndefinedObject { message: String },

    /// FETCH, MOVE or CLOSE named no open cursor.
    #[error("cursor \"{name}\" does not exist")]
    UnknownCursor { name: String },

    /// DECLARE reused an open cursor's name.
    #[error("cursor \"{name}\" already exists")]
    DuplicateCursor { name: String },

    /// DEALLOCATE or EXECUTE named no prepared statement.
    #[error("prepared statement \"{name}\" does not exist")]
    UnknownPreparedStatement { name: String },

    /// The statement was stopped: a cancel request, or `statement_timeout`.
    #[error("canceling statement due to {}", match .reason {
        CancelReason::User => "user request",
        CancelReason::Timeout => "statement timeout",
    })]
    Canceled { reason: CancelReason },

    /// The query needed more memory than the session may use.
    #[error("out of memory: {message}")]
    OutOfMemory { message: String },

    /// An error from the engine: constraint violations, bad files, IO, corruption.
    #[error("{source}{}", At(*.position))]
    Engine {
        #[source]
        source: EngineError,
        position: Option<Position>,
    },
}

impl Error {
    pub(crate) fn unsupported(feature: impl Into<String>, position: Option<Position>) -> Error {
        Error::Unsupported {
            feature: feature.into(),
            position,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>, position: Option<Position>) -> Error {
        Error::InvalidArgument {
            message: message.into(),
            position,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn engine_at(source: EngineError, position: Option<Position>) -> Error {
        Error::Engine { source, position }
    }

    /// The message without the position suffix, for protocols that send the
    /// position separately.
    pub fn message(&self) -> String {
        let text = self.to_string();
        let suffix = At(self.position()).to_string();
        text.strip_suffix(&suffix).unwrap_or(&text).to_string()
    }

    /// The position in the SQL text the error points at, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            Error::Syntax { position, .. }
            | Error::Plan { position, .. }
            | Error::Unsupported { position, .. }
            | Error::InvalidArgument { position, .. }
            | Error::Engine { position, .. } => *position,
            _ => None,
        }
    }

    /// The PostgreSQL SQLSTATE for this error. This is the only place errors are
    /// mapped to codes.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Syntax { .. } => "42601",
            Error::Protocol { .. } => "08P01",
            Error::Plan { message, .. } => {
                if message.contains("No field named")
                    || message.contains("column") && message.contains("does not exist")
                {
                    "42703"
                } else if message.contains("not found") && message.starts_with("table") {
                    "42P01"
                } else if message.starts_with("Invalid function")
                    || message.contains("No function matches")
                {
                    "42883"
                } else {
                    "42804"
                }
            }
            Error::Unsupported { .. } => "0A000",
            Error::UnknownSetting { .. } => "42704",
            Error::InvalidSetting { .. } => "22023",
            Error::ReadOnlySetting { .. } => "55P02",
            Error::PermissionDenied { .. } => "42501",
            Error::Transaction(e) => match e {
                TransactionError::Aborted => "25P02",
                TransactionError::OutsideBlock { .. } => "25P01",
                TransactionError::InsideBlock { .. } => "25001",
                TransactionError::ReadOnly { .. } => "25006",
                TransactionError::NoSavepoint { .. } => "3B001",
            },
            Error::UnknownCursor { .. } => "34000",
            Error::UndefinedObject { .. } => "42704",
            Error::ObjectInUse { .. } => "55006",
            Error::DuplicateCursor { .. } => "42P03",
            Error::UnknownPreparedStatement { .. } => "26000",
            Error::Canceled { .. } => "57014",
            Error::OutOfMemory { .. } => "53200",
            Error::InvalidArgument { .. } => "22023",
            Error::InvalidDefinition { .. } => "42P17",
            Error::InvalidGrant { .. } => "0LP01",
            Error::Execution { message } => {
                if message.contains("Divide by zero") {
                    "22012"
                } else if message.contains("overflow") {
                    "22003"
                } else if message.contains("Cannot cast string")
                    || message.contains("invalid input syntax")
                    || message.contains("Failed to decode value")
                {
                    "22P02"
                } else {
                    "22000"
                }
            }
            Error::Engine { source, .. } => match source {
                EngineError::TableNotFound(_) => "42P01",
                EngineError::TableExists(_) => "42P07",
                EngineError::WrongObjectType { .. } => "42809",
                EngineError::RoleNotFound(_) => "42704",
                EngineError::RoleExists(_) => "42710",
                EngineError::ColumnNotFound { .. } => "42703",
                EngineError::DuplicateColumn { .. } => "42701",
                EngineError::InvalidName { .. } => "42602",
                EngineError::UnsupportedType(_) => "0A000",
                EngineError::NotNullViolation { .. } => "23502",
                EngineError::SchemaMismatch { .. } => "42804",
                EngineError::BadInput { .. } => "22P04",
                EngineError::LimitExceeded { .. } => "54000",
                EngineError::Conflict(_) => "40001",
                EngineError::Locked(_) => "55006",
                EngineError::Io { .. } => "58030",
                EngineError::Corrupted { .. } => "XX001",
                EngineError::InvalidAudience { .. } => "42601",
                EngineError::UserKey(_) => "22023",
                EngineError::UnknownTag(_) => "42704",
                EngineError::TagExists(_) => "42710",
                EngineError::InvalidArgument(_) => "22023",
                EngineError::InUse(_) => "2BP01",
                EngineError::PermissionDenied(_) => "42501",
                EngineError::ModelNotFound(_) => "42704",
                EngineError::ModelExists(_) => "42710",
                EngineError::RecommenderNotFound(_) => "42704",
                EngineError::RecommenderExists(_) => "42710",
                EngineError::PseudonymKeyNotFound(_) => "42704",
                EngineError::PseudonymKeyExists(_) => "42710",
                EngineError::Arrow(_) => "XX000",
            },
        }
    }
}

/// Why a statement was canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A cancel request from the client (or [`crate::CancelHandle::cancel`]).
    User,
    /// The statement ran longer than `statement_timeout`.
    Timeout,
}

/// Statements at odds with the transaction block they run in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    Aborted,
    #[error("{statement} can only be used in transaction blocks")]
    OutsideBlock { statement: &'static str },
    #[error("{statement} cannot run inside a transaction block")]
    InsideBlock { statement: &'static str },
    #[error("cannot execute {command} in a read-only transaction")]
    ReadOnly { command: String },
    #[error("savepoint \"{name}\" does not exist")]
    NoSavepoint { name: String },
}

impl From<EngineError> for Error {
    fn from(source: EngineError) -> Error {
        Error::Engine {
            source,
            position: None,
        }
    }
}

impl From<ParserError> for Error {
    fn from(e: ParserError) -> Error {
        let text = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
        };
        let (message, position) = split_location(&text);
        Error::Syntax { message, position }
    }
}

/// Splits sqlparser's " at Line: 3, Column: 7" suffix off a message.
fn split_location(text: &str) -> (String, Option<Position>) {
    let Some((message, at)) = text.rsplit_once(" at Line: ") else {
        return (text.to_string(), None);
    };
    let parsed = at
        .split_once(", Column: ")
        .and_then(|(l, c)| Some((l.trim().parse().ok()?, c.trim().parse().ok()?)));
    match parsed {
        Some((line, column)) => (message.to_string(), Some(Position { line, column })),
        None => (text.to_string(), None),
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Error {
        let position = e
            .diagnostic()
            .and_then(|d| d.span)
            .map(|span| Position {
                line: span.start.line,
                column: span.start.column,
            })
            .filter(|p| p.line > 0);
        // Our own errors raised inside a stream (cancellation) come back as they were.
        let e = match e {
            DataFusionError::External(boxed) if boxed.is::<Error>() => {
                return *boxed.downcast::<Error>().expect("checked with is");
            }
            other => other,
        };
        // Engine errors raised inside execution come back as they were.
        let e = match take_engine_error(e) {
            Ok(source) => return Error::Engine { source, position },
            Err(e) => e,
        };
        match e.find_root() {
            DataFusionError::SQL(parser, _) => Error::from(parser.as_ref().clone()),
            DataFusionError::NotImplemented(m) => Error::Unsupported {
                feature: m.clone(),
                position,
            },
            DataFusionError::Plan(m) => match missing_table(m) {
                Some(table) => Error::Engine {
                    source: EngineError::TableNotFound(table),
                    position,
                },
                None => Error::Plan {
                    message: m.clone(),
                    position,
                },
            },
            DataFusionError::SchemaError(s, _) => Error::Plan {
                message: s.to_string(),
                position,
            },
            DataFusionError::ArrowError(a, _) => Error::Execution {
                message: a.to_string(),
            },
            DataFusionError::Execution(m) => match missing_prepared(m) {
                Some(name) => Error::UnknownPreparedStatement { name },
                None => Error::Execution { message: m.clone() },
            },
            DataFusionError::ResourcesExhausted(m) => Error::OutOfMemory { message: m.clone() },
            other => Error::Execution {
                message: other.to_string(),
            },
        }
    }
}

/// The table named by DataFusion's "table 'catalog.schema.name' not found", so
/// that it reports as PostgreSQL does (`relation "name" does not exist`).
fn missing_table(message: &str) -> Option<String> {
    let name = message
        .strip_prefix("table '")?
        .strip_suffix("' not found")?;
    Some(name.rsplit('.').next().unwrap_or(name).to_string())
}

/// The statement named by DataFusion's "Prepared statement 'name' does not exist".
fn missing_prepared(message: &str) -> Option<String> {
    let name = message
        .strip_prefix("Prepared statement '")?
        .strip_suffix("' does not exist")?;
    Some(name.to_string())
}

/// Unwraps an engine error from the layers DataFusion and Arrow put around it.
fn take_engine_error(e: DataFusionError) -> std::result::Result<EngineError, DataFusionError> {
    match e {
        DataFusionError::External(boxed) => {
            if boxed.is::<EngineError>() {
                return Ok(*boxed.downcast::<EngineError>().expect("checked with is"));
            }
            match boxed.downcast::<DataFusionError>() {
                Ok(inner) => take_engine_error(*inner),
                Err(boxed) => Err(DataFusionError::External(boxed)),
            }
        }
        DataFusionError::ArrowError(arrow_error, backtrace) => match *arrow_error {
            arrow::error::ArrowError::ExternalError(boxed) => {
                take_engine_error(DataFusionError::External(boxed))
            }
            other => Err(DataFusionError::ArrowError(Box::new(other), backtrace)),
        },
        DataFusionError::Context(context, inner) => take_engine_error(*inner)
            .map_err(|inner| DataFusionError::Context(context, Box::new(inner))),
        other => Err(other),
    }
}

/// Wraps an engine error for the trip through DataFusion.
pub(crate) fn to_datafusion(e: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_locations_become_positions() {
        let (message, position) =
            split_location("Expected: an expression, found: FROM at Line: 2, Column: 8");
        assert_eq!(message, "Expected: an expression, found: FROM");
        assert_eq!(position, Some(Position { line: 2, column: 8 }));
        assert_eq!(split_location("no location").1, None);
    }
}
