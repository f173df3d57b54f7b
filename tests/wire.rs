//! The PostgreSQL wire protocol, tested with real clients: tokio-postgres (simple
//! and extended query, parameters, binary and text results, errors) and psql.

use std::process::Command;

use cohortdb::{Auth, Database, ServerOptions};
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
        trial("wire::startup_and_status", startup_and_status),
        trial("wire::session_statements", session_statements),
        trial("wire::unnamed_portal", unnamed_portal),
        trial("wire::cancel_and_timeout", cancel_and_timeout),
        trial("wire::connection_limit", connection_limit),
        trial("wire::scram_logins_and_roles", scram_logins_and_roles),
        trial("wire::min_audience_size", min_audience_size),
        trial("wire::grants", grants),
        trial("wire::audit_log", audit_log),
        trial("wire::views_read_as_their_owner", views_read_as_their_owner),
        trial("wire::tls", tls),
        trial("wire::column_names_and_types", column_names_and_types),
        trial("wire::psql_describe", psql_describe),
        trial("wire::copy_stdin_stdout", copy_stdin_stdout),
        trial("wire::malformed_frames", malformed_frames),
        trial("wire::answers_wait_for_sync", answers_wait_for_sync),
    ]
}

/// Serves `db` on a free local port on the current runtime; returns the port.
pub(crate) async fn start(db: &Database) -> Result<u16, Failed> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let db = db.clone();
    let options = ServerOptions {
        auth: Auth::Trust,
        ..ServerOptions::default()
    };
    tokio::spawn(async move { db.serve_listener(listener, options).await });
    Ok(port)
}

/// Connects as `cohortdb` to a server that trusts everyone.
async fn connect(port: u16) -> Result<Client, Failed> {
    Ok(login(port, "cohortdb", "").await?)
}

/// The rows of a simple query as text, and its command tags.
pub(crate) async fn simple(
    client: &Client,
    sql: &str,
) -> Result<(Vec<Vec<Option<String>>>, Vec<u64>), tokio_postgres::Error> {
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
        // Array parameters, sent binary, typed by their casts: oid[] (as asyncpg's
        // type introspection sends) and text[] with NULLs and quotes.
        let statement = client
            .prepare("SELECT typname FROM pg_type WHERE oid = any($1::oid[]) ORDER BY typname")
            .await?;
        assert_eq!(
            statement.params(),
            &[tokio_postgres::types::Type::OID_ARRAY]
        );
        let rows = client.query(&statement, &[&vec![23u32, 25]]).await?;
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, ["int4", "text"]);
        let row = client
            .query_one(
                "SELECT array_length($1::text[], 1), $1::text[]",
                &[&vec![Some("a \"b\""), None, Some("{c}")]],
            )
            .await?;
        assert_eq!(row.get::<_, i64>(0), 3);
        assert_eq!(
            row.get::<_, Vec<Option<String>>>(1),
            [Some("a \"b\"".to_string()), None, Some("{c}".to_string())]
        );
        // Parameters in a table function's arguments: an application's
        // "recommend for this user" prepared once, run per user. User 3 has
        // item 10, whose only co-bought item is 20 (cosine 1/2); 30 comes from
        // the popular fallback.
        client
            .batch_execute(
                "CREATE TABLE p (user_id BIGINT USER KEY, item_id BIGINT); \
                 INSERT INTO p VALUES (1, 10), (1, 20), (2, 20), (2, 30), (3, 10); \
                 CREATE RECOMMENDER r ON p (user_id, item_id) USING item_knn",
            )
            .await?;
        let recommend = client
            .prepare_typed(
                "SELECT item_id, score, source FROM recommend('r', $1, $2)",
                &[
                    tokio_postgres::types::Type::INT8,
                    tokio_postgres::types::Type::INT8,
                ],
            )
            .await?;
        let rows = client.query(&recommend, &[&3i64, &2i64]).await?;
        let got: Vec<(i64, f64, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            got,
            [
                (20, 0.5, "personal".to_string()),
                (30, 1.0, "popular".to_string())
            ]
        );
        let rows = client
            .query(
                "SELECT item_id FROM similar_items('r', $1::BIGINT, $2::INT)",
                &[&20i64, &1i32],
            )
            .await?;
        assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<i64>>(), [30]);
        // And in lookalike_explain's: users 1 and 2 (red) are the seed.
        client
            .batch_execute(
                "CREATE TABLE u (user_id BIGINT USER KEY, color TEXT); \
                 INSERT INTO u SELECT x, CASE WHEN x <= 10 THEN 'red' ELSE 'blue' END \
                 FROM generate_series(1, 20) g(x); \
                 CREATE TAG INDEX ON u (color); \
                 CREATE MODEL m AS LOOKALIKE('SELECT * FROM (VALUES (1), (2)) s(user_id)', 'features=color, min_support=1')",
            )
            .await?;
        let rows = client
            .query(
                "SELECT tag FROM lookalike_explain('m', $1::BIGINT, $2::INT)",
                &[&5i64, &1i32],
            )
            .await?;
        assert_eq!(
            rows.iter().map(|r| r.get(0)).collect::<Vec<String>>(),
            ["color=red"]
        );
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
        assert_eq!(row.get::<_, i32>(0), 42);
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

/// A bare-bones protocol client, for what drivers do not show: status bytes,
/// ParameterStatus and notice messages, raw frames.
struct Raw {
    stream: tokio::net::TcpStream,
}

/// One backend message: its type byte and body.
type Frame = (u8, Vec<u8>);

impl Raw {
    /// Connects and starts up; returns the messages up to ReadyForQuery.
    async fn connect(port: u16, parameters: &[(&str, &str)]) -> Result<(Raw, Vec<Frame>), Failed> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut raw = Raw { stream };
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (name, value) in parameters {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut frame = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        frame.extend(body);
        raw.write(&frame).await?;
        let frames = raw.read_until_ready().await?;
        Ok((raw, frames))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failed> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Sends one frontend message.
    async fn send(&mut self, tag: u8, body: &[u8]) -> Result<(), Failed> {
        let mut frame = vec![tag];
        frame.extend(((body.len() + 4) as i32).to_be_bytes());
        frame.extend_from_slice(body);
        self.write(&frame).await
    }

    /// Reads one backend message, or `None` when the server closed the connection.
    async fn read(&mut self) -> Result<Option<Frame>, Failed> {
        use tokio::io::AsyncReadExt;
        let mut header = [0u8; 5];
        match self.stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).await?;
        Ok(Some((header[0], body)))
    }

    async fn read_until_ready(&mut self) -> Result<Vec<Frame>, Failed> {
        let mut frames = Vec::new();
        while let Some(frame) = self.read().await? {
            let ready = frame.0 == b'Z';
            frames.push(frame);
            if ready {
                break;
            }
        }
        Ok(frames)
    }

    /// A simple query; the messages up to ReadyForQuery.
    async fn query(&mut self, sql: &str) -> Result<Vec<Frame>, Failed> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(b'Q', &body).await?;
        self.read_until_ready().await
    }
}

/// The transaction status byte of the last ReadyForQuery.
fn status(frames: &[Frame]) -> char {
    frames
        .iter()
        .rev()
        .find(|f| f.0 == b'Z')
        .map_or('?', |f| f.1[0] as char)
}

/// The fields of an ErrorResponse or NoticeResponse, by field type.
fn fields_of(body: &[u8]) -> std::collections::HashMap<char, String> {
    body.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0] as char, String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

/// (severity, SQLSTATE, message) of every error ('E') or notice ('N') frame.
fn reports(frames: &[Frame], kind: u8) -> Vec<(String, String, String)> {
    frames
        .iter()
        .filter(|f| f.0 == kind)
        .map(|f| {
            let fields = fields_of(&f.1);
            (
                fields[&'S'].clone(),
                fields[&'C'].clone(),
                fields[&'M'].clone(),
            )
        })
        .collect()
}

/// The ParameterStatus messages, as (name, value).
fn parameters(frames: &[Frame]) -> Vec<(String, String)> {
    frames
        .iter()
        .filter(|f| f.0 == b'S')
        .map(|f| {
            let parts: Vec<String> =
                f.1.split(|b| *b == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            (parts[0].clone(), parts[1].clone())
        })
        .collect()
}

/// The command tags of CommandComplete frames.
fn tags(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.0 == b'C')
        .map(|f| String::from_utf8_lossy(&f.1[..f.1.len() - 1]).into_owned())
        .collect()
}

