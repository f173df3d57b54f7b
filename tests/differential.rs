//! Differential tests against a real PostgreSQL (Debian's package, started on a
//! private port for the test): the queries of tests/differential/queries.sql
//! run on both over tables made by setup.sql, and each must give the same
//! result column names, type OIDs and text values, or fail with the same
//! SQLSTATE. Documented differences are marked `-- known:` in the file; the
//! test fails when one of them stops differing, so the marks stay true.

use std::fmt;
use std::path::Path;

use cohortdb::Database;
use libtest_mimic::{Failed, Trial};
use tokio_postgres::{Client, NoTls};

use crate::postgres::Postgres;
use crate::{block_on, trial};

pub fn trials() -> Vec<Trial> {
    vec![trial("differential::postgres", postgres)]
}

/// One query of the shared set.
struct Query {
    sql: String,
    /// Why cohortdb differs from PostgreSQL here, for a documented difference.
    known: Option<String>,
}

/// Queries end with `;` at the end of a line; a `-- known: why` comment marks
/// the next query, other comments are ignored.
fn queries(text: &str) -> Vec<Query> {
    let mut queries = Vec::new();
    let mut sql = String::new();
    let mut known = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(why) = line.strip_prefix("-- known:") {
            known = Some(why.trim().to_string());
            continue;
        }
        if line.starts_with("--") || (line.is_empty() && sql.is_empty()) {
            continue;
        }
        sql.push_str(line);
        sql.push('\n');
        if let Some(statement) = sql.trim_end().strip_suffix(';') {
            queries.push(Query {
                sql: statement.trim().to_string(),
                known: known.take(),
            });
            sql.clear();
        }
    }
    queries
}

/// What a query gave: its columns (name, type OID) and rows as text, or the
/// SQLSTATE it failed with.
#[derive(PartialEq)]
enum Outcome {
    Rows {
        columns: Vec<(String, u32)>,
        rows: Vec<Vec<Option<String>>>,
    },
    Error(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Error(code) => write!(f, "error {code}"),
            Outcome::Rows { columns, rows } => {
                let columns: Vec<String> = columns
                    .iter()
                    .map(|(name, oid)| format!("{name}:{oid}"))
                    .collect();
                write!(f, "[{}]", columns.join(", "))?;
                for row in rows {
                    let cells: Vec<&str> =
                        row.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
                    write!(f, "\n      {}", cells.join(" | "))?;
                }
                Ok(())
            }
        }
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Describes the query with the extended protocol (column names and types),
/// then runs it with the simple protocol (text values).
async fn outcome(client: &Client, sql: &str) -> Outcome {
    let statement = match client.prepare(sql).await {
        Ok(statement) => statement,
        Err(e) => return Outcome::Error(sqlstate(&e)),
    };
    let columns = statement
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().oid()))
        .collect();
    match crate::wire::simple(client, sql).await {
        Ok((rows, _)) => Outcome::Rows { columns, rows },
        Err(e) => Outcome::Error(sqlstate(&e)),
    }
}

async fn connect(config: &str) -> Result<Client, Failed> {
    let (client, connection) = tokio_postgres::connect(config, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn postgres() -> Result<(), Failed> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = Postgres::start(port, &[])?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let setup = std::fs::read_to_string(dir.join("setup.sql"))?;
    let queries = queries(&std::fs::read_to_string(dir.join("queries.sql"))?);
    block_on(async move {
        let reference = connect(&server.dsn).await?;
        let db = Database::open_in_memory();
        let port = crate::wire::start(&db).await?;
        let ours = connect(&format!(
            "host=127.0.0.1 port={port} user=cohortdb dbname=cohortdb"
        ))
        .await?;
        reference.batch_execute(&setup).await?;
        ours.batch_execute(&setup).await?;
        let mut failures = Vec::new();
        for query in &queries {
            let expected = outcome(&reference, &query.sql).await;
            let actual = outcome(&ours, &query.sql).await;
            match (&query.known, expected == actual) {
                (None, false) => failures.push(format!(
                    "{}\n  PostgreSQL: {expected}\n  cohortdb:   {actual}",
                    query.sql
                )),
                (Some(why), true) => failures.push(format!(
                    "{}\n  now agrees with PostgreSQL; remove its `-- known: {why}` mark",
                    query.sql
                )),
                _ => {}
            }
        }
        let version = server.version.clone();
        drop(server);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {} queries differ from {}:\n\n{}",
                failures.len(),
                queries.len(),
                version,
                failures.join("\n\n")
            )
            .into())
        }
    })
}
