//! sqllogictest files under tests/slt, each run seven ways: in-process against
//! an in-memory database and against one in a fresh data directory, over the
//! wire with the simple and with the extended query protocol, and in-process
//! on disk in three storage states: after every statement the data directory
//! is checkpointed (rows flushed from memtables to segment files), reloaded
//! (state rebuilt from the manifest and the write-ahead log, as at open), or
//! vacuumed (segments with deleted rows rewritten, small ones merged). Every
//! way shows cells as PostgreSQL's text format (what psql prints), so one
//! expected output serves all: the binary values of the extended protocol are
//! turned into that text here. Records for one side only are marked `onlyif
//! in_process` or `onlyif wire`.
//!
//! `COHORTDB_SLT_REWRITE=1` rewrites each file's expected output with what the
//! in-process run produced, to review as a diff.

use std::fmt;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use async_trait::async_trait;
use cohortdb::{Database, Session};
use futures::TryStreamExt;
use libtest_mimic::{Failed, Trial};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[derive(Debug, Clone, Copy)]
enum Mode {
    Memory,
    Disk,
    Simple,
    Extended,
    Flushed,
    Reloaded,
    Vacuumed,
}

impl Mode {
    const ALL: [Mode; 7] = [
        Mode::Memory,
        Mode::Disk,
        Mode::Simple,
        Mode::Extended,
        Mode::Flushed,
        Mode::Reloaded,
        Mode::Vacuumed,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::Disk => "disk",
            Mode::Simple => "wire_simple",
            Mode::Extended => "wire_extended",
            Mode::Flushed => "disk_flushed",
            Mode::Reloaded => "disk_reloaded",
            Mode::Vacuumed => "disk_vacuumed",
        }
    }

    fn on_disk(self) -> bool {
        matches!(
            self,
            Mode::Disk | Mode::Flushed | Mode::Reloaded | Mode::Vacuumed
        )
    }
}

pub fn trials() -> Vec<Trial> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut trials = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(&root)
            .expect("under root")
            .display()
            .to_string();
        for mode in Mode::ALL {
            let file = file.clone();
            trials.push(Trial::test(
                format!("slt::{}::{name}", mode.name()),
                move || run_file(&file, mode),
            ));
        }
    }
    trials
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("tests/slt exists") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

