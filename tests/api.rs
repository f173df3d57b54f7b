//! The embedding API, used exactly as another Rust service would use the crate.

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use cohortdb::Database;
use futures::StreamExt;
use libtest_mimic::{Failed, Trial};

use crate::{block_on, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("api::query_in_memory", query_in_memory),
        trial("api::data_survives_reopen", data_survives_reopen),
        trial("api::stream_results", stream_results),
        trial("api::typed_errors", typed_errors),
        trial("api::query_memory_limit", query_memory_limit),
        trial("api::roles_survive_reopen", roles_survive_reopen),
        trial("api::audit_log_survives_reopen", audit_log_survives_reopen),
        trial(
            "api::notices_of_the_last_statement",
            notices_of_the_last_statement,
        ),
        trial("api::second_open_is_locked", second_open_is_locked),
        trial("api::demo_is_deterministic", demo_is_deterministic),
        trial("api::sessions_share_data", sessions_share_data),
        trial("api::filters_push_into_scans", filters_push_into_scans),
        trial("api::audiences_push_into_scans", audiences_push_into_scans),
        trial("api::audiences_without_sql", audiences_without_sql),
        trial("api::experiment_worked_example", experiment_worked_example),
        trial("api::lookalike_worked_example", lookalike_worked_example),
        trial(
            "api::recommendations_worked_example",
            recommendations_worked_example,
        ),
        trial(
            "api::refreshed_recommenders_say_what_was_computed",
            refreshed_recommenders_say_what_was_computed,
        ),
        trial(
            "api::format_v1_golden_directory",
            format_v1_golden_directory,
        ),
        trial(
            "api::dml_while_compaction_rewrites_segments",
            dml_while_compaction_rewrites_segments,
        ),
        trial(
            "api::forget_user_leaves_no_file_holding_them",
            forget_user_leaves_no_file_holding_them,
        ),
        trial(
            "api::grants_hold_for_an_embedded_role",
            grants_hold_for_an_embedded_role,
        ),
        trial(
            "api::kept_plans_follow_grants_and_time",
            kept_plans_follow_grants_and_time,
        ),
        trial(
            "api::kept_counts_follow_tags_and_let_the_database_close",
            kept_counts_follow_tags_and_let_the_database_close,
        ),
    ]
}

/// `audience_count` and `audience` run with their plan, so a kept plan
/// counts and lists the tags as they are when it runs; and kept plans, whose
/// functions hold their session, go with the session, so the database closes
/// and opens again.
fn kept_counts_follow_tags_and_let_the_database_close() -> Result<(), Failed> {
    block_on(async {
        let dir = tempfile::tempdir()?;
        {
            let db = Database::open(dir.path())?;
            let session = db.session();
            session
                .execute("CREATE TABLE t (user_id BIGINT USER KEY, city TEXT)")
                .await?;
            session.execute("CREATE TAG INDEX ON t (city)").await?;
            for (id, expected, listed) in [(1, "1", &["1"][..]), (2, "2", &["1", "2"])] {
                session
                    .execute(&format!("INSERT INTO t VALUES ({id}, 'paris')"))
                    .await?;
                for _ in 0..2 {
                    let batches = session
                        .execute("SELECT audience_count('city=paris')")
                        .await?;
                    assert_eq!(rows(batches), [expected]);
                    let batches = session
                        .execute("SELECT * FROM audience('city=paris')")
                        .await?;
                    assert_eq!(rows(batches), listed);
                }
            }
            for _ in 0..2 {
                let batches = session
                    .execute("SELECT set_config('application_name', 'x', false)")
                    .await?;
                assert_eq!(rows(batches), ["x"]);
            }
        }
        let db = Database::open(dir.path())?;
        let batches = db
            .session()
            .execute("SELECT audience_count('city=paris')")
            .await?;
        assert_eq!(rows(batches), ["2"]);
        Ok(())
    })
}

