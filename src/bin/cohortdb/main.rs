//! The `cohortdb` command-line tool: an SQL shell, file import and the demo.
//!
//! Exit codes: 0 when everything succeeded; 1 with a one-line `error:` message on
//! stderr when anything failed (bad arguments exit with clap's code 2).

mod render;
mod shell;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cohortdb::{Auth, CsvOptions, Database, DemoConfig, FileFormat, ServerOptions, Tls};
use indicatif::{ProgressBar, ProgressStyle};

/// See the workspace Cargo.toml: the allocator scans and loads want.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cohortdb",
    version,
    about = "Embedded analytics database for audience segmentation, queried with SQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run SQL: an interactive shell, or the statements of -c, -f or standard input.
    Sql {
        /// Data directory (created if missing); without it the database is in memory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[command(flatten)]
        script: ScriptArgs,
    },
    /// Import a CSV or Parquet file into an existing table, all rows or none.
    Import {
        /// Data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Table to import into.
        table: String,
        /// File to read.
        file: PathBuf,
        /// File format; by default taken from the file's extension.
        #[arg(long, value_parser = ["csv", "parquet"])]
        format: Option<String>,
        /// The CSV file has no header line.
        #[arg(long)]
        no_header: bool,
        /// CSV field delimiter.
        #[arg(long, default_value = ",")]
        delimiter: char,
    },
    /// Verify a data directory's invariants (manifest, segment files, row counts) without
    /// changing it; prints each problem and exits non-zero if there is any.
    Check {
        /// Data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Serve a database over the PostgreSQL wire protocol (connect with psql or any driver).
    Serve {
        /// Data directory (created if missing).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// When the write-ahead log is synced: always (a statement returns once
        /// durable), batch (every 10 ms) or off (by the OS); kept in the data
        /// directory for later starts. See docs/format.md for what each risks.
        #[arg(long, value_name = "MODE")]
        wal_sync: Option<WalSyncArg>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Set a user's password, creating the user as a superuser if it does not exist
    /// (how the first administrator is made). The password is read from the
    /// COHORTDB_PASSWORD environment variable or else the first line of standard input.
    Passwd {
        /// Data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// User name.
        #[arg(long, default_value = "cohortdb")]
        user: String,
    },
    /// Create the seeded demo dataset (users, items, events) and serve it, or run -c/-f on it.
    Demo {
        /// Data directory for the demo; reused if it already holds the demo tables.
        #[arg(long, value_name = "DIR", default_value = "cohortdb-demo")]
        data: PathBuf,
        /// Number of users to generate (items: one per hundred users; events: ten per user on average).
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Seed of the generator: the same seed and size give the same data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        script: ScriptArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WalSyncArg {
    Always,
    Batch,
    Off,
}

impl From<WalSyncArg> for cohortdb::WalSync {
    fn from(mode: WalSyncArg) -> cohortdb::WalSync {
        match mode {
            WalSyncArg::Always => cohortdb::WalSync::Always,
            WalSyncArg::Batch => cohortdb::WalSync::Batch,
            WalSyncArg::Off => cohortdb::WalSync::Off,
        }
    }
}

#[derive(Args)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5433")]
    listen: String,
    /// How clients log in: scram (a role's password; the default of serve) or trust
    /// (anyone, as a superuser; the default of demo, for local use only).
    #[arg(long, value_parser = ["scram", "trust"])]
    auth: Option<String>,
    /// PEM certificate chain for TLS (with --tls-key); a bad one stops the server
    /// from starting.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS.
    #[arg(long, requires = "tls_cert")]
    require_tls: bool,
    /// Most client connections at once; more are refused (SQLSTATE 53300).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_connections: usize,
    /// Working memory one statement may use, e.g. 512MiB or 8GiB; a statement
    /// that needs more fails with SQLSTATE 53200.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    query_memory: usize,
}

/// A size such as `512MiB`, `8GiB` or a number of bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB or 8GiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Args)]
struct ScriptArgs {
    /// Run this SQL and exit (may be repeated).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,
    /// Run the SQL in this file and exit.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Sql { data, script } => {
                let db = match data {
                    Some(dir) => open(&dir)?,
                    None => Database::open_in_memory(),
                };
                run_script_or_shell(&db, &script).await
            }
            Command::Import {
                data,
                table,
                file,
                format,
                no_header,
                delimiter,
            } => import(
                &data,
                &table,
                &file,
                format.as_deref(),
                !no_header,
                delimiter,
            ),
            Command::Serve {
                data,
                wal_sync,
                server,
            } => {
                let db = open(&data)?;
                if let Some(mode) = wal_sync {
                    db.set_wal_sync(mode.into()).map_err(|e| e.to_string())?;
                }
                serve(&db, &server, Auth::Scram).await
            }
            Command::Passwd { data, user } => passwd(&data, &user),
            Command::Check { data } => check(&data),
            Command::Demo {
                data,
                users,
                seed,
                script,
                server,
            } => {
                let db = open_demo(
                    &data,
                    &DemoConfig {
                        users,
                        seed,
                        ..DemoConfig::default()
                    },
                )?;
                if script.commands.is_empty() && script.file.is_none() {
                    serve(&db, &server, Auth::Trust).await
                } else {
                    run_script_or_shell(&db, &script).await
                }
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// `cohortdb check`: one line per problem on standard output, leftovers noted,
/// then a summary; an error (exit 1) when any problem was found.
fn check(data: &std::path::Path) -> CliResult {
    let report = cohortdb::check(data);
    for problem in &report.problems {
        println!("{problem}");
    }
    for note in &report.notes {
        println!("{note}");
    }
    for leftover in &report.leftovers {
        println!(
            "{}: leftover of an interrupted write (removed at the next open)",
            leftover.display()
        );
    }
    if report.problems.is_empty() {
        println!(
            "ok: {} tables, {} segments, {} rows, {} users, {} tag files, {} recommenders, {} log records to replay",
            report.tables,
            report.segments,
            report.rows,
            report.users,
            report.tag_files,
            report.recommenders,
            report.wal_records
        );
        Ok(())
    } else {
        Err(format!(
            "{} problem(s) in {}",
            report.problems.len(),
            data.display()
        ))
    }
}

/// Opens a data directory, telling the operator on standard error what
/// recovery did.
fn open(dir: &Path) -> Result<Database, String> {
    let db = Database::open(dir).map_err(|e| e.to_string())?;
    if let Some(report) = db.recovery_report() {
        eprintln!("recovery: {report}");
    }
    Ok(db)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {}", message.replace('\n', " "));
    ExitCode::FAILURE
}

/// Errors reach `main` as their one-line message.
type CliResult = Result<(), String>;

async fn run_script_or_shell(db: &Database, script: &ScriptArgs) -> CliResult {
    let session = db.session();
    let mut out = std::io::stdout().lock();
    if !script.commands.is_empty() || script.file.is_some() {
        for sql in &script.commands {
            shell::run_script(&session, sql, &mut out, false).await?;
        }
        if let Some(path) = &script.file {
            let sql = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            shell::run_script(&session, &sql, &mut out, false).await?;
        }
        return Ok(());
    }
    if std::io::stdin().is_terminal() {
        drop(out);
        return shell::interactive(&session, db).await;
    }
    let sql = std::io::read_to_string(std::io::stdin())
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    shell::run_script(&session, &sql, &mut out, false).await
}

fn import(
    data: &Path,
    table: &str,
    file: &Path,
    format: Option<&str>,
    header: bool,
    delimiter: char,
) -> CliResult {
    let format = match format {
        Some(name) => FileFormat::parse(name),
        None => FileFormat::from_path(file),
    }
    .ok_or_else(|| {
        format!(
            "cannot tell the format of {}: pass --format csv|parquet",
            file.display()
        )
    })?;
    let delimiter = u8::try_from(delimiter)
        .map_err(|_| "the delimiter must be a one-byte character".to_string())?;
    let db = open(data)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .expect("valid progress template"),
    );
    let started = Instant::now();
    let csv = CsvOptions { header, delimiter };
    let rows = db
        .import(table, file, format, &csv, &mut |p| {
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{} rows ({:.0} rows/s)",
                p.rows,
                p.rows as f64 / seconds
            ));
        })
        .map_err(|e| e.to_string());
    bar.finish_and_clear();
    let rows = rows?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {rows} rows into {table} in {seconds:.2} s ({:.0} rows/s)",
        rows as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// Opens the demo directory, generating the data unless it is already there.
/// Serves until interrupted, after printing how to connect.
/// Sets a user's password from COHORTDB_PASSWORD or the first line of stdin.
fn passwd(data: &Path, user: &str) -> CliResult {
    let password = match std::env::var("COHORTDB_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            if std::io::stdin().is_terminal() {
                eprint!("new password for {user}: ");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let db = open(data)?;
    db.set_password(user, &password)
        .map_err(|e| e.to_string())?;
    eprintln!("password set for {user}");
    Ok(())
}

async fn serve(db: &Database, server: &ServerArgs, default_auth: Auth) -> Result<(), String> {
    let db = db.clone().with_query_memory(server.query_memory);
    let auth = match server.auth.as_deref() {
        Some("trust") => Auth::Trust,
        Some(_) => Auth::Scram,
        None => default_auth,
    };
    let tls = match (&server.tls_cert, &server.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Tls::from_pem_files(cert, key).map_err(|e| format!("cannot use TLS: {e}"))?)
        }
        _ => None,
    };
    if auth == Auth::Scram && !db.has_password_login() {
        return Err(format!(
            "no role can log in with a password; set one with `cohortdb passwd --data {} --user NAME` \
             (or serve with --auth trust on a trusted machine)",
            db.path().map_or(".".into(), |p| p.display().to_string())
        ));
    }
    let listener = tokio::net::TcpListener::bind(&server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "cohortdb is serving {} on {addr} ({}); connect with\n  psql -h {} -p {} -U cohortdb cohortdb",
        db.path()
            .map_or("an in-memory database".into(), |p| p.display().to_string()),
        match auth {
            Auth::Scram => "SCRAM-SHA-256 passwords",
            Auth::Trust => "trust: no passwords, local use only",
        },
        addr.ip(),
        addr.port()
    );
    tokio::select! {
        served = db.serve_listener(listener, ServerOptions {
            max_connections: server.max_connections,
            auth,
            tls,
            require_tls: server.require_tls,
        }) => served.map_err(|e| format!("server stopped: {e}")),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopped");
            Ok(())
        }
    }
}

fn open_demo(dir: &Path, config: &DemoConfig) -> Result<Database, String> {
    let db = open(dir)?;
    let names = db.table_names();
    let present = ["users", "items", "events"]
        .iter()
        .filter(|t| names.iter().any(|n| n == *t))
        .count();
    match present {
        3 => {
            eprintln!("using the demo data in {}", dir.display());
            return Ok(db);
        }
        0 => {}
        _ => {
            return Err(format!(
                "{} holds only part of the demo tables; use an empty directory",
                dir.display()
            ));
        }
    }
    let bar = ProgressBar::new_spinner();
    let started = Instant::now();
    db.load_demo(config, &mut |table, rows| {
        bar.set_message(format!("generating {table}: {rows} rows"));
        bar.tick();
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!(
        "created the demo data ({} users, seed {}) in {} in {:.1} s",
        config.users,
        config.seed,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(db)
}
