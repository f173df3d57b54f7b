//! Segment files of format version 2 (docs/format.md § Segment files): Parquet
//! that other tools read, written with fixed writer properties and cohortdb's
//! key-value metadata, checked against the manifest's size and CRC-32C.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, Scalar};
use arrow::compute::kernels::{boolean, cmp};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};

use crate::durable;
use crate::error::{Error, Result};
use crate::io::Storage;
use crate::mmap;
use crate::predicate::{CmpOp, Predicate};

/// Rows per row group unless the caller asks for fewer (docs/format.md).
pub(crate) const ROW_GROUP_ROWS: usize = 131_072;
/// Bytes per data page, at most.
const DATA_PAGE_BYTES: usize = 1024 * 1024;

const FORMAT_VERSION_KEY: &str = "cohortdb.format_version";
const TABLE_ID_KEY: &str = "cohortdb.table_id";
const SEGMENT_ID_KEY: &str = "cohortdb.segment_id";
const ROW_COUNT_KEY: &str = "cohortdb.row_count";

/// What the manifest records of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub table_id: u64,
    pub segment_id: u64,
    pub rows: u64,
    pub bytes: u64,
    pub crc32c: u32,
}

/// `segments/<id as 16 hex digits>.parquet`.
pub(crate) fn segment_path(segments_dir: &Path, segment_id: u64) -> PathBuf {
    segments_dir.join(format!("{segment_id:016x}.parquet"))
}