fn startup_and_status() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let (mut raw, frames) = Raw::connect(
            port,
            &[
                ("user", "ann"),
                ("database", "cohortdb"),
                ("application_name", "status-test"),
                ("options", "-c statement_timeout=5000"),
            ],
        )
        .await?;
        // Authentication OK, the reported settings, the cancel key, ready.
        assert_eq!(frames.first().map(|f| f.0), Some(b'R'));
        assert!(frames.iter().any(|f| f.0 == b'K'));
        let reported = parameters(&frames);
        let value = |name: &str| {
            reported
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            value("server_version").as_deref(),
            Some(cohortdb::SERVER_VERSION)
        );
        assert_eq!(value("application_name").as_deref(), Some("status-test"));
        assert_eq!(value("session_authorization").as_deref(), Some("ann"));
        for (name, expected) in [
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("is_superuser", "on"),
            ("server_encoding", "UTF8"),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
        ] {
            assert_eq!(value(name).as_deref(), Some(expected), "{name}");
        }
        assert_eq!(status(&frames), 'I');
        let frames = raw.query("SHOW statement_timeout").await?;
        assert_eq!(tags(&frames), ["SHOW"]);

        // The status byte follows the block: in it, aborted, out of it.
        let frames = raw.query("BEGIN").await?;
        assert_eq!(
            (tags(&frames), status(&frames)),
            (vec!["BEGIN".to_string()], 'T')
        );
        let frames = raw.query("SELECT 1 / 0").await?;
        assert_eq!(status(&frames), 'E');
        let frames = raw.query("SELECT 1").await?;
        assert_eq!(
            reports(&frames, b'E'),
            [(
                "ERROR".to_string(),
                "25P02".to_string(),
                "current transaction is aborted, commands ignored until end of transaction block"
                    .to_string()
            )]
        );
        assert_eq!(status(&frames), 'E');
        // COMMIT of an aborted block completes as ROLLBACK.
        let frames = raw.query("COMMIT").await?;
        assert_eq!(
            (tags(&frames), status(&frames)),
            (vec!["ROLLBACK".to_string()], 'I')
        );
        // A query string with a syntax error runs none of its statements.
        let frames = raw.query("BEGIN; SELEC").await?;
        assert_eq!((tags(&frames), status(&frames)), (vec![], 'I'));
        // A syntax error aborts a block; ROLLBACK TO a savepoint repairs it.
        let frames = raw.query("BEGIN; SAVEPOINT a").await?;
        assert_eq!(tags(&frames), ["BEGIN", "SAVEPOINT"]);
        let frames = raw.query("SELEC").await?;
        assert_eq!(status(&frames), 'E');
        let frames = raw.query("ROLLBACK TO SAVEPOINT a").await?;
        assert_eq!(
            (tags(&frames), status(&frames)),
            (vec!["ROLLBACK".to_string()], 'T')
        );
        let frames = raw.query("ROLLBACK").await?;
        assert_eq!(status(&frames), 'I');

        // Warnings come as notices; reported settings changed by SET are re-sent.
        let frames = raw.query("COMMIT").await?;
        assert_eq!(
            reports(&frames, b'N'),
            [(
                "WARNING".to_string(),
                "25P01".to_string(),
                "there is no transaction in progress".to_string()
            )]
        );
        let frames = raw
            .query("SET application_name = 'renamed'; SET extra_float_digits = 2")
            .await?;
        assert_eq!(
            parameters(&frames),
            [("application_name".to_string(), "renamed".to_string())]
        );
        assert_eq!(tags(&frames), ["SET", "SET"]);
        // A SET rolled back is reported again with the value it returns to;
        // a statement that changes nothing reports nothing.
        let frames = raw.query("BEGIN; SET application_name = 'inner'").await?;
        assert_eq!(
            parameters(&frames),
            [("application_name".to_string(), "inner".to_string())]
        );
        let frames = raw.query("ROLLBACK").await?;
        assert_eq!(
            parameters(&frames),
            [("application_name".to_string(), "renamed".to_string())]
        );
        let frames = raw.query("SELECT 1").await?;
        assert_eq!(parameters(&frames), []);
        let frames = raw
            .query("CREATE TABLE t (x BIGINT); BEGIN; INSERT INTO t VALUES (1); ROLLBACK")
            .await?;
        assert_eq!(reports(&frames, b'N').len(), 1);
        assert_eq!(reports(&frames, b'N')[0].1, "01000");

        // The extended protocol reports the block's status at Sync.
        let mut parse = b"\0BEGIN\0".to_vec();
        parse.extend(0i16.to_be_bytes());
        raw.send(b'P', &parse).await?;
        raw.send(b'B', b"\0\0\0\0\0\0\0\0").await?;
        raw.send(b'E', b"\0\0\0\0\0").await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(
            (tags(&frames), status(&frames)),
            (vec!["BEGIN".to_string()], 'T')
        );

        // A bad startup setting refuses the connection with a FATAL error.
        let (_, frames) =
            Raw::connect(port, &[("user", "ann"), ("client_encoding", "LATIN1")]).await?;
        let errors = reports(&frames, b'E');
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].0.as_str(), errors[0].1.as_str()),
            ("FATAL", "22023")
        );
        Ok(())
    })
}

fn session_statements() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let client = connect(port).await?;
        // SHOW and FETCH through the extended protocol describe their columns.
        let row = client.query_one("SHOW TimeZone", &[]).await?;
        assert_eq!(row.columns()[0].name(), "TimeZone");
        assert_eq!(row.get::<_, String>(0), "UTC");
        let row = client
            .query_one("SELECT current_setting($1)", &[&"server_version_num"])
            .await?;
        assert_eq!(row.get::<_, String>(0), cohortdb::SERVER_VERSION_NUM);
        client
            .batch_execute(
                "CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (1), (2), (3);
                 BEGIN; DECLARE c CURSOR FOR SELECT id FROM t ORDER BY id",
            )
            .await?;
        let rows = client.query("FETCH 2 FROM c", &[]).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(ids, [1, 2]);
        let (rows, counts) = simple(&client, "FETCH ALL FROM c; COMMIT").await?;
        assert_eq!(
            (rows, counts),
            (vec![vec![Some("3".to_string())]], vec![1, 0])
        );
        // DEALLOCATE drops a statement prepared with Parse; binding it then fails.
        let (mut raw, _) = Raw::connect(port, &[("user", "ann")]).await?;
        let mut parse = b"stmt1\0SELECT 1\0".to_vec();
        parse.extend(0i16.to_be_bytes());
        raw.send(b'P', &parse).await?;
        raw.send(b'S', b"").await?;
        assert_eq!(raw.read_until_ready().await?[0].0, b'1');
        // A second Parse under the same name is refused while the first exists.
        raw.send(b'P', &parse).await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(reports(&frames, b'E')[0].1, "42P05");
        let frames = raw.query("DEALLOCATE stmt1").await?;
        assert_eq!(tags(&frames), ["DEALLOCATE"]);
        raw.send(b'B', b"\0stmt1\0\0\0\0\0\0\0").await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(reports(&frames, b'E')[0].1, "26000");
        // As in PostgreSQL, the replies to Parse and Bind wait for a Sync or
        // a Flush: nothing arrives before.
        raw.send(b'P', b"\0SELECT 1\0\0\0").await?;
        raw.send(b'B', b"\0\0\0\0\0\0\0\0").await?;
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), raw.read()).await;
        assert!(early.is_err(), "a reply before Flush: {early:?}");
        raw.send(b'H', b"").await?;
        let mut replies = Vec::new();
        for _ in 0..2 {
            replies.push(raw.read().await?.ok_or("closed")?.0);
        }
        assert_eq!(replies, [b'1', b'2']);
        // So do the replies to Describe and Execute: one write at Sync.
        raw.send(b'D', b"P\0").await?;
        raw.send(b'E', b"\0\0\0\0\0").await?;
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), raw.read()).await;
        assert!(early.is_err(), "a reply before Sync: {early:?}");
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [b'T', b'D', b'C', b'Z']);
        assert_eq!(tags(&frames), ["SELECT 1"]);
        let error = client
            .batch_execute("DEALLOCATE nothing")
            .await
            .err()
            .ok_or("expected an error")?;
        assert_eq!(
            error.as_db_error().map(|e| e.message()),
            Some("prepared statement \"nothing\" does not exist")
        );
        // DISCARD ALL drops every prepared statement.
        let statement = client.prepare("SELECT 1").await?;
        client.batch_execute("DISCARD ALL").await?;
        assert!(client.query(&statement, &[]).await.is_err());
        let row = client.query_one("SELECT version()", &[]).await?;
        assert!(
            row.get::<_, String>(0)
                .starts_with("PostgreSQL 16.6 (cohortdb ")
        );
        Ok(())
    })
}

/// The unnamed portal through its life, as drivers use it and beyond: run
/// whole and run again, run in parts, closed, and gone when its transaction
/// ends (at Sync, unless a block is open).
fn unnamed_portal() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let (mut raw, _) = Raw::connect(port, &[("user", "ann")]).await?;
        let kinds = |frames: &[Frame]| frames.iter().map(|f| f.0 as char).collect::<String>();
        let execute = |max_rows: i32| [&[0u8][..], &max_rows.to_be_bytes()].concat();
        // The unnamed statement and portal, no parameters, text results.
        let bind = b"\0\0\0\0\0\0\0\0";
        raw.send(
            b'P',
            b"\0SELECT * FROM (VALUES (1), (2), (3)) AS t (x)\0\0\0",
        )
        .await?;
        raw.send(b'B', bind).await?;
        raw.send(b'D', b"P\0").await?;
        raw.send(b'E', &execute(0)).await?;
        // Run to its end, it has no more rows.
        raw.send(b'E', &execute(0)).await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(kinds(&frames), "12TDDDCCZ");
        assert_eq!(tags(&frames), ["SELECT 3", "SELECT 0"]);

        // With a row limit: PortalSuspended until the rows run out.
        raw.send(b'B', bind).await?;
        raw.send(b'E', &execute(2)).await?;
        raw.send(b'E', &execute(2)).await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(kinds(&frames), "2DDsDCZ");
        assert_eq!(tags(&frames), ["SELECT 1"]);

        // Closed, it is gone; CloseComplete waits for Sync like the rest.
        let gone = (
            "ERROR".to_string(),
            "34000".to_string(),
            "portal \"\" does not exist".to_string(),
        );
        raw.send(b'B', bind).await?;
        raw.send(b'C', b"P\0").await?;
        raw.send(b'E', &execute(0)).await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(kinds(&frames), "23EZ");
        assert_eq!(reports(&frames, b'E'), std::slice::from_ref(&gone));

        // It lasts until its transaction ends: past Sync inside a block...
        raw.query("BEGIN").await?;
        raw.send(b'B', bind).await?;
        raw.send(b'E', &execute(2)).await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(
            (kinds(&frames), status(&frames)),
            ("2DDsZ".to_string(), 'T')
        );
        raw.send(b'E', &execute(2)).await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(kinds(&frames), "DCZ");
        assert_eq!(tags(&frames), ["SELECT 1"]);
        raw.query("COMMIT").await?;

        // ... and to Sync outside one.
        raw.send(b'B', bind).await?;
        raw.send(b'S', b"").await?;
        assert_eq!(kinds(&raw.read_until_ready().await?), "2Z");
        raw.send(b'E', &execute(0)).await?;
        raw.send(b'S', b"").await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(reports(&frames, b'E'), [gone]);

        // A statement closed with Close is gone for DEALLOCATE as well.
        raw.send(b'P', b"s1\0SELECT 1\0\0\0").await?;
        raw.send(b'C', b"Ss1\0").await?;
        raw.send(b'S', b"").await?;
        assert_eq!(kinds(&raw.read_until_ready().await?), "13Z");
        let frames = raw.query("DEALLOCATE s1").await?;
        assert_eq!(reports(&frames, b'E')[0].1, "26000");
        Ok(())
    })
}

