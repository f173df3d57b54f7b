//! The `load` suite: COPY of each demo table (CSV and Parquet) into an empty
//! table on every engine, then a CHECKPOINT, each timed; and the peak memory
//! of loading the largest table into cohortdb against the size it takes on
//! disk (measured in a child process, see [`crate::memory`]).
//!
//! cohortdb runs with `wal_sync = always` (set explicitly, though it is the
//! default): a COPY is acknowledged once its write-ahead log record is synced.

use std::collections::BTreeMap;
use std::path::Path;

use cohortdb::{Database, WalSync};
use cohortdb_engine::import::FileFormat;
use serde_json::json;

use crate::check;
use crate::data::DataFiles;
use crate::memory;
use crate::peers::{Peer, Step};
use crate::suites::{
    PeerSetup, SuiteResult, Workload, cohortdb_run, copy_sql, create_table_sql, expect_rows,
    run_peer, setup_peers,
};

/// Timings of one table's load on one engine, run by run.
#[derive(Default)]
struct LoadTimes {
    copy: Vec<f64>,
    checkpoint: Vec<f64>,
}

/// One table and input format to load.
struct Input<'a> {
    table: &'a str,
    rows: u64,
    format: FileFormat,
    path: std::path::PathBuf,
}

impl Input<'_> {
    fn label(&self) -> &'static str {
        match self.format {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// CSV and Parquet ingest of each demo table into a fresh table on disk,
/// followed by a CHECKPOINT; then the memory probe on the largest table.
pub async fn load(
    files: &DataFiles,
    users: u64,
    seed: u64,
    runs: usize,
    peers: &[Peer],
) -> Result<SuiteResult, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (setups, versions) = setup_peers(peers, work.path())?;
    let mut workloads = Vec::new();
    let mut segments_after_copy = serde_json::Map::new();
    for (table, rows) in &files.tables {
        for format in [FileFormat::Csv, FileFormat::Parquet] {
            let input = Input {
                table,
                rows: *rows,
                format,
                path: files.path(table, format),
            };
            let name = format!("load {table} ({})", input.label());
            let (ours, segments) = cohortdb_loads(work.path(), &input, runs).await?;
            segments_after_copy.insert(name.clone(), json!(segments));
            let mut copy = BTreeMap::from([("cohortdb".to_string(), ours.copy)]);
            let mut checkpoint = BTreeMap::from([("cohortdb".to_string(), ours.checkpoint)]);
            for setup in &setups {
                if setup.peer == Peer::Postgres && format == FileFormat::Parquet {
                    continue; // PostgreSQL has no Parquet reader.
                }
                let theirs = peer_loads(setup, &name, &input, runs)?;
                copy.insert(setup.peer.name().to_string(), theirs.copy);
                checkpoint.insert(setup.peer.name().to_string(), theirs.checkpoint);
            }
            workloads.push(Workload {
                name: name.clone(),
                rows: *rows,
                bytes: Some(memory::file_bytes(&input.path)?),
                seconds: copy,
            });
            workloads.push(Workload {
                name: format!("CHECKPOINT after {name}"),
                rows: *rows,
                bytes: None,
                seconds: checkpoint,
            });
        }
    }
    let (largest, _) = files
        .tables
        .iter()
        .max_by_key(|(_, rows)| *rows)
        .ok_or("no tables in the dataset")?;
    let mut probes = Vec::new();
    for format in [FileFormat::Csv, FileFormat::Parquet] {
        eprintln!("memory probe: {largest} ({format:?}) in a child process");
        probes.push(memory::probe(
            files,
            users,
            seed,
            largest,
            format,
            work.path(),
        )?);
    }
    let written: Vec<String> = segments_after_copy
        .iter()
        .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    let notes = format!(
        "Segment files in cohortdb's directory after the COPY, before the CHECKPOINT \
         (rows the COPY itself wrote as Parquet; the CHECKPOINT flushes the rest): {}.\n\n{}",
        if written.is_empty() {
            "none".to_string()
        } else {
            written.join(", ")
        },
        memory::markdown(&probes)
    );
    Ok(SuiteResult {
        workloads,
        versions,
        notes,
        details: json!({
            "wal_sync": "always",
            "cohortdb_segment_files_after_copy": segments_after_copy,
            "memory": probes,
        }),
    })
}

/// Loads `input` into a fresh cohortdb directory `runs` times: COPY, a row
/// count check, CHECKPOINT. Also returns how many segment files the COPY
/// alone left (a large COPY writes its rows to Parquet itself, leaving the
/// CHECKPOINT little to do).
async fn cohortdb_loads(
    work: &Path,
    input: &Input<'_>,
    runs: usize,
) -> Result<(LoadTimes, usize), String> {
    let mut times = LoadTimes::default();
    let mut segments = 0;
    for run in 0..runs {
        let dir = work.join(format!("cohortdb-{}-{}-{run}", input.table, input.label()));
        let db = Database::open(&dir).map_err(|e| e.to_string())?;
        db.set_wal_sync(WalSync::Always)
            .map_err(|e| e.to_string())?;
        let session = db.session();
        cohortdb_run(&session, &create_table_sql(input.table)).await?;
        let copy = copy_sql(None, input.table, &input.path, input.format);
        let (s, _) = cohortdb_run(&session, &copy).await?;
        times.copy.push(s);
        let count = format!("SELECT count(*) FROM {}", input.table);
        let (_, count) = cohortdb_run(&session, &count).await?;
        let name = format!("load {} ({})", input.table, input.label());
        expect_rows(&name, "cohortdb", &check::normalise(&count), input.rows)?;
        segments = segment_files(&dir)?;
        let (s, _) = cohortdb_run(&session, "CHECKPOINT").await?;
        times.checkpoint.push(s);
        drop(session);
        drop(db);
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
    }
    Ok((times, segments))
}

/// The same on a peer: each run a COPY into a fresh table and a CHECKPOINT,
/// timed as separate steps; then a row count check.
fn peer_loads(
    setup: &PeerSetup,
    name: &str,
    input: &Input<'_>,
    runs: usize,
) -> Result<LoadTimes, String> {
    let table = input.table;
    let mut steps = Vec::new();
    for _ in 0..runs {
        steps.push(Step {
            name: name.to_string(),
            before: vec![
                format!("DROP TABLE IF EXISTS {table}"),
                create_table_sql(table),
            ],
            sql: vec![copy_sql(Some(setup.peer), table, &input.path, input.format)],
            runs: 1,
            check: false,
        });
        steps.push(Step {
            name: "checkpoint".into(),
            before: vec![],
            sql: vec!["CHECKPOINT".into()],
            runs: 1,
            check: false,
        });
    }
    steps.push(Step {
        name: "count".into(),
        before: vec![],
        sql: vec![format!("SELECT count(*) FROM {table}")],
        runs: 1,
        check: true,
    });
    let results = run_peer(setup, steps)?;
    let (count, timed) = results.split_last().expect("the count step");
    expect_rows(
        name,
        setup.peer.name(),
        count.rows.as_ref().expect("checked step"),
        input.rows,
    )?;
    let mut times = LoadTimes::default();
    for pair in timed.chunks(2) {
        times.copy.extend(&pair[0].seconds);
        times.checkpoint.extend(&pair[1].seconds);
    }
    Ok(times)
}

/// Segment files in a cohortdb data directory.
fn segment_files(dir: &Path) -> Result<usize, String> {
    let segments = dir.join("segments");
    match std::fs::read_dir(&segments) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("{}: {e}", segments.display())),
    }
}
