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

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt64Array};
use arrow::compute::kernels::boolean;
use arrow::compute::{FilterBuilder, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::manifest;
use crate::predicate::Predicate;
use crate::segment_file::SegmentReader;
use crate::types::{self, ColumnDef};

/// Name of the hidden row-id column a scan adds when asked to.
pub const ROW_ID_COLUMN: &str = "__cohortdb_row_id";

/// An immutable run of rows, written by one statement (in memory, until a
/// flush) or by a flush or compaction (a Parquet segment file), and the
/// positions deleted from it since.
#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    pub row_count: u64,
    pub(crate) data: SegmentData,
    /// Positions deleted from the segment (empty when none).
    pub(crate) deleted: Arc<RoaringBitmap>,
    /// The segment's latest deletion vector file, if one was written.
    pub(crate) deletes_file: Option<manifest::Deletes>,
    /// Whether `deletes_file` holds exactly `deleted` (false while the
    /// latest deletes are only in the WAL; the next checkpoint writes the
    /// next generation).
    pub(crate) deletes_written: bool,
}

/// Where a segment's rows are.
#[derive(Debug, Clone)]
pub(crate) enum SegmentData {
    /// Rows appended since the last flush; the WAL holds them on disk.
    Memory(Arc<[RecordBatch]>),
    /// A Parquet segment file.
    File(Arc<SegmentReader>),
}

impl Segment {
    /// A segment of rows held in memory.
    pub(crate) fn in_memory(id: u64, batches: Vec<RecordBatch>) -> Segment {
        let row_count = batches.iter().map(|b| b.num_rows() as u64).sum();
        Segment {
            id,
            row_count,
            data: SegmentData::Memory(batches.into()),
            deleted: Arc::new(RoaringBitmap::new()),
            deletes_file: None,
            deletes_written: true,
        }
    }

    /// A segment file, with the positions its deletion vector names.
    pub(crate) fn on_disk(
        reader: Arc<SegmentReader>,
        deleted: RoaringBitmap,
        deletes_file: Option<manifest::Deletes>,
    ) -> Segment {
        Segment {
            id: reader.file().segment_id,
            row_count: reader.file().rows,
            data: SegmentData::File(reader),
            deleted: Arc::new(deleted),
            deletes_file,
            deletes_written: true,
        }
    }

    /// The same rows with `more` positions deleted as well.
    pub(crate) fn with_deleted(&self, more: &RoaringBitmap) -> Segment {
        Segment {
            id: self.id,
            row_count: self.row_count,
            data: self.data.clone(),
            deleted: Arc::new(self.deleted.as_ref() | more),
            deletes_file: self.deletes_file.clone(),
            deletes_written: more.is_subset(&self.deleted),
        }
    }

    /// Rows not deleted.
    pub fn live_rows(&self) -> u64 {
        self.row_count - self.deleted.len()
    }

    /// How many of the `rows` positions from `start` are deleted.
    fn deleted_in(&self, start: u64, rows: u64) -> u64 {
        if rows == 0 || self.deleted.is_empty() {
            return 0;
        }
        self.deleted
            .range_cardinality(start as u32..=(start + rows - 1) as u32)
    }

    /// Whether the segment's rows are in memory only (not yet flushed).
    pub fn in_memory_only(&self) -> bool {
        matches!(self.data, SegmentData::Memory(_))
    }

    /// Bytes of Arrow buffers an in-memory segment holds (0 for a file).
    pub(crate) fn memory_bytes(&self) -> u64 {
        match &self.data {
            SegmentData::Memory(batches) => batches
                .iter()
                .map(|b| b.get_array_memory_size() as u64)
                .sum(),
            SegmentData::File(_) => 0,
        }
    }

    /// Every row not deleted, in position order, with every column. A file is
    /// read whole, its checksum verified.
    pub(crate) fn live_batches(&self) -> Result<Vec<RecordBatch>> {
        let batches = match &self.data {
            SegmentData::Memory(batches) => batches.to_vec(),
            SegmentData::File(reader) => reader.read_all()?,
        };
        if self.deleted.is_empty() {
            return Ok(batches);
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut start = 0u64;
        for batch in batches {
            let kept =
                filter_record_batch(&batch, &live_mask(&self.deleted, start, batch.num_rows()))?;
            start += batch.num_rows() as u64;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        Ok(out)
    }

    /// The units a scan reads, in position order: each stored batch of an
    /// in-memory segment, each row group of a file.
    fn units(self: &Arc<Segment>) -> Vec<ScanUnit> {
        match &self.data {
            SegmentData::Memory(batches) => {
                let mut position = 0u64;
                batches
                    .iter()
                    .enumerate()
                    .map(|(part, batch)| {
                        let unit = ScanUnit {
                            segment: Arc::clone(self),
                            part,
                            position,
                            rows: batch.num_rows() as u64,
                        };
                        position += unit.rows;
                        unit
                    })
                    .collect()
            }
            SegmentData::File(reader) => (0..reader.row_groups())
                .map(|part| {
                    let (position, rows) = reader.row_group_span(part);
                    ScanUnit {
                        segment: Arc::clone(self),
                        part,
                        position,
                        rows,
                    }
                })
                .collect(),
        }
    }
}

/// Whether each of `rows` positions from `start` is live (not in `deleted`).
fn live_mask(deleted: &RoaringBitmap, start: u64, rows: usize) -> BooleanArray {
    (0..rows as u64)
        .map(|i| Some(!deleted.contains((start + i) as u32)))
        .collect()
}

/// What a reader sees of a table: its schema and segments at one moment.
#[derive(Debug)]
pub struct TableSnapshot {
    pub schema: SchemaRef,
    pub segments: Vec<Arc<Segment>>,
}

impl TableSnapshot {
    /// Bytes the rows take: the segment files' sizes and the memtables'
    /// Arrow buffers.
    pub fn bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match &s.data {
                SegmentData::File(reader) => reader.file().bytes,
                SegmentData::Memory(_) => s.memory_bytes(),
            })
            .sum()
    }