/// A query that runs for minutes unless stopped.
const ENDLESS: &str = "SELECT count(*) FROM generate_series(1, 100000000000)";

fn cancel_and_timeout() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let client = connect(start(&db).await?).await?;
        // A cancel request stops the running statement, mid-stream.
        let token = client.cancel_token();
        let canceler = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            token.cancel_query(NoTls).await
        });
        let started = std::time::Instant::now();
        let error = client
            .query(ENDLESS, &[])
            .await
            .err()
            .ok_or("expected an error")?;
        canceler.await??;
        let db_error = error.as_db_error().ok_or("a server error")?;
        assert_eq!(db_error.code(), &SqlState::QUERY_CANCELED);
        assert_eq!(
            db_error.message(),
            "canceling statement due to user request"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        // The connection goes on; a cancel with no statement running is harmless.
        client.cancel_token().cancel_query(NoTls).await?;
        // The request is answered on its own connection; let it land before the
        // next statement starts, or it would cancel that one (as in PostgreSQL).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(client.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
        // statement_timeout stops statements that run too long, in either protocol.
        client
            .batch_execute("SET statement_timeout = '200ms'")
            .await?;
        let error = client
            .simple_query(ENDLESS)
            .await
            .err()
            .ok_or("expected an error")?;
        let db_error = error.as_db_error().ok_or("a server error")?;
        assert_eq!(db_error.code(), &SqlState::QUERY_CANCELED);
        assert_eq!(
            db_error.message(),
            "canceling statement due to statement timeout"
        );
        let error = client
            .query(ENDLESS, &[])
            .await
            .err()
            .ok_or("expected an error")?;
        assert_eq!(
            error.as_db_error().map(|e| e.code()),
            Some(&SqlState::QUERY_CANCELED)
        );
        client.batch_execute("RESET statement_timeout").await?;
        assert_eq!(client.query_one("SELECT 2", &[]).await?.get::<_, i32>(0), 2);
        Ok(())
    })
}

fn connection_limit() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let options = ServerOptions {
            max_connections: 2,
            auth: Auth::Trust,
            ..ServerOptions::default()
        };
        let served = db.clone();
        tokio::spawn(async move { served.serve_listener(listener, options).await });
        let first = connect(port).await?;
        let second = connect(port).await?;
        let error = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=cohortdb dbname=cohortdb"),
            NoTls,
        )
        .await
        .err()
        .ok_or("a third connection was admitted")?;
        let db_error = error.as_db_error().ok_or("a server error")?;
        assert_eq!(db_error.code(), &SqlState::TOO_MANY_CONNECTIONS);
        assert_eq!(db_error.message(), "sorry, too many clients already");
        assert_eq!(db_error.severity(), "FATAL");
        assert_eq!(second.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
        // A closed connection frees its place.
        drop(first);
        let mut admitted = None;
        for _ in 0..100 {
            if let Ok(client) = connect(port).await {
                admitted = Some(client);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let third = admitted.ok_or("the freed place was not given out")?;
        assert_eq!(third.query_one("SELECT 3", &[]).await?.get::<_, i32>(0), 3);
        Ok(())
    })
}

/// Connects with a password; the error, if the server refused.
async fn login(port: u16, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user={user} password='{password}' dbname=cohortdb"),
        NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A server on a new database in a temporary directory whose superuser
/// `admin` has `password`; the directory, the database and the port.
async fn serve_with_admin(password: &str) -> Result<(tempfile::TempDir, Database, u16), Failed> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path())?;
    db.set_password("admin", password)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let served = db.clone();
    tokio::spawn(async move {
        served
            .serve_listener(listener, ServerOptions::default())
            .await
    });
    Ok((dir, db, port))
}

fn scram_logins_and_roles() -> Result<(), Failed> {
    block_on(async {
        let (dir, _db, port) = serve_with_admin("correct horse").await?;

        let admin = login(port, "admin", "correct horse").await?;
        let row = admin
            .query_one(
                "SELECT current_setting('is_superuser'), current_setting('session_authorization')",
                &[],
            )
            .await?;
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            ("on".into(), "admin".into())
        );

        // Wrong passwords, unknown users and roles without LOGIN all fail alike.
        let refused = |e: tokio_postgres::Error| -> Result<(String, String, String), Failed> {
            let db_error = e.as_db_error().ok_or("a server error")?;
            Ok((
                db_error.severity().to_string(),
                db_error.code().code().to_string(),
                db_error.message().to_string(),
            ))
        };
        admin
            .batch_execute(
                "CREATE ROLE analyst WITH LOGIN PASSWORD 'pw1';
                 CREATE ROLE nologin PASSWORD 'pw2'",
            )
            .await?;
        for (user, password) in [("admin", "wrong"), ("nobody", "pw"), ("nologin", "pw2")] {
            let error = login(port, user, password).await.err().ok_or("admitted")?;
            assert_eq!(
                refused(error)?,
                (
                    "FATAL".to_string(),
                    "28P01".to_string(),
                    format!("password authentication failed for user \"{user}\"")
                )
            );
        }

        // A non-superuser runs queries, changes its own password, and nothing more.
        let analyst = login(port, "analyst", "pw1").await?;
        let row = analyst.query_one("SHOW is_superuser", &[]).await?;
        assert_eq!(row.get::<_, String>(0), "off");
        for sql in [
            "CREATE ROLE x LOGIN",
            "ALTER ROLE admin PASSWORD 'mine'",
            "ALTER ROLE analyst SUPERUSER",
            "DROP ROLE admin",
            "SET datafusion.execution.batch_size = 10",
            "COPY (SELECT 1) TO '/tmp/cohortdb-leak.csv'",
            "CREATE TABLE t (x INT); COPY t FROM '/etc/passwd'",
            // Only superusers see the suppression tag's users or change it.
            "SET include_suppressed = on",
            "SELECT set_config('include_suppressed', 'on', false)",
            "ALTER SYSTEM SET suppression_tag = ''",
            // Nor manage the keys pseudonyms are made with.
            "CREATE PSEUDONYM KEY mine",
            "ALTER PSEUDONYM KEY default ROTATE",
            "DROP PSEUDONYM KEY default",
            // Nor forget users.
            "FORGET USER 1",
        ] {
            let error = analyst.batch_execute(sql).await.err().ok_or(sql)?;
            assert_eq!(
                error.as_db_error().map(|e| e.code().code()),
                Some("42501"),
                "{sql}"
            );
        }
        // Anyone may pseudonymise with the keys; none sees a secret.
        let row = analyst
            .query_one("SELECT length(pseudonymize('x'))", &[])
            .await?;
        assert_eq!(row.get::<_, i32>(0), 64);
        // Not at startup either.
        let error = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={port} user=analyst password='pw1' dbname=cohortdb \
                 options='-c include_suppressed=on'"
            ),
            NoTls,
        )
        .await
        .err()
        .ok_or("include_suppressed at startup")?;
        assert_eq!(error.as_db_error().map(|e| e.code().code()), Some("42501"));
        analyst
            .batch_execute("ALTER ROLE analyst WITH PASSWORD 'pw3'")
            .await?;
        assert!(login(port, "analyst", "pw1").await.is_err());
        login(port, "analyst", "pw3").await?;

        // Role management errors carry PostgreSQL's codes.
        for (sql, code) in [
            ("CREATE ROLE analyst", "42710"),
            ("ALTER ROLE ghost PASSWORD 'x'", "42704"),
            ("DROP ROLE ghost", "42704"),
            ("DROP ROLE admin", "55006"),
        ] {
            let error = admin.batch_execute(sql).await.err().ok_or(sql)?;
            assert_eq!(
                error.as_db_error().map(|e| e.code().code()),
                Some(code),
                "{sql}"
            );
        }
        admin
            .batch_execute("DROP ROLE IF EXISTS ghost; DROP ROLE nologin")
            .await?;

        // Only verifiers are stored: no password appears in the data directory
        // (the audit log included, which names the role without a verifier).
        for entry in std::fs::read_dir(dir.path())? {
            let path = entry?.path();
            let bytes = std::fs::read(&path).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("correct horse") && !text.contains("pw3"));
            if text.contains("analyst") && !path.ends_with("audit.log") {
                assert!(text.contains("SCRAM-SHA-256$4096:"));
            }
        }
        // psql logs in with SCRAM too.
        let output = tokio::task::spawn_blocking(move || {
            Command::new("psql")
                .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "analyst", "-p"])
                .arg(port.to_string())
                .args(["-c", "SELECT 1", "cohortdb"])
                .env("PGPASSWORD", "pw3")
                .output()
        })
        .await??;
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "1",
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    })
}

