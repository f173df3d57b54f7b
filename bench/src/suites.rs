//! The suites: what each workload runs on cohortdb and on each peer.

use std::collections::BTreeMap;
use std::time::Instant;

use cohortdb::Database;
use cohortdb::arrow::array::RecordBatch;
use cohortdb_engine::demo;
use cohortdb_engine::import::FileFormat;
use serde_json::json;

use crate::check::{self, Rows};
use crate::data::DataFiles;
use crate::peers::{self, Peer, Postgres, Step};

/// Timings of one workload on every engine (engine name → seconds per run).
pub struct Workload {
    pub name: String,
    /// Rows the workload handles (rows loaded, or rows in the scanned tables).
    pub rows: u64,
    pub seconds: BTreeMap<String, Vec<f64>>,
}

/// A peer's connection details and version, for a suite's run.
struct PeerSetup {
    peer: Peer,
    job: serde_json::Value,
    _server: Option<Postgres>,
}

fn setup_peers(
    peers: &[Peer],
    dir: &std::path::Path,
) -> Result<(Vec<PeerSetup>, BTreeMap<String, String>), String> {
    peers::ensure_venv()?;
    let mut setups = Vec::new();
    let mut versions = BTreeMap::new();
    for &peer in peers {
        match peer {
            Peer::Duckdb => {
                versions.insert("duckdb".to_string(), peers::duckdb_version());
                let database = dir.join("duckdb.db").display().to_string();
                setups.push(PeerSetup {
                    peer,
                    job: json!({"engine": "duckdb", "database": database, "threads": num_cpus()}),
                    _server: None,
                });
            }
            Peer::Postgres => {
                let server = peers::start_postgres()?;
                versions.insert("postgres".to_string(), server.version.clone());
                setups.push(PeerSetup {
                    peer,
                    job: json!({"engine": "postgres", "dsn": server.dsn}),
                    _server: Some(server),
                });
            }
        }
    }
    Ok((setups, versions))
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn create_table_sql(table: &str) -> String {
    let (_, columns) = demo::tables()
        .into_iter()
        .find(|(n, _)| *n == table)
        .expect("demo table");
    let columns: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                c.name,
                c.column_type,
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    format!("CREATE TABLE {table} ({})", columns.join(", "))
}

fn copy_sql(peer: Option<Peer>, table: &str, path: &std::path::Path, format: FileFormat) -> String {
    let path = path.display();
    match (peer, format) {
        (Some(Peer::Duckdb), FileFormat::Csv) => {
            format!("COPY {table} FROM '{path}' (FORMAT csv, HEADER true)")
        }
        (Some(Peer::Duckdb), FileFormat::Parquet) => {
            format!("COPY {table} FROM '{path}' (FORMAT parquet)")
        }
        (_, FileFormat::Csv) => {
            format!("COPY {table} FROM '{path}' WITH (FORMAT csv, HEADER true)")
        }
        (_, FileFormat::Parquet) => format!("COPY {table} FROM '{path}'"),
    }
}

async fn cohortdb_run(
    session: &cohortdb::Session,
    sql: &str,
) -> Result<(f64, Vec<RecordBatch>), String> {
    let started = Instant::now();
    let batches = session
        .execute(sql)
        .await
        .map_err(|e| format!("cohortdb: {e}: {sql}"))?;
    Ok((started.elapsed().as_secs_f64(), batches))
}

pub struct SuiteResult {
    pub workloads: Vec<Workload>,
    pub versions: BTreeMap<String, String>,
    /// Markdown shown after the table (the wire suite's rates and latencies).
    pub notes: String,
}

/// CSV and Parquet ingest of each demo table into a fresh table, on disk.
pub async fn load(files: &DataFiles, runs: usize, peers: &[Peer]) -> Result<SuiteResult, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (setups, versions) = setup_peers(peers, work.path())?;
    let mut workloads = Vec::new();
    for (table, rows) in &files.tables {
        for format in [FileFormat::Csv, FileFormat::Parquet] {
            let path = files.path(table, format);
            let name = format!(
                "load {table} ({})",
                if format == FileFormat::Csv {
                    "csv"
                } else {
                    "parquet"
                }
            );
            let mut seconds = BTreeMap::new();
            let mut ours = Vec::new();
            for run in 0..runs {
                let dir = work
                    .path()
                    .join(format!("cohortdb-{table}-{format:?}-{run}"));
                let db = Database::open(&dir).map_err(|e| e.to_string())?;
                let session = db.session();
                session
                    .execute(&create_table_sql(table))
                    .await
                    .map_err(|e| e.to_string())?;
                let (s, _) = cohortdb_run(&session, &copy_sql(None, table, &path, format)).await?;
                let (_, count) =
                    cohortdb_run(&session, &format!("SELECT count(*) FROM {table}")).await?;
                expect_rows(&name, "cohortdb", &check::normalise(&count), *rows)?;
                ours.push(s);
                drop(session);
                drop(db);
                std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
            }
            seconds.insert("cohortdb".to_string(), ours);
            for setup in &setups {
                if setup.peer == Peer::Postgres && format == FileFormat::Parquet {
                    continue; // PostgreSQL has no Parquet reader.
                }
                let steps = vec![
                    Step {
                        name: name.clone(),
                        before: vec![
                            format!("DROP TABLE IF EXISTS {table}"),
                            create_table_sql(table),
                        ],
                        sql: vec![copy_sql(Some(setup.peer), table, &path, format)],
                        runs,
                        check: false,
                    },
                    Step {
                        name: "count".into(),
                        before: vec![],
                        sql: vec![format!("SELECT count(*) FROM {table}")],
                        runs: 1,
                        check: true,
                    },
                ];
                let results = run_peer(setup, steps)?;
                expect_rows(
                    &name,
                    setup.peer.name(),
                    results[1].rows.as_ref().expect("checked step"),
                    *rows,
                )?;
                seconds.insert(setup.peer.name().to_string(), results[0].seconds.clone());
            }
            workloads.push(Workload {
                name,
                rows: *rows,
                seconds,
            });
        }
    }
    Ok(SuiteResult {
        workloads,
        versions,
        notes: String::new(),
    })
}

