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

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
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
    pub fn row_count(&self) -> u64 {
        self.segments.iter().map(|s| s.row_count).sum()
    }

    /// The schema of a scan with this projection, plus the row-id column if asked.
    pub fn scan_schema(
        &self,
        projection: Option<&[usize]>,
        with_row_id: bool,
    ) -> Result<SchemaRef> {
        let projected = match projection {
            Some(p) => self.schema.project(p)?,
            None => self.schema.as_ref().clone(),
        };
        if !with_row_id {
            return Ok(Arc::new(projected));
        }
        let mut fields: Vec<Field> = projected
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(ROW_ID_COLUMN, DataType::UInt64, false));
        Ok(Arc::new(Schema::new(fields)))
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
        let schema = self.scan_schema(projection, with_row_id)?;
        let mut out = Vec::new();
        let mut remaining = limit.unwrap_or(usize::MAX);
        for segment in &self.segments {
            let mut position = 0u64;
            for batch in &segment.batches {
                if remaining == 0 {
                    return Ok(out);
                }
                let first_row_id = (segment.id << 32) | position;
                position += batch.num_rows() as u64;
                let batch = with_row_ids(batch, first_row_id, with_row_id)?;
                let batch = match predicate {
                    Some(p) => p.filter(&batch)?,
                    None => batch,
                };
                let batch = project(&batch, projection, with_row_id, &schema)?;
                let batch = batch.slice(0, batch.num_rows().min(remaining));
                remaining -= batch.num_rows();
                if batch.num_rows() > 0 {
                    out.push(batch);
                }
            }
        }
        Ok(out)
    }
}

/// Appends the row-id column (last) to a batch when asked.
fn with_row_ids(batch: &RecordBatch, first: u64, wanted: bool) -> Result<RecordBatch> {
    if !wanted {
        return Ok(batch.clone());
    }
    let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(
        (0..batch.num_rows() as u64).map(|i| first + i),
    ));
    let mut columns = batch.columns().to_vec();
    columns.push(ids);
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(ROW_ID_COLUMN, DataType::UInt64, false));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn project(
    batch: &RecordBatch,
    projection: Option<&[usize]>,
    with_row_id: bool,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let Some(projection) = projection else {
        return Ok(batch.clone());
    };
    let mut columns: Vec<ArrayRef> = projection
        .iter()
        .map(|&i| Arc::clone(batch.column(i)))
        .collect();
    if with_row_id {
        columns.push(Arc::clone(batch.column(batch.num_columns() - 1)));
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
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
