//! cohortdb-engine: the storage and data plane.
//!
//! The engine owns every byte on disk: the catalog of tables, their rows, the files
//! they live in, imports from CSV/Parquet and exports to them, and the seeded demo
//! data. It speaks Arrow (`RecordBatch`) to the layers above and knows nothing of
//! SQL text, DataFusion or async runtimes: the sql crate translates queries into the
//! engine's small vocabulary (column types, scan projections, [`Predicate`]s, row ids).
//!
//! Architecture invariant: this crate does not depend on DataFusion or tokio.

pub mod audience;
pub mod audit;
pub mod catalog;
mod change;
pub mod check;
mod deletes;
pub mod demo;
mod durable;
pub mod error;
pub mod export;
mod framing;
pub mod frozen;
pub mod import;
pub mod io;
pub mod json;
pub mod limits;
pub mod lookalike;
mod manifest;
mod mmap;
pub mod options;
pub mod predicate;
pub mod privacy;
pub mod recommend;
pub mod roles;
pub mod sampling;
mod segment_file;
pub mod stats;
mod store;
pub mod table;
mod tag_changes;
pub mod tags;
pub mod types;
mod upgrade;
pub mod users;
pub mod views;
mod wal;

pub use catalog::Catalog;
pub use error::{Error, Result};
pub use manifest::WalSync;
pub use predicate::{CmpOp, Predicate};
pub use table::{ROW_ID_COLUMN, ScanColumn, ScanSpec, ScanUnit, Table, TableSnapshot};
pub use types::{ColumnDef, ColumnType};