fn expect_rows(workload: &str, engine: &str, count: &Rows, rows: u64) -> Result<(), String> {
    let expected = vec![vec![format!("{:.4}", rows as f64)]];
    match check::difference(&expected, count) {
        None => Ok(()),
        Some(d) => Err(format!("{workload} on {engine}: row count differs: {d}")),
    }
}

fn run_peer(setup: &PeerSetup, steps: Vec<Step>) -> Result<Vec<peers::StepResult>, String> {
    let mut job = setup.job.clone();
    job["steps"] = serde_json::to_value(steps).map_err(|e| e.to_string())?;
    peers::run_job(&job)
}

/// The analytics queries: the same SQL on every engine, each with a total order
/// so results can be compared row by row.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "users per city",
        "SELECT city, count(*) AS users FROM users GROUP BY city ORDER BY users DESC, city",
    ),
    (
        "audience count (4 filters)",
        "SELECT count(*) FROM users WHERE gender = 'f' AND city IN ('beijing', 'shanghai') \
         AND age BETWEEN 25 AND 34 AND spend_tier <> 'low'",
    ),
    (
        "revenue by category (join)",
        "SELECT i.category, count(*) AS purchases, sum(e.amount) AS revenue \
         FROM events e JOIN items i ON e.item_id = i.item_id \
         WHERE e.event_type = 'purchase' GROUP BY i.category ORDER BY i.category",
    ),
    (
        "funnel by channel (join)",
        "SELECT u.channel, e.event_type, count(*) AS events \
         FROM events e JOIN users u ON e.user_id = u.user_id \
         GROUP BY u.channel, e.event_type ORDER BY u.channel, e.event_type",
    ),
    (
        "monthly active users",
        "SELECT date_trunc('month', ts) AS month, count(DISTINCT user_id) AS active \
         FROM events GROUP BY 1 ORDER BY 1",
    ),
    (
        "top spenders per city (window)",
        "SELECT city, user_id, spend FROM ( \
           SELECT u.city, u.user_id, s.spend, \
                  row_number() OVER (PARTITION BY u.city ORDER BY s.spend DESC, u.user_id) AS r \
           FROM users u JOIN (SELECT user_id, sum(amount) AS spend FROM events \
                              WHERE event_type = 'purchase' GROUP BY user_id) s ON s.user_id = u.user_id) t \
         WHERE r <= 3 ORDER BY city, r",
    ),
    (
        "recent buyers by tier (CTE)",
        "WITH last_purchase AS (SELECT user_id, max(ts) AS last_ts FROM events \
                                WHERE event_type = 'purchase' GROUP BY user_id) \
         SELECT u.spend_tier, count(*) AS buyers, round(avg(u.age), 2) AS avg_age \
         FROM last_purchase l JOIN users u ON u.user_id = l.user_id \
         WHERE l.last_ts >= TIMESTAMP '2026-10-01 00:00:00' GROUP BY u.spend_tier ORDER BY u.spend_tier",
    ),
];

