//! COPY between tables and files: `COPY t FROM 'file'` and `COPY t|(query) TO 'file'`.
//!
//! The format comes from `FORMAT` or else the file's extension (`.csv`,
//! `.parquet`). CSV options follow PostgreSQL: `HEADER` (default false) and
//! `DELIMITER`. The files themselves are read and written by the engine.
//! COPY FROM STDIN / TO STDOUT belong to the wire protocol.

use std::path::{Path, PathBuf};

use cohortdb_engine::export::FileWriter;
use cohortdb_engine::import::{self, CsvOptions, FileFormat};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use futures::StreamExt;

use crate::error::{Error, Position, Result};
use crate::names::position_of;
use crate::provider::commit;
use crate::session::{Session, count_stream, parse_query, resolve_table};

/// What COPY does with a file, after its options are read.
struct FileSpec {
    path: PathBuf,
    format: FileFormat,
    csv: CsvOptions,
}

pub(crate) async fn copy(
    session: &Session,
    statement: Statement,
) -> Result<SendableRecordBatchStream> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        values,
    } = statement
    else {
        unreachable!("the session dispatches only COPY here");
    };
    let position = match &source {
        CopySource::Table { table_name, .. } => position_of(table_name),
        CopySource::Query(query) => position_of(query.as_ref()),
    };
    let file = match &target {
        // Server files are the server's: only superusers read or write them.
        CopyTarget::File { .. } if !session.is_superuser() => {
            return Err(Error::PermissionDenied {
                message: format!(
                    "permission denied to COPY {} a file: only superusers may; use COPY {} from a client",
                    if to { "to" } else { "from" },
                    if to { "TO STDOUT" } else { "FROM STDIN" }
                ),
            });
        }
        CopyTarget::File { filename } => {
            file_spec(Path::new(filename), &options, &legacy_options, position)?
        }
        CopyTarget::Stdin | CopyTarget::Stdout => {
            return Err(Error::unsupported(
                "COPY FROM STDIN / TO STDOUT outside the wire protocol",
                position,
            ));
        }
        CopyTarget::Program { .. } => return Err(Error::unsupported("COPY ... PROGRAM", position)),
    };
    if !values.is_empty() {
        return Err(Error::unsupported("inline COPY data", position));
    }
    if to {
        copy_to(session, source, file).await
    } else {
        copy_from(session, source, file, position).await
    }
}

fn file_spec(
    path: &Path,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    position: Option<Position>,
) -> Result<FileSpec> {
    let mut format = None;
    let mut csv = CsvOptions::default();
    for option in options {
        match option {
            CopyOption::Format(name) => {
                format = Some(FileFormat::parse(&name.value).ok_or_else(|| {
                    Error::invalid(
                        format!(
                            "COPY format \"{}\" not recognized (use csv or parquet)",
                            name.value
                        ),
                        position,
                    )
                })?);
            }
            CopyOption::Header(header) => csv.header = *header,
            CopyOption::Delimiter(c) => csv.delimiter = delimiter(*c, position)?,
            other => return Err(Error::unsupported(format!("COPY option {other}"), position)),
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Csv(csv_options) if csv_options.is_empty() => {
                format = Some(FileFormat::Csv)
            }
            CopyLegacyOption::Header => csv.header = true,
            CopyLegacyOption::Delimiter(c) => csv.delimiter = delimiter(*c, position)?,
            other => return Err(Error::unsupported(format!("COPY option {other}"), position)),
        }
    }
    let format = match format.or_else(|| FileFormat::from_path(path)) {
        Some(format) => format,
        None => {
            return Err(Error::invalid(
                format!(
                    "cannot tell the format of {}: name it with WITH (FORMAT csv|parquet)",
                    path.display()
                ),
                position,
            ));
        }
    };
    Ok(FileSpec {
        path: path.to_path_buf(),
        format,
        csv,
    })
}

fn delimiter(c: char, position: Option<Position>) -> Result<u8> {
    u8::try_from(c)
        .ok()
        .filter(|b| b.is_ascii() && *b != b'\n' && *b != b'\r' && *b != b'"')
        .ok_or_else(|| {
            Error::invalid(
                "COPY delimiter must be a single one-byte character",
                position,
            )
        })
}

async fn copy_from(
    session: &Session,
    source: CopySource,
    file: FileSpec,
    position: Option<Position>,
) -> Result<SendableRecordBatchStream> {
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Err(Error::invalid(
            "COPY FROM needs a table, not a query",
            position,
        ));
    };
    if !columns.is_empty() {
        return Err(Error::unsupported("COPY with a column list", position));
    }
    let table = resolve_table(session, &table_name)?;
    let count = commit(session.catalog(), &table, move |catalog, table| {
        import::import_file(
            catalog,
            table,
            &file.path,
            file.format,
            &file.csv,
            &mut |_| {},
        )
    })
    .await?;
    Ok(count_stream(count))
}

async fn copy_to(
    session: &Session,
    source: CopySource,
    file: FileSpec,
) -> Result<SendableRecordBatchStream> {
    let query = match source {
        CopySource::Query(query) => *query,
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            parse_query(&format!("SELECT {columns} FROM {table_name}"))?
        }
    };
    let plan = session.plan_query(query).await?;
    let mut stream = session.stream_plan(plan).await?;
    let mut writer = FileWriter::create(&file.path, file.format, &file.csv, &stream.schema())?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch?)?;
    }
    let count = writer.finish()?;
    Ok(count_stream(count))
}