/// A role with a minimum audience size sees counts of at least that many
/// users (NULL below it, also when a small part of the audience could be
/// subtracted) and no users at all.
/// The SQLSTATE and message of a statement that must fail.
async fn refused(client: &Client, sql: &str) -> Result<(String, String), Failed> {
    let error = client
        .batch_execute(sql)
        .await
        .err()
        .ok_or(format!("{sql}: no error"))?;
    let db = error.as_db_error().ok_or(format!("{sql}: {error}"))?;
    Ok((db.code().code().to_string(), db.message().to_string()))
}

/// Every statement and login is in the audit log with its role, address,
/// application, command, literal-free text, rows and SQLSTATE; only
/// superusers read it; no password or forgotten id reaches the file.
fn audit_log() -> Result<(), Failed> {
    use futures::TryStreamExt;
    block_on(async {
        let (dir, _db, port) = serve_with_admin("pw0").await?;
        let admin = login(port, "admin", "pw0").await?;
        admin
            .batch_execute(
                "CREATE TABLE users (user_id BIGINT USER KEY, city TEXT);
                 INSERT INTO users VALUES (101, 'beijing'), (102, 'beijing'), (987654321, 'x');
                 CREATE ROLE ana LOGIN PASSWORD 'hunter2-secret';
                 GRANT SELECT ON users TO ana",
            )
            .await?;
        assert!(login(port, "ana", "wrong").await.is_err());
        let (ana, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={port} user=ana password=hunter2-secret \
                 dbname=cohortdb application_name=campaigns"
            ),
            NoTls,
        )
        .await?;
        tokio::spawn(connection);
        let rows = ana
            .query("SELECT user_id FROM users WHERE city = $1", &[&"beijing"])
            .await?;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            refused(&ana, "SELECT * FROM nowhere").await?.0,
            "42P01".to_string()
        );
        assert_eq!(
            refused(&ana, "SELECT * FROM cohortdb_audit").await?,
            (
                "42501".to_string(),
                "permission denied for table cohortdb_audit".to_string()
            )
        );
        let (may, _) = simple(
            &ana,
            "SELECT has_table_privilege('cohortdb_audit', 'SELECT')",
        )
        .await?;
        assert_eq!(may, [[Some("f".to_string())]]);
        let copied: Vec<bytes::Bytes> = ana
            .copy_out("COPY users TO STDOUT")
            .await?
            .try_collect()
            .await?;
        assert_eq!(copied.len(), 3);
        admin
            .batch_execute(
                "FORGET USER 987654321 IMMEDIATELY; ALTER ROLE ana PASSWORD 'second-secret'",
            )
            .await?;
        let (log, _) = simple(
            &admin,
            "SELECT role, application, command, statement, rows, sqlstate, \
                    address LIKE '127.0.0.1:%', seq = row_number() OVER (ORDER BY at, seq) \
             FROM cohortdb_audit ORDER BY seq",
        )
        .await?;
        let row = |cells: [Option<&str>; 6]| {
            let mut row: Vec<Option<String>> =
                cells.iter().map(|c| c.map(str::to_string)).collect();
            row.extend([Some("t".to_string()), Some("t".to_string())]);
            row
        };
        let (admin_, ana_, app) = (Some("admin"), Some("ana"), Some("campaigns"));
        assert_eq!(
            log,
            [
                row([admin_, None, Some("LOGIN"), None, None, None]),
                row([
                    admin_,
                    None,
                    Some("CREATE TABLE"),
                    Some("CREATE TABLE users (user_id BIGINT USER KEY, city TEXT)"),
                    None,
                    None
                ]),
                row([
                    admin_,
                    None,
                    Some("INSERT"),
                    Some("INSERT INTO users VALUES (?, ?), (?, ?), (?, ?)"),
                    Some("3"),
                    None
                ]),
                row([
                    admin_,
                    None,
                    Some("CREATE ROLE"),
                    Some("CREATE ROLE ana LOGIN PASSWORD ?"),
                    None,
                    None
                ]),
                row([
                    admin_,
                    None,
                    Some("GRANT"),
                    Some("GRANT SELECT ON users TO ana"),
                    None,
                    None
                ]),
                row([ana_, None, Some("LOGIN"), None, None, Some("28P01")]),
                row([ana_, app, Some("LOGIN"), None, None, None]),
                row([
                    ana_,
                    app,
                    Some("SELECT"),
                    Some("SELECT user_id FROM users WHERE city = $1"),
                    Some("2"),
                    None
                ]),
                row([
                    ana_,
                    app,
                    Some("SELECT"),
                    Some("SELECT * FROM nowhere"),
                    None,
                    Some("42P01")
                ]),
                row([
                    ana_,
                    app,
                    Some("SELECT"),
                    Some("SELECT * FROM cohortdb_audit"),
                    None,
                    Some("42501")
                ]),
                row([
                    ana_,
                    app,
                    Some("SELECT"),
                    Some("SELECT has_table_privilege(?, ?)"),
                    Some("1"),
                    None
                ]),
                row([
                    ana_,
                    app,
                    Some("COPY"),
                    Some("COPY users TO STDOUT"),
                    Some("3"),
                    None
                ]),
                row([
                    admin_,
                    None,
                    Some("FORGET USER"),
                    Some("FORGET USER ? IMMEDIATELY"),
                    None,
                    None
                ]),
                row([
                    admin_,
                    None,
                    Some("ALTER ROLE"),
                    Some("ALTER ROLE ana PASSWORD ?"),
                    None,
                    None
                ]),
            ]
        );
        // The file holds what the table shows, and none of the secrets.
        let file = std::fs::read_to_string(dir.path().join("audit.log"))?;
        assert_eq!(file.lines().count(), log.len() + 1);
        assert!(file.contains(r#""statement":"CREATE ROLE ana LOGIN PASSWORD ?""#));
        for secret in ["hunter2", "second-secret", "987654321", "beijing"] {
            assert!(!file.contains(secret), "{secret} in the audit log");
        }
        Ok(())
    })
}

/// A role granted a view reads it (its tables read with the view owner's
/// privileges) and nothing else: the pseudonymised view of a table is all
/// it sees of it, whichever way it asks.
fn views_read_as_their_owner() -> Result<(), Failed> {
    block_on(async {
        let (_dir, _db, port) = serve_with_admin("pw0").await?;
        let admin = login(port, "admin", "pw0").await?;
        admin
            .batch_execute(
                "CREATE TABLE users (user_id BIGINT USER KEY, email TEXT, city TEXT);
                 INSERT INTO users VALUES (1, 'ann@example.com', 'beijing'),
                   (2, 'bo@example.com', 'beijing'), (3, 'cy@example.com', 'shanghai');
                 CREATE VIEW users_pseudo AS
                   SELECT pseudonymize(email) AS email_id, city FROM users;
                 CREATE VIEW emails AS SELECT email FROM users;
                 CREATE ROLE ana LOGIN PASSWORD 'pw1';
                 GRANT SELECT ON users_pseudo TO ana",
            )
            .await?;
        let ana = login(port, "ana", "pw1").await?;
        let (rows, _) = simple(
            &ana,
            "SELECT email_id FROM users_pseudo WHERE city = 'beijing' ORDER BY 1",
        )
        .await?;
        let (expected, _) = simple(
            &admin,
            "SELECT pseudonymize(email) FROM users WHERE city = 'beijing' ORDER BY 1",
        )
        .await?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows, expected);
        let (subquery, _) =
            simple(&ana, "SELECT count(*) FROM (SELECT * FROM users_pseudo) s").await?;
        assert_eq!(subquery, [[Some("3".to_string())]]);
        let denied = |what: &str| ("42501".to_string(), format!("permission denied for {what}"));
        for (sql, what) in [
            ("SELECT * FROM users", "table users"),
            ("SELECT * FROM emails", "table emails"),
            (
                "SELECT * FROM users_pseudo p JOIN users u ON p.city = u.city",
                "table users",
            ),
            (
                "SELECT * FROM users_pseudo WHERE city IN (SELECT city FROM users)",
                "table users",
            ),
        ] {
            assert_eq!(refused(&ana, sql).await?, denied(what), "{sql}");
        }
        assert_eq!(
            refused(&ana, "COPY users_pseudo FROM STDIN").await?,
            (
                "42809".to_string(),
                "\"users_pseudo\" is not a table".to_string()
            )
        );
        for sql in [
            "COPY (SELECT city FROM users_pseudo ORDER BY city) TO STDOUT",
            "COPY users_pseudo (city) TO STDOUT",
        ] {
            let copied: Vec<bytes::Bytes> =
                futures::TryStreamExt::try_collect(ana.copy_out(sql).await?).await?;
            let text = String::from_utf8(copied.concat())?;
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort_unstable();
            assert_eq!(lines, ["beijing", "beijing", "shanghai"], "{sql}");
        }
        let (may, _) = simple(
            &ana,
            "SELECT has_table_privilege('users_pseudo', 'SELECT'), \
                    has_table_privilege('emails', 'SELECT')",
        )
        .await?;
        assert_eq!(may, [[Some("t".to_string()), Some("f".to_string())]]);

        // A view reads with its owner's privileges as they are now.
        admin
            .batch_execute("CREATE ROLE boss SUPERUSER LOGIN PASSWORD 'pw2'")
            .await?;
        login(port, "boss", "pw2")
            .await?
            .batch_execute(
                "CREATE VIEW cities AS SELECT DISTINCT city FROM users;
                 GRANT SELECT ON cities TO ana",
            )
            .await?;
        let (cities, _) = simple(&ana, "SELECT count(*) FROM cities").await?;
        assert_eq!(cities, [[Some("2".to_string())]]);
        admin.batch_execute("ALTER ROLE boss NOSUPERUSER").await?;
        assert_eq!(
            refused(&ana, "SELECT count(*) FROM cities").await?,
            denied("table users (the owner of a view reading it, boss, lacks it)")
        );

        // Grants go with the view: the same name made again grants nothing.
        admin
            .batch_execute(
                "DROP VIEW users_pseudo;
                 CREATE VIEW users_pseudo AS SELECT city FROM users",
            )
            .await?;
        assert_eq!(
            refused(&ana, "SELECT * FROM users_pseudo").await?,
            denied("table users_pseudo")
        );
        // ALL TABLES takes in the views, as in PostgreSQL.
        admin
            .batch_execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ana")
            .await?;
        let (all, _) = simple(&ana, "SELECT count(*) FROM users_pseudo").await?;
        assert_eq!(all, [[Some("3".to_string())]]);
        assert_eq!(
            refused(&ana, "CREATE VIEW mine AS SELECT 1").await?,
            (
                "42501".to_string(),
                "permission denied for schema public (only superusers create views)".to_string()
            )
        );
        Ok(())
    })
}

