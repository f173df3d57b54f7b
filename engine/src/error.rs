//! The engine's error type. Variants keep user errors (bad names, constraint
//! violations, bad input files), environment errors (IO) and corruption apart, and
//! carry the context needed to act on them.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("relation \"{0}\" does not exist")]
    TableNotFound(String),

    #[error("relation \"{0}\" already exists")]
    TableExists(String),

    /// A statement for one kind of relation named another (`DROP VIEW` of a
    /// table): the message says what it is not.
    #[error("\"{name}\" is not a {kind}")]
    WrongObjectType { name: String, kind: &'static str },

    #[error("column \"{column}\" of relation \"{table}\" does not exist")]
    ColumnNotFound { table: String, column: String },

    #[error("column \"{column}\" specified more than once")]
    DuplicateColumn { column: String },

    #[error("invalid name \"{name}\": {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("type {0} is not supported")]
    UnsupportedType(String),

    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation { table: String, column: String },

    #[error("rows for relation \"{table}\" do not match its columns: {reason}")]
    SchemaMismatch { table: String, reason: String },

    #[error("{path}: {message}")]
    BadInput { path: PathBuf, message: String },

    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded { what: &'static str, limit: u64 },

    #[error("role \"{0}\" does not exist")]
    RoleNotFound(String),

    #[error("role \"{0}\" already exists")]
    RoleExists(String),

    #[error("relation \"{0}\" was changed by a concurrent statement; retry")]
    Conflict(String),

    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("corrupted data in {path}: {reason}")]
    Corrupted { path: PathBuf, reason: String },

    #[error("invalid audience expression at character {position}: {message}")]
    InvalidAudience { position: usize, message: String },

    #[error("user key: {0}")]
    UserKey(String),

    #[error("{0}")]
    UnknownTag(String),

    #[error("tag \"{0}\" already exists")]
    TagExists(String),

    #[error("model \"{0}\" does not exist")]
    ModelNotFound(String),

    #[error("model \"{0}\" already exists")]
    ModelExists(String),

    #[error("recommender \"{0}\" does not exist")]
    RecommenderNotFound(String),

    #[error("recommender \"{0}\" already exists")]
    RecommenderExists(String),

    #[error("pseudonym key \"{0}\" does not exist")]
    PseudonymKeyNotFound(String),

    #[error("pseudonym key \"{0}\" already exists")]
    PseudonymKeyExists(String),

    /// An object others depend on (the suppression tag) cannot go.
    #[error("{0}")]
    InUse(String),

    #[error("{0}")]
    PermissionDenied(String),

    /// A function argument or option out of its domain.
    #[error("{0}")]
    InvalidArgument(String),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl Error {
    /// Wraps an IO error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
