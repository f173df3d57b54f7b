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
        trial(
            "clients::segment_files_read_by_pyarrow_and_duckdb",
            segment_files_read_by_pyarrow_and_duckdb,
        ),
        trial(
            "clients::bitmaps_read_by_pyroaring",
            bitmaps_read_by_pyroaring,
        ),
        trial("clients::lookalike_caravan", lookalike_caravan),
        trial("clients::recommend_movielens", recommend_movielens),
    ]
}

/// A script that has not finished by then is taken to hang on the server
/// (a client waiting for a message that never comes) and is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// lookalike_caravan.py has lookalike_eval fit 1,000 logistic regressions (two
/// protocols, 10 splits, two methods, 5 folds x 5 strengths): about 90 s in a
/// test build (the engine is optimised there), seconds in release.
const CARAVAN_TIMEOUT: Duration = Duration::from_secs(900);

/// recommend_movielens.py builds EASE over 9,066 items (a dense inverse) and
/// three recommenders over 80,000 ratings: about 20 s in release.
const MOVIELENS_TIMEOUT: Duration = Duration::from_secs(600);

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

/// Bitmap values in and out through psycopg, read and written by pyroaring
/// (tests/clients/bitmaps.py).
fn bitmaps_read_by_pyroaring() -> Result<(), Failed> {
    let python = python()?;
    run_against_server(move |port| {
        let mut command = Command::new(&python);
        command.arg(script("bitmaps.py")).arg(port.to_string());
        command
    })
}

/// Lookalike quality on ISLR's Caravan against scikit-learn on the same
/// splits, with the bars (tests/clients/lookalike_caravan.py).
fn lookalike_caravan() -> Result<(), Failed> {
    let python = python()?;
    run_against_server_within(CARAVAN_TIMEOUT, move |port| {
        let mut command = Command::new(&python);
        command
            .arg(script("lookalike_caravan.py"))
            .arg(port.to_string());
        command
    })
}

/// Recommendation quality on MovieLens through SQL, with the bars
/// (tests/clients/recommend_movielens.py).
fn recommend_movielens() -> Result<(), Failed> {
    let python = python()?;
    run_against_server_within(MOVIELENS_TIMEOUT, move |port| {
        let mut command = Command::new(&python);
        command
            .arg(script("recommend_movielens.py"))
            .arg(port.to_string());
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

/// Segment files are standard Parquet: pyarrow and DuckDB read every type back
/// with the values cohortdb stored, and see the cohortdb metadata. They also show
/// what is physically on disk: a deleted row stays in its file (the deletion
/// vector is cohortdb's, a portable roaring bitmap pyroaring reads) until VACUUM
/// rewrites the file without it.
fn segment_files_read_by_pyarrow_and_duckdb() -> Result<(), Failed> {
    let python = python()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let db = Database::open(&data)?;
    block_on(async {
        let session = db.session();
        for sql in [
            "CREATE TABLE t (id BIGINT NOT NULL, name TEXT, spend DECIMAL(12,2), score DOUBLE PRECISION, \
             ok BOOLEAN, day DATE, at TIMESTAMP, at_tz TIMESTAMPTZ, small SMALLINT, n INTEGER, r REAL, raw BYTEA)",
            "INSERT INTO t VALUES \
             (1, 'beijing', 100.50, 0.25, true, DATE '2026-01-31', TIMESTAMP '2026-01-01 10:00:00', \
              TIMESTAMPTZ '2026-01-01 10:00:00+00', -3, 7, 1.5, '\\x0102'), \
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
             (3, 'erase-me-7f3a', 0.00, -1e-7, false, DATE '1999-12-31', TIMESTAMP '2026-03-15 23:59:59.5', \
              TIMESTAMPTZ '2026-03-15 23:59:59.5+00', 32767, -2147483648, -0.5, '')",
            // Enough rows that one deleted stays below the fraction that makes a
            // checkpoint compact the file.
            "INSERT INTO t (id) SELECT x FROM generate_series(10, 19) g(x)",
            "CHECKPOINT",
            "DELETE FROM t WHERE id = 3",
            "CHECKPOINT",
        ] {
            session.execute(sql).await?;
        }
        Ok(())
    })?;
    let read = |expected: &str| -> Result<(), Failed> {
        let output = Command::new(&python)
            .arg(script("segment_files.py"))
            .arg(&data)
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)).into());
        }
        assert_eq!(stdout, expected);
        Ok(())
    };
    let schema = "schema: id int64 not null, name string, spend decimal128(12, 2), score double, \
                  ok bool, day date32[day], at timestamp[us], at_tz timestamp[us, tz=UTC], \
                  small int16, n int32, r float, raw binary\n";
    let row1 = "1|beijing|100.50|0.25|True|2026-01-31|2026-01-01 10:00:00|2026-01-01 10:00:00+00:00|-3|7|1.5|b'\\x01\\x02'\n";
    let row2 = "2|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL\n";
    let row3 = "3|erase-me-7f3a|0.00|-1e-07|False|1999-12-31|2026-03-15 23:59:59.500000|2026-03-15 23:59:59.500000+00:00|32767|-2147483648|-0.5|b''\n";
    let more: String = (10..20)
        .map(|id| format!("{id}|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL\n"))
        .collect();
    // The deleted row is still in the file, marked deleted by a deletion
    // vector, whose bitmap pyroaring reads: position 2 (id 3, the third row).
    read(&format!(
        "0000000000000004.parquet pyarrow_rows=13 duckdb_rows=13 cohortdb.format_version=2 \
         cohortdb.row_count=13 cohortdb.segment_id=4 cohortdb.table_id=1\n{schema}{row1}{row2}{row3}{more}\
         0000000000000004-1.dv: [2]\n"
    ))?;
    block_on(async {
        db.session().execute("VACUUM t").await?;
        Ok(())
    })?;
    // VACUUM rewrote the file without it.
    read(&format!(
        "0000000000000005.parquet pyarrow_rows=12 duckdb_rows=12 cohortdb.format_version=2 \
         cohortdb.row_count=12 cohortdb.segment_id=5 cohortdb.table_id=1\n{schema}{row1}{row2}{more}"
    ))?;
    Ok(())
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
    run_against_server_within(SCRIPT_TIMEOUT, client)
}

/// [`run_against_server`] with a time limit of its own.
fn run_against_server_within(
    timeout: Duration,
    client: impl FnOnce(u16) -> Command + Send + 'static,
) -> Result<(), Failed> {
    block_on(async move {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        // The script blocks; the server must keep running on the runtime's workers.
        tokio::task::spawn_blocking(move || run_script(client(port), timeout)).await?
    })
}

/// Runs `command` to completion (or `timeout`) with its output in files, so
/// that neither pipe can fill up and stall the script while it is being timed.
fn run_script(mut command: Command, timeout: Duration) -> Result<(), Failed> {
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
        if started.elapsed() > timeout {
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
        None => Err(format!("{program} did not finish in {timeout:?}:\n{output}").into()),
    }
}
