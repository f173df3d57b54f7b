//! Reading CSV and Parquet files into batches of a table's schema.
//!
//! Imports are all-or-nothing: the reader produces every batch first and the
//! caller appends them in one commit, so a bad row anywhere leaves the table as it
//! was. Errors name the file, and for CSV the line and column.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

mod copy_text;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::limits;
use crate::table::Table;

/// File formats for import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
}

impl FileFormat {
    /// The format named by a file's extension (`.csv`, `.parquet`).
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        FileFormat::parse(&ext)
    }

    /// The format with this name (`csv`, `parquet`), case-insensitive.
    pub fn parse(name: &str) -> Option<FileFormat> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// CSV dialect options (PostgreSQL COPY's defaults: comma, no header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub header: bool,
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> CsvOptions {
        CsvOptions {
            header: false,
            delimiter: b',',
        }
    }
}

/// How far an import has come, reported after every batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub rows: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Imports a whole file into `table` in one commit: all rows or none. The rows
/// stream from the file into the table's storage (a large file is not held in
/// memory). Returns the number of rows imported.
pub fn import_file(
    catalog: &Catalog,
    table: &Table,
    path: &Path,
    format: FileFormat,
    csv: &CsvOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64> {
    let mut appender = catalog.appender(table);
    stream_file(path, format, csv, &table.schema(), progress, &mut |batch| {
        appender.push(batch)
    })?;
    appender.commit()
}

/// Reads a whole file into batches of `schema`.
pub fn read_file(
    path: &Path,
    format: FileFormat,
    csv: &CsvOptions,
    schema: &SchemaRef,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    stream_file(path, format, csv, schema, progress, &mut |batch| {
        out.push(batch);
        Ok(())
    })?;
    Ok(out)
}

/// A sink for batches as a file is read.
type Sink<'a> = &'a mut dyn FnMut(RecordBatch) -> Result<()>;

/// Reads a file batch by batch into `sink`.
fn stream_file(
    path: &Path,
    format: FileFormat,
    csv: &CsvOptions,
    schema: &SchemaRef,
    progress: &mut dyn FnMut(Progress),
    sink: Sink,
) -> Result<()> {
    let file = File::open(path).map_err(Error::io(path))?;
    let bytes_total = file.metadata().map_err(Error::io(path))?.len();
    match format {
        FileFormat::Csv => read_csv(path, file, bytes_total, csv, schema, progress, sink),
        FileFormat::Parquet => read_parquet(path, file, bytes_total, schema, progress, sink),
    }
}

/// How the rows of `COPY ... FROM STDIN` are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDataFormat {
    /// PostgreSQL's text format: `delimiter`-separated, `null` for NULL,
    /// backslash escapes.
    Text {
        delimiter: u8,
        null: String,
        header: bool,
    },
    Csv(CsvOptions),
}

/// Reads the data a client sent with `COPY ... FROM STDIN` into batches of
/// `schema`, all of it or an error naming the line and column.
pub fn read_copy_data(
    data: &[u8],
    format: &CopyDataFormat,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let source = Path::new("STDIN");
    match format {
        CopyDataFormat::Text {
            delimiter,
            null,
            header,
        } => copy_text::read(source, data, *delimiter, null, *header, schema),
        CopyDataFormat::Csv(options) => {
            // The end-of-data marker of the text protocol may end CSV data too.
            let data = match data.windows(3).rposition(|w| w == b"\\.\n") {
                Some(at) if at == 0 || data[at - 1] == b'\n' => &data[..at],
                _ => data,
            };
            let mut out = Vec::new();
            read_csv(
                source,
                data,
                data.len() as u64,
                options,
                schema,
                &mut |_| {},
                &mut |batch| {
                    out.push(batch);
                    Ok(())
                },
            )?;
            Ok(out)
        }
    }
}

fn bad_input(path: &Path, message: impl Into<String>) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_csv(
    path: &Path,
    file: impl Read,
    bytes_total: u64,
    options: &CsvOptions,
    schema: &SchemaRef,
    progress: &mut dyn FnMut(Progress),
    sink: Sink,
) -> Result<()> {
    // arrow's CSV reader has no binary type; BYTEA columns are read as text in
    // PostgreSQL's hex form (\x0a0b) and decoded afterwards.
    let schema = &nullable(schema);
    let read_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Binary => Field::new(f.name(), DataType::Utf8, true),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let counter = CountingReader::new(file);
    let bytes = Arc::clone(&counter.count);
    let reader = arrow::csv::ReaderBuilder::new(Arc::clone(&read_schema))
        .with_header(options.header)
        .with_delimiter(options.delimiter)
        .with_batch_size(limits::IMPORT_BATCH_ROWS)
        .with_truncated_rows(false)
        .build(counter)?;
    let mut state = Progress {
        bytes_total,
        ..Progress::default()
    };
    for batch in reader {
        let batch = batch
            .map_err(|e| bad_input(path, csv_message(&e.to_string(), schema, options.header)))?;
        let batch = decode_bytea(path, batch, schema)?;
        state.rows += batch.num_rows() as u64;
        state.bytes_done = bytes.load(std::sync::atomic::Ordering::Relaxed);
        progress(state);
        sink(batch)?;
    }
    Ok(())
}

