//! COPY between tables and files (`COPY t FROM 'file'`, `COPY t|(query) TO
//! 'file'`) and between tables and the client (`COPY t FROM STDIN`, `COPY
//! t|(query) TO STDOUT`).
//!
//! A file's format comes from `FORMAT` or else its extension (`.csv`,
//! `.parquet`). CSV options follow PostgreSQL: `HEADER` (default false) and
//! `DELIMITER`. The files themselves are read and written by the engine.
//!
//! The client's side speaks PostgreSQL's text format (tab-separated, `\N` for
//! NULL, backslash escapes) or CSV, with `DELIMITER`, `NULL` and `HEADER`. The
//! wire protocol carries the bytes; [`ClientCopy`] says what they are, the
//! engine parses incoming data, and [`CopyFormat::line`] writes outgoing rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cohortdb_engine::export::FileWriter;
use cohortdb_engine::import::{self, CopyDataFormat, CsvOptions, FileFormat};
use cohortdb_engine::{Table, limits};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use futures::StreamExt;

use crate::audit::Pending;
use crate::error::{Error, Position, Result};
use crate::names::position_of;
use crate::provider::commit;
use crate::session::{ParsedStatement, Session, count_stream, parse_query, resolve_table};

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

/// The table a COPY FROM appends to: a table without a column list.
fn target_table(
    session: &Session,
    source: &CopySource,
    position: Option<Position>,
) -> Result<Arc<Table>> {
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
    let table = resolve_table(session, table_name)?;
    crate::grants::check(
        session,
        cohortdb_engine::roles::Privilege::Insert,
        &cohortdb_engine::roles::Object::Table(table.name().to_string()),
    )?;
    Ok(table)
}

/// The query whose rows a COPY TO writes.
fn source_query(source: CopySource) -> Result<datafusion::sql::sqlparser::ast::Query> {
    Ok(match source {
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
    })
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
    let table = target_table(session, &source, position)?;
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
    let query = source_query(source)?;
    let plan = session.plan_query(query).await?;
    let mut stream = session.stream_plan(plan).await?;
    let mut writer = FileWriter::create(&file.path, file.format, &file.csv, &stream.schema())?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch?)?;
    }
    let count = writer.finish()?;
    Ok(count_stream(count))
}

/// How rows are written between the client and the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    csv: bool,
    delimiter: u8,
    /// What a NULL is written as: `\N` in text, the empty string in CSV.
    null: String,
    header: bool,
}

impl CopyFormat {
    /// Whether the first line names the columns.
    pub fn header(&self) -> bool {
        self.header
    }

    /// One row as a line of the format, newline included, from its cells in
    /// PostgreSQL's text form (`None` for NULL).
    pub fn line(&self, cells: &[Option<String>]) -> String {
        let delimiter = char::from(self.delimiter);
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push(delimiter);
            }
            match cell {
                None => line.push_str(&self.null),
                Some(value) if self.csv => line.push_str(&self.csv_field(value)),
                Some(value) => escape_text(value, delimiter, &mut line),
            }
        }
        line.push('\n');
        line
    }

    /// A CSV field, quoted when it holds the delimiter, a quote, a line break,
    /// or would read as NULL.
    fn csv_field(&self, value: &str) -> String {
        let needs_quotes = value.is_empty() && self.null.is_empty()
            || value == self.null
            || value
                .chars()
                .any(|c| c == char::from(self.delimiter) || matches!(c, '"' | '\n' | '\r'));
        if needs_quotes {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_string()
        }
    }

    fn data_format(&self) -> CopyDataFormat {
        if self.csv {
            CopyDataFormat::Csv(CsvOptions {
                header: self.header,
                delimiter: self.delimiter,
            })
        } else {
            CopyDataFormat::Text {
                delimiter: self.delimiter,
                null: self.null.clone(),
                header: self.header,
            }
        }
    }
}

/// A text-format cell: backslash, the delimiter and line breaks escaped.
fn escape_text(value: &str, delimiter: char, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == delimiter => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// A COPY between a table and the client, checked and ready to run.
#[derive(Debug)]
pub struct ClientCopy {
    direction: Direction,
    format: CopyFormat,
    columns: usize,
    /// The data of COPY FROM STDIN received so far.
    data: Vec<u8>,
    /// Set when the data passed [`limits::COPY_IN_BYTES_MAX`]; what comes
    /// after is dropped and the statement fails.
    too_large: bool,
    /// The statement's audit record, written when the copy ends.
    audit: Option<Pending>,
}

#[derive(Debug)]
enum Direction {
    /// `COPY t FROM STDIN`: rows for this table.
    In(Arc<Table>),
    /// `COPY t|(query) TO STDOUT`: this query's rows, planned when the COPY
    /// was checked (which needs its columns).
    Out(Box<datafusion::logical_expr::LogicalPlan>),
}

impl ClientCopy {
    fn new(direction: Direction, format: CopyFormat, columns: usize) -> ClientCopy {
        ClientCopy {
            direction,
            format,
            columns,
            data: Vec::new(),
            too_large: false,
            audit: None,
        }
    }

    /// Whether the client sends rows (FROM STDIN) rather than receives them.
    pub fn is_in(&self) -> bool {
        matches!(self.direction, Direction::In(_))
    }

    /// How many columns each row has.
    pub fn columns(&self) -> usize {
        self.columns
    }

    pub fn format(&self) -> &CopyFormat {
        &self.format
    }

    /// Takes the next piece of COPY FROM STDIN data.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.too_large {
            return;
        }
        if (self.data.len() + bytes.len()) as u64 > limits::COPY_IN_BYTES_MAX {
            self.too_large = true;
            self.data = Vec::new();
        } else {
            self.data.extend_from_slice(bytes);
        }
    }
}

