//! Auditing: every statement a session runs and every login attempt is
//! recorded in the database's audit log (`cohortdb_engine::audit`) — role,
//! client address and application, command, the statement's text with its
//! literals replaced by `?`, rows, duration and the SQLSTATE it failed with. A
//! statement is recorded when it ends: when its rows run out, when it fails,
//! or when its result is dropped unread (rows counted so far). The
//! `cohortdb_audit` system table (pg_catalog.rs) shows the log to superusers.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use cohortdb_engine::Catalog;
use cohortdb_engine::audit::Record;
use cohortdb_engine::limits;
use datafusion::common::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::session::{Offsets, ParsedStatement, Session, bounds, changed_rows};

/// The system table showing the audit log.
pub(crate) const TABLE: &str = "cohortdb_audit";

/// What stands in for a literal in a recorded statement.
const REDACTED: &str = "?";

/// A statement being audited: its record, but for how it ended. Dropped
/// before it is finished (the statement abandoned: a COPY FROM STDIN the
/// client failed, a connection gone mid-statement), it records the statement
/// as canceled (57014).
#[derive(Debug)]
pub(crate) struct Pending {
    /// `None` once written.
    record: Option<Record>,
    started: Instant,
    /// Whether the result is a one-row count of changed rows.
    counts: bool,
    catalog: Arc<Catalog>,
}

impl Session {
    /// Starts the record of `statement`, run now by the session's role.
    pub(crate) fn audit_start(&self, statement: &ParsedStatement) -> Pending {
        let completion = statement.completion();
        // COPY TO STDOUT streams the rows themselves, not their count.
        let counts = completion.returns_count() && !statement.copies_to_client();
        let mut record = self.audit_record(completion.into_command());
        record.statement = Some(statement.logged_shared());
        Pending {
            record: Some(record),
            started: Instant::now(),
            counts,
            catalog: Arc::clone(self.catalog()),
        }
    }

    /// Records a login attempt as `role` from the session's client:
    /// `sqlstate` is the error it was refused with. A log that cannot be
    /// written refuses the login.
    pub fn audit_login(&self, role: &str, sqlstate: Option<&str>) -> Result<()> {
        let mut record = self.audit_record("LOGIN".into());
        record.role = role.into();
        record.sqlstate = sqlstate.map(|code| code.to_string().into());
        Ok(self.catalog().audit().append(record)?)
    }

    /// Records the client's address (`host:port`) for the audit log.
    pub fn set_client_address(&self, address: &str) {
        self.lock().client_address = Some(address.into());
    }

    fn audit_record(&self, command: Cow<'static, str>) -> Record {
        let state = self.lock();
        Record {
            at_micros: cohortdb_engine::tags::now_micros(),
            role: Arc::clone(state.settings.user()),
            address: state.client_address.clone(),
            application: state.settings.application_name().cloned(),
            command,
            statement: None,
            rows: None,
            duration_micros: 0,
            sqlstate: None,
        }
    }
}

impl Pending {
    /// Writes the record: the statement ended with `rows` (returned or
    /// changed), failed with `sqlstate` when that is set.
    pub(crate) fn finish(
        mut self,
        rows: Option<u64>,
        sqlstate: Option<&'static str>,
    ) -> Result<()> {
        self.write(rows, sqlstate)
    }

    fn write(&mut self, rows: Option<u64>, sqlstate: Option<&'static str>) -> Result<()> {
        let Some(mut record) = self.record.take() else {
            return Ok(());
        };
        record.rows = rows;
        record.sqlstate = sqlstate.map(Cow::Borrowed);
        record.duration_micros = self.started.elapsed().as_micros() as u64;
        Ok(self.catalog.audit().append(record)?)
    }

    /// Records a statement that failed with `error`. The statement's own
    /// error is what the client hears; a log that cannot be written is
    /// reported on standard error.
    pub(crate) fn failed(self, error: &Error) {
        report(self.finish(None, Some(error.sqlstate())));
    }

    /// `stream`, recorded when it ends. A log that cannot be written at the
    /// end of a stream ends it with that error.
    pub(crate) fn stream(self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        Box::pin(Audited {
            rows: (!stream.schema().fields().is_empty()).then_some(0),
            inner: stream,
            pending: Some(self),
        })
    }
}

/// A statement's rows, counted on their way to the client.
struct Audited {
    inner: SendableRecordBatchStream,
    pending: Option<Pending>,
    /// Rows returned (or changed, for a count) so far; `None` for a result
    /// without columns.
    rows: Option<u64>,
}

impl Stream for Audited {
    type Item = datafusion::common::Result<arrow::array::RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = ready!(self.inner.poll_next_unpin(cx));
        let this = &mut *self;
        let Some(pending) = this.pending.as_ref() else {
            return Poll::Ready(polled);
        };
        match polled {
            Some(Ok(batch)) => {
                let rows = match pending.counts {
                    true => changed_rows(std::slice::from_ref(&batch)),
                    false => batch.num_rows() as u64,
                };
                this.rows = Some(this.rows.unwrap_or(0) + rows);
                Poll::Ready(Some(Ok(batch)))
            }
            Some(Err(e)) => {
                let error = Error::from(e);
                let pending = this.pending.take().expect("checked above");
                pending.failed(&error);
                Poll::Ready(Some(Err(DataFusionError::External(Box::new(error)))))
            }
            None => {
                let pending = this.pending.take().expect("checked above");
                match pending.finish(this.rows, None) {
                    Ok(()) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(DataFusionError::External(Box::new(e))))),
                }
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        report(self.write(None, Some(CANCELED)));
    }
}