/// The schema with every column nullable: files are read as they are and NOT NULL
/// is checked by the catalog when the rows are appended, with its own error.
fn nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Rewrites arrow's "for column 3" into the column's name and its record number
/// into the line of the file (records after a header start on line 2), which
/// users can act on.
fn csv_message(message: &str, schema: &Schema, header: bool) -> String {
    let message = message.strip_prefix("Parser error: ").unwrap_or(message);
    let message = shift_line_number(message, u64::from(header));
    let message = message.as_str();
    let Some(at) = message.find("for column ") else {
        return message.to_string();
    };
    let rest = &message[at + "for column ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|i| schema.fields().get(i))
    {
        Some(field) => format!(
            "{}for column \"{}\"{}",
            &message[..at],
            field.name(),
            &rest[digits.len()..]
        ),
        None => message.to_string(),
    }
}

fn shift_line_number(message: &str, by: u64) -> String {
    let Some(at) = message.find(" at line ") else {
        return message.to_string();
    };
    let start = at + " at line ".len();
    let digits: String = message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits.parse::<u64>() {
        Ok(line) => format!(
            "{}{}{}",
            &message[..start],
            line + by,
            &message[start + digits.len()..]
        ),
        Err(_) => message.to_string(),
    }
}

fn decode_bytea(path: &Path, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Binary)
    {
        return Ok(batch);
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.data_type() != &DataType::Binary {
            columns.push(Arc::clone(column));
            continue;
        }
        let text = column
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("BYTEA columns are read as text");
        let mut builder = BinaryBuilder::new();
        for value in text.iter() {
            match value {
                None => builder.append_null(),
                Some(v) => builder.append_value(decode_hex(v).ok_or_else(|| {
                    bad_input(
                        path,
                        format!("invalid bytea value {v:?} for column \"{}\"", field.name()),
                    )
                })?),
            }
        }
        columns.push(Arc::new(builder.finish()) as ArrayRef);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Decodes PostgreSQL's hex bytea form `\x0a0b`.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

fn read_parquet(
    path: &Path,
    file: File,
    bytes_total: u64,
    schema: &SchemaRef,
    progress: &mut dyn FnMut(Progress),
    sink: Sink,
) -> Result<()> {
    let schema = &nullable(schema);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad_input(path, e.to_string()))?;
    let rows_total = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let file_schema = Arc::clone(builder.schema());
    let mapping = column_mapping(path, &file_schema, schema)?;
    let reader = builder
        .with_batch_size(limits::IMPORT_BATCH_ROWS)
        .build()
        .map_err(|e| bad_input(path, e.to_string()))?;
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let mut state = Progress {
        bytes_total,
        ..Progress::default()
    };
    for batch in reader {
        let batch = batch.map_err(|e| bad_input(path, e.to_string()))?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (field, &source) in schema.fields().iter().zip(&mapping) {
            let column = cast_with_options(batch.column(source), field.data_type(), &options)
                .map_err(|e| {
                    bad_input(
                        path,
                        format!(
                            "column \"{}\" (row group data near row {}): {e}",
                            field.name(),
                            state.rows
                        ),
                    )
                })?;
            columns.push(column);
        }
        state.rows += batch.num_rows() as u64;
        state.bytes_done = bytes_total * state.rows / rows_total;
        progress(state);
        sink(RecordBatch::try_new(Arc::clone(schema), columns)?)?;
    }
    Ok(())
}

/// Which file column feeds each table column: by name when every table column has
/// a same-named file column, otherwise by position when the counts agree.
fn column_mapping(path: &Path, file: &Schema, table: &Schema) -> Result<Vec<usize>> {
    let by_name: Option<Vec<usize>> = table
        .fields()
        .iter()
        .map(|f| {
            file.fields()
                .iter()
                .position(|g| g.name().eq_ignore_ascii_case(f.name()))
        })
        .collect();
    if let Some(mapping) = by_name {
        return Ok(mapping);
    }
    if file.fields().len() == table.fields().len() {
        return Ok((0..table.fields().len()).collect());
    }
    Err(bad_input(
        path,
        format!(
            "file has {} columns ({}) and matches neither the names nor the count of the table's {} columns",
            file.fields().len(),
            file.fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
            table.fields().len()
        ),
    ))
}

/// A reader that counts the bytes read through it, for progress reports.
struct CountingReader<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R> CountingReader<R> {
    fn new(inner: R) -> Self {
        CountingReader {
            inner,
            count: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_bytea() {
        assert_eq!(decode_hex("\\x0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("\\x0"), None);
        assert_eq!(decode_hex("0a"), None);
    }
}