/// GRANT and REVOKE hold an ordinary role to what it was given: tables by
/// SELECT/INSERT/UPDATE/DELETE (every way of reading a table, COPY TO and
/// cursors too), tags, segments, tag indexes and recommenders by USAGE
/// (a segment as a view: its own terms need no grant), CREATE TAG for
/// making tags; the privilege functions say the same.
fn grants() -> Result<(), Failed> {
    block_on(async {
        let (_dir, _db, port) = serve_with_admin("pw0").await?;
        let admin = login(port, "admin", "pw0").await?;
        admin
            .batch_execute(
                "CREATE TABLE users (user_id BIGINT USER KEY, city TEXT, email TEXT);
                 INSERT INTO users VALUES (1, 'beijing', 'a@x'), (2, 'beijing', 'b@x'),
                   (3, 'shanghai', 'c@x'), (4, 'shanghai', 'd@x');
                 CREATE TABLE events (user_id BIGINT USER KEY, item TEXT);
                 INSERT INTO events VALUES (1, 'a'), (1, 'b'), (2, 'a'), (3, 'b'), (3, 'c');
                 CREATE TAG INDEX ON users (city);
                 CREATE TAG vip AS SELECT user_id FROM users WHERE user_id IN (1, 3);
                 CREATE SEGMENT beijing_vip AS 'city=beijing AND vip';
                 CREATE RECOMMENDER r ON events (user_id, item) USING item_knn;
                 CREATE ROLE ana LOGIN PASSWORD 'pw1'",
            )
            .await?;
        let ana = login(port, "ana", "pw1").await?;
        let denied = |object: &str| {
            (
                "42501".to_string(),
                format!("permission denied for {object}"),
            )
        };
        for (sql, object) in [
            ("SELECT * FROM users", "table users"),
            (
                "SELECT count(*) FROM (SELECT city FROM users) s",
                "table users",
            ),
            (
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM events)",
                "table events",
            ),
            (
                "BEGIN; DECLARE c CURSOR FOR SELECT * FROM users; FETCH NEXT FROM c",
                "table users",
            ),
            ("INSERT INTO users VALUES (9, 'x', 'y')", "table users"),
            ("DELETE FROM events", "table events"),
            (
                "SELECT audience_count('city=beijing')",
                "tag index of table users",
            ),
            ("SELECT audience_count('vip OR city=beijing')", "tag vip"),
            (
                "SELECT * FROM audience_profile('beijing_vip', 'city')",
                "tag beijing_vip",
            ),
            ("SELECT * FROM recommend('r', 1, 3)", "recommender r"),
            ("SELECT * FROM audience('NOT vip')", "tag vip"),
            (
                "SELECT bitmap_count(tag_bitmap('city=shanghai'))",
                "tag index of table users",
            ),
        ] {
            ana.batch_execute("ROLLBACK").await?;
            assert_eq!(refused(&ana, sql).await?, denied(object), "{sql}");
        }
        ana.batch_execute("ROLLBACK").await?;
        let copy = ana
            .copy_out("COPY users TO STDOUT")
            .await
            .err()
            .ok_or("COPY TO")?;
        assert_eq!(
            copy.as_db_error().map(|e| e.message()),
            Some("permission denied for table users")
        );
        for (sql, message) in [
            (
                "CREATE TABLE t (x INT)",
                "permission denied for schema public (only superusers create tables)",
            ),
            (
                "CREATE TAG mine AS AUDIENCE 'city=shanghai'",
                "permission denied to create, refresh or drop tags, segments and models (GRANT CREATE TAG TO role)",
            ),
            (
                "GRANT SELECT ON users TO ana",
                "must be superuser to grant or revoke privileges",
            ),
        ] {
            assert_eq!(
                refused(&ana, sql).await?,
                ("42501".to_string(), message.to_string()),
                "{sql}"
            );
        }
        let privileges = "SELECT has_table_privilege('users', 'SELECT'), \
             has_table_privilege('ana', 'public.users', 'select, insert'), \
             has_table_privilege('events', 'SELECT'), has_table_privilege('pg_class', 'SELECT'), \
             has_schema_privilege('public', 'CREATE'), has_schema_privilege('public', 'USAGE')";
        let flags =
            |row: tokio_postgres::Row| (0..6).map(|i| row.get::<_, bool>(i)).collect::<Vec<_>>();
        assert_eq!(
            flags(ana.query_one(privileges, &[]).await?),
            [false, false, false, true, false, true]
        );
        assert_eq!(
            flags(admin.query_one(privileges, &[]).await?),
            [true, false, true, true, true, true]
        );

        // A role that does not exist fails the whole statement: no role changes.
        assert_eq!(
            refused(&admin, "GRANT CREATE TAG TO ana, nobody").await?,
            (
                "42704".to_string(),
                "role \"nobody\" does not exist".to_string()
            )
        );
        assert_eq!(
            refused(&ana, "CREATE TAG mine AS AUDIENCE 'city=shanghai'")
                .await?
                .0,
            "42501"
        );
        admin
            .batch_execute(
                "GRANT SELECT ON TABLE users TO ana;
                 GRANT USAGE ON SEGMENT beijing_vip TO ana;
                 GRANT USAGE ON RECOMMENDER r TO ana;
                 GRANT CREATE TAG TO ana",
            )
            .await?;
        assert_eq!(
            flags(ana.query_one(privileges, &[]).await?),
            [true, true, false, true, false, true]
        );
        let one = |sql: &'static str| {
            let ana = &ana;
            async move { Ok::<_, Failed>(ana.query_one(sql, &[]).await?.get::<_, i64>(0)) }
        };
        assert_eq!(one("SELECT count(*) FROM users").await?, 4);
        // The catalog lists every tag, with sizes only of those the role may use.
        let sizes: Vec<(String, Option<i64>)> = ana
            .query("SELECT name, users FROM cohortdb_tags ORDER BY name", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            sizes,
            [
                ("city=beijing".to_string(), Some(2)),
                ("city=shanghai".to_string(), Some(2)),
                ("vip".to_string(), None)
            ]
        );
        // SELECT on a table lets its column tags be used; a segment granted
        // is evaluated whatever it names.
        assert_eq!(one("SELECT audience_count('city=beijing')").await?, 2);
        assert_eq!(one("SELECT audience_count('beijing_vip')").await?, 1);
        assert_eq!(
            refused(&ana, "SELECT audience_count('vip')").await?,
            denied("tag vip")
        );
        assert_eq!(one("SELECT count(*) FROM recommend('r', 2, 2)").await?, 2);
        // What a role makes with CREATE TAG it may use.
        ana.batch_execute("CREATE TAG mine AS AUDIENCE 'city=shanghai'")
            .await?;
        assert_eq!(one("SELECT audience_count('mine')").await?, 2);
        assert_eq!(
            refused(&ana, "CREATE TAG theirs AS SELECT user_id FROM events").await?,
            denied("table events")
        );
        assert_eq!(
            refused(&ana, "UPDATE users SET city = 'x'").await?,
            denied("table users")
        );

        for (sql, code, message) in [
            (
                "GRANT SELECT ON TAG vip TO ana",
                "0LP01",
                "invalid privilege type SELECT for tag vip",
            ),
            (
                "GRANT SELECT ON nosuch TO ana",
                "42P01",
                "relation \"nosuch\" does not exist",
            ),
            (
                "GRANT SELECT ON users TO nobody",
                "42704",
                "role \"nobody\" does not exist",
            ),
            (
                "GRANT SELECT ON users TO PUBLIC",
                "0A000",
                "granting to PUBLIC (grant to roles) is not supported",
            ),
            (
                "GRANT USAGE ON TAG nosuch TO ana",
                "42704",
                "tag \"nosuch\" does not exist",
            ),
            (
                "GRANT SELECT ON users TO ana WITH GRANT OPTION",
                "42601",
                "syntax error: Expected: end of statement (WITH GRANT OPTION is not supported), found: EOF",
            ),
        ] {
            assert_eq!(
                refused(&admin, sql).await?,
                (code.to_string(), message.to_string()),
                "{sql}"
            );
        }
        // REVOKE takes away; dropping an object drops its grants, so one made
        // later under the name starts with none.
        admin
            .batch_execute(
                "REVOKE SELECT ON users FROM ana;
                 DROP SEGMENT beijing_vip;
                 CREATE SEGMENT beijing_vip AS 'city=beijing'",
            )
            .await?;
        assert_eq!(
            refused(&ana, "SELECT count(*) FROM users").await?,
            denied("table users")
        );
        assert_eq!(
            refused(&ana, "SELECT audience_count('beijing_vip')").await?,
            denied("tag beijing_vip")
        );
        admin
            .batch_execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO ana")
            .await?;
        assert_eq!(one("SELECT count(*) FROM events").await?, 5);
        ana.batch_execute("INSERT INTO events VALUES (4, 'a')")
            .await?;
        assert_eq!(one("SELECT count(*) FROM events").await?, 6);
        admin
            .batch_execute("REVOKE UPDATE ON events FROM ana")
            .await?;

        // The grants are listed as PostgreSQL lists them, granted by the
        // owner of every object (cohortdb): information_schema and
        // pg_class.relacl, which psql's \dp shows.
        let (listed, _) = simple(
            &ana,
            "SELECT grantor, grantee, table_name, privilege_type, is_grantable, with_hierarchy \
             FROM information_schema.table_privileges ORDER BY table_name, privilege_type",
        )
        .await?;
        let grant = |table: &str, privilege: &str, hierarchy: &str| {
            ["cohortdb", "ana", table, privilege, "NO", hierarchy]
                .map(|cell| Some(cell.to_string()))
                .to_vec()
        };
        assert_eq!(
            listed,
            [
                grant("events", "DELETE", "NO"),
                grant("events", "INSERT", "NO"),
                grant("events", "SELECT", "YES"),
                grant("users", "DELETE", "NO"),
                grant("users", "INSERT", "NO"),
                grant("users", "SELECT", "YES"),
                grant("users", "UPDATE", "NO"),
            ]
        );
        let output = tokio::task::spawn_blocking(move || {
            Command::new("psql")
                .args(["-X", "-A", "-h", "127.0.0.1", "-U", "admin", "-p"])
                .arg(port.to_string())
                .args(["-c", "\\dp", "cohortdb"])
                .env("PGPASSWORD", "pw0")
                .output()
        })
        .await??;
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "Access privileges\n\
             Schema|Name|Type|Access privileges|Column privileges|Policies\n\
             public|events|table|cohortdb=arwd/cohortdb\n\
             ana=ard/cohortdb||\n\
             public|users|table|cohortdb=arwd/cohortdb\n\
             ana=arwd/cohortdb||\n\
             (2 rows)\n",
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    })
}

