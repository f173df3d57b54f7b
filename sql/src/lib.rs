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

mod copy;
mod ddl;
mod dml;
pub mod error;
mod functions;
mod names;
mod prepare;
mod provider;
mod pushdown;
mod scan;
mod session;

pub use error::{Error, Position, Result};
pub use prepare::{Description, ParamValue};
pub use session::{
    CATALOG_NAME, ParsedStatement, SCHEMA_NAME, Session, changed_rows, memory_stream,
};

/// Re-exported so callers build and consume streams without naming DataFusion.
pub use datafusion::execution::SendableRecordBatchStream;
