//! Writing query results to CSV or Parquet files.
//!
//! A [`FileWriter`] writes to a temporary file beside the target and renames it
//! into place only in [`FileWriter::finish`], so a failed export never leaves a
//! half-written file under the target name.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::error::{Error, Result};
use crate::import::{CsvOptions, FileFormat};

/// Row group size of exported Parquet files.
const PARQUET_ROW_GROUP_ROWS: usize = 1024 * 1024;

enum Sink {
    Csv(Box<arrow::csv::Writer<BufWriter<File>>>),
    Parquet(Box<ArrowWriter<File>>),
}

pub struct FileWriter {
    path: PathBuf,
    tmp: PathBuf,
    sink: Option<Sink>,
    rows: u64,
}

impl FileWriter {
    pub fn create(
        path: &Path,
        format: FileFormat,
        csv: &CsvOptions,
        schema: &SchemaRef,
    ) -> Result<FileWriter> {
        let name = path.file_name().ok_or_else(|| Error::BadInput {
            path: path.to_path_buf(),
            message: "not a file name".into(),
        })?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(".cohortdb-tmp");
        let tmp = path.with_file_name(tmp_name);
        let file = File::create(&tmp).map_err(Error::io(&tmp))?;
        let sink = match format {
            FileFormat::Csv => Sink::Csv(Box::new(
                arrow::csv::WriterBuilder::new()
                    .with_header(csv.header)
                    .with_delimiter(csv.delimiter)
                    .with_timestamp_format("%Y-%m-%d %H:%M:%S%.f".to_string())
                    .with_timestamp_tz_format("%Y-%m-%d %H:%M:%S%.f%:z".to_string())
                    .build(BufWriter::new(file)),
            )),
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    .set_statistics_enabled(EnabledStatistics::Page)
                    .build();
                Sink::Parquet(Box::new(
                    ArrowWriter::try_new(file, SchemaRef::clone(schema), Some(props)).map_err(
                        |e| Error::BadInput {
                            path: path.to_path_buf(),
                            message: e.to_string(),
                        },
                    )?,
                ))
            }
        };
        Ok(FileWriter {
            path: path.to_path_buf(),
            tmp,
            sink: Some(sink),
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let tmp = &self.tmp;
        match self.sink.as_mut().expect("writer is open until finish") {
            Sink::Csv(w) => w.write(batch)?,
            Sink::Parquet(w) => w.write(batch).map_err(|e| parquet_error(tmp, e))?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Completes the file, syncs it and moves it to the target name. Returns the
    /// number of rows written.
    pub fn finish(mut self) -> Result<u64> {
        let tmp = self.tmp.clone();
        let file = match self.sink.take().expect("writer is open until finish") {
            Sink::Csv(w) => w
                .into_inner()
                .into_inner()
                .map_err(|e| Error::io(&tmp)(e.into_error()))?,
            Sink::Parquet(w) => w.into_inner().map_err(|e| parquet_error(&tmp, e))?,
        };
        file.sync_all().map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(Error::io(&self.path))?;
        Ok(self.rows)
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if self.sink.is_some() {
            // Not finished: the export failed, leave no partial file behind.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