/// A query a session runs again reuses its plan only while nothing the plan
/// was made from changed: a grant revoked by another session is honoured at
/// once, and `now()` (evaluated while planning) is not frozen.
fn kept_plans_follow_grants_and_time() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let admin = db.session();
        admin
            .execute("CREATE TABLE t (x INT); INSERT INTO t VALUES (1); CREATE ROLE ana")
            .await?;
        admin.execute("GRANT SELECT ON t TO ana").await?;
        let ana = db.session_as("ana")?;
        for _ in 0..2 {
            let batches = ana.execute("SELECT x FROM t WHERE x > 0").await?;
            assert_eq!(rows(batches), ["1"]);
        }
        admin.execute("REVOKE SELECT ON t FROM ana").await?;
        let err = ana
            .execute("SELECT x FROM t WHERE x > 0")
            .await
            .expect_err("revoked");
        assert_eq!(err.to_string(), "permission denied for table t");
        let now = || async {
            let batches = admin.execute("SELECT now()::text").await?;
            Ok::<_, cohortdb::Error>(rows(batches))
        };
        let first = now().await?;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_ne!(first, now().await?);
        // A query of no table keeps its rows, but not those of a volatile call.
        for _ in 0..2 {
            let batches = admin.execute("SELECT 1 + 1 AS two, 'a' || 'b'").await?;
            assert_eq!(rows(batches), ["2|ab"]);
        }
        let random = || async {
            let batches = admin.execute("SELECT random()::text").await?;
            Ok::<_, cohortdb::Error>(rows(batches))
        };
        assert_ne!(random().await?, random().await?);
        Ok(())
    })
}

/// A session started as a role that is not a superuser is held to its
/// grants in the embedding API as over the wire.
fn grants_hold_for_an_embedded_role() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let admin = db.session();
        admin
            .execute("CREATE TABLE t (user_id BIGINT USER KEY, city TEXT)")
            .await?;
        admin.execute("INSERT INTO t VALUES (1, 'paris')").await?;
        admin.execute("CREATE TAG INDEX ON t (city)").await?;
        admin.execute("CREATE ROLE ana").await?;
        let err = db.session_as("nobody").err().ok_or("no such role")?;
        assert_eq!(err.sqlstate(), "42704");
        let ana = db.session_as("ana")?;
        for sql in ["SELECT * FROM t", "SELECT audience_count('city=paris')"] {
            let err = ana.execute(sql).await.expect_err("denied");
            assert_eq!(err.sqlstate(), "42501", "{sql}");
        }
        admin.execute("GRANT USAGE ON TAG INDEX t TO ana").await?;
        let batches = ana.execute("SELECT audience_count('city=paris')").await?;
        assert_eq!(rows(batches), ["1"]);
        let err = ana.execute("SELECT * FROM t").await.expect_err("denied");
        assert_eq!(err.to_string(), "permission denied for table t");
        Ok(())
    })
}

/// Embedded sessions are audited as the role they act as, without an
/// address; a result dropped unread is recorded with the rows read; the log
/// outlives the process and continues its numbering.
fn audit_log_survives_reopen() -> Result<(), Failed> {
    use futures::StreamExt;
    block_on(async {
        let dir = tempfile::tempdir()?;
        {
            let db = Database::open(dir.path())?;
            let admin = db.session();
            admin.execute("CREATE TABLE t (x INT)").await?;
            admin
                .execute("INSERT INTO t VALUES (1), (2); CREATE ROLE ana")
                .await?;
            let mut stream = admin.execute_stream("SELECT x FROM t").await?;
            assert!(stream.next().await.is_some());
            drop(stream);
            let ana = db.session_as("ana")?;
            let err = ana.execute("SELECT * FROM t").await.expect_err("denied");
            assert_eq!(err.sqlstate(), "42501");
            let err = ana
                .execute("SELECT count(*) FROM cohortdb_audit")
                .await
                .expect_err("denied");
            assert_eq!(
                err.to_string(),
                "permission denied for table cohortdb_audit"
            );
        }
        let db = Database::open(dir.path())?;
        let batches = db
            .session()
            .execute(
                "SELECT seq, role, address, command, statement, rows, sqlstate \
                 FROM cohortdb_audit ORDER BY seq",
            )
            .await?;
        assert_eq!(
            rows(batches),
            [
                "1|cohortdb|NULL|CREATE TABLE|CREATE TABLE t (x INT)|NULL|NULL",
                "2|cohortdb|NULL|INSERT|INSERT INTO t VALUES (?), (?)|2|NULL",
                "3|cohortdb|NULL|CREATE ROLE|CREATE ROLE ana|NULL|NULL",
                "4|cohortdb|NULL|SELECT|SELECT x FROM t|2|NULL",
                "5|ana|NULL|SELECT|SELECT * FROM t|NULL|42501",
                "6|ana|NULL|SELECT|SELECT count(*) FROM cohortdb_audit|NULL|42501",
            ]
        );
        Ok(())
    })
}