fn min_audience_size() -> Result<(), Failed> {
    block_on(async {
        let (_dir, _db, port) = serve_with_admin("pw0").await?;
        let admin = login(port, "admin", "pw0").await?;
        // 12 users in beijing, 6 in shanghai, 2 in shenzhen; 3 VIPs.
        admin
            .batch_execute(
                "CREATE TABLE users (user_id BIGINT USER KEY, city TEXT, vip BOOLEAN);
                 INSERT INTO users SELECT value, CASE WHEN value <= 12 THEN 'beijing'
                   WHEN value <= 18 THEN 'shanghai' ELSE 'shenzhen' END, value <= 3
                   FROM generate_series(1, 20);
                 CREATE TAG INDEX ON users (city);
                 CREATE TAG vip AS SELECT user_id FROM users WHERE vip;
                 CREATE ROLE reporter LOGIN PASSWORD 'pw1';
                 GRANT USAGE ON TAG INDEX users TO reporter;
                 GRANT USAGE ON TAG vip TO reporter;
                 ALTER ROLE reporter SET min_audience_size = 5",
            )
            .await?;
        let reporter = login(port, "reporter", "pw1").await?;
        let show = reporter.query_one("SHOW min_audience_size", &[]).await?;
        assert_eq!(show.get::<_, String>(0), "5");
        let count = |expr: &'static str| {
            let reporter = &reporter;
            async move {
                let row = reporter
                    .query_one("SELECT audience_count($1)", &[&expr])
                    .await?;
                Ok::<_, Failed>(row.get::<_, Option<i64>>(0))
            }
        };
        assert_eq!(count("city=beijing").await?, Some(12));
        assert_eq!(count("city=beijing OR city=shanghai").await?, Some(18));
        assert_eq!(count("city=shenzhen").await?, None);
        assert_eq!(count("vip").await?, None);
        // 9 users, but as 12 less the 3 VIPs: the difference would count them.
        assert_eq!(count("city=beijing AND NOT vip").await?, None);
        assert_eq!(count("city=beijing OR city=shenzhen").await?, None);

        let rows = reporter
            .query(
                "SELECT value, users, population, tgi IS NULL \
                 FROM audience_profile('city=beijing OR city=shanghai', 'city') ORDER BY value",
                &[],
            )
            .await?;
        let profile: Vec<(String, Option<i64>, Option<i64>, bool)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        assert_eq!(
            profile,
            vec![
                ("beijing".into(), Some(12), Some(12), false),
                ("shanghai".into(), Some(6), Some(6), false),
                ("shenzhen".into(), None, None, true),
            ]
        );
        let row = reporter
            .query_one(
                "SELECT a_users, b_users, both_users, jaccard \
                 FROM audience_overlap('city=beijing', 'city=beijing OR city=shanghai')",
                &[],
            )
            .await?;
        assert_eq!(
            (
                row.get::<_, Option<i64>>(0),
                row.get::<_, Option<i64>>(1),
                row.get::<_, Option<i64>>(2),
                row.get::<_, Option<f64>>(3)
            ),
            (Some(12), Some(18), Some(12), Some(12.0 / 18.0))
        );
        let row = reporter
            .query_one(
                "SELECT both_users, jaccard FROM audience_overlap('city=beijing', 'vip')",
                &[],
            )
            .await?;
        assert_eq!(
            (row.get::<_, Option<i64>>(0), row.get::<_, Option<f64>>(1)),
            (None, None)
        );
        let rows = reporter
            .query(
                "SELECT name, users, bytes IS NULL FROM cohortdb_tags ORDER BY name",
                &[],
            )
            .await?;
        let tags: Vec<(String, Option<i64>, bool)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            tags,
            vec![
                ("city=beijing".into(), Some(12), false),
                ("city=shanghai".into(), Some(6), false),
                ("city=shenzhen".into(), None, true),
                ("vip".into(), None, true),
            ]
        );

        // No user-level output, however asked for.
        for sql in [
            "SELECT * FROM audience('city=beijing')",
            "SELECT * FROM audience_sample('city=beijing', 2, 1)",
            "SELECT count(*) FROM users WHERE in_audience(user_id, 'city=beijing')",
            "SELECT bitmap_count(tag_bitmap('city=beijing'))",
            // Nor lowering its own threshold.
            "ALTER ROLE reporter SET min_audience_size = 0",
        ] {
            let error = reporter.batch_execute(sql).await.err().ok_or(sql)?;
            let code = error.as_db_error().map(|e| e.code().code());
            assert_eq!(code, Some("42501"), "{sql}: {error:?}");
        }
        let error = reporter
            .batch_execute("SELECT * FROM audience('city=beijing')")
            .await
            .err()
            .ok_or("audience")?;
        assert_eq!(
            error.as_db_error().map(|e| e.message()),
            Some(
                "permission denied for function audience: this role sees audiences only as \
                 counts of at least 5 users (min_audience_size)"
            )
        );
        let error = reporter
            .batch_execute("SET min_audience_size = 0")
            .await
            .err()
            .ok_or("SET")?;
        assert_eq!(error.as_db_error().map(|e| e.code().code()), Some("55P02"));
        for (sql, code) in [
            ("ALTER ROLE reporter SET statement_timeout = 5", "0A000"),
            ("ALTER ROLE reporter SET no_such_thing = 5", "42704"),
            (
                "ALTER ROLE reporter SET min_audience_size = 'many'",
                "22023",
            ),
            ("ALTER ROLE ghost SET min_audience_size = 5", "42704"),
        ] {
            let error = admin.batch_execute(sql).await.err().ok_or(sql)?;
            let got = error.as_db_error().map(|e| e.code().code());
            assert_eq!(got, Some(code), "{sql}: {error:?}");
        }

        // Lifted, it applies from the role's next statement.
        admin
            .batch_execute("ALTER ROLE reporter RESET min_audience_size")
            .await?;
        assert_eq!(count("vip").await?, Some(3));
        let rows = reporter.query("SELECT * FROM audience('vip')", &[]).await?;
        assert_eq!(rows.len(), 3);
        Ok(())
    })
}

/// Runs `psql -c sql` against the local server with libpq environment `env`;
/// returns (success, stdout, stderr).
async fn psql(
    port: u16,
    sql: &str,
    env: &[(&str, &str)],
) -> Result<(bool, String, String), Failed> {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "cohortdb", "-p"])
        .arg(port.to_string())
        .args(["-c", sql, "cohortdb"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    ))
}

