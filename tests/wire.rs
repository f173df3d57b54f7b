//! The PostgreSQL wire protocol, tested with real clients: tokio-postgres (simple
//! and extended query, parameters, binary and text results, errors) and psql.

use std::process::Command;

use cohortdb::Database;
use libtest_mimic::{Failed, Trial};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::{block_on, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("wire::simple_query", simple_query),
        trial("wire::extended_query", extended_query),
        trial("wire::errors", errors),
        trial("wire::psql_worked_example", psql_worked_example),
    ]
}

/// Serves `db` on a free local port on the current runtime; returns the port.
async fn start(db: &Database) -> Result<u16, Failed> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let db = db.clone();
    tokio::spawn(async move { db.serve_listener(listener).await });
    Ok(port)
}

async fn connect(port: u16) -> Result<Client, Failed> {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=cohortdb dbname=cohortdb"),
        NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The rows of a simple query as text, and its command tags.
async fn simple(
    client: &Client,
    sql: &str,
) -> Result<(Vec<Vec<Option<String>>>, Vec<u64>), Failed> {
    let mut rows = Vec::new();
    let mut counts = Vec::new();
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            SimpleQueryMessage::CommandComplete(n) => counts.push(n),
            _ => {}
        }
    }
    Ok((rows, counts))
}

fn simple_query() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let client = connect(start(&db).await?).await?;
        // Several statements in one string run in order; each completes.
        let (rows, counts) = simple(
            &client,
            "CREATE TABLE t (id BIGINT NOT NULL, name TEXT, score DOUBLE, ok BOOLEAN, born DATE, seen TIMESTAMP);
             INSERT INTO t VALUES (1, 'ann', 1.5, true, '2026-01-31', '2026-01-31 12:30:00'), (2, NULL, -0.25, false, NULL, NULL);
             SELECT id, name, score, ok, born, seen FROM t ORDER BY id;",
        )
        .await?;
        assert_eq!(counts, vec![0, 2, 2]);
        let text = |v: &[&str]| -> Vec<Option<String>> {
            v.iter()
                .map(|s| (*s != "NULL").then(|| s.to_string()))
                .collect()
        };
        assert_eq!(
            rows,
            vec![
                text(&["1", "ann", "1.5", "t", "2026-01-31", "2026-01-31 12:30:00"]),
                text(&["2", "NULL", "-0.25", "f", "NULL", "NULL"]),
            ]
        );
        // Empty and comment-only strings are empty queries, not errors.
        assert_eq!(simple(&client, "").await?.0.len(), 0);
        assert_eq!(simple(&client, "-- nothing\n;").await?.0.len(), 0);
        Ok(())
    })
}

fn extended_query() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let client = connect(start(&db).await?).await?;
        client
            .batch_execute("CREATE TABLE t (id BIGINT, name TEXT, score DOUBLE, seen TIMESTAMP)")
            .await?;
        // Parameter types inferred from the target columns; values sent binary.
        let insert = client
            .prepare("INSERT INTO t VALUES ($1, $2, $3, $4)")
            .await?;
        assert_eq!(
            insert.params(),
            &[
                tokio_postgres::types::Type::INT8,
                tokio_postgres::types::Type::TEXT,
                tokio_postgres::types::Type::FLOAT8,
                tokio_postgres::types::Type::TIMESTAMP
            ]
        );
        let seen = chrono::NaiveDate::from_ymd_opt(2026, 1, 31)
            .and_then(|d| d.and_hms_micro_opt(12, 30, 0, 250))
            .ok_or("date")?;
        for (id, name, score) in [
            (1i64, Some("o'neil"), 0.1f64),
            (2, None, 2.5),
            (3, Some("c"), -7.0),
        ] {
            let inserted = client
                .execute(&insert, &[&id, &name, &score, &seen])
                .await?;
            assert_eq!(inserted, 1);
        }
        // Results come back binary, typed as the columns are.
        let rows = client
            .query(
                "SELECT id, name, score, seen FROM t WHERE score > $1 ORDER BY id",
                &[&0.0f64],
            )
            .await?;
        let got: Vec<(i64, Option<String>, f64, chrono::NaiveDateTime)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Some("o'neil".to_string()), 0.1, seen),
                (2, None, 2.5, seen)
            ]
        );
        // A text parameter matched against a text column, and a NULL one.
        let row = client
            .query_one("SELECT count(*) FROM t WHERE name = $1", &[&"c"])
            .await?;
        assert_eq!(row.get::<_, i64>(0), 1);
        let row = client
            .query_one(
                "SELECT count(*) FROM t WHERE name IS NOT DISTINCT FROM $1",
                &[&None::<String>],
            )
            .await?;
        assert_eq!(row.get::<_, i64>(0), 1);
        // UPDATE and DELETE with parameters report their counts.
        let updated = client
            .execute("UPDATE t SET score = $1 WHERE id >= $2", &[&1.0f64, &2i64])
            .await?;
        assert_eq!(updated, 2);
        let deleted = client
            .execute("DELETE FROM t WHERE id = $1", &[&3i64])
            .await?;
        assert_eq!(deleted, 1);
        // Struct results are sent as text records.
        let row = client
            .query_one("SELECT metric_moments(score) FROM t", &[])
            .await?;
        assert_eq!(row.get::<_, String>(0), "(2,0.55,0.405,0.405)");
        Ok(())
    })
}