/// The files under `dir` whose bytes contain `needle`, relative to `dir`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)?
                .windows(needle.len())
                .any(|w| w == needle)
            {
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                found.push(relative.display().to_string());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// FORGET USER ... IMMEDIATELY over SQL: when it returns, no file of the data
/// directory holds the user's id, which several did before (segments, the
/// dictionary, the log), and the data left is whole after a reopen.
fn forget_user_leaves_no_file_holding_them() -> Result<(), Failed> {
    const ID: &str = "forget-me-0c7d51e2a9";
    block_on(async {
        let dir = tempfile::tempdir()?;
        {
            let db = Database::open(dir.path())?;
            let session = db.session();
            for sql in [
                "CREATE TABLE users (user_id TEXT USER KEY, email TEXT)",
                "CREATE TABLE events (user_id TEXT USER KEY, item TEXT)",
                &format!(
                    "INSERT INTO users VALUES ('{ID}', 'a@example.com'), ('u2', 'b@example.com')"
                ),
                "CHECKPOINT",
                &format!(
                    "INSERT INTO events VALUES ('{ID}', 'shoes'), ('u2', 'shoes'), ('u2', 'hat')"
                ),
                "CREATE TAG INDEX ON events (item)",
                // A definition naming the id itself would keep it in the manifest
                // (docs/privacy.md § Forgetting a user).
                "CREATE TAG picked AS SELECT user_id FROM users WHERE email LIKE 'a@%'",
            ] {
                session.execute(sql).await?;
            }
            assert_eq!(
                files_holding(dir.path(), ID.as_bytes())?,
                [
                    "segments/0000000000000004.parquet",
                    "users/0000000000.keys",
                    "wal/0000000000000004.wal"
                ]
            );
            session
                .execute(&format!("FORGET USER '{ID}' IMMEDIATELY"))
                .await?;
            assert_eq!(
                session.take_messages(),
                [cohortdb::Message::Notice {
                    severity: "NOTICE",
                    code: "00000",
                    message:
                        "forgot 1 user: deleted 2 rows in 2 tables, removed from 1 stored tag, \
                              rebuilt 0 recommenders; no file holds them any more"
                            .into(),
                }]
            );
            assert_eq!(
                files_holding(dir.path(), ID.as_bytes())?,
                Vec::<String>::new()
            );
        }
        let db = Database::open(dir.path())?;
        let batches = db
            .session()
            .execute(
                "SELECT (SELECT string_agg(user_id || ' ' || item, ',' ORDER BY item) FROM events), \
                 audience_count('item=shoes'), audience_count('picked')",
            )
            .await?;
        assert_eq!(rows(batches), ["u2 hat,u2 shoes|1|0"]);
        Ok(())
    })
}

/// DELETE and UPDATE name rows by their position in a segment; a compaction
/// that rewrites the segment between the statement's read and its write
/// makes the statement read again rather than fail. Here a thread vacuums
/// without pause (every VACUUM after a delete rewrites the file) while a
/// session deletes and updates one row at a time.
fn dml_while_compaction_rewrites_segments() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("data"))?;
    block_on(async {
        let session = db.session();
        session
            .execute("CREATE TABLE t (id BIGINT NOT NULL)")
            .await?;
        session
            .execute("INSERT INTO t SELECT x FROM generate_series(1, 5000) g(x)")
            .await?;
        session.execute("CHECKPOINT").await?;
        Ok(())
    })?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vacuums = {
        let (db, stop) = (db.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut count = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.vacuum(None).expect("vacuum");
                count += 1;
            }
            count
        })
    };
    let result = block_on(async {
        let session = db.session();
        for i in 1..=40 {
            session
                .execute(&format!("DELETE FROM t WHERE id = {i}"))
                .await?;
            session
                .execute(&format!("UPDATE t SET id = -id WHERE id = {}", 5000 - i))
                .await?;
        }
        let rows = session
            .execute("SELECT count(*), count(*) FILTER (WHERE id < 0), min(id) FROM t")
            .await?;
        assert_eq!(int64(&rows[0], 0), [4960]);
        assert_eq!(int64(&rows[0], 1), [40]);
        assert_eq!(int64(&rows[0], 2), [-4999]);
        Ok(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let vacuumed = vacuums.join().map_err(|_| "the vacuum thread panicked")?;
    result?;
    assert!(vacuumed > 10, "only {vacuumed} vacuums ran");
    Ok(())
}

fn int64(batch: &RecordBatch, column: usize) -> Vec<i64> {
    batch
        .column(column)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("int64 column")
        .values()
        .to_vec()
}

fn query_in_memory() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let session = db.session();
        session
            .execute("CREATE TABLE users (user_id BIGINT NOT NULL, city TEXT); INSERT INTO users VALUES (1, 'beijing'), (2, 'shanghai'), (3, 'beijing')")
            .await?;
        let batches = session
            .execute("SELECT city, count(*) AS n FROM users GROUP BY city ORDER BY n DESC, city")
            .await?;
        assert_eq!(batches.len(), 1);
        let cities = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text");
        assert_eq!(
            cities.iter().collect::<Vec<_>>(),
            vec![Some("beijing"), Some("shanghai")]
        );
        assert_eq!(int64(&batches[0], 1), vec![2, 1]);
        Ok(())
    })
}

