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
    /// Bytes of the input file, for a load (rates are reported when set).
    pub bytes: Option<u64>,
    pub seconds: BTreeMap<String, Vec<f64>>,
}

/// A peer's connection details and version, for a suite's run.
pub struct PeerSetup {
    pub peer: Peer,
    job: serde_json::Value,
    _server: Option<Postgres>,
}

pub fn setup_peers(
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
            Peer::Chdb => {
                versions.insert("chdb".to_string(), peers::chdb_version());
                let database = dir.join("chdb").display().to_string();
                setups.push(PeerSetup {
                    peer,
                    job: json!({"engine": "chdb", "database": database, "threads": num_cpus()}),
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

pub fn create_table_sql(table: &str) -> String {
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

pub fn copy_sql(
    peer: Option<Peer>,
    table: &str,
    path: &std::path::Path,
    format: FileFormat,
) -> String {
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

pub async fn cohortdb_run(
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
    /// Figures beyond timings for the JSON report (the load suite's memory
    /// probe), or null.
    pub details: serde_json::Value,
}

pub fn expect_rows(workload: &str, engine: &str, count: &Rows, rows: u64) -> Result<(), String> {
    let expected = vec![vec![format!("{:.4}", rows as f64)]];
    match check::difference(&expected, count) {
        None => Ok(()),
        Some(d) => Err(format!("{workload} on {engine}: row count differs: {d}")),
    }
}

pub fn run_peer(setup: &PeerSetup, steps: Vec<Step>) -> Result<Vec<peers::StepResult>, String> {
    run_peer_steps(setup, &steps)
}

/// Runs steps of any shape the runner reads (bench/peers/runner.py).
pub fn run_peer_steps<S: serde::Serialize>(
    setup: &PeerSetup,
    steps: &[S],
) -> Result<Vec<peers::StepResult>, String> {
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

/// A query run on every engine, and how the engines' answers are compared.
pub struct Query {
    pub name: String,
    pub sql: String,
    pub check: Check,
}

/// How a peer's answer is compared with cohortdb's.
pub enum Check {
    /// The same rows in the same order (the query has a total order).
    Same,
    /// Exactly `rows` rows, each passing `valid`: for a LIMIT without ORDER BY,
    /// where any matching rows are a right answer.
    Each {
        rows: usize,
        valid: fn(&[String]) -> bool,
    },
}

impl Check {
    /// What is wrong with `actual`, if anything.
    fn difference(&self, expected: &Rows, actual: &Rows) -> Option<String> {
        match self {
            Check::Same => check::difference(expected, actual),
            Check::Each { rows, valid } => {
                if actual.len() != *rows {
                    return Some(format!("{} rows, expected {rows}", actual.len()));
                }
                actual
                    .iter()
                    .position(|row| !valid(row))
                    .map(|i| format!("row {i} does not match the filter: {:?}", actual[i]))
            }
        }
    }
}

/// The tables a comparison loads into every engine (from Parquet; PostgreSQL
/// from CSV), and the statements each engine runs after loading (`None`:
/// cohortdb), untimed.
pub struct Dataset<'a> {
    pub files: &'a DataFiles,
    pub tables: Vec<String>,
    pub after_load: fn(Option<Peer>) -> Vec<String>,
}

impl Dataset<'_> {
    fn load_sql(&self, peer: Option<Peer>) -> Vec<String> {
        let format = if peer == Some(Peer::Postgres) {
            FileFormat::Csv
        } else {
            FileFormat::Parquet
        };
        let mut sql = Vec::new();
        for table in &self.tables {
            if peer.is_some() {
                sql.push(format!("DROP TABLE IF EXISTS {table}"));
            }
            sql.push(create_table_sql(table));
            sql.push(copy_sql(
                peer,
                table,
                &self.files.path(table, format),
                format,
            ));
        }
        sql.extend((self.after_load)(peer));
        sql
    }

    fn rows(&self) -> u64 {
        self.tables.iter().map(|t| self.files.rows(t)).sum()
    }
}

/// Runs each query `runs` times on cohortdb and on every peer, each engine
/// holding the dataset, and checks the peers' answers against cohortdb's.
/// With `explain`, the notes list cohortdb's scans of each query (units left
/// after pruning).
pub async fn compare(
    dataset: &Dataset<'_>,
    queries: &[Query],
    runs: usize,
    peers: &[Peer],
    explain: bool,
) -> Result<SuiteResult, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (setups, versions) = setup_peers(peers, work.path())?;
    eprintln!("loading cohortdb");
    let db = Database::open(work.path().join("cohortdb")).map_err(|e| e.to_string())?;
    let session = db.session();
    for sql in dataset.load_sql(None) {
        cohortdb_run(&session, &sql).await?;
    }
    let mut workloads = Vec::new();
    let mut answers = Vec::new();
    let mut notes = String::new();
    if explain {
        notes.push_str(
            "cohortdb's scans and the filters left above them (`EXPLAIN`; `batches` = \
             row groups left after pruning):\n\n| workload | plan |\n|---|---|\n",
        );
    }
    for query in queries {
        if explain {
            let plan = explain_scans(&session, &query.sql).await?;
            notes.push_str(&format!("| {} | `{plan}` |\n", query.name));
        }
        let mut ours = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..runs {
            let (s, batches) = cohortdb_run(&session, &query.sql).await?;
            ours.push(s);
            rows = check::normalise(&batches);
        }
        // A LIMIT without ORDER BY has no one answer to compare with: cohortdb's
        // rows are checked against the filter as the peers' are.
        if let Check::Each { .. } = query.check
            && let Some(d) = query.check.difference(&rows, &rows)
        {
            return Err(format!(
                "\"{}\": cohortdb's answer is wrong: {d}",
                query.name
            ));
        }
        answers.push(rows);
        workloads.push(Workload {
            name: query.name.clone(),
            rows: dataset.rows(),
            bytes: None,
            seconds: BTreeMap::from([("cohortdb".to_string(), ours)]),
        });
    }
    for setup in &setups {
        eprintln!("loading {}", setup.peer.name());
        let mut steps = vec![Step {
            name: "load".into(),
            before: vec![],
            sql: dataset.load_sql(Some(setup.peer)),
            runs: 1,
            check: false,
        }];
        steps.extend(queries.iter().map(|query| Step {
            name: query.name.clone(),
            before: vec![],
            sql: vec![query.sql.clone()],
            runs,
            check: true,
        }));
        let results = run_peer(setup, steps)?;
        for (((workload, query), expected), result) in workloads
            .iter_mut()
            .zip(queries)
            .zip(&answers)
            .zip(&results[1..])
        {
            let actual = result.rows.as_ref().expect("checked step");
            if let Some(d) = query.check.difference(expected, actual) {
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
        notes,
        details: serde_json::Value::Null,
    })
}

/// The scan and filter lines of cohortdb's physical plan for `sql`, joined
/// by "; " (a filter there is one the scan could not take).
async fn explain_scans(session: &cohortdb::Session, sql: &str) -> Result<String, String> {
    let (_, batches) = cohortdb_run(session, &format!("EXPLAIN {sql}")).await?;
    let scans: Vec<String> = check::normalise(&batches)
        .iter()
        .flat_map(|row| row.iter().flat_map(|cell| cell.lines()))
        .filter(|line| line.contains("EngineScanExec") || line.contains("FilterExec"))
        .map(|line| line.trim().to_string())
        .collect();
    Ok(scans.join("; "))
}

/// The analytics queries over the demo tables, loaded once into each engine.
pub async fn analytics(
    files: &DataFiles,
    runs: usize,
    peers: &[Peer],
) -> Result<SuiteResult, String> {
    let dataset = Dataset {
        files,
        tables: files.tables.iter().map(|(t, _)| t.clone()).collect(),
        after_load: |peer| match peer {
            Some(Peer::Postgres) => vec!["ANALYZE".to_string()],
            _ => vec![],
        },
    };
    let queries: Vec<Query> = QUERIES
        .iter()
        .map(|(name, sql)| Query {
            name: name.to_string(),
            sql: sql.to_string(),
            check: Check::Same,
        })
        .collect();
    compare(&dataset, &queries, runs, peers, false).await
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
    let peers = Peer::among(peers, &[Peer::Duckdb]);
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
        bytes: None,
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
        details: serde_json::Value::Null,
    })
}