fn tls() -> Result<(), Failed> {
    block_on(async {
        let dir = tempfile::tempdir()?;
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, certified.cert.pem())?;
        std::fs::write(&key, certified.signing_key.serialize_pem())?;
        let tls = cohortdb::Tls::from_pem_files(&cert, &key)?;

        // Bad files are refused when loaded, with the file named.
        let other = rcgen::generate_simple_self_signed(vec!["other".to_string()])?;
        let other_key = dir.path().join("other.key");
        std::fs::write(&other_key, other.signing_key.serialize_pem())?;
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate")?;
        for (cert_file, key_file, expected) in [
            (&garbage, &key, "garbage.pem: no certificate in the file"),
            (&cert, &garbage, "garbage.pem: not a PEM private key"),
            (
                &cert,
                &other_key,
                "other.key: does not match the certificate",
            ),
            (
                &dir.path().join("missing.crt"),
                &key,
                "missing.crt: No such file",
            ),
        ] {
            let error = cohortdb::Tls::from_pem_files(cert_file, key_file)
                .err()
                .ok_or("bad TLS files were accepted")?;
            assert!(error.to_string().contains(expected), "{error}");
        }

        let db = Database::open_in_memory();
        let serve = |options: ServerOptions| async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            let db = db.clone();
            tokio::spawn(async move { db.serve_listener(listener, options).await });
            Ok::<u16, Failed>(port)
        };
        // TLS when the client asks for it; plain connections still allowed.
        let port = serve(ServerOptions {
            auth: Auth::Trust,
            tls: Some(tls.clone()),
            ..ServerOptions::default()
        })
        .await?;
        let (ok, out, err) = psql(port, "SELECT 1", &[("PGSSLMODE", "require")]).await?;
        assert!(ok && out == "1", "{err}");
        let (ok, _, err) = psql(port, "SELECT 1", &[("PGSSLMODE", "disable")]).await?;
        assert!(ok, "{err}");
        // With TLS required, plain connections are refused.
        let port = serve(ServerOptions {
            auth: Auth::Trust,
            tls: Some(tls),
            require_tls: true,
            ..ServerOptions::default()
        })
        .await?;
        let (ok, _, err) = psql(port, "SELECT 1", &[("PGSSLMODE", "disable")]).await?;
        assert!(!ok);
        assert!(
            err.contains("this server accepts TLS connections only"),
            "{err}"
        );
        let (ok, out, err) = psql(port, "SELECT 2", &[("PGSSLMODE", "require")]).await?;
        assert!(ok && out == "2", "{err}");
        // A server without TLS answers a client that requires it with a refusal.
        let port = serve(ServerOptions {
            auth: Auth::Trust,
            ..ServerOptions::default()
        })
        .await?;
        let (ok, _, err) = psql(port, "SELECT 1", &[("PGSSLMODE", "require")]).await?;
        assert!(!ok && err.contains("server does not support SSL"), "{err}");
        // Requiring TLS without a certificate fails at once.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let error = db
            .serve_listener(
                listener,
                ServerOptions {
                    require_tls: true,
                    ..ServerOptions::default()
                },
            )
            .await
            .err()
            .ok_or("served without TLS")?;
        assert_eq!(
            error.to_string(),
            "TLS is required but no certificate and key were given"
        );
        Ok(())
    })
}

/// Result columns are named and typed as PostgreSQL names and types them, in
/// both protocols; catalog object identifiers travel as `oid`.
fn column_names_and_types() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let client = connect(port).await?;
        client
            .batch_execute("CREATE TABLE t (id BIGINT, name TEXT)")
            .await?;
        let sql = "SELECT 1, 2, count(*), 1 + 1 AS two, version(), c.oid, c.relname, \
                   c.oid::regclass::text, 'x'::text \
                   FROM pg_catalog.pg_class c WHERE c.relname = 't' GROUP BY c.oid, c.relname";
        let statement = client.prepare(sql).await?;
        let columns: Vec<(&str, &tokio_postgres::types::Type)> = statement
            .columns()
            .iter()
            .map(|c| (c.name(), c.type_()))
            .collect();
        use tokio_postgres::types::Type;
        assert_eq!(
            columns,
            [
                ("?column?", &Type::INT4),
                ("?column?", &Type::INT4),
                ("count", &Type::INT8),
                ("two", &Type::INT4),
                ("version", &Type::TEXT),
                ("oid", &Type::OID),
                ("relname", &Type::NAME),
                ("oid", &Type::TEXT),
                ("text", &Type::TEXT),
            ]
        );
        let row = client.query_one(&statement, &[]).await?;
        assert_eq!(row.get::<_, i32>(0), 1);
        assert_eq!(row.get::<_, i64>(2), 1);
        // The first table has engine id 1; user OIDs start at 16384.
        assert_eq!(row.get::<_, u32>(5), 16_385);
        assert_eq!(row.get::<_, String>(7), "t");
        // The simple protocol names them alike.
        let messages = client.simple_query(sql).await?;
        let Some(SimpleQueryMessage::RowDescription(fields)) = messages.first() else {
            return Err("a row description first".into());
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "?column?", "?column?", "count", "two", "version", "oid", "relname", "oid", "text"
            ]
        );
        // An untyped NULL is NULL (sent as text), in both protocols.
        let row = client.query_one("SELECT NULL AS x", &[]).await?;
        assert_eq!(row.get::<_, Option<String>>(0), None);
        let messages = client.simple_query("SELECT NULL AS x").await?;
        let Some(SimpleQueryMessage::Row(row)) = messages.get(1) else {
            return Err("a row".into());
        };
        assert_eq!(row.get(0), None);
        // A parameter cast to a type takes that type, as PostgreSQL infers it.
        let statement = client.prepare("SELECT $1::int AS y, $2::text").await?;
        assert_eq!(statement.params(), [Type::INT4, Type::TEXT]);
        let row = client.query_one(&statement, &[&41i32, &"x"]).await?;
        assert_eq!(row.get::<_, i32>(0), 41);
        Ok(())
    })
}

/// psql's describe commands, whose queries read pg_catalog, print what they
/// print against PostgreSQL.
fn psql_describe() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let client = connect(port).await?;
        client
            .batch_execute(
                "CREATE TABLE users (user_id BIGINT NOT NULL, city TEXT, spend DECIMAL(12,2));
                 CREATE TABLE events (user_id BIGINT, ts TIMESTAMPTZ)",
            )
            .await?;
        let describe = |command: &'static str| async move {
            let output = tokio::task::spawn_blocking(move || {
                Command::new("psql")
                    .args(["-X", "-h", "127.0.0.1", "-U", "cohortdb", "-p"])
                    .arg(port.to_string())
                    .args(["-c", command, "cohortdb"])
                    .output()
            })
            .await??;
            assert!(
                output.status.success(),
                "{command}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok::<String, Failed>(String::from_utf8_lossy(&output.stdout).into_owned())
        };
        assert_eq!(
            describe("\\dt").await?,
            "         List of relations\n \
             Schema |  Name  | Type  |  Owner   \n\
             --------+--------+-------+----------\n \
             public | events | table | cohortdb\n \
             public | users  | table | cohortdb\n\
             (2 rows)\n\n"
        );
        assert_eq!(
            describe("\\d users").await?,
            "                   Table \"public.users\"\n \
             Column  |     Type      | Collation | Nullable | Default \n\
             ---------+---------------+-----------+----------+---------\n \
             user_id | bigint        |           | not null | \n \
             city    | text          |           |          | \n \
             spend   | numeric(12,2) |           |          | \n\n"
        );
        let plus = describe("\\d+ events").await?;
        assert!(
            plus.contains(
                " ts      | timestamp with time zone |           |          |         | plain   |"
            ),
            "{plus}"
        );
        assert!(plus.ends_with("Access method: heap\n\n"), "{plus}");
        assert!(
            describe("\\l")
                .await?
                .contains(" cohortdb | cohortdb | UTF8     |")
        );
        assert!(describe("\\dn").await?.contains(" public | cohortdb\n"));
        assert!(describe("\\du").await?.contains(" cohortdb  | Superuser"));
        let functions = describe("\\df").await?;
        assert!(
            functions.contains(" public | welch_test_stats "),
            "{functions}"
        );
        assert!(functions.contains("| agg\n"), "{functions}");
        // The + forms: sizes through pg_table_size, pg_database_size and
        // pg_size_pretty.
        let tables = describe("\\dt+").await?;
        assert!(
            tables.contains(
                " public | events | table | cohortdb | permanent   | heap          | 0 bytes | \n"
            ),
            "{tables}"
        );
        let databases = describe("\\l+").await?;
        assert!(
            databases.contains("| 0 bytes | pg_default |"),
            "{databases}"
        );
        client
            .batch_execute("CREATE VIEW cities AS SELECT city, count(*) FROM users GROUP BY city")
            .await?;
        assert_eq!(
            describe("\\dv").await?,
            "         List of relations\n \
             Schema |  Name  | Type |  Owner   \n\
             --------+--------+------+----------\n \
             public | cities | view | cohortdb\n\
             (1 row)\n\n"
        );
        assert_eq!(
            describe("\\d+ cities").await?,
            "                           View \"public.cities\"\n \
             Column |  Type  | Collation | Nullable | Default | Storage  | Description \n\
             --------+--------+-----------+----------+---------+----------+-------------\n \
             city   | text   |           |          |         | extended | \n \
             count  | bigint |           |          |         | plain    | \n\
             View definition:\n\
             SELECT city, count(*) FROM users GROUP BY city\n\n"
        );
        Ok(())
    })
}