fn data_survives_reopen() -> Result<(), Failed> {
    block_on(async {
        let dir = tempfile::tempdir()?;
        {
            let db = Database::open(dir.path())?;
            let session = db.session();
            session
                .execute("CREATE TABLE t (id BIGINT NOT NULL, v TEXT)")
                .await?;
            session
                .execute("INSERT INTO t SELECT value, 'v' || value FROM generate_series(1, 1000)")
                .await?;
            session.execute("DELETE FROM t WHERE id % 10 = 0").await?;
            session
                .execute("UPDATE t SET v = 'first' WHERE id = 1")
                .await?;
        }
        let db = Database::open(dir.path())?;
        let batches = db
            .session()
            .execute("SELECT count(*), sum(id), max(v) FROM t WHERE id < 5 OR id > 0")
            .await?;
        assert_eq!(int64(&batches[0], 0), vec![900]);
        assert_eq!(int64(&batches[0], 1), vec![450_000]);
        let first = db.session().execute("SELECT v FROM t WHERE id = 1").await?;
        let v = first[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text");
        assert_eq!(v.value(0), "first");
        Ok(())
    })
}

fn stream_results() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let session = db.session();
        let mut stream = session
            .execute_stream("CREATE TABLE n (x BIGINT); INSERT INTO n SELECT value FROM generate_series(1, 100000); SELECT x FROM n")
            .await?;
        let mut rows = 0;
        let mut batches = 0;
        while let Some(batch) = stream.next().await {
            rows += batch?.num_rows();
            batches += 1;
        }
        assert_eq!(rows, 100_000);
        assert!(batches > 1, "a large result arrives in several batches");
        Ok(())
    })
}

/// A statement that needs more working memory than the database allows fails
/// with 53200; the session goes on and smaller statements still run.
fn query_memory_limit() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory().with_query_memory(4 << 20);
        let session = db.session();
        let err = session
            .execute("SELECT x, count(*) FROM generate_series(1, 3000000) AS t(x) GROUP BY x")
            .await
            .expect_err("a 3M-group aggregate does not fit in 4 MiB");
        assert_eq!(err.sqlstate(), "53200");
        assert!(err.to_string().starts_with("out of memory: "), "{err}");
        let batches = session
            .execute("SELECT count(*) FROM generate_series(1, 3000000)")
            .await?;
        assert_eq!(int64(&batches[0], 0), [3_000_000]);
        Ok(())
    })
}

/// Warnings reach the embedding API; those of earlier statements are not kept.
fn notices_of_the_last_statement() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let session = db.session();
        session.execute("COMMIT").await?;
        assert_eq!(
            session.take_messages(),
            [cohortdb::Message::Notice {
                severity: "WARNING",
                code: "25P01",
                message: "there is no transaction in progress".into(),
            }]
        );
        assert_eq!(session.take_messages(), []);
        session.execute("COMMIT").await?;
        session.execute("SELECT 1").await?;
        assert_eq!(session.take_messages(), []);
        Ok(())
    })
}

/// Roles and their verifiers are kept with the catalog across a reopen.
fn roles_survive_reopen() -> Result<(), Failed> {
    block_on(async {
        let dir = tempfile::tempdir()?;
        {
            let db = Database::open(dir.path())?;
            assert!(!db.has_password_login());
            db.set_password("admin", "s3cret")?;
            db.session()
                .execute("CREATE ROLE reader LOGIN PASSWORD 'r'; CREATE ROLE gone; DROP ROLE gone")
                .await?;
        }
        let db = Database::open(dir.path())?;
        assert!(db.has_password_login());
        let session = db.session();
        let err = session
            .execute("CREATE ROLE reader")
            .await
            .expect_err("reader exists after reopen");
        assert_eq!(
            (err.sqlstate(), err.to_string().as_str()),
            ("42710", "role \"reader\" already exists")
        );
        session.execute("CREATE ROLE gone").await?;
        Ok(())
    })
}

fn typed_errors() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let session = db.session();
        let err = session
            .execute("SELECT * FROM missing")
            .await
            .expect_err("no such table");
        assert_eq!(err.sqlstate(), "42P01");
        assert_eq!(
            err.to_string(),
            "relation \"missing\" does not exist (at line 1, column 15)"
        );
        let err = session.execute("SELECT 1 +").await.expect_err("syntax");
        assert_eq!(err.sqlstate(), "42601");
        assert_eq!(
            err.position(),
            Some(cohortdb::Position {
                line: 1,
                column: 11
            })
        );
        session.execute("CREATE TABLE t (id INT NOT NULL)").await?;
        let err = session
            .execute("INSERT INTO t VALUES (1), (NULL)")
            .await
            .expect_err("not null");
        assert_eq!(err.sqlstate(), "23502");
        assert!(matches!(err, cohortdb::Error::Engine { .. }));
        Ok(())
    })
}

