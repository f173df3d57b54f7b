//! Tables and their snapshots.
//!
//! A [`Table`] is a name, a schema and the current [`TableSnapshot`]. A snapshot is
//! an immutable list of segments; readers take one at query start and keep reading
//! it while writers install new ones (copy-on-write of the segment list, the
//! segments themselves are shared). Only the [`crate::Catalog`] installs snapshots.
//!
//! Every row has a row id, `segment_id << 32 | position in segment`, stable for as
//! long as its segment lives. DELETE and UPDATE name rows by row id.

use std::sync::{Arc, RwLock};

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array};
use arrow::compute::FilterBuilder;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::predicate::Predicate;
use crate::types::{self, ColumnDef};

/// Name of the hidden row-id column a scan adds when asked to.
pub const ROW_ID_COLUMN: &str = "__cohortdb_row_id";

/// An immutable run of rows, written by one statement (or by a rewrite).
#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    pub row_count: u64,
    pub batches: Vec<RecordBatch>,
}

impl Segment {
    pub fn new(id: u64, batches: Vec<RecordBatch>) -> Segment {
        let row_count = batches.iter().map(|b| b.num_rows() as u64).sum();
        Segment {
            id,
            row_count,
            batches,
        }
    }
}

/// What a reader sees of a table: its schema and segments at one moment.
#[derive(Debug)]
pub struct TableSnapshot {
    pub schema: SchemaRef,
    pub segments: Vec<Arc<Segment>>,
}

impl TableSnapshot {
    /// Every stored batch with the row id of its first row: the units a scan can
    /// spread over threads.
    pub fn units(&self) -> Vec<ScanUnit> {
        let mut units = Vec::new();
        for segment in &self.segments {
            let mut position = 0u64;
            for batch in &segment.batches {
                units.push(ScanUnit {
                    batch: batch.clone(),
                    first_row_id: (segment.id << 32) | position,
                });
                position += batch.num_rows() as u64;
            }
        }
        units
    }

    /// The schema of a scan with this projection, plus the row-id column if asked.
    pub fn scan_schema(
        &self,
        projection: Option<&[usize]>,
        with_row_id: bool,
    ) -> Result<SchemaRef> {
        Ok(ScanSpec::new(self, projection, None, with_row_id)?.schema)
    }

    /// Reads the rows for which `predicate` is TRUE (all rows without one), keeps the
    /// projected columns, appends row ids when asked and stops after `limit` rows.
    pub fn scan(
        &self,
        projection: Option<&[usize]>,
        predicate: Option<&Predicate>,
        with_row_id: bool,
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>> {
        let spec = ScanSpec::new(self, projection, predicate.cloned(), with_row_id)?;
        let mut out = Vec::new();
        let mut remaining = limit.unwrap_or(usize::MAX);
        for unit in self.units() {
            if remaining == 0 {
                break;
            }
            let batch = spec.apply(&unit)?;
            let batch = batch.slice(0, batch.num_rows().min(remaining));
            remaining -= batch.num_rows();
            if batch.num_rows() > 0 {
                out.push(batch);
            }
        }
        Ok(out)
    }
}

/// A stored batch and the row id of its first row.
#[derive(Debug, Clone)]
pub struct ScanUnit {
    pub batch: RecordBatch,
    pub first_row_id: u64,
}

/// One output column of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanColumn {
    /// The table column at this index.
    Table(usize),
    /// The hidden row id.
    RowId,
}

/// What a scan produces from each unit: which columns, in which order, and which
/// rows. Built once per scan and applied to units independently, so callers can
/// run units on several threads and stream the results.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    columns: Vec<ScanColumn>,
    predicate: Option<Predicate>,
    schema: SchemaRef,
}

impl ScanSpec {
    /// Table columns in `projection` order (all without one), then the row id if
    /// asked.
    pub fn new(
        snapshot: &TableSnapshot,
        projection: Option<&[usize]>,
        predicate: Option<Predicate>,
        with_row_id: bool,
    ) -> Result<ScanSpec> {
        let mut columns: Vec<ScanColumn> = match projection {
            Some(p) => p.iter().map(|&i| ScanColumn::Table(i)).collect(),
            None => (0..snapshot.schema.fields().len())
                .map(ScanColumn::Table)
                .collect(),
        };
        if with_row_id {
            columns.push(ScanColumn::RowId);
        }
        ScanSpec::with_columns(snapshot, columns, predicate)
    }

    /// A scan producing exactly `columns`, in that order.
    pub fn with_columns(
        snapshot: &TableSnapshot,
        columns: Vec<ScanColumn>,
        predicate: Option<Predicate>,
    ) -> Result<ScanSpec> {
        let mut fields = Vec::with_capacity(columns.len());
        for column in &columns {
            fields.push(match column {
                ScanColumn::Table(i) => {
                    let field = snapshot.schema.fields().get(*i).ok_or_else(|| {
                        arrow::error::ArrowError::InvalidArgumentError(format!(
                            "no column {i} to scan"
                        ))
                    })?;
                    field.as_ref().clone()
                }
                ScanColumn::RowId => Field::new(ROW_ID_COLUMN, DataType::UInt64, false),
            });
        }
        Ok(ScanSpec {
            columns,
            predicate,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The scan's output for one unit.
    pub fn apply(&self, unit: &ScanUnit) -> Result<RecordBatch> {
        let batch = &unit.batch;
        let filter = match &self.predicate {
            Some(p) => Some(FilterBuilder::new(&p.evaluate(batch)?).optimize().build()),
            None => None,
        };
        let mut arrays = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let array: ArrayRef = match column {
                ScanColumn::Table(i) => Arc::clone(batch.column(*i)),
                ScanColumn::RowId => Arc::new(UInt64Array::from_iter_values(
                    (0..batch.num_rows() as u64).map(|i| unit.first_row_id + i),
                )),
            };
            arrays.push(match &filter {
                Some(f) => f.filter(&array)?,
                None => array,
            });
        }
        let rows = filter.as_ref().map_or(batch.num_rows(), |f| f.count());
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &options,
        )?)
    }
}

/// A table: identity, schema and current snapshot.
#[derive(Debug)]
pub struct Table {
    pub(crate) id: u64,
    name: String,
    schema: SchemaRef,
    pub(crate) current: RwLock<Arc<TableSnapshot>>,
}

impl Table {
    pub(crate) fn new(
        id: u64,
        name: String,
        schema: SchemaRef,
        segments: Vec<Arc<Segment>>,
    ) -> Table {
        let snapshot = TableSnapshot {
            schema: Arc::clone(&schema),
            segments,
        };
        Table {
            id,
            name,
            schema,
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's id: assigned at creation, never reused, kept across restarts.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    pub fn columns(&self) -> Vec<ColumnDef> {
        types::columns_of(&self.schema).expect("table schemas are built from column definitions")
    }

    /// The snapshot a reader should use from now on.
    pub fn snapshot(&self) -> Arc<TableSnapshot> {
        Arc::clone(
            &self
                .current
                .read()
                .expect("snapshot lock is never poisoned"),
        )
    }
}
