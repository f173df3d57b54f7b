//! Loading the audience data into each system, once per dataset: the
//! databases live next to the Parquet files (cohortdb's directory, DuckDB's
//! file, chDB's directory) with a marker holding what the load measured, so
//! later runs reuse them and still report the load.
//!
//! cohortdb loads in a child process (this binary again, hidden suite
//! `audience-load`) so that its peak resident memory is the load's and the
//! tag index build's alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use cohortdb::Database;
use cohortdb_engine::import::FileFormat;
use cohortdb_engine::types::ColumnDef;
use serde::{Deserialize, Serialize};

use super::data::{AudienceFiles, Layout};
use super::expr::CHDB_ALL;
use crate::memory::vm_hwm_kib;
use crate::suites::copy_sql;

/// One timed statement of a load and the peak resident memory after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadStep {
    pub name: String,
    pub seconds: f64,
    /// Peak resident memory of the loading process once the step was done
    /// (cohortdb: the child's VmHWM; peers: the runner's ru_maxrss).
    pub hwm_kib: Option<u64>,
}

/// A system's load of the dataset, as its marker file keeps it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// Peak resident memory before loading (cohortdb: opened, tables made).
    pub hwm_start_kib: Option<u64>,
    pub steps: Vec<LoadStep>,
}

impl LoadReport {
    pub fn seconds(&self) -> f64 {
        self.steps.iter().map(|s| s.seconds).sum()
    }

    pub fn peak_kib(&self) -> Option<u64> {
        self.steps.iter().filter_map(|s| s.hwm_kib).max()
    }
}

/// The marker of `system`'s load of `files`, if it was loaded.
pub fn loaded(files: &AudienceFiles, system: &str) -> Option<LoadReport> {
    let text = std::fs::read_to_string(marker(files, system)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn mark_loaded(files: &AudienceFiles, system: &str, report: &LoadReport) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).expect("a load report serializes");
    std::fs::write(marker(files, system), text).map_err(|e| e.to_string())
}

fn marker(files: &AudienceFiles, system: &str) -> PathBuf {
    files.dir.join(format!("{system}.loaded"))
}

pub fn cohortdb_dir(files: &AudienceFiles) -> PathBuf {
    files.dir.join("cohortdb")
}

/// `CREATE TABLE` with the user key declared.
fn create_sql(table: &str, columns: &[ColumnDef]) -> String {
    let columns: Vec<String> = columns
        .iter()
        .map(|c| {
            let constraint = match (c.user_key, c.nullable) {
                (true, _) => " USER KEY",
                (false, false) => " NOT NULL",
                (false, true) => "",
            };
            format!("{} {}{constraint}", c.name, c.column_type)
        })
        .collect();
    format!("CREATE TABLE {table} ({})", columns.join(", "))
}

/// The statements of cohortdb's load, in order, with their step names.
fn cohortdb_statements(files: &AudienceFiles) -> Vec<(String, String)> {
    let layout = &files.layout;
    let mut indexed: Vec<&str> = layout.attributes.iter().map(|a| a.name).collect();
    indexed.push("vip");
    let events_index = "CREATE TAG INDEX ON events (event_type) TIME ts BY DAY".to_string();
    vec![
        (
            "COPY users".to_string(),
            copy_sql(None, "users", &files.users_path(), FileFormat::Parquet),
        ),
        (
            "COPY events".to_string(),
            copy_sql(None, "events", &files.events_path(), FileFormat::Parquet),
        ),
        (
            format!("CREATE TAG INDEX ON users ({} columns)", indexed.len()),
            format!("CREATE TAG INDEX ON users ({})", indexed.join(", ")),
        ),
        (events_index.clone(), events_index),
        ("CHECKPOINT".to_string(), "CHECKPOINT".to_string()),
    ]
}

/// The child's side: loads the dataset into a new database at `dir`, timing
/// each statement, and prints a [`LoadReport`] on stdout.
pub async fn child(files: &AudienceFiles, dir: &Path) -> Result<(), String> {
    let db = Database::open(dir).map_err(|e| e.to_string())?;
    let session = db.session();
    for (table, columns) in [
        ("users", files.layout.users_columns()),
        ("events", Layout::events_columns()),
    ] {
        session
            .execute(&create_sql(table, &columns))
            .await
            .map_err(|e| format!("cohortdb: {e}"))?;
    }
    let mut report = LoadReport {
        hwm_start_kib: Some(vm_hwm_kib()?),
        steps: Vec::new(),
    };
    for (name, sql) in cohortdb_statements(files) {
        let started = Instant::now();
        session
            .execute(&sql)
            .await
            .map_err(|e| format!("cohortdb: {e}: {sql}"))?;
        report.steps.push(LoadStep {
            name: name.clone(),
            seconds: started.elapsed().as_secs_f64(),
            hwm_kib: Some(vm_hwm_kib()?),
        });
        eprintln!("  {name}: {:.2} s", started.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::to_string(&report).expect("a load report serializes")
    );
    Ok(())
}

/// Loads cohortdb unless it is loaded: runs the child into a fresh directory.
pub fn cohortdb(files: &AudienceFiles) -> Result<LoadReport, String> {
    if let Some(report) = loaded(files, "cohortdb") {
        return Ok(report);
    }
    let dir = cohortdb_dir(files);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    eprintln!("loading cohortdb (child process) into {}", dir.display());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command
        .args(["audience-load", "--users", &files.users.to_string()])
        .args(["--seed", &files.seed.to_string()]);
    if let Some(tags) = files.tags {
        command.args(["--tags", &tags.to_string()]);
    }
    command
        .arg("--child-data")
        .arg(&dir)
        .stderr(Stdio::inherit());
    let output = command
        .output()
        .map_err(|e| format!("starting the load child: {e}"))?;
    if !output.status.success() {
        return Err(format!("the audience load child failed: {}", output.status));
    }
    let report: LoadReport = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("audience load child output: {e}"))?;
    mark_loaded(files, "cohortdb", &report)?;
    Ok(report)
}