/// The writer properties every segment is written with.
fn writer_properties(table_id: u64, segment_id: u64, row_group_rows: usize) -> WriterProperties {
    let metadata = [
        (FORMAT_VERSION_KEY, "2".to_string()),
        (TABLE_ID_KEY, table_id.to_string()),
        (SEGMENT_ID_KEY, segment_id.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| KeyValue::new(key.to_string(), value))
    .collect();
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(true)
        .set_key_value_metadata(Some(metadata))
        .build()
}

/// Counts and checksums what passes through to the file, written through the
/// storage.
struct Checksummed {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    file: File,
    bytes: u64,
    crc32c: u32,
}

impl Write for Checksummed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.storage.write(&self.file, &self.path, buf)?;
        self.crc32c = crc32c::crc32c_append(self.crc32c, buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes one segment file batch by batch (holding at most a row group in
/// memory): to `<path>.tmp`, then, at [`SegmentWriter::finish`], synced,
/// renamed into place and the directory synced. Dropped unfinished, it removes
/// what it wrote.
pub(crate) struct SegmentWriter {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    tmp: PathBuf,
    table_id: u64,
    segment_id: u64,
    rows: u64,
    writer: Option<ArrowWriter<Checksummed>>,
}

impl SegmentWriter {
    pub(crate) fn create(
        storage: Arc<dyn Storage>,
        path: &Path,
        table_id: u64,
        segment_id: u64,
        schema: &SchemaRef,
        row_group_rows: usize,
    ) -> Result<SegmentWriter> {
        let tmp = path.with_extension("parquet.tmp");
        let file = storage.create(&tmp).map_err(Error::io(&tmp))?;
        let sink = Checksummed {
            storage: Arc::clone(&storage),
            path: tmp.clone(),
            file,
            bytes: 0,
            crc32c: 0,
        };
        let mut segment = SegmentWriter {
            storage,
            path: path.to_path_buf(),
            tmp,
            table_id,
            segment_id,
            rows: 0,
            writer: None,
        };
        let properties = writer_properties(table_id, segment_id, row_group_rows);
        let writer = ArrowWriter::try_new(sink, SchemaRef::clone(schema), Some(properties))
            .map_err(|e| segment.parquet_error(e))?;
        segment.writer = Some(writer);
        Ok(segment)
    }

    fn parquet_error(&self, e: parquet::errors::ParquetError) -> Error {
        Error::Io {
            path: self.tmp.clone(),
            source: io::Error::other(e),
        }
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = self.writer.as_mut().expect("written until finished");
        let written = writer.write(batch);
        written.map_err(|e| self.parquet_error(e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Completes the file and moves it into place; returns what the manifest
    /// records of it.
    pub(crate) fn finish(mut self) -> Result<SegmentFile> {
        let mut writer = self.writer.take().expect("finished once");
        writer.append_key_value_metadata(KeyValue::new(
            ROW_COUNT_KEY.to_string(),
            self.rows.to_string(),
        ));
        let sink = writer.into_inner().map_err(|e| self.parquet_error(e))?;
        self.storage
            .sync(&sink.file, &self.tmp)
            .map_err(Error::io(&self.tmp))?;
        durable::install(self.storage.as_ref(), &self.tmp, &self.path)?;
        Ok(SegmentFile {
            table_id: self.table_id,
            segment_id: self.segment_id,
            rows: self.rows,
            bytes: sink.bytes,
            crc32c: sink.crc32c,
        })
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        // Unfinished or failed: nothing may stay under either name. (After a
        // successful finish the temporary name no longer exists.)
        let _ = self.storage.remove(&self.tmp);
    }
}

/// A [`SegmentWriter`] on a thread of its own, fed through a short queue, so
/// that encoding and compressing a segment overlaps with producing its rows
/// (parsing a CSV file, running a query).
pub(crate) struct BackgroundWriter {
    sender: Option<std::sync::mpsc::SyncSender<Option<RecordBatch>>>,
    thread: Option<std::thread::JoinHandle<Result<SegmentFile>>>,
}

impl BackgroundWriter {
    /// Batches the queue holds before `write` waits for the writer.
    const QUEUE: usize = 4;

    pub(crate) fn start(writer: SegmentWriter) -> Result<BackgroundWriter> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Option<RecordBatch>>(Self::QUEUE);
        let path = writer.path.clone();
        let thread = std::thread::Builder::new()
            .name("cohortdb-segment-writer".to_string())
            .spawn(move || {
                let mut writer = writer;
                loop {
                    match receiver.recv() {
                        Ok(Some(batch)) => writer.write(&batch)?,
                        Ok(None) => return writer.finish(),
                        // Dropped unfinished: the writer's drop removes the file.
                        Err(_) => {
                            return Err(Error::Io {
                                path: writer.tmp.clone(),
                                source: io::Error::other("the append was abandoned"),
                            });
                        }
                    }
                }
            })
            .map_err(Error::io(path))?;
        Ok(BackgroundWriter {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    pub(crate) fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let sender = self.sender.as_ref().expect("written until finished");
        if sender.send(Some(batch)).is_err() {
            // The writer stopped on an error: that is the one to report.
            return Err(self.join().err().unwrap_or_else(|| Error::Io {
                path: std::path::PathBuf::new(),
                source: io::Error::other("the segment writer stopped"),
            }));
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<SegmentFile> {
        if let Some(sender) = self.sender.take() {
            // If the writer already stopped, joining reports why.
            let _ = sender.send(None);
        }
        self.join()
    }

    fn join(&mut self) -> Result<SegmentFile> {
        self.sender = None;
        let thread = self.thread.take().expect("joined once");
        thread.join().unwrap_or_else(|_| {
            Err(Error::Io {
                path: std::path::PathBuf::new(),
                source: io::Error::other("the segment writer panicked"),
            })
        })
    }
}

impl Drop for BackgroundWriter {
    /// Unfinished: the queue closes without the end marker, and the thread
    /// removes what it wrote before this returns.
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `batches` as segment `segment_id` of table `table_id` at `path`
/// (see [`SegmentWriter`]). Nothing is left under either name when it fails.
pub(crate) fn write(
    storage: &Arc<dyn Storage>,
    path: &Path,
    table_id: u64,
    segment_id: u64,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<SegmentFile> {
    let mut writer = SegmentWriter::create(
        Arc::clone(storage),
        path,
        table_id,
        segment_id,
        schema,
        row_group_rows,
    )?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// An open segment file: mapped into memory, its Parquet metadata read once and
/// checked against the manifest. Row groups are read from it on demand,
/// projected to the columns a scan needs.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    path: PathBuf,
    file: SegmentFile,
    bytes: Bytes,
    metadata: ArrowReaderMetadata,
    /// The position of each row group's first row in the segment.
    starts: Vec<u64>,
}

impl SegmentReader {
    /// Maps `path` and checks its size, `cohortdb.*` metadata, schema and row
    /// count against what the manifest records. The checksum, which means
    /// reading every byte, is left to [`SegmentReader::read_all`] and `cohortdb
    /// check`.
    pub(crate) fn open(
        path: &Path,
        expected: &SegmentFile,
        schema: &SchemaRef,
    ) -> Result<SegmentReader> {
        let bytes = mmap::map_file(path)?;
        if bytes.len() as u64 != expected.bytes {
            return Err(corrupted(
                path,
                format!(
                    "the file has {} bytes where the manifest records {}",
                    bytes.len(),
                    expected.bytes
                ),
            ));
        }
        let metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new())
            .map_err(|e| corrupted(path, format!("not a readable Parquet file: {e}")))?;
        check_metadata(path, expected, metadata.metadata())?;
        if metadata.schema().fields() != schema.fields() {
            return Err(corrupted(
                path,
                "the file's schema differs from the table's".to_string(),
            ));
        }
        let mut starts = Vec::with_capacity(metadata.metadata().num_row_groups());
        let mut rows = 0u64;
        for group in metadata.metadata().row_groups() {
            starts.push(rows);
            rows += group.num_rows() as u64;
        }
        if rows != expected.rows {
            return Err(corrupted(
                path,
                format!(
                    "the file has {rows} rows where the manifest records {}",
                    expected.rows
                ),
            ));
        }
        Ok(SegmentReader {
            path: path.to_path_buf(),
            file: *expected,
            bytes,
            metadata,
            starts,
        })
    }

    /// What the manifest records of this file.
    pub(crate) fn file(&self) -> &SegmentFile {
        &self.file
    }

    pub(crate) fn row_groups(&self) -> usize {
        self.starts.len()
    }

    /// The position of row group `group`'s first row and its row count.
    pub(crate) fn row_group_span(&self, group: usize) -> (u64, u64) {
        let rows = self.metadata.metadata().row_group(group).num_rows() as u64;
        (self.starts[group], rows)
    }

    /// Whether each row group may hold a row for which `predicate` is TRUE:
    /// false only when its statistics prove it holds none.
    pub(crate) fn may_match(&self, predicate: &Predicate) -> Result<Vec<bool>> {
        let statistics = Statistics {
            metadata: self.metadata.metadata(),
            schema: self.metadata.schema(),
            parquet: self.metadata.parquet_schema(),
        };
        let may_match = statistics
            .may_match(predicate)
            .map_err(|e| corrupted(&self.path, format!("unreadable statistics: {e}")))?;
        Ok((0..may_match.len()).map(|i| may_match.value(i)).collect())
    }

    /// Row group `group` with only the table columns `columns` (ascending), in
    /// that order.
    pub(crate) fn read_row_group(&self, group: usize, columns: &[usize]) -> Result<RecordBatch> {
        let (_, rows) = self.row_group_span(group);
        let schema = Arc::new(self.metadata.schema().project(columns)?);
        if columns.is_empty() {
            let options = RecordBatchOptions::new().with_row_count(Some(rows as usize));
            return Ok(RecordBatch::try_new_with_options(schema, vec![], &options)?);
        }
        let mask = ProjectionMask::roots(self.metadata.parquet_schema(), columns.iter().copied());
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.bytes.clone(),
            self.metadata.clone(),
        )
        .with_row_groups(vec![group])
        .with_projection(mask)
        .with_batch_size(rows.max(1) as usize);
        let batches = collect(&self.path, builder)?;
        Ok(arrow::compute::concat_batches(&schema, &batches)?)
    }

    /// Every row of the segment, after checking the file's checksum.
    pub(crate) fn read_all(&self) -> Result<Vec<RecordBatch>> {
        let checksum = crc32c::crc32c(&self.bytes);
        if checksum != self.file.crc32c {
            return Err(corrupted(
                &self.path,
                format!(
                    "checksum mismatch (CRC-32C {checksum:#010x}, the manifest records {:#010x})",
                    self.file.crc32c
                ),
            ));
        }
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.bytes.clone(),
            self.metadata.clone(),
        );
        collect(&self.path, builder)
    }
}

fn corrupted(path: &Path, reason: String) -> Error {
    Error::Corrupted {
        path: path.to_path_buf(),
        reason,
    }
}

/// Checks the file's `cohortdb.*` key-value metadata against the manifest.
fn check_metadata(
    path: &Path,
    expected: &SegmentFile,
    metadata: &parquet::file::metadata::ParquetMetaData,
) -> Result<()> {
    let pairs: Vec<(String, String)> = metadata
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let value = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let expected_metadata = [
        (FORMAT_VERSION_KEY, "2".to_string()),
        (TABLE_ID_KEY, expected.table_id.to_string()),
        (SEGMENT_ID_KEY, expected.segment_id.to_string()),
        (ROW_COUNT_KEY, expected.rows.to_string()),
    ];
    for (key, want) in expected_metadata {
        if value(key) != Some(want.as_str()) {
            return Err(corrupted(
                path,
                format!(
                    "metadata {key} is {:?} where {want:?} was expected",
                    value(key)
                ),
            ));
        }
    }
    Ok(())
}

fn collect(
    path: &Path,
    builder: ParquetRecordBatchReaderBuilder<Bytes>,
) -> Result<Vec<RecordBatch>> {
    builder
        .build()
        .map_err(|e| corrupted(path, format!("not a readable Parquet file: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| corrupted(path, e.to_string()))
}

/// A segment's row-group statistics, as the predicate's columns need them.
struct Statistics<'a> {
    metadata: &'a parquet::file::metadata::ParquetMetaData,
    schema: &'a arrow::datatypes::Schema,
    parquet: &'a parquet::schema::types::SchemaDescriptor,
}

impl Statistics<'_> {
    /// For each row group, whether it may hold a row for which `predicate` is
    /// TRUE: false only when the statistics prove it holds none. Unknown
    /// statistics (absent, or NULL min/max) never rule a row group out.
    fn may_match(&self, predicate: &Predicate) -> std::result::Result<BooleanArray, String> {
        let groups = self.metadata.num_row_groups();
        let all = || BooleanArray::from(vec![true; groups]);
        let converter = |column: usize| {
            let name = self.schema.field(column).name();
            StatisticsConverter::try_new(name, self.schema, self.parquet).map_err(|e| e.to_string())
        };
        let row_groups = self.metadata.row_groups();
        // NULL (unknown) counts as "may match".
        let known = |b: BooleanArray| -> BooleanArray {
            b.iter().map(|v| Some(v.unwrap_or(true))).collect()
        };
        let bounds = |column: usize| -> std::result::Result<(ArrayRef, ArrayRef), String> {
            let c = converter(column)?;
            let mins = c
                .row_group_mins(row_groups.iter())
                .map_err(|e| e.to_string())?;
            let maxes = c
                .row_group_maxes(row_groups.iter())
                .map_err(|e| e.to_string())?;
            Ok((mins, maxes))
        };
        let error = |e: arrow::error::ArrowError| e.to_string();
        Ok(match predicate {
            Predicate::Compare { column, op, value } => {
                let (mins, maxes) = bounds(*column)?;
                let value = Scalar::new(value);
                match op {
                    CmpOp::Eq => known(
                        boolean::and(
                            &known(cmp::lt_eq(&mins, &value).map_err(error)?),
                            &known(cmp::gt_eq(&maxes, &value).map_err(error)?),
                        )
                        .map_err(error)?,
                    ),
                    CmpOp::NotEq => {
                        // Ruled out only when every value equals the constant.
                        let single = boolean::and(
                            &cmp::eq(&mins, &value).map_err(error)?,
                            &cmp::eq(&maxes, &value).map_err(error)?,
                        )
                        .map_err(error)?;
                        single.iter().map(|v| Some(v != Some(true))).collect()
                    }
                    CmpOp::Lt => known(cmp::lt(&mins, &value).map_err(error)?),
                    CmpOp::LtEq => known(cmp::lt_eq(&mins, &value).map_err(error)?),
                    CmpOp::Gt => known(cmp::gt(&maxes, &value).map_err(error)?),
                    CmpOp::GtEq => known(cmp::gt_eq(&maxes, &value).map_err(error)?),
                }
            }
            Predicate::InList {
                column,
                values,
                negated: false,
            } => {
                let mut any = BooleanArray::from(vec![false; groups]);
                for value in values {
                    let equal = self.may_match(&Predicate::Compare {
                        column: *column,
                        op: CmpOp::Eq,
                        value: ArrayRef::clone(value),
                    })?;
                    any = boolean::or(&any, &equal).map_err(error)?;
                }
                any
            }
            Predicate::IsNull { column, negated } => {
                let nulls = converter(*column)?
                    .row_group_null_counts(row_groups.iter())
                    .map_err(|e| e.to_string())?;
                nulls
                    .iter()
                    .zip(row_groups)
                    .map(|(count, group)| {
                        Some(match count {
                            None => true,
                            Some(count) if *negated => count < group.num_rows() as u64,
                            Some(count) => count > 0,
                        })
                    })
                    .collect()
            }
            Predicate::InAudience { column, filter } => match filter.bounds() {
                Some((low, high)) => self.may_match(&Predicate::And(vec![
                    Predicate::Compare {
                        column: *column,
                        op: CmpOp::GtEq,
                        value: ArrayRef::clone(low),
                    },
                    Predicate::Compare {
                        column: *column,
                        op: CmpOp::LtEq,
                        value: ArrayRef::clone(high),
                    },
                ]))?,
                None if filter.is_empty() => BooleanArray::from(vec![false; groups]),
                None => all(),
            },
            Predicate::And(parts) => {
                let mut all_parts = all();
                for part in parts {
                    all_parts = boolean::and(&all_parts, &self.may_match(part)?).map_err(error)?;
                }
                all_parts
            }
            Predicate::Or(parts) => {
                let mut any = BooleanArray::from(vec![false; groups]);
                for part in parts {
                    any = boolean::or(&any, &self.may_match(part)?).map_err(error)?;
                }
                any
            }
            // What statistics cannot rule in they cannot rule out either.
            Predicate::InList { negated: true, .. } | Predicate::Not(_) => all(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn os() -> Arc<dyn Storage> {
        Arc::new(crate::io::Os)
    }

    fn read(path: &Path, file: &SegmentFile, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        SegmentReader::open(path, file, schema)?.read_all()
    }

    struct Scan {
        batches: Vec<RecordBatch>,
        row_groups: usize,
        row_groups_read: usize,
    }

    /// The row groups a scan with `predicate` reads, with every column.
    fn scan(
        path: &Path,
        file: &SegmentFile,
        schema: &SchemaRef,
        predicate: Option<&Predicate>,
    ) -> Result<Scan> {
        let reader = SegmentReader::open(path, file, schema)?;
        let selected = match predicate {
            Some(p) => reader.may_match(p)?,
            None => vec![true; reader.row_groups()],
        };
        let columns: Vec<usize> = (0..schema.fields().len()).collect();
        let mut batches = Vec::new();
        for (group, _) in selected.iter().enumerate().filter(|(_, s)| **s) {
            batches.push(reader.read_row_group(group, &columns)?);
        }
        Ok(Scan {
            row_groups: reader.row_groups(),
            row_groups_read: batches.len(),
            batches,
        })
    }

    fn batch(from: i64, rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
            Field::new("spend", DataType::Decimal128(12, 2), true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let ids: Vec<i64> = (from..from + rows).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter(ids.iter().map(|i| {
                (i % 7 != 0).then(|| ["beijing", "shanghai", "xi'an"][(*i % 3) as usize])
            }))),
            Arc::new(
                Decimal128Array::from_iter(
                    ids.iter()
                        .map(|i| (i % 5 != 0).then_some(i128::from(*i) * 101)),
                )
                .with_precision_and_scale(12, 2)
                .expect("valid decimal"),
            ),
            Arc::new(TimestampMicrosecondArray::from_iter(
                ids.iter()
                    .map(|i| Some(1_764_460_800_000_000 + i * 1_000_000)),
            )),
        ];
        RecordBatch::try_new(schema, columns).expect("valid batch")
    }

    #[test]
    fn segments_read_back_exactly_and_carry_their_metadata() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = segment_path(dir.path(), 0x2a);
        assert!(path.ends_with("000000000000002a.parquet"));
        let batches = [batch(0, 1000), batch(1000, 2500)];
        let schema = batches[0].schema();
        let file = write(&os(), &path, 7, 0x2a, &schema, &batches, 1024).expect("written");
        assert_eq!(file.rows, 3500);
        assert_eq!(file.bytes, fs::metadata(&path).expect("exists").len());
        assert_eq!(file.crc32c, crc32c::crc32c(&fs::read(&path).expect("read")));
        assert!(!path.with_extension("parquet.tmp").exists());
        let read = read(&path, &file, &schema).expect("read back");
        let read = arrow::compute::concat_batches(&schema, &read).expect("concat");
        let written = arrow::compute::concat_batches(&schema, &batches).expect("concat");
        assert_eq!(read, written);
        // Row groups of at most the requested size, with page statistics and a
        // page index, as docs/format.md specifies.
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(
            File::open(&path).expect("open"),
        )
        .expect("parquet");
        use parquet::file::reader::FileReader;
        let metadata = reader.metadata();
        assert_eq!(metadata.num_row_groups(), 4);
        assert!(metadata.row_groups().iter().all(|g| g.num_rows() <= 1024));
        let column = metadata.row_group(0).column(0);
        assert_eq!(
            column.compression(),
            Compression::ZSTD(ZstdLevel::try_new(1).expect("1"))
        );
        assert!(column.statistics().is_some());
        assert!(column.column_index_offset().is_some());
        assert!(column.offset_index_offset().is_some());
    }

    /// Row groups whose statistics rule a predicate out are not read, and the
    /// rows the predicate keeps are the same as from a full read.
    #[test]
    fn scans_skip_row_groups_their_statistics_rule_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = segment_path(dir.path(), 1);
        // user_id 0..3500 in row groups of 1024: [0, 1023], [1024, 2047], ...
        let batches = [batch(0, 1000), batch(1000, 2500)];
        let schema = batches[0].schema();
        let file = write(&os(), &path, 1, 1, &schema, &batches, 1024).expect("written");
        let id = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
        let compare = |op, v| Predicate::Compare {
            column: 0,
            op,
            value: id(v),
        };
        let matching = |batches: &[RecordBatch], predicate: &Predicate| -> usize {
            batches
                .iter()
                .map(|b| predicate.evaluate(b).expect("evaluates").true_count())
                .sum()
        };
        let cases = [
            (compare(CmpOp::Eq, 2000), 1),
            (compare(CmpOp::Lt, 100), 1),
            (compare(CmpOp::LtEq, 1024), 2),
            (compare(CmpOp::GtEq, 3000), 2),
            (compare(CmpOp::Gt, 5000), 0),
            (compare(CmpOp::NotEq, 5), 4),
            (
                Predicate::InList {
                    column: 0,
                    values: vec![id(5), id(3400)],
                    negated: false,
                },
                2,
            ),
            (
                Predicate::Or(vec![compare(CmpOp::Lt, 10), compare(CmpOp::Gt, 3400)]),
                2,
            ),
            (
                Predicate::And(vec![compare(CmpOp::Gt, 1000), compare(CmpOp::Lt, 1030)]),
                2,
            ),
            (Predicate::Not(Box::new(compare(CmpOp::Eq, 1))), 4),
            (
                Predicate::IsNull {
                    column: 1,
                    negated: false,
                },
                4,
            ),
            (
                Predicate::IsNull {
                    column: 0,
                    negated: false,
                },
                0,
            ),
        ];
        for (predicate, groups) in cases {
            let scan = scan(&path, &file, &schema, Some(&predicate)).expect("scans");
            assert_eq!(scan.row_groups, 4);
            assert_eq!(scan.row_groups_read, groups, "{predicate:?}");
            assert_eq!(
                matching(&scan.batches, &predicate),
                matching(&batches, &predicate),
                "{predicate:?}"
            );
        }
        let all = scan(&path, &file, &schema, None).expect("scans");
        assert_eq!(all.row_groups_read, 4);
        assert_eq!(
            all.batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            3500
        );
    }

    #[test]
    fn a_segment_unlike_the_manifest_is_corrupted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = segment_path(dir.path(), 3);
        let batches = [batch(0, 100)];
        let schema = batches[0].schema();
        let file = write(&os(), &path, 1, 3, &schema, &batches, ROW_GROUP_ROWS).expect("written");
        let reason = |expected: SegmentFile| {
            read(&path, &expected, &schema)
                .expect_err("corrupted")
                .to_string()
        };
        assert!(
            reason(SegmentFile {
                bytes: file.bytes + 1,
                ..file
            })
            .contains("bytes where the manifest records")
        );
        assert!(
            reason(SegmentFile {
                crc32c: file.crc32c ^ 1,
                ..file
            })
            .contains("checksum mismatch")
        );
        // A byte changed on disk fails the checksum.
        let mut bytes = fs::read(&path).expect("read");
        bytes[100] ^= 0x10;
        fs::write(&path, &bytes).expect("write");
        assert!(reason(file).contains("checksum mismatch"));
        bytes[100] ^= 0x10;
        fs::write(&path, &bytes).expect("write");
        // A segment of another table or with another id is not this one.
        assert!(
            reason(SegmentFile {
                table_id: 2,
                ..file
            })
            .contains("metadata cohortdb.table_id")
        );
        assert!(
            reason(SegmentFile {
                segment_id: 4,
                ..file
            })
            .contains("metadata cohortdb.segment_id")
        );
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        assert!(
            read(&path, &file, &other)
                .expect_err("schema")
                .to_string()
                .contains("schema differs")
        );
        assert_eq!(read(&path, &file, &schema).expect("intact").len(), 1);
    }
}