    /// Rows not deleted.
    pub fn live_rows(&self) -> u64 {
        self.segments.iter().map(|s| s.live_rows()).sum()
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
        for unit in spec.units(self)? {
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

/// A part of a segment a scan reads as one: a stored batch of an in-memory
/// segment or a row group of a file.
#[derive(Debug, Clone)]
pub struct ScanUnit {
    segment: Arc<Segment>,
    part: usize,
    /// The position of the unit's first row in its segment.
    position: u64,
    rows: u64,
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
    /// Over the table's columns, for batches held in memory.
    predicate: Option<Predicate>,
    /// The table columns a file read fetches (ascending): the output's and the
    /// predicate's.
    read: Vec<usize>,
    /// The predicate over the columns in `read`, for batches read from files.
    read_predicate: Option<Predicate>,
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
        let mut read = Vec::new();
        for column in &columns {
            fields.push(match column {
                ScanColumn::Table(i) => {
                    let field = snapshot.schema.fields().get(*i).ok_or_else(|| {
                        arrow::error::ArrowError::InvalidArgumentError(format!(
                            "no column {i} to scan"
                        ))
                    })?;
                    read.push(*i);
                    field.as_ref().clone()
                }
                ScanColumn::RowId => Field::new(ROW_ID_COLUMN, DataType::UInt64, false),
            });
        }
        if let Some(predicate) = &predicate {
            predicate.columns(&mut read);
        }
        read.sort_unstable();
        read.dedup();
        let read_predicate = predicate
            .as_ref()
            .map(|p| p.remap(&|c| read.binary_search(&c).expect("predicate columns are read")));
        Ok(ScanSpec {
            columns,
            predicate,
            read,
            read_predicate,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The units of `snapshot` that may hold rows for this scan: row groups
    /// whose statistics rule the predicate out, and units whose rows are all
    /// deleted, are left out.
    pub fn units(&self, snapshot: &TableSnapshot) -> Result<Vec<ScanUnit>> {
        let mut units = Vec::new();
        for segment in &snapshot.segments {
            let may_match = match (&segment.data, &self.predicate) {
                (SegmentData::File(reader), Some(predicate)) => Some(reader.may_match(predicate)?),
                _ => None,
            };
            units.extend(segment.units().into_iter().filter(|unit| {
                unit.rows > segment.deleted_in(unit.position, unit.rows)
                    && may_match.as_ref().is_none_or(|m| m[unit.part])
            }));
        }
        Ok(units)
    }

    /// The scan's output for one unit.
    pub fn apply(&self, unit: &ScanUnit) -> Result<RecordBatch> {
        let segment = &unit.segment;
        // The unit's rows with the columns the scan needs, the predicate for
        // them, and where each table column is in the batch.
        let (batch, predicate, from_file) = match &segment.data {
            SegmentData::Memory(batches) => {
                (batches[unit.part].clone(), self.predicate.as_ref(), false)
            }
            SegmentData::File(reader) => (
                reader.read_row_group(unit.part, &self.read)?,
                self.read_predicate.as_ref(),
                true,
            ),
        };
        let index = |column: usize| {
            if from_file {
                self.read
                    .binary_search(&column)
                    .expect("scanned columns are read")
            } else {
                column
            }
        };
        let rows = batch.num_rows();
        let live = (segment.deleted_in(unit.position, unit.rows) > 0)
            .then(|| live_mask(&segment.deleted, unit.position, rows));
        let mask = match (predicate, live) {
            (Some(p), Some(live)) => Some(boolean::and(&p.evaluate(&batch)?, &live)?),
            (Some(p), None) => Some(p.evaluate(&batch)?),
            (None, live) => live,
        };
        let filter = mask.map(|m| FilterBuilder::new(&m).optimize().build());
        let first_row_id = (segment.id << 32) | unit.position;
        let mut arrays = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let array: ArrayRef = match column {
                ScanColumn::Table(i) => Arc::clone(batch.column(index(*i))),
                ScanColumn::RowId => Arc::new(UInt64Array::from_iter_values(
                    (0..rows as u64).map(|i| first_row_id + i),
                )),
            };
            arrays.push(match &filter {
                Some(f) => f.filter(&array)?,
                None => array,
            });
        }
        let rows = filter.as_ref().map_or(rows, |f| f.count());
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
    /// The position of the `USER KEY` column, if the table has one.
    user_key: Option<usize>,
    pub(crate) current: RwLock<Arc<TableSnapshot>>,
}

impl Table {
    pub(crate) fn new(
        id: u64,
        name: String,
        schema: SchemaRef,
        user_key: Option<usize>,
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
            user_key,
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
        let mut columns = types::columns_of(&self.schema)
            .expect("table schemas are built from column definitions");
        if let Some(at) = self.user_key {
            columns[at].user_key = true;
        }
        columns
    }

    /// The position of the `USER KEY` column, if the table has one.
    pub fn user_key(&self) -> Option<usize> {
        self.user_key
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
