//! sqllogictest files under tests/slt, each run twice: against an in-memory
//! database and against one in a fresh data directory.

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use cohortdb::{Database, Session};
use futures::TryStreamExt;
use libtest_mimic::{Failed, Trial};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

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
        for on_disk in [false, true] {
            let file = file.clone();
            let mode = if on_disk { "disk" } else { "memory" };
            trials.push(Trial::test(format!("slt::{mode}::{name}"), move || {
                run_file(&file, on_disk)
            }));
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

fn run_file(file: &Path, on_disk: bool) -> Result<(), Failed> {
    crate::block_on(async move {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let db = if on_disk {
            Database::open(dir.path().join("data")).map_err(|e| e.to_string())?
        } else {
            Database::open_in_memory()
        };
        let mut runner = sqllogictest::Runner::new(move || {
            let db = db.clone();
            async move {
                Ok(Harness {
                    session: db.session(),
                })
            }
        });
        runner
            .run_file_async(file)
            .await
            .map_err(|e| Failed::from(format!("{}", e.display(true))))
    })
}

struct Harness {
    session: Session,
}

#[async_trait]
impl AsyncDB for Harness {
    type Error = cohortdb::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, cohortdb::Error> {
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
            .map(|f| column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        let options = FormatOptions::default().with_null("NULL");
        for batch in &batches {
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| {
                    ArrayFormatter::try_new(c.as_ref(), &options)
                        .expect("every stored type formats")
                })
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .zip(batch.columns())
                        .map(|(f, column)| cell(f.value(row).to_string(), column.as_ref(), row))
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "cohortdb"
    }

    fn error_sql_state(err: &cohortdb::Error) -> Option<String> {
        Some(err.sqlstate().to_string())
    }
}

/// sqllogictest's conventions: empty strings show as `(empty)`; floats as
/// PostgreSQL shows them (`30`, not `30.0`).
fn cell(text: String, column: &dyn Array, row: usize) -> String {
    if text.is_empty() && column.is_valid(row) {
        return "(empty)".to_string();
    }
    // EXPLAIN's plans end with a newline that is not part of the plan.
    let text = text.strip_suffix('\n').map(str::to_string).unwrap_or(text);
    match text.strip_suffix(".0") {
        Some(whole) if column.data_type().is_floating() => whole.to_string(),
        _ => text,
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}
