//! The peers: DuckDB (Python package in a venv under bench/.venv) and PostgreSQL
//! (Debian's package, a throw-away server on a private Unix socket). Both run
//! their jobs through bench/peers/runner.py, which times each step in-process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    Duckdb,
    Postgres,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Duckdb => "duckdb",
            Peer::Postgres => "postgres",
        }
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
}

const BENCH_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn venv_python() -> PathBuf {
    Path::new(BENCH_DIR).join(".venv/bin/python")
}

/// Creates bench/.venv with duckdb and psycopg unless it is there.
pub fn ensure_venv() -> Result<(), String> {
    let python = venv_python();
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import duckdb, psycopg"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if ready {
        return Ok(());
    }
    eprintln!("creating bench/.venv with duckdb and psycopg");
    run(Command::new("python3").args(["-m", "venv", &format!("{BENCH_DIR}/.venv")]))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "duckdb",
        "psycopg[binary]",
    ]))
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("{command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
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

/// A PostgreSQL server of its own, stopped and removed on drop.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub dsn: String,
    pub version: String,
}

/// The PostgreSQL peer's port on loopback (the other suites use its socket).
pub const PG_PORT: u16 = 54329;

impl Postgres {
    pub fn start() -> Result<Postgres, String> {
        let bin = pg_bin().or_else(|_| {
            eprintln!("installing PostgreSQL (Debian package postgresql)");
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get").args(["install", "-y", "-qq", "postgresql"]))?;
            pg_bin()
        })?;
        let dir = std::env::temp_dir().join(format!("cohortdb-bench-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        run(Command::new("chown").args(["postgres:postgres", &dir.display().to_string()]))?;
        let data = dir.join("data");
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {PG_PORT} -k {} -c listen_addresses='127.0.0.1' -c shared_buffers=2GB -c work_mem=256MB",
            dir.display()
        );
        let log = dir.join("server.log").display().to_string();
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        )?;
        let version = Command::new(bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(Postgres {
            dsn: format!(
                "host={} port={PG_PORT} user=postgres dbname=postgres",
                dir.display()
            ),
            dir,
            bin,
            version,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_postgres(program: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} {args:?} failed: {status}", program.display()))
    }
}

/// The newest installed PostgreSQL's bin directory.
fn pg_bin() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed".to_string())?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "PostgreSQL is not installed".to_string())
}

/// The DuckDB version in the venv.
pub fn duckdb_version() -> String {
    Command::new(venv_python())
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