fn second_open_is_locked() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let _db = Database::open(dir.path())?;
    let err = Database::open(dir.path()).err().expect("locked");
    assert_eq!(err.sqlstate(), "55006");
    assert!(
        err.to_string().contains("is locked by another process"),
        "{err}"
    );
    Ok(())
}

fn demo_is_deterministic() -> Result<(), Failed> {
    block_on(async {
        let config = cohortdb::DemoConfig {
            users: 3_000,
            seed: 9,
            ..Default::default()
        };
        let mut answers = Vec::new();
        for _ in 0..2 {
            let db = Database::open_in_memory();
            db.load_demo(&config, &mut |_, _| {})?;
            let batches = db
                .session()
                .execute(
                    "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM items) AS items, \
                     (SELECT count(*) FROM events) AS events, \
                     (SELECT count(*) FROM events WHERE event_type = 'purchase') AS purchases, \
                     (SELECT sum(amount) FROM events) AS revenue",
                )
                .await?;
            answers.push(arrow::util::pretty::pretty_format_batches(&batches)?.to_string());
        }
        assert_eq!(answers[0], answers[1]);
        assert!(answers[0].contains("| 3000 "), "{}", answers[0]);
        Ok(())
    })
}

fn sessions_share_data() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let writer = db.session();
        let reader = db.session();
        writer
            .execute("CREATE TABLE t (x BIGINT); INSERT INTO t VALUES (1)")
            .await?;
        // A stream opened before a write keeps reading its snapshot.
        let before = reader.execute_stream("SELECT x FROM t").await?;
        writer.execute("INSERT INTO t VALUES (2)").await?;
        let rows: usize = futures::TryStreamExt::try_collect::<Vec<_>>(before)
            .await?
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 1);
        let after = reader.execute("SELECT count(*) FROM t").await?;
        assert_eq!(int64(&after[0], 0), vec![2]);
        assert!(after[0].column(0).null_count() == 0);
        Ok(())
    })
}

fn filters_push_into_scans() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let session = db.session();
        session
            .execute("CREATE TABLE u (id BIGINT, city TEXT, age INT)")
            .await?;
        let plan = |sql: &'static str| {
            let session = &session;
            async move {
                let batches = session.execute(&format!("EXPLAIN {sql}")).await?;
                Ok::<_, Failed>(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
            }
        };
        // The engine evaluates comparisons, IN, BETWEEN and NULL tests itself.
        let pushed = plan("SELECT id FROM u WHERE city IN ('a', 'b') AND age BETWEEN 20 AND 30 AND id IS NOT NULL").await?;
        assert!(pushed.contains("full_filters="), "{pushed}");
        assert!(!pushed.contains("FilterExec"), "{pushed}");
        // Arithmetic stays in DataFusion's filter.
        let kept = plan("SELECT id FROM u WHERE age + 1 > 30").await?;
        assert!(kept.contains("FilterExec"), "{kept}");
        assert!(!kept.contains("full_filters="), "{kept}");
        Ok(())
    })
}

/// Audiences from Rust: counted and listed without SQL, the same as SQL gives,
/// with the same errors.
fn audiences_without_sql() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let session = db.session();
        for sql in [
            "CREATE TABLE users (user_id TEXT USER KEY, city TEXT)",
            "INSERT INTO users VALUES ('ann', 'a'), ('bob', 'b'), ('cy', 'a')",
            "CREATE TAG INDEX ON users (city)",
        ] {
            session.execute(sql).await?;
        }
        assert_eq!(db.audience_count("city=a")?, 2);
        assert_eq!(db.audience_count("NOT city=a")?, 1);
        let ids = db.audience("city=a")?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("TEXT ids")?;
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![Some("ann"), Some("cy")]
        );
        let error = db.audience_count("city=").expect_err("syntax");
        assert_eq!(error.sqlstate(), "42601");
        assert_eq!(
            error.to_string(),
            "invalid audience expression at character 6: expected a value, found the end of the expression"
        );
        assert_eq!(db.tags().stored.len(), 0);
        Ok(())
    })
}

