//! Running SQL scripts and the interactive shell.

use std::io::Write;
use std::time::Instant;

use arrow::array::RecordBatch;
use cohortdb::{Database, Session};
use futures::TryStreamExt;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::render;

/// Runs every statement of `sql` in order, printing each result; stops at the
/// first error and returns it as a one-line message.
pub async fn run_script(
    session: &Session,
    sql: &str,
    out: &mut dyn Write,
    timing: bool,
) -> Result<(), String> {
    let statements = session.parse(sql).map_err(|e| e.to_string())?;
    for statement in statements {
        let started = Instant::now();
        let completion = statement.completion();
        let stream = session.run(statement).await.map_err(|e| e.to_string())?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| cohortdb::Error::from(e).to_string())?;
        let text = if completion.shows_rows(&schema) {
            render::table(&schema, &batches)?
        } else {
            let rows = cohortdb::changed_rows(&batches);
            format!("{}\n", completion.tag(&schema, rows))
        };
        let mut text = text;
        if timing {
            text.push_str(&format!(
                "Time: {:.3} ms\n",
                started.elapsed().as_secs_f64() * 1000.0
            ));
        }
        out.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write output: {e}"))?;
    }
    Ok(())
}

const HELP: &str = "\
SQL statements end with ';' and may span lines.
  \\dt            list tables
  \\d TABLE       describe a table
  \\timing [on|off] show how long each statement takes
  \\?             this help
  \\q             quit
";

/// The interactive shell: line editing, history, multi-line statements.
pub async fn interactive(session: &Session, db: &Database) -> Result<(), String> {
    let mut editor =
        DefaultEditor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
    let history =
        std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cohortdb_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let place = match db.path() {
        Some(p) => p.display().to_string(),
        None => "memory".to_string(),
    };
    println!(
        "cohortdb {} ({place}). Type \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    let mut timing = false;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "cohortdb=> "
        } else {
            "cohortdb-> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("cannot read input: {e}")),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match meta_command(session, db, trimmed, &mut timing).await {
                Some(Ok(())) => {}
                Some(Err(e)) => eprintln!("ERROR:  {e}"),
                None => break,
            }
            continue;
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if !statement_complete(&buffer) {
            continue;
        }
        let sql = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(sql.as_str());
        let mut out = std::io::stdout().lock();
        if let Err(e) = run_script(session, &sql, &mut out, timing).await {
            eprintln!("ERROR:  {e}");
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Runs a backslash command; `None` means quit.
async fn meta_command(
    session: &Session,
    db: &Database,
    command: &str,
    timing: &mut bool,
) -> Option<Result<(), String>> {
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or_default();
    let arg = words.next();
    let sql = match (name, arg) {
        ("\\q", _) => return None,
        ("\\?", _) => {
            print!("{HELP}");
            return Some(Ok(()));
        }
        ("\\timing", arg) => {
            *timing = match arg {
                Some("on") => true,
                Some("off") => false,
                _ => !*timing,
            };
            println!("Timing is {}.", if *timing { "on" } else { "off" });
            return Some(Ok(()));
        }
        ("\\dt", _) => "SELECT table_name AS name FROM information_schema.tables \
                        WHERE table_schema = 'public' ORDER BY 1"
            .to_string(),
        ("\\d", Some(table)) => return Some(describe(db, table)),
        _ => return Some(Err(format!("invalid command {command}; try \\?"))),
    };
    let mut out = std::io::stdout().lock();
    Some(run_script(session, &sql, &mut out, *timing).await)
}

/// `\d TABLE`: the columns with their SQL types.
fn describe(db: &Database, table: &str) -> Result<(), String> {
    let columns = db.columns(table).map_err(|e| e.to_string())?;
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let types: Vec<String> = columns.iter().map(|c| c.column_type.to_string()).collect();
    let nullable: Vec<&str> = columns
        .iter()
        .map(|c| if c.nullable { "" } else { "not null" })
        .collect();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("Column", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("Type", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("Nullable", arrow::datatypes::DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        std::sync::Arc::clone(&schema),
        vec![
            std::sync::Arc::new(arrow::array::StringArray::from(names)),
            std::sync::Arc::new(arrow::array::StringArray::from(types)),
            std::sync::Arc::new(arrow::array::StringArray::from(nullable)),
        ],
    )
    .map_err(|e| e.to_string())?;
    print!(
        "Table \"public.{table}\"\n{}",
        render::table(&schema, &[batch])?
    );
    Ok(())
}

/// Whether the buffer ends with a `;` outside quotes and comments.
fn statement_complete(sql: &str) -> bool {
    let mut in_string = false;
    let mut in_identifier = false;
    let mut last_significant = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if !in_identifier => in_string = !in_string,
            '"' if !in_string => in_identifier = !in_identifier,
            '-' if !in_string && !in_identifier && chars.peek() == Some(&'-') => {
                // A line comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                continue;
            }
            _ => {}
        }
        if !c.is_whitespace() {
            last_significant = Some((c, in_string || in_identifier));
        }
    }
    matches!(last_significant, Some((';', false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes() {
        assert!(statement_complete("SELECT 1;"));
        assert!(statement_complete("SELECT 1\n  ;  "));
        assert!(!statement_complete("SELECT ';"));
        assert!(!statement_complete("SELECT 1 -- done;"));
        assert!(statement_complete("SELECT 'a;b';"));
        assert!(!statement_complete("SELECT \"x;"));
    }
}
