//! cohortdb-sql: SQL over the engine, through DataFusion.
//!
//! A [`Session`] parses SQL (PostgreSQL dialect, DataFusion's sqlparser), runs the
//! statements DataFusion knows (SELECT, INSERT, SHOW, DESCRIBE, information_schema)
//! against engine-backed tables, and runs the ones it does not itself: CREATE/DROP
//! TABLE, DELETE, UPDATE and COPY. Engine tables reach DataFusion through
//! [`provider`], with projections and filters pushed into engine scans.
//!
//! Architecture invariant: this crate never touches files directly; reading and
//! writing data files is the engine's job (`cohortdb_engine::import`/`export`).

mod audit;
mod cancel;
mod copy;
mod cursor;
mod ddl;
mod dml;
pub mod error;
mod functions;
mod generic;
mod grants;
mod names;
mod pg_catalog;
mod plan_cache;
mod prepare;
mod privacy;
mod provider;
mod pushdown;
mod roles;
mod scan;
mod session;
mod settings;
mod state;
mod tag_ddl;
mod transaction;

pub use cancel::CancelHandle;
pub use copy::{ClientCopy, CopyFormat};
pub use error::{CancelReason, Error, Position, Result, TransactionError};
pub use pg_catalog::types::{field_type_oid, type_oid};
pub use prepare::{Description, ParamValue};
pub use roles::{Login, SCRAM_ITERATIONS, ScramVerifier};
pub use session::{
    CATALOG_NAME, Completion, Deallocation, ParsedStatement, QUERY_MEMORY_DEFAULT, SCHEMA_NAME,
    Session, changed_rows, memory_stream,
};
pub use settings::{SERVER_VERSION, SERVER_VERSION_NUM};
pub use state::{Message, TransactionStatus};

/// Re-exported so callers build and consume streams without naming DataFusion.
pub use datafusion::execution::SendableRecordBatchStream;