/// `in_audience(user_id, expr)` becomes part of the scan: the audience is
/// evaluated once, and row groups of segment files whose user ids all fall
/// outside the audience's are not read. Here 400,000 users sorted by id make
/// four row groups; an audience of ids below 1,000 reads one.
fn audiences_push_into_scans() -> Result<(), Failed> {
    block_on(async {
        let dir = tempfile::tempdir()?;
        let db = Database::open(dir.path())?;
        let session = db.session();
        for sql in [
            "CREATE TABLE users (user_id BIGINT USER KEY, city TEXT)",
            "INSERT INTO users SELECT x, CASE WHEN x % 3 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 400000) g(x)",
            "CHECKPOINT",
            "CREATE TAG INDEX ON users (city)",
            "CREATE TAG early AS SELECT user_id FROM users WHERE user_id < 1000",
        ] {
            session.execute(sql).await?;
        }
        let query = "SELECT count(*) FROM users WHERE in_audience(user_id, 'early AND city=a')";
        let batches = session.execute(query).await?;
        assert_eq!(int64(&batches[0], 0), vec![333]);
        let explain = session.execute(&format!("EXPLAIN ANALYZE {query}")).await?;
        let plan = arrow::util::pretty::pretty_format_batches(&explain)?.to_string();
        assert!(!plan.contains("FilterExec"), "{plan}");
        assert!(
            plan.contains("EngineScanExec: table=users, partitions=1, batches=1"),
            "{plan}"
        );
        // Without the pushdown (an expression around the call), every row
        // group is read and the answer is the same.
        let kept =
            "SELECT count(*) FROM users WHERE in_audience(user_id, 'early AND city=a') IS TRUE";
        let batches = session.execute(kept).await?;
        assert_eq!(int64(&batches[0], 0), vec![333]);
        let explain = session.execute(&format!("EXPLAIN {kept}")).await?;
        let plan = arrow::util::pretty::pretty_format_batches(&explain)?.to_string();
        assert!(plan.contains("FilterExec"), "{plan}");
        assert!(plan.contains("batches=4"), "{plan}");
        Ok(())
    })
}

/// docs/examples/experiment.sql on the default demo data: the planted 20% revenue
/// lift of variation 2 is found (p < 0.001, its CI holds 0.2), variation 1 (no
/// effect) is not significant at 0.1%, conversion (untouched) shows no
/// difference at 1%, and the assignment passes the sample-ratio check.
fn experiment_worked_example() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        db.load_demo(&cohortdb::DemoConfig::default(), &mut |_, _| {})?;
        let script = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/experiment.sql"
        ))?;
        let batches = db.session().execute(&script).await?;
        let report = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
        let column = |name: &str| -> Vec<Option<f64>> {
            let column = batch.column_by_name(name).expect("report column");
            let values = column
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .expect("double");
            values.iter().collect()
        };
        let (low, high, p) = (
            column("lift_ci_low"),
            column("lift_ci_high"),
            column("p_value"),
        );
        // Rows: revenue for variations 0, 1, 2, then converted for 0, 1, 2.
        assert_eq!(batch.num_rows(), 6, "{report}");
        assert_eq!(p[0], None, "control has no p-value: {report}");
        assert!(p[1] > Some(0.001), "variation 1 has no effect: {report}");
        assert!(
            p[2] < Some(0.001) && low[2] < Some(0.2) && high[2] > Some(0.2),
            "variation 2 has the planted 20%: {report}"
        );
        assert!(
            p[4] > Some(0.01) && p[5] > Some(0.01),
            "conversion is untouched: {report}"
        );
        let srm = batch.column_by_name("srm_flag").expect("srm flag");
        let srm = srm
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .expect("bool");
        assert!(srm.iter().all(|f| f == Some(false)), "{report}");
        Ok(())
    })
}

/// Result rows as `a|b|c` text, NULL as `NULL`.
fn rows(batches: Vec<RecordBatch>) -> Vec<String> {
    let options = arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| {
                    arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)
                        .expect("formats")
                        .value(row)
                        .to_string()
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows
}

