//! The wire protocol as real client libraries in other languages use it: each
//! trial serves a fresh in-memory database and runs one script from
//! tests/clients/ against it (SQLAlchemy over psycopg 3, asyncpg, node-postgres,
//! pgjdbc). The scripts assert exact values, the ones PostgreSQL gives, and exit
//! non-zero on a mismatch; the trial then fails with everything they printed.
//!
//! The clients are installed by scripts/install-clients.sh (scripts/test.sh runs
//! it first), and are looked up here where that script puts them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cohortdb::Database;
use libtest_mimic::{Failed, Trial};

use crate::wire::start;
use crate::{block_on, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("clients::sqlalchemy_psycopg", sqlalchemy_psycopg),
        trial("clients::asyncpg_pool", asyncpg_pool),
        trial("clients::node_pg", node_pg),
        trial("clients::jdbc", jdbc),
    ]
}

/// A script that has not finished by then is taken to hang on the server
/// (a client waiting for a message that never comes) and is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

const INSTALL_HINT: &str = "run scripts/install-clients.sh";

fn sqlalchemy_psycopg() -> Result<(), Failed> {
    let python = python()?;
    run_against_server(move |port| {
        let mut command = Command::new(&python);
        command
            .arg(script("sqlalchemy_psycopg.py"))
            .arg(port.to_string());
        command
    })
}

fn asyncpg_pool() -> Result<(), Failed> {
    let python = python()?;
    run_against_server(move |port| {
        let mut command = Command::new(&python);
        command.arg(script("asyncpg_pool.py")).arg(port.to_string());
        command
    })
}

fn node_pg() -> Result<(), Failed> {
    let node_modules = clients_cache().join("clients-node/node_modules");
    require(&node_modules.join("pg/package.json"), "node-postgres")?;
    run_against_server(move |port| {
        let mut command = Command::new("node");
        command
            .env("NODE_PATH", &node_modules)
            .arg(script("node_pg.js"))
            .arg(port.to_string());
        command
    })
}

fn jdbc() -> Result<(), Failed> {
    let jar = PathBuf::from("/usr/share/java/postgresql.jar");
    require(&jar, "pgjdbc (libpostgresql-jdbc-java)")?;
    run_against_server(move |port| {
        // Java 11+ runs a single source file directly, so there is no build step.
        let mut command = Command::new("java");
        command
            .arg("-cp")
            .arg(&jar)
            .arg(script("Jdbc.java"))
            .arg(port.to_string());
        command
    })
}

/// Where scripts/install-clients.sh installs the clients.
fn clients_cache() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/cohortdb")
}

/// The Python of the clients' venv, which has psycopg, SQLAlchemy and asyncpg.
fn python() -> Result<PathBuf, Failed> {
    let python = clients_cache().join("clients-venv/bin/python");
    require(&python, "the Python clients' venv")?;
    Ok(python)
}

fn require(path: &Path, what: &str) -> Result<(), Failed> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!(
            "{what} is not installed ({} is missing): {INSTALL_HINT}",
            path.display()
        )
        .into())
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Serves a fresh in-memory database, runs the command that `client` builds for
/// its port, and fails with the script's output unless it exits successfully.
fn run_against_server(client: impl FnOnce(u16) -> Command + Send + 'static) -> Result<(), Failed> {
    block_on(async move {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        // The script blocks; the server must keep running on the runtime's workers.
        tokio::task::spawn_blocking(move || run_script(client(port))).await?
    })
}

/// Runs `command` to completion (or SCRIPT_TIMEOUT) with its output in files, so
/// that neither pipe can fill up and stall the script while it is being timed.
fn run_script(mut command: Command) -> Result<(), Failed> {
    let program = format!("{command:?}");
    let dir = tempfile::tempdir()?;
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdout(File::create(&stdout_path)?)
        .stderr(File::create(&stderr_path)?)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e} ({INSTALL_HINT})"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&stdout_path)?,
        std::fs::read_to_string(&stderr_path)?
    );
    match status {
        Some(status) if status.success() => {
            // Shown with --nocapture: what was checked, and the known server gaps.
            print!("{output}");
            Ok(())
        }
        Some(status) => Err(format!("{program} failed ({status}):\n{output}").into()),
        None => Err(format!("{program} did not finish in {SCRIPT_TIMEOUT:?}:\n{output}").into()),
    }
}
