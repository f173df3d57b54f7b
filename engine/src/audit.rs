//! The audit log: one record per statement a session runs and per login
//! attempt — who, from which address, what, when, how many rows, how long and
//! how it ended. The sql layer writes the records (it knows statements and
//! takes the literals out of them); the engine keeps them.
//!
//! A data directory keeps them in `audit.log`, one JSON object per line, only
//! ever appended to (docs/format.md § Audit log). Each record is one write of a
//! whole line, so a crash can leave at most the last line torn; opening cuts
//! such a line off. Records reach the operating system as they are written and
//! the disk at each checkpoint. An in-memory catalog keeps the last
//! [`limits::AUDIT_MEMORY_RECORDS`] in memory. A record's text is shared
//! with the session that wrote it (the role, the statement's logged text), not
//! copied per statement.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::Storage;
use crate::json;
use crate::limits;

/// The audit log's file in a data directory.
pub const FILE_NAME: &str = "audit.log";

/// Room for one encoded record with a statement of a few hundred bytes.
const LINE_CAPACITY: usize = 512;

/// What happened once: a statement run or a login attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When it started, in microseconds since the Unix epoch.
    pub at_micros: i64,
    /// The role it ran as (for a login, the role asked for).
    pub role: Arc<str>,
    /// The client's address (`host:port`); `None` for an embedded session.
    pub address: Option<Arc<str>>,
    /// The client's `application_name`, when it set one.
    pub application: Option<Arc<str>>,
    /// The command (`SELECT`, `CREATE ROLE`, `LOGIN`, ...).
    pub command: Cow<'static, str>,
    /// The statement's text, each literal replaced by `?`; `None` for a login.
    pub statement: Option<Arc<str>>,
    /// Rows returned or changed; `None` when the command has neither.
    pub rows: Option<u64>,
    /// How long it took, in microseconds.
    pub duration_micros: u64,
    /// The SQLSTATE it failed with; `None` when it succeeded.
    pub sqlstate: Option<Cow<'static, str>>,
}

impl Record {
    /// The record as its line in the file: a JSON object and `\n`, the same
    /// bytes `serde_json` writes (a test compares them), written directly:
    /// this runs for every statement, and serde's general path took several
    /// times as long.
    fn json_line(&self) -> Vec<u8> {
        let mut line = String::with_capacity(LINE_CAPACITY);
        let text = |line: &mut String, value: Option<&str>| match value {
            Some(value) => json::push_string(line, value),
            None => line.push_str("null"),
        };
        let number = |line: &mut String, value: Option<u64>| match value {
            Some(value) => line.push_str(itoa::Buffer::new().format(value)),
            None => line.push_str("null"),
        };
        line.push_str("{\"at_micros\":");
        line.push_str(itoa::Buffer::new().format(self.at_micros));
        line.push_str(",\"role\":");
        json::push_string(&mut line, &self.role);
        line.push_str(",\"address\":");
        text(&mut line, self.address.as_deref());
        line.push_str(",\"application\":");
        text(&mut line, self.application.as_deref());
        line.push_str(",\"command\":");
        json::push_string(&mut line, &self.command);
        line.push_str(",\"statement\":");
        text(&mut line, self.statement.as_deref());
        line.push_str(",\"rows\":");
        number(&mut line, self.rows);
        line.push_str(",\"duration_micros\":");
        number(&mut line, Some(self.duration_micros));
        line.push_str(",\"sqlstate\":");
        text(&mut line, self.sqlstate.as_deref());
        line.push_str("}\n");
        line.into_bytes()
    }
}

/// Where the records go. Cheap to share; appends from many sessions are
/// serialised, one whole record at a time.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sink: Arc<Mutex<Sink>>,
}

#[derive(Debug)]
enum Sink {
    File {
        file: File,
        path: PathBuf,
        storage: Arc<dyn Storage>,
        /// The file's length: where the next record starts.
        length: u64,
    },
    Memory {
        records: VecDeque<Record>,
        /// Records dropped from the front to stay within the limit.
        dropped: u64,
    },
}

impl AuditLog {
    /// A log kept in memory: the last [`limits::AUDIT_MEMORY_RECORDS`].
    pub fn in_memory() -> AuditLog {
        AuditLog::with(Sink::Memory {
            records: VecDeque::new(),
            dropped: 0,
        })
    }

