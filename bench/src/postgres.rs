//! A throw-away PostgreSQL server (Debian's package, installed with apt-get when
//! missing) in a temporary directory, listening on a Unix socket there and on
//! 127.0.0.1:`port`; stopped and removed on drop.
//!
//! Std only, so that both the benchmarks (the PostgreSQL peer) and the
//! integration tests (differential tests) use this one file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// libpq connection string over the Unix socket, as the superuser `postgres`.
    pub dsn: String,
    /// `postgres (PostgreSQL) 15.x`.
    pub version: String,
}

impl Postgres {
    /// Starts a server on `port` with extra `-c name=value` settings.
    pub fn start(port: u16, settings: &[&str]) -> Result<Postgres, String> {
        let bin = pg_bin().or_else(|_| {
            eprintln!("installing PostgreSQL (Debian package postgresql)");
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get").args(["install", "-y", "-qq", "postgresql"]))?;
            pg_bin()
        })?;
        let dir = std::env::temp_dir().join(format!("cohortdb-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if running_as_root() {
            run(Command::new("chown").args(["postgres:postgres", &dir.display().to_string()]))?;
        }
        let data = dir.join("data").display().to_string();
        as_postgres(
            &bin.join("initdb"),
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        )?;
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses='127.0.0.1'",
            dir.display()
        );
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = dir.join("server.log").display().to_string();
        as_postgres(
            &bin.join("pg_ctl"),
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )?;
        let version = Command::new(bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(Postgres {
            dsn: format!(
                "host={} port={port} user=postgres dbname=postgres",
                dir.display()
            ),
            dir,
            bin,
            port,
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

/// Runs a command to completion; an error names it unless it succeeded.
pub fn run(command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("{command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL program as the `postgres` user (PostgreSQL refuses root),
/// or as the current user when that is not root.
fn as_postgres(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let status = command
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