impl Session {
    /// What `statement` asks of the client, if it is `COPY ... FROM STDIN` or
    /// `COPY ... TO STDOUT`: the table or query, checked, and the format.
    pub async fn client_copy(&self, statement: &ParsedStatement) -> Option<Result<ClientCopy>> {
        let Statement::Copy {
            source,
            to,
            target: CopyTarget::Stdin | CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } = statement.statement()
        else {
            return None;
        };
        let audit = self.audit_start(statement);
        // Boxed: a server asks this of every statement it runs, and this
        // future, planning a COPY's query, would otherwise make every
        // statement's future as large as its own.
        let checked =
            Box::pin(self.check_client_copy(statement, source, *to, options, legacy_options)).await;
        Some(match checked {
            Ok(mut copy) => {
                copy.audit = Some(audit);
                Ok(copy)
            }
            Err(e) => {
                audit.failed(&e);
                Err(e)
            }
        })
    }

    async fn check_client_copy(
        &self,
        statement: &ParsedStatement,
        source: &CopySource,
        to: bool,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<ClientCopy> {
        self.admit(statement)?;
        let position = match source {
            CopySource::Table { table_name, .. } => position_of(table_name),
            CopySource::Query(query) => position_of(query.as_ref()),
        };
        let format = client_format(options, legacy, position)?;
        if to {
            let plan = self.plan_query(source_query(source.clone())?).await?;
            let columns = plan.schema().fields().len();
            return Ok(ClientCopy::new(
                Direction::Out(Box::new(plan)),
                format,
                columns,
            ));
        }
        let table = target_table(self, source, position)?;
        Ok(ClientCopy::new(
            Direction::In(Arc::clone(&table)),
            format,
            table.schema().fields().len(),
        ))
    }

    /// The rows `COPY ... TO STDOUT` sends; a cancel request or
    /// `statement_timeout` stops them as it stops any statement.
    pub async fn copy_out(&self, copy: &mut ClientCopy) -> Result<SendableRecordBatchStream> {
        let Direction::Out(plan) = &copy.direction else {
            return Err(Error::invalid("COPY FROM STDIN sends no rows", None));
        };
        let result = self
            .stoppable(Box::pin(self.stream_plan(plan.as_ref().clone())))
            .await;
        let audit = copy.audit.take();
        match result {
            Ok(stream) => Ok(match audit {
                Some(audit) => audit.stream(stream),
                None => stream,
            }),
            Err(e) => {
                self.statement_failed();
                if let Some(audit) = audit {
                    audit.failed(&e);
                }
                Err(e)
            }
        }
    }

    /// Appends the rows the client sent with `COPY ... FROM STDIN`, all in one
    /// commit: a bad row anywhere leaves the table as it was. Returns how many.
    pub async fn copy_in(&self, mut copy: ClientCopy) -> Result<u64> {
        let audit = copy.audit.take();
        let result = self.append_copy_data(copy).await;
        if let Err(e) = &result {
            self.statement_failed();
            if let Some(audit) = audit {
                audit.failed(e);
            }
        } else if let (Ok(rows), Some(audit)) = (&result, audit) {
            audit.finish(Some(*rows), None)?;
        }
        result
    }

    async fn append_copy_data(&self, copy: ClientCopy) -> Result<u64> {
        let Direction::In(table) = &copy.direction else {
            return Err(Error::invalid("COPY TO STDOUT takes no rows", None));
        };
        if copy.too_large {
            return Err(Error::engine_at(
                cohortdb_engine::Error::LimitExceeded {
                    what: "COPY FROM STDIN data (bytes)",
                    limit: limits::COPY_IN_BYTES_MAX,
                },
                None,
            ));
        }
        let format = copy.format.data_format();
        let data = copy.data;
        commit(self.catalog(), table, move |catalog, table| {
            let batches = import::read_copy_data(&data, &format, &table.schema())?;
            catalog.append(table, batches)
        })
        .await
        .map_err(Error::from)
    }
}

/// The format options of a COPY with the client.
fn client_format(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    position: Option<Position>,
) -> Result<CopyFormat> {
    let mut csv = false;
    let mut delimiter = None;
    let mut null = None;
    let mut header = false;
    for option in options {
        match option {
            CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                "binary" => return Err(Error::unsupported("COPY in binary format", position)),
                other => {
                    return Err(Error::invalid(
                        format!("COPY format \"{other}\" not recognized (use text or csv)"),
                        position,
                    ));
                }
            },
            CopyOption::Header(on) => header = *on,
            CopyOption::Delimiter(c) => delimiter = Some(self::delimiter(*c, position)?),
            CopyOption::Null(text) => null = Some(text.clone()),
            other => return Err(Error::unsupported(format!("COPY option {other}"), position)),
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Csv(csv_options) if csv_options.is_empty() => csv = true,
            CopyLegacyOption::Header => header = true,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(self::delimiter(*c, position)?),
            CopyLegacyOption::Null(text) => null = Some(text.clone()),
            CopyLegacyOption::Binary => {
                return Err(Error::unsupported("COPY in binary format", position));
            }
            other => return Err(Error::unsupported(format!("COPY option {other}"), position)),
        }
    }
    Ok(CopyFormat {
        csv,
        delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
        null: null.unwrap_or_else(|| {
            if csv {
                String::new()
            } else {
                "\\N".to_string()
            }
        }),
        header,
    })
}
