//! The `scan` suite: full scans, selective filters, a point lookup and LIMIT
//! over the demo events table, on every engine, answers cross-checked.
//!
//! cohortdb loads events with COPY and then runs CHECKPOINT, so every query
//! reads Parquet segment files (row group by row group, only the needed
//! columns, row groups skipped by their statistics), not memtables. DuckDB
//! also checkpoints; PostgreSQL runs VACUUM ANALYZE. No engine has an index.
//!
//! The generator writes events user by user, so `user_id` follows insertion
//! order (row-group statistics can rule most of the table out) while `ts`,
//! `item_id` and `event_type` are spread over every row group. The filters come
//! in both kinds at similar selectivity. Events has no key of its own: the
//! point lookup asks for one user's events.

use crate::data::DataFiles;
use crate::peers::Peer;
use crate::suites::{self, Check, Dataset, Query, SuiteResult};

/// The columns the projection workloads return.
const COLUMNS: &str = "user_id, ts, event_type, item_id, amount";

/// The queries at a scale of `users` (the user ids they name depend on it).
fn queries(users: u64) -> Vec<Query> {
    // A hundredth of the users, so about a hundredth of the events.
    let (first, last) = (users / 2 + 1, users / 2 + users / 100);
    let lookup = users / 4 * 3 + 1;
    let same = |name: &str, sql: String| Query {
        name: name.to_string(),
        sql,
        check: Check::Same,
    };
    vec![
        same(
            "full scan: count, sum(amount)",
            "SELECT count(*), sum(amount) FROM events".into(),
        ),
        same(
            "full scan: group by event_type",
            "SELECT event_type, count(*), sum(amount) FROM events \
             GROUP BY event_type ORDER BY event_type"
                .into(),
        ),
        same(
            "user_id range, 1% (in insertion order)",
            format!(
                "SELECT count(*), sum(amount) FROM events WHERE user_id BETWEEN {first} AND {last}"
            ),
        ),
        same(
            "ts range, 1% (not in insertion order)",
            // 44 of the 184 days' hours: 0.996% of a uniform spread.
            "SELECT count(*), sum(amount) FROM events \
             WHERE ts >= TIMESTAMP '2026-08-01 00:00:00' AND ts < TIMESTAMP '2026-08-02 20:00:00'"
                .into(),
        ),
        same(
            "item_id = 100, 0.1% (not in insertion order)",
            "SELECT count(*), sum(amount) FROM events WHERE item_id = 100".into(),
        ),
        same(
            "event_type = 'purchase', 4%",
            "SELECT count(*), sum(amount) FROM events WHERE event_type = 'purchase'".into(),
        ),
        same(
            "point lookup: one user's events",
            format!(
                "SELECT ts, event_type, item_id, amount FROM events WHERE user_id = {lookup} \
                 ORDER BY ts, event_type, item_id"
            ),
        ),
        Query {
            name: "5 columns, event_type filter, LIMIT 100".into(),
            sql: format!("SELECT {COLUMNS} FROM events WHERE event_type = 'purchase' LIMIT 100"),
            check: Check::Each {
                rows: 100,
                valid: |row| row[2] == "purchase",
            },
        },
        same(
            "5 columns, filter, top 100 by ts",
            format!(
                "SELECT {COLUMNS} FROM events WHERE event_type = 'purchase' AND amount >= 1000 \
                 ORDER BY ts DESC, user_id, item_id LIMIT 100"
            ),
        ),
    ]
}

/// Runs the scan queries over events (loaded from Parquet; PostgreSQL from CSV).
pub async fn scan(
    files: &DataFiles,
    users: u64,
    runs: usize,
    peers: &[Peer],
) -> Result<SuiteResult, String> {
    let dataset = Dataset {
        files,
        tables: vec!["events".to_string()],
        after_load: |peer| match peer {
            Some(Peer::Postgres) => vec!["VACUUM ANALYZE events".to_string()],
            _ => vec!["CHECKPOINT".to_string()],
        },
    };
    suites::compare(&dataset, &queries(users), runs, peers, true).await
}