    /// Opens (creating) `audit.log` in `dir` for appending. A torn last line,
    /// left by a crash in the middle of a write, is cut off; the returned
    /// report says so.
    pub fn open(dir: &Path, storage: Arc<dyn Storage>) -> Result<(AuditLog, Option<String>)> {
        let path = dir.join(FILE_NAME);
        let file = storage.open_append(&path).map_err(Error::io(&path))?;
        let report = cut_torn_line(&file, &path)?;
        let length = file.metadata().map_err(Error::io(&path))?.len();
        let sink = Sink::File {
            file,
            path,
            storage,
            length,
        };
        Ok((AuditLog::with(sink), report))
    }

    fn with(sink: Sink) -> AuditLog {
        AuditLog {
            sink: Arc::new(Mutex::new(sink)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().expect("audit log lock")
    }

    /// Appends one record. A write that fails part-way (a full disk) is cut
    /// back off, so the next record starts a line of its own.
    pub fn append(&self, record: Record) -> Result<()> {
        match &mut *self.lock() {
            Sink::File {
                file,
                path,
                storage,
                length,
            } => {
                let line = record.json_line();
                storage.write(file, path, &line).map_err(|e| {
                    let _ = file.set_len(*length);
                    Error::io(&*path)(e)
                })?;
                *length += line.len() as u64;
                Ok(())
            }
            Sink::Memory { records, dropped } => {
                if records.len() >= limits::AUDIT_MEMORY_RECORDS {
                    records.pop_front();
                    *dropped += 1;
                }
                records.push_back(record);
                Ok(())
            }
        }
    }

    /// Makes the records appended so far durable.
    pub fn sync(&self) -> Result<()> {
        match &*self.lock() {
            Sink::File {
                file,
                path,
                storage,
                ..
            } => storage.sync(file, path).map_err(Error::io(path)),
            Sink::Memory { .. } => Ok(()),
        }
    }

    /// Every record kept, oldest first, each with its number: its line in the
    /// file (1 for the first), or its place in the whole memory log.
    pub fn records(&self) -> Result<Vec<(u64, Record)>> {
        let (path, length) = match &*self.lock() {
            // Appends hold the lock, so this length ends after a whole line.
            Sink::File { path, length, .. } => (path.clone(), *length),
            Sink::Memory { records, dropped } => {
                return Ok((dropped + 1..).zip(records.iter().cloned()).collect());
            }
        };
        let file = File::open(&path).map_err(Error::io(&path))?;
        let mut records = Vec::new();
        for (number, line) in (1..).zip(BufReader::new(file.take(length)).lines()) {
            let line = line.map_err(Error::io(&path))?;
            let record = serde_json::from_str(&line).map_err(|e| Error::Corrupted {
                path: path.clone(),
                reason: format!("line {number} is not an audit record: {e}"),
            })?;
            records.push((number, record));
        }
        Ok(records)
    }
}

/// Cuts off a last line without its newline (a write a crash interrupted).
fn cut_torn_line(file: &File, path: &Path) -> Result<Option<String>> {
    let length = file.metadata().map_err(Error::io(path))?.len();
    let mut reader = file;
    // Lines are short; read back in blocks until a newline is found.
    let mut end = length;
    let mut block = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        reader
            .seek(SeekFrom::Start(start))
            .and_then(|_| reader.read_exact(chunk))
            .map_err(Error::io(path))?;
        if let Some(at) = chunk.iter().rposition(|b| *b == b'\n') {
            end = start + at as u64 + 1;
            break;
        }
        end = start;
    }
    if end == length {
        return Ok(None);
    }
    file.set_len(end).map_err(Error::io(path))?;
    Ok(Some(format!(
        "cut a torn audit record ({} bytes) from the end of {}",
        length - end,
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn record(command: &str) -> Record {
        Record {
            at_micros: 1_700_000_000_000_000,
            role: "analyst".into(),
            address: Some("127.0.0.1:50000".into()),
            application: None,
            command: command.to_string().into(),
            statement: Some(format!("{command} 1").into()),
            rows: Some(1),
            duration_micros: 250,
            sqlstate: None,
        }
    }

    #[test]
    fn a_line_is_what_serde_json_writes() -> TestResult {
        let mut odd = record("SELECT");
        odd.at_micros = -5;
        odd.role = "r\u{e9}le \"x\"".into();
        odd.address = None;
        odd.application = Some("app\\1\t".into());
        odd.statement = Some("SELECT '\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}\u{1F600}'".into());
        odd.rows = None;
        odd.sqlstate = Some("57014".into());
        for r in [record("INSERT"), odd] {
            let mut expected = serde_json::to_vec(&r)?;
            expected.push(b'\n');
            assert_eq!(
                String::from_utf8(r.json_line())?,
                String::from_utf8(expected)?
            );
            let line = r.json_line();
            assert_eq!(serde_json::from_slice::<Record>(&line)?, r);
        }
        Ok(())
    }

    #[test]
    fn records_survive_reopening_and_a_torn_line_is_cut() -> TestResult {
        let dir = tempfile::tempdir()?;
        let storage: Arc<dyn Storage> = Arc::new(crate::io::Os);
        let (log, report) = AuditLog::open(dir.path(), Arc::clone(&storage))?;
        assert_eq!(report, None);
        log.append(record("SELECT"))?;
        log.append(record("INSERT"))?;
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let whole = std::fs::read(&path)?;
        let mut torn = whole.clone();
        torn.extend_from_slice(br#"{"at_micros":17"#);
        std::fs::write(&path, &torn)?;

        let (log, report) = AuditLog::open(dir.path(), storage)?;
        assert_eq!(
            report.ok_or("a report")?,
            format!(
                "cut a torn audit record (15 bytes) from the end of {}",
                path.display()
            )
        );
        assert_eq!(std::fs::read(&path)?, whole);
        log.append(record("DELETE"))?;
        let commands: Vec<(u64, String)> = log
            .records()?
            .into_iter()
            .map(|(n, r)| (n, r.command.into_owned()))
            .collect();
        assert_eq!(
            commands,
            [
                (1, "SELECT".into()),
                (2, "INSERT".into()),
                (3, "DELETE".into())
            ]
        );
        Ok(())
    }

    #[test]
    fn a_line_that_is_not_a_record_is_reported_with_its_number() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        let mut text = serde_json::to_string(&record("SELECT"))?;
        text.push_str("\nnot json\n");
        std::fs::write(&path, text)?;
        let (log, _) = AuditLog::open(dir.path(), Arc::new(crate::io::Os))?;
        let error = log.records().err().ok_or("a bad line")?.to_string();
        assert!(
            error.ends_with("line 2 is not an audit record: expected ident at line 1 column 2"),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn a_failed_write_leaves_no_torn_line() -> TestResult {
        let dir = tempfile::tempdir()?;
        let faulty = Arc::new(crate::io::Faulty::default());
        let (log, _) = AuditLog::open(dir.path(), Arc::clone(&faulty) as Arc<dyn Storage>)?;
        log.append(record("SELECT"))?;
        faulty.arm(1, crate::io::Fault::ShortWrite);
        let error = log
            .append(record("INSERT"))
            .err()
            .ok_or("the write failed")?;
        assert!(
            error.to_string().contains("No space left on device"),
            "{error}"
        );
        log.append(record("DELETE"))?;
        let commands: Vec<String> = log
            .records()?
            .into_iter()
            .map(|(_, r)| r.command.into_owned())
            .collect();
        assert_eq!(commands, ["SELECT", "DELETE"]);
        Ok(())
    }

    #[test]
    fn appends_from_many_threads_stay_whole_lines() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (log, _) = AuditLog::open(dir.path(), Arc::new(crate::io::Os))?;
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let log = log.clone();
                scope.spawn(move || {
                    for i in 0..250 {
                        let mut r = record("SELECT");
                        r.statement =
                            Some(format!("SELECT {thread}, {i}, '{}'", "x".repeat(i)).into());
                        log.append(r).expect("appended");
                    }
                });
            }
        });
        let records = log.records()?;
        assert_eq!(records.len(), 1000);
        let mut seen: Vec<String> = records
            .into_iter()
            .map(|(_, r)| r.statement.unwrap_or_default().to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
        Ok(())
    }

    #[test]
    fn memory_keeps_the_last_records_numbered_from_the_first() -> TestResult {
        let log = AuditLog::in_memory();
        for _ in 0..limits::AUDIT_MEMORY_RECORDS + 2 {
            log.append(record("SELECT"))?;
        }
        let records = log.records()?;
        assert_eq!(records.len(), limits::AUDIT_MEMORY_RECORDS);
        assert_eq!(records[0].0, 3);
        assert_eq!(
            records.last().ok_or("records")?.0,
            limits::AUDIT_MEMORY_RECORDS as u64 + 2
        );
        Ok(())
    }
}