/// REFRESH RECOMMENDER of an item-kNN model says in a NOTICE how many items'
/// neighbours it computed; after it, recommendations are those of a build
/// from scratch.
fn refreshed_recommenders_say_what_was_computed() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        let session = db.session();
        // Items 1-5 among users 1-40, each user on the items i with
        // (user + i) % 3 != 0 and, from user 20 on, i <= 3.
        session
            .execute(
                "CREATE TABLE likes (user_id BIGINT USER KEY, item_id BIGINT);
                 INSERT INTO likes SELECT u, i FROM generate_series(1, 40) AS a(u),
                   generate_series(1, 5) AS b(i) WHERE (u + i) % 3 <> 0 AND (u < 20 OR i <= 3);
                 CREATE RECOMMENDER r ON likes (user_id, item_id) USING item_knn 'neighbours=2'",
            )
            .await?;
        let notice = |message: &str| {
            vec![cohortdb::Message::Notice {
                severity: "NOTICE",
                code: "00000",
                message: message.to_string(),
            }]
        };
        session.execute("REFRESH RECOMMENDER r").await?;
        assert_eq!(
            session.take_messages(),
            notice(
                "recommender \"r\": neighbours computed for 0 of 5 items, carried over for the rest"
            )
        );
        // User 30 takes item 5: item 5 is computed again, and so is item 4,
        // whose list (M = 2) held 5 last and sees that similarity fall (6
        // users in common: 6/√(13·12) before, 6/√(13·13) after), so the items
        // its previous list left out are looked at again.
        session
            .execute("INSERT INTO likes VALUES (30, 5); REFRESH RECOMMENDER r")
            .await?;
        assert_eq!(
            session.take_messages(),
            notice(
                "recommender \"r\": neighbours computed for 2 of 5 items, carried over for the rest"
            )
        );
        let everyone = "SELECT user_id, item_id, score, reason_item_id FROM recommend_batch";
        let refreshed = rows(session.execute(&format!("{everyone}('r', '*', 3)")).await?);
        session
            .execute("CREATE RECOMMENDER whole ON likes (user_id, item_id) USING item_knn 'neighbours=2'")
            .await?;
        let whole = rows(
            session
                .execute(&format!("{everyone}('whole', '*', 3)"))
                .await?,
        );
        // Every user's unseen items up to 3: users 1-19 have 3 or 4 items (1
        // or 2 unseen: 6·1 + 13·2), users 20-40 two of items 1-3 (3 unseen),
        // user 30 now also 5.
        assert_eq!(refreshed.len(), 6 + 13 * 2 + 20 * 3 + 2);
        assert_eq!(refreshed, whole);
        // A rebuild from scratch when most items changed.
        session
            .execute(
                "UPDATE likes SET item_id = item_id + 10 WHERE item_id > 1; REFRESH RECOMMENDER r",
            )
            .await?;
        assert_eq!(
            session.take_messages(),
            notice(
                "recommender \"r\": neighbours computed for 5 of 5 items, carried over for the rest"
            )
        );
        Ok(())
    })
}

/// docs/examples/recommendations.sql on the default demo data gives the
/// figures docs/recommendations.md shows.
fn recommendations_worked_example() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        db.load_demo(&cohortdb::DemoConfig::default(), &mut |_, _| {})?;
        let script = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/recommendations.sql"
        ))?;
        // Each statement's rows, in order (the script has no `;` but the
        // statements').
        let session = db.session();
        let mut results = Vec::new();
        for statement in script.split(';') {
            let code = statement
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if !code.trim().is_empty() {
                results.push(rows(session.execute(&code).await?));
            }
        }
        // Statements that return rows: DELETE and INSERT (their counts), then
        // the SELECTs.
        let returned: Vec<&Vec<String>> = results.iter().filter(|r| !r.is_empty()).collect();
        assert_eq!(
            returned,
            [
                &vec!["0".to_string()],
                &vec!["945614".to_string()],
                &vec!["for_you|item_knn|100000|1000|814242".to_string()],
                &[
                    "1|1|electronics|1.478|3|game_cards|personal",
                    "2|2|grocery|1.306|3|game_cards|personal",
                    "3|4|apparel|1.081|3|game_cards|personal",
                    "4|5|apparel|0.997|3|game_cards|personal",
                    "5|6|game_cards|0.944|3|game_cards|personal",
                ]
                .map(String::from)
                .to_vec(),
                &[
                    "3|1.0|0.557|0.377",
                    "15|1.0|0.302|0.205",
                    "18|1.0|0.285|0.193"
                ]
                .map(String::from)
                .to_vec(),
                &[
                    "25|1|2|1.101",
                    "25|2|4|0.911",
                    "25|3|12|0.909",
                    "64|1|3|6.913",
                    "64|2|12|6.158",
                    "64|3|5|5.825",
                    "91|1|1|2.529",
                    "91|2|3|2.015",
                    "91|3|4|1.824",
                ]
                .map(String::from)
                .to_vec(),
                &[
                    "2|0.612|28195|0.431|1.02",
                    "3|0.557|21380|0.327|1.04",
                    "4|0.508|16803|0.257|1.05",
                ]
                .map(String::from)
                .to_vec(),
                &["1|21801.0|9182", "2|10915.0|5869", "3|7509.0|4493"]
                    .map(String::from)
                    .to_vec(),
            ]
        );
        Ok(())
    })
}

