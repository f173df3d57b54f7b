//! The peers: DuckDB and chDB (Python packages in a venv under bench/.venv) and
//! PostgreSQL (Debian's package, a throw-away server on a private Unix socket).
//! All run their jobs through bench/peers/runner.py, which times each step
//! in-process. chDB (ClickHouse as a library) is a peer of the audience suite
//! only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub use crate::postgres::Postgres;
use crate::postgres::run;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    Duckdb,
    Postgres,
    Chdb,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Duckdb => "duckdb",
            Peer::Postgres => "postgres",
            Peer::Chdb => "chdb",
        }
    }

    /// The peers of `chosen` a suite runs, those among `supported`, in the
    /// order chosen.
    pub fn among(chosen: &[Peer], supported: &[Peer]) -> Vec<Peer> {
        chosen
            .iter()
            .copied()
            .filter(|p| supported.contains(p))
            .collect()
    }
}

/// One timed step of a job.
#[derive(Serialize)]
pub struct Step {
    pub name: String,
    /// Statements run (untimed) before each timed run.
    pub before: Vec<String>,
    /// Statements timed together; the last one's rows are the result.
    pub sql: Vec<String>,
    pub runs: usize,
    pub check: bool,
}

#[derive(Deserialize)]
pub struct StepResult {
    pub seconds: Vec<f64>,
    pub rows: Option<Vec<Vec<String>>>,
    /// The runner's peak resident memory once the step was done.
    #[serde(default)]
    pub max_rss_kib: Option<u64>,
}

const BENCH_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn venv_python() -> PathBuf {
    Path::new(BENCH_DIR).join(".venv/bin/python")
}

/// Creates bench/.venv with duckdb, psycopg and chdb unless they are there.
pub fn ensure_venv() -> Result<(), String> {
    let python = venv_python();
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import duckdb, psycopg, chdb"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if ready {
        return Ok(());
    }
    eprintln!("creating bench/.venv with duckdb, psycopg and chdb");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv", &format!("{BENCH_DIR}/.venv")]))?;
    }
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "duckdb",
        "psycopg[binary]",
        "chdb",
    ]))
}

/// bench/.venv (see [`ensure_venv`]) with `packages` pip-installed unless
/// `import {modules}` already works there; returns its python.
pub fn ensure_packages(modules: &str, packages: &[&str]) -> Result<PathBuf, String> {
    ensure_venv()?;
    let python = venv_python();
    let ready = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        eprintln!("installing {} into bench/.venv", packages.join(", "));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages))?;
    }
    Ok(python)
}

/// Runs a job on a peer and returns one result per step.
pub fn run_job(job: &serde_json::Value) -> Result<Vec<StepResult>, String> {
    let mut child = Command::new(venv_python())
        .arg(Path::new(BENCH_DIR).join("peers/runner.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the peer runner: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(job.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("the {} runner failed", job["engine"]));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("runner output: {e}"))
}

/// The PostgreSQL peer's port on loopback (the other suites use its socket).
pub const PG_PORT: u16 = 54329;

/// Starts the PostgreSQL peer, tuned as a dedicated server would be.
pub fn start_postgres() -> Result<Postgres, String> {
    Postgres::start(PG_PORT, &["shared_buffers=2GB", "work_mem=256MB"])
}

/// The DuckDB version in the venv.
pub fn duckdb_version() -> String {
    package_version("duckdb")
}

/// The chDB version in the venv, with the ClickHouse version it embeds.
pub fn chdb_version() -> String {
    let clickhouse = python_output(
        "from chdb import session; \
         print(session.Session().query('SELECT version()', 'CSV').bytes().decode().strip().strip('\"'))",
    );
    format!("{} (ClickHouse {clickhouse})", package_version("chdb"))
}

fn package_version(package: &str) -> String {
    python_output(&format!("import {package}; print({package}.__version__)"))
}

fn python_output(code: &str) -> String {
    Command::new(venv_python())
        .args(["-c", code])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