/// The analytics queries over the demo tables, loaded once into each engine.
pub async fn analytics(
    files: &DataFiles,
    runs: usize,
    peers: &[Peer],
) -> Result<SuiteResult, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (setups, versions) = setup_peers(peers, work.path())?;
    eprintln!("loading cohortdb");
    let db = Database::open(work.path().join("cohortdb")).map_err(|e| e.to_string())?;
    let session = db.session();
    for (table, _) in &files.tables {
        session
            .execute(&create_table_sql(table))
            .await
            .map_err(|e| e.to_string())?;
        session
            .execute(&copy_sql(
                None,
                table,
                &files.path(table, FileFormat::Parquet),
                FileFormat::Parquet,
            ))
            .await
            .map_err(|e| e.to_string())?;
    }
    let total_rows: u64 = files.tables.iter().map(|(_, n)| n).sum();
    let mut workloads = Vec::new();
    let mut answers = Vec::new();
    for (name, sql) in QUERIES {
        let mut ours = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..runs {
            let (s, batches) = cohortdb_run(&session, sql).await?;
            ours.push(s);
            rows = check::normalise(&batches);
        }
        answers.push(rows);
        let mut seconds = BTreeMap::new();
        seconds.insert("cohortdb".to_string(), ours);
        workloads.push(Workload {
            name: name.to_string(),
            rows: total_rows,
            seconds,
        });
    }
    for setup in &setups {
        eprintln!("loading {}", setup.peer.name());
        let mut steps = Vec::new();
        let mut load = Vec::new();
        for (table, _) in &files.tables {
            load.push(format!("DROP TABLE IF EXISTS {table}"));
            load.push(create_table_sql(table));
            let format = if setup.peer == Peer::Postgres {
                FileFormat::Csv
            } else {
                FileFormat::Parquet
            };
            load.push(copy_sql(
                Some(setup.peer),
                table,
                &files.path(table, format),
                format,
            ));
        }
        if setup.peer == Peer::Postgres {
            load.push("ANALYZE".to_string());
        }
        steps.push(Step {
            name: "load".into(),
            before: vec![],
            sql: load,
            runs: 1,
            check: false,
        });
        for (name, sql) in QUERIES {
            steps.push(Step {
                name: name.to_string(),
                before: vec![],
                sql: vec![sql.to_string()],
                runs,
                check: true,
            });
        }
        let results = run_peer(setup, steps)?;
        for ((workload, expected), result) in workloads.iter_mut().zip(&answers).zip(&results[1..])
        {
            let actual = result.rows.as_ref().expect("checked step");
            if let Some(d) = check::difference(expected, actual) {
                return Err(format!(
                    "\"{}\": {} differs from cohortdb: {d}",
                    workload.name,
                    setup.peer.name()
                ));
            }
            workload
                .seconds
                .insert(setup.peer.name().to_string(), result.seconds.clone());
        }
    }
    Ok(SuiteResult {
        workloads,
        versions,
        notes: String::new(),
    })
}

/// The experiment report over an exposures table, on cohortdb and on DuckDB
/// (PostgreSQL is not a peer here: the bar is against DuckDB).
pub async fn experiment(
    file: &std::path::Path,
    exposures: u64,
    runs: usize,
    peers: &[Peer],
) -> Result<SuiteResult, String> {
    use crate::experiment::{COHORTDB_REPORT, CREATE, SUMS_REPORT};
    let peers: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| *p == Peer::Duckdb)
        .collect();
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (setups, versions) = setup_peers(&peers, work.path())?;
    let db = Database::open(work.path().join("cohortdb")).map_err(|e| e.to_string())?;
    let session = db.session();
    session.execute(CREATE).await.map_err(|e| e.to_string())?;
    session
        .execute(&copy_sql(None, "exposures", file, FileFormat::Parquet))
        .await
        .map_err(|e| e.to_string())?;
    let mut ours = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..runs {
        let (s, batches) = cohortdb_run(&session, COHORTDB_REPORT).await?;
        ours.push(s);
        expected = check::normalise(&batches);
    }
    let mut workload = Workload {
        name: "3-variation report (Welch, abs. lift)".into(),
        rows: exposures,
        seconds: BTreeMap::from([("cohortdb".to_string(), ours)]),
    };
    for setup in &setups {
        let steps = vec![
            Step {
                name: "load".into(),
                before: vec![],
                sql: vec![
                    CREATE.to_string(),
                    copy_sql(Some(setup.peer), "exposures", file, FileFormat::Parquet),
                ],
                runs: 1,
                check: false,
            },
            Step {
                name: "report".into(),
                before: vec![],
                sql: vec![SUMS_REPORT.to_string()],
                runs,
                check: true,
            },
        ];
        let results = run_peer(setup, steps)?;
        let actual = results[1].rows.as_ref().expect("checked step");
        if let Some(d) = check::difference(&expected, actual) {
            return Err(format!(
                "experiment report: {} differs from cohortdb: {d}",
                setup.peer.name()
            ));
        }
        workload
            .seconds
            .insert(setup.peer.name().to_string(), results[1].seconds.clone());
    }
    Ok(SuiteResult {
        workloads: vec![workload],
        versions,
        notes: String::new(),
    })
}