fn run_file(file: &Path, mode: Mode) -> Result<(), Failed> {
    crate::block_on(async move {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let db = if mode.on_disk() {
            Database::open(&data).map_err(|e| e.to_string())?
        } else {
            Database::open_in_memory()
        };
        let result = match mode {
            Mode::Simple | Mode::Extended => {
                let port = crate::wire::start(&db).await?;
                let extended = matches!(mode, Mode::Extended);
                let mut runner = sqllogictest::Runner::new(move || Wire::connect(port, extended));
                runner.add_label("wire");
                runner.run_file_async(file).await
            }
            _ => {
                let in_process_db = db.clone();
                let mut runner = sqllogictest::Runner::new(move || {
                    let db = in_process_db.clone();
                    async move {
                        Ok(InProcess {
                            session: db.session(),
                            db,
                            mode,
                        })
                    }
                });
                runner.add_label("in_process");
                if std::env::var_os("COHORTDB_SLT_REWRITE").is_some() {
                    // Rewrites the file's expected output with what this run
                    // produced (for reviewing as a diff), then checks it as usual.
                    runner
                        .update_test_file(
                            file,
                            " ",
                            sqllogictest::default_validator,
                            sqllogictest::default_normalizer,
                            sqllogictest::default_column_validator,
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                }
                runner.run_file_async(file).await
            }
        };
        result.map_err(|e| Failed::from(format!("{}", e.display(true))))?;
        if mode.on_disk() {
            // Whatever the file did, the directory it leaves is sound.
            drop(db);
            let report = cohortdb::check(&data);
            if !report.problems.is_empty() {
                return Err(Failed::from(report.problems.join("\n")));
            }
        }
        Ok(())
    })
}

/// A session of the embedding API.
struct InProcess {
    session: Session,
    db: Database,
    mode: Mode,
}

impl InProcess {
    /// Runs a statement, then puts storage into the mode's state.
    async fn run_then_store(
        &mut self,
        sql: &str,
    ) -> Result<DBOutput<DefaultColumnType>, cohortdb::Error> {
        let output = self.run_statement(sql).await;
        match self.mode {
            Mode::Flushed => self.db.checkpoint()?,
            Mode::Reloaded => self.db.reload()?,
            Mode::Vacuumed => self.db.vacuum(None)?,
            _ => {}
        }
        output
    }
}

#[async_trait]
impl AsyncDB for InProcess {
    type Error = cohortdb::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, cohortdb::Error> {
        self.run_then_store(sql).await
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "cohortdb"
    }

    fn error_sql_state(err: &cohortdb::Error) -> Option<String> {
        Some(err.sqlstate().to_string())
    }
}

impl InProcess {
    async fn run_statement(
        &mut self,
        sql: &str,
    ) -> Result<DBOutput<DefaultColumnType>, cohortdb::Error> {
        let mut statements = self.session.parse(sql)?;
        let last = statements.pop().expect("sqllogictest sends one statement");
        for statement in statements {
            let _: Vec<RecordBatch> = self.session.run(statement).await?.try_collect().await?;
        }
        let completion = last.completion();
        let stream = self.session.run(last).await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        if completion.returns_count() {
            let count = cohortdb::changed_rows(&batches);
            return Ok(DBOutput::StatementComplete(count));
        }
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| arrow_column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        for batch in &batches {
            let cells =
                cohortdb_server::text_rows(batch).map_err(|e| cohortdb::Error::Execution {
                    message: e.to_string(),
                })?;
            rows.extend(
                cells
                    .into_iter()
                    .map(|row| row.into_iter().map(cell).collect()),
            );
        }
        Ok(DBOutput::Rows { types, rows })
    }
}

/// sqllogictest's conventions for a text cell: `NULL`, `(empty)` for an empty
/// string; EXPLAIN's plans end with a newline that is not part of the plan.
fn cell(text: Option<String>) -> String {
    match text {
        None => "NULL".to_string(),
        Some(text) if text.is_empty() => "(empty)".to_string(),
        Some(text) => text.strip_suffix('\n').map(str::to_string).unwrap_or(text),
    }
}

fn arrow_column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

/// A connection to a server on the test's database.
struct Wire {
    client: Client,
    extended: bool,
}

/// An error from the server, shown as the embedding API shows it: the message
/// and, when the server gave a position, the line and column it points at.
#[derive(Debug)]
struct WireError {
    text: String,
    sqlstate: Option<String>,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for WireError {}

impl WireError {
    fn new(e: tokio_postgres::Error, sql: &str) -> WireError {
        let Some(db) = e.as_db_error() else {
            return WireError {
                text: e.to_string(),
                sqlstate: None,
            };
        };
        let mut text = db.message().to_string();
        if let Some(tokio_postgres::error::ErrorPosition::Original(offset)) = db.position() {
            let (line, column) = line_and_column(sql, *offset as usize);
            text.push_str(&format!(" (at line {line}, column {column})"));
        }
        WireError {
            text,
            sqlstate: Some(db.code().code().to_string()),
        }
    }
}

/// The 1-based line and column of a 1-based character offset.
fn line_and_column(sql: &str, offset: usize) -> (usize, usize) {
    let before: Vec<char> = sql.chars().take(offset.saturating_sub(1)).collect();
    let line = before.iter().filter(|&&c| c == '\n').count() + 1;
    let column = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
    (line, column)
}

impl Wire {
    async fn connect(port: u16, extended: bool) -> Result<Wire, WireError> {
        let config = format!("host=127.0.0.1 port={port} user=cohortdb dbname=cohortdb");
        let (client, connection) =
            tokio_postgres::connect(&config, NoTls)
                .await
                .map_err(|e| WireError {
                    text: e.to_string(),
                    sqlstate: None,
                })?;
        tokio::spawn(connection);
        Ok(Wire { client, extended })
    }

    /// The simple protocol: the result of the string's last statement.
    async fn simple(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, WireError> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| WireError::new(e, sql))?;
        let mut output = DBOutput::StatementComplete(0);
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(columns) => {
                    output = DBOutput::Rows {
                        types: vec![DefaultColumnType::Any; columns.len()],
                        rows: Vec::new(),
                    };
                }
                SimpleQueryMessage::Row(row) => {
                    if let DBOutput::Rows { rows, .. } = &mut output {
                        rows.push(
                            (0..row.len())
                                .map(|i| cell(row.get(i).map(str::to_string)))
                                .collect(),
                        );
                    }
                }
                SimpleQueryMessage::CommandComplete(count)
                    if !matches!(output, DBOutput::Rows { .. }) =>
                {
                    output = DBOutput::StatementComplete(count);
                }
                _ => {}
            }
        }
        Ok(output)
    }

    /// The extended protocol: Parse, Describe, Bind, Execute, with results in
    /// binary format turned into PostgreSQL's text form.
    async fn extended(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, WireError> {
        let error = |e| WireError::new(e, sql);
        let statement = self.client.prepare(sql).await.map_err(error)?;
        if statement.columns().is_empty() {
            let count = self.client.execute(&statement, &[]).await.map_err(error)?;
            return Ok(DBOutput::StatementComplete(count));
        }
        let types = statement
            .columns()
            .iter()
            .map(|c| pg_column_type(c.type_()))
            .collect();
        let rows = self.client.query(&statement, &[]).await.map_err(error)?;
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, BinaryText>(i).map(|t| cell(t.0)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        Ok(DBOutput::Rows { types, rows })
    }
}

#[async_trait]
impl AsyncDB for Wire {
    type Error = WireError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, WireError> {
        if self.extended {
            match self.extended(sql).await {
                // Several statements in one string cannot be prepared (as in
                // PostgreSQL); clients send such strings with the simple protocol.
                Err(e)
                    if e.sqlstate.as_deref() == Some("42601")
                        && e.text.contains("multiple commands") => {}
                result => return result,
            }
        }
        self.simple(sql).await
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "cohortdb"
    }

    fn error_sql_state(err: &WireError) -> Option<String> {
        err.sqlstate.clone()
    }
}

fn pg_column_type(pg: &Type) -> DefaultColumnType {
    match *pg {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => DefaultColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// A binary-format value decoded and printed as PostgreSQL's text format would
/// carry it; `None` for NULL.
struct BinaryText(Option<String>);

impl<'a> FromSql<'a> for BinaryText {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<BinaryText, Box<dyn std::error::Error + Sync + Send>> {
        Ok(BinaryText(Some(binary_text(ty, raw)?)))
    }

    fn from_sql_null(_: &Type) -> Result<BinaryText, Box<dyn std::error::Error + Sync + Send>> {
        Ok(BinaryText(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

type DecodeResult<T> = Result<T, Box<dyn std::error::Error + Sync + Send>>;

fn binary_text(ty: &Type, raw: &[u8]) -> DecodeResult<String> {
    /// Seconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
    const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;
    Ok(match *ty {
        Type::BOOL => if bool::from_sql(ty, raw)? { "t" } else { "f" }.to_string(),
        Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
        Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
        Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
        Type::OID => u32::from_sql(ty, raw)?.to_string(),
        Type::FLOAT4 => cohortdb_server::float_text(f64::from(f32::from_sql(ty, raw)?), true),
        Type::FLOAT8 => cohortdb_server::float_text(f64::from_sql(ty, raw)?, false),
        Type::NUMERIC => numeric_text(raw)?,
        Type::BYTEA => {
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}")
        }
        Type::DATE => chrono::NaiveDate::from_sql(ty, raw)?.to_string(),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_sql(&Type::INT8, raw)? + PG_EPOCH_UNIX_SECONDS * 1_000_000;
            cohortdb_server::timestamp_text(micros, *ty == Type::TIMESTAMPTZ)
        }
        _ => match ty.kind() {
            Kind::Array(element) => array_text(element, raw)?,
            _ => String::from_utf8(raw.to_vec())?,
        },
    })
}

/// A binary numeric: digit count, weight, sign, display scale, then base-10000
/// digits.
fn numeric_text(raw: &[u8]) -> DecodeResult<String> {
    let word = |i: usize| -> DecodeResult<i16> {
        let bytes = raw.get(2 * i..2 * i + 2).ok_or("numeric is truncated")?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".to_string()),
        other => return Err(format!("numeric sign {other:#x}").into()),
    }
    let digits: Vec<i16> = (0..ndigits as usize)
        .map(|i| word(4 + i))
        .collect::<DecodeResult<_>>()?;
    let digit = |position: i32| -> i16 {
        usize::try_from(position)
            .ok()
            .and_then(|p| digits.get(p).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for position in 0..=i32::from(weight) {
            let d = digit(position);
            if position == 0 {
                text.push_str(&d.to_string());
            } else {
                text.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut position = i32::from(weight) + 1;
        while fraction.len() < dscale as usize {
            fraction.push_str(&format!("{:04}", digit(position)));
            position += 1;
        }
        fraction.truncate(dscale as usize);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// A one-dimensional binary array as PostgreSQL's text form: `{1,NULL,"a b"}`.
fn array_text(element: &Type, raw: &[u8]) -> DecodeResult<String> {
    let word = |at: usize| -> DecodeResult<i32> {
        let bytes = raw.get(at..at + 4).ok_or("array is truncated")?;
        Ok(i32::from_be_bytes(bytes.try_into()?))
    };
    let dimensions = word(0)?;
    if dimensions == 0 {
        return Ok("{}".to_string());
    }
    if dimensions != 1 {
        return Err(format!("{dimensions}-dimensional array").into());
    }
    let length = word(12)?;
    let mut at = 20;
    let mut items = Vec::new();
    for _ in 0..length {
        let size = word(at)?;
        at += 4;
        if size < 0 {
            items.push("NULL".to_string());
            continue;
        }
        let bytes = raw
            .get(at..at + size as usize)
            .ok_or("array element is truncated")?;
        at += size as usize;
        let text = binary_text(element, bytes)?;
        let plain = !text.is_empty()
            && !text.eq_ignore_ascii_case("NULL")
            && !text
                .chars()
                .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
        items.push(if plain {
            text
        } else {
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        });
    }
    Ok(format!("{{{}}}", items.join(",")))
}