fn errors() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let client = connect(start(&db).await?).await?;
        let error = client
            .simple_query("SELECT 1;\nSELECT * FROM nosuch")
            .await
            .err()
            .ok_or("expected an error")?;
        let db_error = error.as_db_error().ok_or("a server error")?;
        assert_eq!(db_error.code(), &SqlState::UNDEFINED_TABLE);
        assert_eq!(db_error.message(), "relation \"nosuch\" does not exist");
        // Position: 1-based characters into the whole query string.
        assert_eq!(
            db_error.position(),
            Some(&tokio_postgres::error::ErrorPosition::Original(25))
        );
        let error = client
            .prepare("SELEC 1")
            .await
            .err()
            .ok_or("expected an error")?;
        let db_error = error.as_db_error().ok_or("a server error")?;
        assert_eq!(db_error.code(), &SqlState::SYNTAX_ERROR);
        let error = client
            .prepare("SELECT 1; SELECT 2")
            .await
            .err()
            .ok_or("expected an error")?;
        assert_eq!(
            error.as_db_error().map(|e| e.message()),
            Some("cannot insert multiple commands into a prepared statement")
        );
        // The connection is still usable after errors.
        let row = client.query_one("SELECT 40 + 2", &[]).await?;
        assert_eq!(row.get::<_, i64>(0), 42);
        Ok(())
    })
}

/// The experiment worked example (docs/examples/experiment.sql), run from psql on
/// the demo data, gives the report documented in docs/experiments.md.
fn psql_worked_example() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        db.load_demo(&cohortdb::DemoConfig::default(), &mut |_, _| {})?;
        let port = start(&db).await?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/experiment.sql");
        let output = tokio::task::spawn_blocking(move || {
            Command::new("psql")
                .args([
                    "-X",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "cohortdb",
                ])
                .args(["-p", &port.to_string(), "-f", script, "cohortdb"])
                .output()
        })
        .await??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "psql failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = |metric: &str, variation: &str| -> Vec<String> {
            stdout
                .lines()
                .map(|l| {
                    l.split('|')
                        .map(|c| c.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .find(|cells| cells.len() == 10 && cells[0] == metric && cells[1] == variation)
                .unwrap_or_default()
        };
        assert_eq!(
            line("revenue", "2"),
            [
                "revenue", "2", "33092", "83.1499", "0.1449", "0.0867", "0.2031", "1e-06", "1", "f"
            ],
            "{stdout}"
        );
        assert_eq!(
            line("converted", "1"),
            [
                "converted",
                "1",
                "32968",
                "0.2864",
                "-0.005",
                "-0.0287",
                "0.0188",
                "0.681452",
                "0.3407",
                "f"
            ],
            "{stdout}"
        );
        Ok(())
    })
}