/// docs/examples/lookalike.sql on the default demo data gives the figures
/// docs/lookalike.md shows.
fn lookalike_worked_example() -> Result<(), Failed> {
    block_on(async {
        let db = Database::open_in_memory();
        db.load_demo(&cohortdb::DemoConfig::default(), &mut |_, _| {})?;
        let script = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/lookalike.sql"
        ))?;
        let session = db.session();
        let explained = session.execute(&script).await?;
        assert_eq!(
            rows(explained),
            [
                "event_type=purchase|7.225|3.49",
                "event_type=add_to_cart|0.244|1.16",
                "city=chengdu|0.073|1.21",
                "event_type=click|0.052|1.03",
                "channel=ads|0.036|1.13",
            ]
        );
        let query = |sql: &'static str| {
            let session = db.session();
            async move { Ok::<_, Failed>(rows(session.execute(sql).await?)) }
        };
        assert_eq!(
            query(
                "SELECT audience_count('book_buyers'), audience_count('book_lookalikes'), \
                 audience_count('book_lookalikes AND event_type=purchase'), \
                 audience_count('book_lookalikes AND book_buyers')"
            )
            .await?,
            ["1273|5000|5000|0"]
        );
        assert_eq!(
            query(
                "SELECT tag, seed_users, population_users, round(lift, 2), round(weight, 3) \
                 FROM lookalike_weights('book_buyers') ORDER BY weight DESC LIMIT 2"
            )
            .await?,
            [
                "event_type=purchase|1273|28694|3.49|7.225",
                "event_type=add_to_cart|706|47834|1.16|0.244"
            ]
        );
        assert_eq!(
            query(
                "SELECT method, round(auc, 3), round(lift_at_10, 2), round(recall_at_20, 3) \
                 FROM lookalike_eval('book_buyers')"
            )
            .await?,
            ["log_odds|0.864|3.64|0.722"]
        );
        Ok(())
    })
}

/// tests/fixtures/format-v1 is a data directory written by format version 1
/// (two tables, every column type, NULLs, a deleted row, a dropped table, a
/// role with a password); every later version must open it and show the same
/// data. It is opened from a copy, as opening takes the directory's lock.
fn format_v1_golden_directory() -> Result<(), Failed> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1");
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("data");
    std::fs::create_dir_all(copy.join("segments"))?;
    std::fs::copy(fixture.join("manifest.json"), copy.join("manifest.json"))?;
    for entry in std::fs::read_dir(fixture.join("segments"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), copy.join("segments").join(entry.file_name()))?;
    }
    let data = copy.clone();
    block_on(async move {
        let db = Database::open(&data)?;
        let session = db.session();
        let text = |batches: Vec<RecordBatch>| -> Vec<String> {
            let options = arrow::util::display::FormatOptions::default().with_null("NULL");
            let mut rows = Vec::new();
            for batch in &batches {
                let formatters: Vec<_> = batch
                    .columns()
                    .iter()
                    .map(|c| {
                        arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)
                            .expect("formats")
                    })
                    .collect();
                for row in 0..batch.num_rows() {
                    let cells: Vec<String> = formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect();
                    rows.push(cells.join("|"));
                }
            }
            rows
        };
        let users = session
            .execute("SELECT * FROM users ORDER BY user_id")
            .await?;
        assert_eq!(
            text(users),
            [
                "1|beijing|25|100.50|true|2024-01-01|2026-01-01T10:00:00|2026-01-01T10:00:00Z|0.5|3|1.25|0102",
                "2|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
                "3|xi'an \"quoted\"|41|0.00|false|2025-12-31|2026-03-15T23:59:59.500|2026-03-15T23:59:59.500Z|-1e-7|-32768|3.5|",
            ]
        );
        let events = session
            .execute("SELECT user_id, kind, ts FROM events ORDER BY ts")
            .await?;
        assert_eq!(
            text(events),
            [
                "1|view|2026-01-01T10:00:00",
                "1|purchase|2026-01-02T10:00:00",
                "3|view|2026-02-01T00:00:00",
            ]
        );
        let tables = session
            .execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
            .await?;
        assert_eq!(text(tables), ["events", "users"]);
        let roles = session
            .execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'analyst'")
            .await?;
        assert_eq!(text(roles), ["analyst|true"]);
        Ok::<_, Failed>(())
    })?;
    // Opening converted the directory to format version 2 and removed the
    // version 1 files; it passes the validator.
    let names: Vec<String> = std::fs::read_dir(&copy)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(names.contains(&"MANIFEST".to_string()), "{names:?}");
    assert!(!names.contains(&"manifest.json".to_string()), "{names:?}");
    for entry in std::fs::read_dir(copy.join("segments"))? {
        let path = entry?.path();
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("parquet"));
    }
    let report = cohortdb::check(&copy);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!((report.tables, report.rows), (2, 6));
    Ok(())
}