/// COPY FROM STDIN and TO STDOUT in text and CSV, over both protocols: rows
/// arrive whole or not at all, and leave as PostgreSQL writes them.
fn copy_stdin_stdout() -> Result<(), Failed> {
    use futures::{SinkExt, TryStreamExt};
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let client = connect(port).await?;
        client
            .batch_execute("CREATE TABLE t (id INT NOT NULL, name TEXT, amount DECIMAL(12,2))")
            .await?;
        // Extended protocol (tokio-postgres), text format with escapes and NULLs.
        let sink = client.copy_in("COPY t FROM STDIN").await?;
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"1\tann\t1.50\n2\t\\N\t\\N\n"))
            .await?;
        sink.send(bytes::Bytes::from_static(b"3\ttab\\there\t2\n"))
            .await?;
        assert_eq!(sink.finish().await?, 3);
        let out: Vec<bytes::Bytes> = client
            .copy_out("COPY (SELECT * FROM t ORDER BY id) TO STDOUT")
            .await?
            .try_collect()
            .await?;
        assert_eq!(
            out.concat(),
            b"1\tann\t1.50\n2\t\\N\t\\N\n3\ttab\\there\t2.00\n"
        );
        // A bad row anywhere leaves the table as it was, and names the line.
        let sink = client.copy_in("COPY t FROM STDIN").await?;
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"4\tok\t1\nfive\tbad\t1\n"))
            .await?;
        let error = sink.finish().await.err().ok_or("bad data accepted")?;
        let db_error = error.as_db_error().ok_or("a server error")?;
        assert_eq!(
            db_error.message(),
            "STDIN: invalid value \"five\" for column \"id\" (INTEGER) at line 2"
        );
        let bad_data = db_error.code().code().to_string();
        // A client that gives up (CopyFail) leaves nothing either.
        {
            let sink = client.copy_in("COPY t FROM STDIN").await?;
            futures::pin_mut!(sink);
            sink.send(bytes::Bytes::from_static(b"6\tgone\t1\n"))
                .await?;
            // Dropped without finish: tokio-postgres sends CopyFail.
        }
        let count: i64 = client
            .query_one("SELECT count(*) FROM t", &[])
            .await?
            .get(0);
        assert_eq!(count, 3);
        // The audit log has each COPY: rows copied, the failure's SQLSTATE,
        // and the abandoned one as canceled (57014).
        let (copies, _) = simple(
            &client,
            "SELECT statement, rows, sqlstate FROM cohortdb_audit \
             WHERE command = 'COPY' ORDER BY seq",
        )
        .await?;
        let copy = |statement: &str, rows: Option<&str>, sqlstate: Option<&str>| {
            vec![
                Some(statement.to_string()),
                rows.map(str::to_string),
                sqlstate.map(str::to_string),
            ]
        };
        assert_eq!(
            copies,
            [
                copy("COPY t FROM STDIN", Some("3"), None),
                copy(
                    "COPY (SELECT * FROM t ORDER BY id) TO STDOUT",
                    Some("3"),
                    None
                ),
                copy("COPY t FROM STDIN", None, Some(&bad_data)),
                copy("COPY t FROM STDIN", None, Some("57014")),
            ]
        );

        // Simple protocol (psql's \copy), CSV with a header both ways.
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("in.csv");
        std::fs::write(&file, "id,name,amount\n7,\"a,b\",3.5\n8,,\n")?;
        let (ok, _, stderr) = psql(
            port,
            &format!(
                "\\copy t from '{}' with (format csv, header)",
                file.display()
            ),
            &[],
        )
        .await?;
        assert!(ok, "{stderr}");
        let (ok, stdout, stderr) = psql(
            port,
            "\\copy (SELECT * FROM t WHERE id > 6 ORDER BY id) to stdout with (format csv, header)",
            &[],
        )
        .await?;
        assert!(ok, "{stderr}");
        assert_eq!(stdout, "id,name,amount\n7,\"a,b\",3.50\n8,,");
        // statement_timeout stops a COPY TO STDOUT mid-stream.
        client
            .batch_execute("SET statement_timeout = '200ms'")
            .await?;
        let out = client
            .copy_out(&format!("COPY ({ENDLESS}) TO STDOUT") as &str)
            .await;
        let error = match out {
            Err(e) => e,
            Ok(stream) => {
                let rows: Result<Vec<bytes::Bytes>, _> = stream.try_collect().await;
                rows.err().ok_or("the endless COPY finished")?
            }
        };
        assert_eq!(
            error.as_db_error().map(|e| e.code().code()),
            Some("57014"),
            "{error:?}"
        );
        client.batch_execute("RESET statement_timeout").await?;
        // COPY FROM STDIN must end its query string.
        let error = client
            .simple_query("COPY t FROM STDIN; SELECT 1")
            .await
            .err()
            .ok_or("accepted")?;
        assert_eq!(
            error.as_db_error().map(|e| e.code().code()),
            Some("0A000"),
            "{error:?}"
        );
        Ok(())
    })
}

/// Random, truncated and oversized frames, before and after startup: each such
/// connection ends (the server closes it or answers an error) and the server
/// goes on serving others. Seeded; the seed of a failing case is printed.
fn malformed_frames() -> Result<(), Failed> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let mut state = 0x5eed_u64;
        let mut next = move || {
            // SplitMix64.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let startup = {
            let body = b"\x00\x03\x00\x00user\x00cohortdb\x00database\x00cohortdb\x00\x00";
            let mut frame = ((body.len() + 4) as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(body);
            frame
        };
        for case in 0..300u32 {
            let mut bytes = Vec::new();
            let after_startup = case % 3 != 0;
            if after_startup {
                bytes.extend_from_slice(&startup);
            }
            let tag = b"QPBDESHCXdcfp?"[(next() % 14) as usize];
            let body_len = (next() % 64) as usize;
            let body: Vec<u8> = (0..body_len).map(|_| next() as u8).collect();
            // The declared length: right, too short, too long, or absurd.
            let declared: u32 = match next() % 4 {
                0 => (body.len() + 4) as u32,
                1 => (next() % 4) as u32,
                2 => (body.len() + 4 + (next() % 100) as usize) as u32,
                _ => next() as u32,
            };
            if after_startup || case % 2 == 0 {
                bytes.push(tag);
            }
            bytes.extend_from_slice(&declared.to_be_bytes());
            bytes.extend_from_slice(&body);
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let _ = socket.write_all(&bytes).await;
            let _ = socket.shutdown().await;
            let mut sink = Vec::new();
            let ended = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                socket.read_to_end(&mut sink),
            )
            .await;
            if ended.is_err() {
                return Err(
                    format!("case {case}: the server kept a malformed connection open").into(),
                );
            }
        }
        // Messages whose counts promise more than their bodies hold (pgwire's
        // decoders would read past the end) and an oversized one: the client is
        // told, as by PostgreSQL, and the connection ends.
        let parameters = [("user", "cohortdb"), ("database", "cohortdb")];
        let huge = {
            let mut frame = vec![b'Q'];
            frame.extend(i32::MAX.to_be_bytes());
            frame
        };
        let cases: [(&str, Vec<u8>, &str); 4] = [
            (
                "a Bind announcing 1000 parameters",
                b"B\0\0\0\x0a\0\0\0\0\x03\xe8".to_vec(),
                "invalid message format",
            ),
            (
                "a Bind announcing 7 format codes",
                b"B\0\0\0\x08\0\0\0\x07".to_vec(),
                "invalid message format",
            ),
            (
                "a Parse announcing 9 parameter types",
                b"P\0\0\0\x0e\0SELECT\0\0\x09".to_vec(),
                "invalid message format",
            ),
            ("a 2 GiB query", huge, "Invalid message length"),
        ];
        for (case, frame, message) in cases {
            let (mut raw, _) = Raw::connect(port, &parameters).await?;
            raw.write(&frame).await?;
            let mut frames = Vec::new();
            while let Some(frame) = raw.read().await? {
                frames.push(frame);
            }
            let errors = reports(&frames, b'E');
            assert_eq!(errors.len(), 1, "{case}: {errors:?}");
            assert_eq!(
                (&errors[0].0[..], &errors[0].1[..]),
                ("FATAL", "08P01"),
                "{case}"
            );
            assert!(errors[0].2.contains(message), "{case}: {errors:?}");
        }
        // Still serving.
        let client = connect(port).await?;
        let row = client.query_one("SELECT 1", &[]).await?;
        assert_eq!(row.get::<_, i32>(0), 1);
        Ok(())
    })
}

/// As PostgreSQL's, the answers to Parse, Bind and Execute wait for the
/// Sync (or Flush) that ends their batch, and go out together; a result
/// too long to hold streams before it.
fn answers_wait_for_sync() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let port = start(&db).await?;
        let (mut raw, _) = Raw::connect(port, &[("user", "ann")]).await?;
        let silent = std::time::Duration::from_millis(200);
        /// Parse, Bind and Execute of `sql`, unnamed, without parameters.
        async fn extended(raw: &mut Raw, sql: &str) -> Result<(), Failed> {
            let mut parse = b"\0".to_vec();
            parse.extend_from_slice(sql.as_bytes());
            parse.extend_from_slice(&[0, 0, 0]);
            raw.send(b'P', &parse).await?;
            raw.send(b'B', &[0; 8]).await?;
            raw.send(b'E', &[0; 5]).await
        }
        extended(&mut raw, "SELECT 1").await?;
        let early = tokio::time::timeout(silent, raw.read()).await;
        assert!(early.is_err(), "an answer before Sync: {early:?}");
        raw.send(b'H', &[]).await?;
        let mut kinds = Vec::new();
        for _ in 0..4 {
            kinds.push(raw.read().await?.ok_or("closed")?.0);
        }
        assert_eq!(kinds, b"12DC");
        raw.send(b'S', &[]).await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), b"Z");

        // 100,000 rows of 11 bytes and more: written long before the end.
        extended(&mut raw, "SELECT * FROM generate_series(1, 100000)").await?;
        let first = tokio::time::timeout(silent, raw.read()).await;
        assert!(matches!(first, Ok(Ok(Some((b'1', _))))), "{first:?}");
        raw.send(b'S', &[]).await?;
        let frames = raw.read_until_ready().await?;
        assert_eq!(frames.iter().filter(|f| f.0 == b'D').count(), 100_000);
        assert_eq!(tags(&frames), ["SELECT 100000"]);
        Ok(())
    })
}