/// The SQLSTATE of a statement abandoned before it ended (query_canceled).
const CANCELED: &str = "57014";

/// Reports on standard error a record that could not be written where
/// nobody waits for the statement's outcome any more.
fn report(written: Result<()>) {
    if let Err(e) = written {
        eprintln!("cohortdb: could not write the audit log: {e}");
    }
}

impl RecordBatchStream for Audited {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for Audited {
    /// A result dropped before its end (a portal closed early, a client gone)
    /// is recorded with the rows read from it.
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            report(pending.finish(self.rows, None));
        }
    }
}

/// One statement's text as the log records it: the text its `tokens` span
/// in the text `offsets` walks, from the first significant one to the last,
/// with every literal replaced (see [`redact`]) and cut to the limit. The
/// statements of a script are taken in order.
pub(crate) fn logged_text(tokens: &[TokenWithSpan], offsets: &mut Offsets<'_>) -> String {
    let Some((first, last)) = bounds(tokens) else {
        return String::new();
    };
    let start = offsets.at(first.span.start);
    shortened(replace_literals(start, tokens, offsets, |offsets| {
        offsets.at(last.span.end)
    }))
}

/// A statement's own text (not cut from a script) as the log records it.
pub(crate) fn logged(sql: &str) -> String {
    shortened(redact(sql))
}

/// `sql` with every literal (a string of any quoting, a number) replaced by
/// `?`, as query digests show statements: the log says what a statement did,
/// never the data in it. So no password, pseudonym key secret, email address
/// or user id reaches the log, and a forgotten user's id is in no file.
/// Keywords, identifiers, operators and `$n` parameters stay.
fn redact(sql: &str) -> String {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        // Text that does not tokenize never parsed into a statement; say
        // nothing of it rather than something unredacted.
        return REDACTED.to_string();
    };
    replace_literals(0, &tokens, &mut Offsets::new(sql), |_| sql.len())
}

/// The text `offsets` walks from byte `start` to `end` (found after the
/// literals, so that `offsets` only walks forward), each literal among
/// `tokens` (which lie in it, in order) replaced by [`REDACTED`].
fn replace_literals(
    start: usize,
    tokens: &[TokenWithSpan],
    offsets: &mut Offsets<'_>,
    end: impl FnOnce(&mut Offsets<'_>) -> usize,
) -> String {
    let sql = offsets.sql;
    let mut out = String::new();
    let mut from = start;
    for token in tokens.iter().filter(|t| is_literal(&t.token)) {
        let literal_start = offsets.at(token.span.start);
        out.push_str(&sql[from..literal_start]);
        out.push_str(REDACTED);
        from = offsets.at(token.span.end);
    }
    out.push_str(&sql[from..end(offsets)]);
    out
}

/// `text` cut to [`limits::AUDIT_STATEMENT_BYTES_MAX`] bytes (at a character
/// boundary), with a note of how many were left out.
fn shortened(mut text: String) -> String {
    let max = limits::AUDIT_STATEMENT_BYTES_MAX;
    if text.len() <= max {
        return text;
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let left_out = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!(" … ({left_out} more bytes)"));
    text
}

/// Whether `token` is a literal: a string of any quoting or a number.
fn is_literal(token: &Token) -> bool {
    matches!(
        token,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::Number(_, _)
    )
}

#[cfg(test)]
mod tests {
    use super::{limits, redact, shortened};

    #[test]
    fn every_literal_is_redacted() {
        let cases = [
            (
                "CREATE ROLE analyst LOGIN PASSWORD 'hunter2'",
                "CREATE ROLE analyst LOGIN PASSWORD ?",
            ),
            (
                "alter user \"Ann\" with encrypted password E'it''s\\n' valid until 'infinity'",
                "alter user \"Ann\" with encrypted password ? valid until ?",
            ),
            (
                "ALTER ROLE a PASSWORD $$dollar 'quoted'$$; SELECT 'password'",
                "ALTER ROLE a PASSWORD ?; SELECT ?",
            ),
            ("ALTER ROLE a PASSWORD NULL", "ALTER ROLE a PASSWORD NULL"),
            (
                "CREATE PSEUDONYM KEY crm SECRET\n  '00112233445566778899aabbccddeeff'",
                "CREATE PSEUDONYM KEY crm SECRET\n  ?",
            ),
            (
                "FORGET USER 'u-1', 42,\n 'ü-3' IMMEDIATELY",
                "FORGET USER ?, ?,\n ? IMMEDIATELY",
            ),
            (
                "SELECT \"Email\", x'0f', 1.5e3 FROM t WHERE k = $1 AND d > '2026-01-01'::date LIMIT 10",
                "SELECT \"Email\", ?, ? FROM t WHERE k = $1 AND d > ?::date LIMIT ?",
            ),
            (
                "SELECT audience_count('city=beijing AND NOT opted_out') -- a comment",
                "SELECT audience_count(?) -- a comment",
            ),
            ("SELECT 'unterminated", "?"),
        ];
        for (sql, redacted) in cases {
            assert_eq!(redact(sql), redacted, "{sql}");
        }
    }

    #[test]
    fn long_statements_are_cut_with_a_note() {
        let max = limits::AUDIT_STATEMENT_BYTES_MAX;
        assert_eq!(shortened("SELECT 1".into()), "SELECT 1");
        let exact = "x".repeat(max);
        assert_eq!(shortened(exact.clone()), exact);
        // A two-byte character straddling the limit is left out whole.
        let text = format!("{}é{}", "x".repeat(max - 1), "y".repeat(10));
        assert_eq!(
            shortened(text),
            format!("{} … (12 more bytes)", "x".repeat(max - 1))
        );
    }
}