/// Each attribute's tag text (`column=value`) as an SQL expression.
fn tag_expressions(layout: &Layout, render: impl Fn(&str) -> String) -> Vec<String> {
    layout.attributes.iter().map(|a| render(a.name)).collect()
}

/// DuckDB's load: the wide users table (tags as columns), events, and the
/// long `user_tags(user_id, tag)` table sorted by tag (so a tag's rows are
/// together and zone maps skip the others).
pub fn duckdb_statements(files: &AudienceFiles) -> Vec<(String, Vec<String>)> {
    let users = files.users_path().display().to_string();
    let events = files.events_path().display().to_string();
    let mut long = vec![
        "CREATE OR REPLACE TABLE user_tags (user_id BIGINT NOT NULL, tag VARCHAR NOT NULL)"
            .to_string(),
    ];
    let mut columns = tag_expressions(&files.layout, |name| format!("'{name}=' || {name}"));
    columns.push("'vip=' || CAST(vip AS VARCHAR)".to_string());
    long.extend(columns.iter().map(|tag| {
        format!(
            "INSERT INTO user_tags SELECT user_id, {tag} AS tag FROM users ORDER BY tag, user_id"
        )
    }));
    vec![
        (
            "users".to_string(),
            vec![format!(
                "CREATE OR REPLACE TABLE users AS SELECT * FROM read_parquet('{users}')"
            )],
        ),
        (
            "events".to_string(),
            vec![format!(
                "CREATE OR REPLACE TABLE events AS SELECT * FROM read_parquet('{events}')"
            )],
        ),
        ("user_tags (long)".to_string(), long),
        ("CHECKPOINT".to_string(), vec!["CHECKPOINT".to_string()]),
    ]
}

/// A granule of one row: a query reads (and deserializes) only the bitmaps
/// it names. With the default 8,192 rows, every query read all 416 of the
/// users tags' states: 16 ms for one tag at 1M users, 2.4 ms with this.
const GRANULE: &str = "SETTINGS index_granularity = 1";

/// chDB's load: one `groupBitmap` state per users tag (and one of every
/// user, for NOT) and one per event type and day, in MergeTree tables,
/// built from the Parquet files.
pub fn chdb_statements(files: &AudienceFiles) -> Vec<(String, Vec<String>)> {
    let users = files.users_path().display().to_string();
    let events = files.events_path().display().to_string();
    let mut tags = tag_expressions(&files.layout, |name| format!("concat('{name}=', {name})"));
    tags.push("if(vip, 'vip=true', 'vip=false')".to_string());
    tags.push(format!("'{CHDB_ALL}'"));
    vec![
        (
            "tag_bitmaps".to_string(),
            vec![
                "DROP TABLE IF EXISTS tag_bitmaps".to_string(),
                format!(
                    "CREATE TABLE tag_bitmaps (tag String, bm AggregateFunction(groupBitmap, UInt32)) \
                     ENGINE = MergeTree ORDER BY tag {GRANULE}"
                ),
                format!(
                    "INSERT INTO tag_bitmaps SELECT tag, groupBitmapState(toUInt32(assumeNotNull(user_id))) \
                     FROM (SELECT user_id, arrayJoin([{}]) AS tag FROM file('{users}', Parquet)) \
                     GROUP BY tag",
                    tags.join(", ")
                ),
                "OPTIMIZE TABLE tag_bitmaps FINAL".to_string(),
            ],
        ),
        (
            "event_bitmaps".to_string(),
            vec![
                "DROP TABLE IF EXISTS event_bitmaps".to_string(),
                format!(
                    "CREATE TABLE event_bitmaps (event_type String, day Date, \
                     bm AggregateFunction(groupBitmap, UInt32)) ENGINE = MergeTree \
                     ORDER BY (event_type, day) {GRANULE}"
                ),
                format!(
                    "INSERT INTO event_bitmaps SELECT assumeNotNull(event_type), toDate(assumeNotNull(ts), 'UTC') AS day, \
                     groupBitmapState(toUInt32(assumeNotNull(user_id))) FROM file('{events}', Parquet) \
                     GROUP BY event_type, day"
                ),
                "OPTIMIZE TABLE event_bitmaps FINAL".to_string(),
            ],
        ),
    ]
}
