//! Audiences against a naive scan of the base tables: seeded random data in a
//! users table and an events table (tag indexes on both, the events' by day, a
//! rule tag), changed by inserts, deletes and updates between rounds, and
//! random audience expressions, each also written as SQL over the base tables.
//! `audience_count(expr)` and the users of `audience(expr)` must equal the
//! count and the users that SQL finds, on every round; on disk, reopening the
//! database (tags read from their files and the log) in between.
//!
//! `COHORTDB_AUDIENCE_SEED` replays a run; the seed is in every failure.

use arrow::array::{Array, Int64Array, RecordBatch};
use cohortdb::{Database, Session};
use cohortdb_engine::demo::Rng;
use libtest_mimic::{Failed, Trial};

use crate::{block_on, trial};

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "audiences::match_a_naive_scan_of_the_tables",
        match_a_naive_scan_of_the_tables,
    )]
}

const ROUNDS: usize = 12;
const EXPRESSIONS_PER_ROUND: usize = 25;
const CITIES: [&str; 4] = ["bj", "sh", "gz", "xi'an"];
const KINDS: [&str; 3] = ["view", "cart", "buy"];
/// Days of 2026-01 the events fall on.
const DAYS: u64 = 20;

fn match_a_naive_scan_of_the_tables() -> Result<(), Failed> {
    let seed = match std::env::var("COHORTDB_AUDIENCE_SEED") {
        Ok(seed) => seed
            .parse()
            .map_err(|e| format!("COHORTDB_AUDIENCE_SEED: {e}"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    run(seed).map_err(|e| Failed::from(format!("seed {seed}: {}", e.message().unwrap_or_default())))
}

fn run(seed: u64) -> Result<(), Failed> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir()?;
    let mut db = Database::open(dir.path())?;
    block_on(async {
        let session = db.session();
        for sql in [
            "CREATE TABLE users (user_id BIGINT USER KEY, gender TEXT, city TEXT, age INT, vip BOOLEAN)",
            "CREATE TABLE events (user_id BIGINT USER KEY, kind TEXT, ts TIMESTAMP)",
            "CREATE TAG INDEX ON users (gender, city, age, vip)",
            "CREATE TAG INDEX ON events (kind) TIME ts BY DAY",
            "CREATE TAG buyers AS SELECT user_id FROM events WHERE kind = 'buy'",
        ] {
            session.execute(sql).await?;
        }
        Ok(())
    })?;
    for round in 0..ROUNDS {
        let changes = changes(&mut rng);
        block_on(async {
            let session = db.session();
            for sql in &changes {
                session.execute(sql).await?;
            }
            session.execute("REFRESH TAG buyers").await?;
            Ok(())
        })?;
        if round % 3 == 2 {
            drop(db);
            db = Database::open(dir.path())?;
        }
        let expressions: Vec<(String, String)> = (0..EXPRESSIONS_PER_ROUND)
            .map(|_| expression(&mut rng, 3))
            .collect();
        block_on(async {
            let session = db.session();
            for (audience, predicate) in &expressions {
                let quoted = audience.replace('\'', "''");
                let count = one(&session, &format!("SELECT audience_count('{quoted}')")).await?;
                let naive = one(
                    &session,
                    &format!(
                        "SELECT count(*) FROM (SELECT user_id FROM users UNION SELECT user_id FROM events) u \
                         WHERE {predicate}"
                    ),
                )
                .await?;
                let differ = one(
                    &session,
                    &format!(
                        "SELECT count(*) FROM ((SELECT user_id FROM audience('{quoted}') \
                           EXCEPT SELECT user_id FROM (SELECT user_id FROM users UNION SELECT user_id FROM events) u WHERE {predicate}) \
                         UNION ALL (SELECT user_id FROM (SELECT user_id FROM users UNION SELECT user_id FROM events) u WHERE {predicate} \
                           EXCEPT SELECT user_id FROM audience('{quoted}')))"
                    ),
                )
                .await?;
                if count != naive || differ != 0 {
                    return Err(format!(
                        "round {round}: {audience:?}: audience_count {count}, the tables {naive}, \
                         {differ} users differ (SQL: {predicate})"
                    )
                    .into());
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The one BIGINT a query returns.
async fn one(session: &Session, sql: &str) -> Result<i64, Failed> {
    let batches: Vec<RecordBatch> = session.execute(sql).await?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| format!("no rows from {sql}"))?;
    let column = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| format!("not BIGINT from {sql}"))?;
    Ok(if column.is_null(0) {
        -1
    } else {
        column.value(0)
    })
}

/// A round's writes: new users and events, some deleted, some updated.
fn changes(rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    let users: Vec<String> = (0..1 + rng.below(40))
        .map(|_| {
            let id = rng.below(120);
            let gender = ["'f'", "'m'", "NULL"][rng.below(3) as usize];
            let city = match rng.below(5) {
                4 => "NULL".to_string(),
                c => format!("'{}'", CITIES[c as usize].replace('\'', "''")),
            };
            let age = match rng.below(6) {
                0 => "NULL".to_string(),
                _ => (18 + rng.below(50)).to_string(),
            };
            let vip = ["true", "false", "NULL"][rng.below(3) as usize];
            format!("({id}, {gender}, {city}, {age}, {vip})")
        })
        .collect();
    out.push(format!("INSERT INTO users VALUES {}", users.join(", ")));
    let events: Vec<String> = (0..1 + rng.below(80))
        .map(|_| {
            let id = 60 + rng.below(120);
            let kind = KINDS[rng.below(3) as usize];
            let day = 1 + rng.below(DAYS);
            let hour = rng.below(24);
            format!("({id}, '{kind}', TIMESTAMP '2026-01-{day:02} {hour:02}:30:00')")
        })
        .collect();
    out.push(format!("INSERT INTO events VALUES {}", events.join(", ")));
    match rng.below(4) {
        0 => out.push(format!(
            "DELETE FROM users WHERE user_id % 7 = {}",
            rng.below(7)
        )),
        1 => out.push(format!(
            "DELETE FROM events WHERE user_id % 5 = {} AND kind = '{}'",
            rng.below(5),
            KINDS[rng.below(3) as usize]
        )),
        2 => out.push(format!(
            "UPDATE users SET city = '{}' WHERE user_id % 4 = {}",
            CITIES[rng.below(3) as usize],
            rng.below(4)
        )),
        _ => {}
    }
    out
}

/// A random audience expression and the SQL predicate on `u.user_id` that
/// selects the same users from the base tables.
fn expression(rng: &mut Rng, depth: u32) -> (String, String) {
    let users_where =
        |condition: String| format!("u.user_id IN (SELECT user_id FROM users WHERE {condition})");
    if depth == 0 || rng.below(3) == 0 {
        return match rng.below(8) {
            0 => {
                let g = ["f", "m"][rng.below(2) as usize];
                (
                    format!("gender={g}"),
                    users_where(format!("gender = '{g}'")),
                )
            }
            1 => {
                let (a, b) = (CITIES[rng.below(4) as usize], CITIES[rng.below(4) as usize]);
                let quote = |c: &str| c.replace('\'', "''");
                (
                    format!("city IN ('{}', '{}')", quote(a), quote(b)),
                    users_where(format!("city IN ('{}', '{}')", quote(a), quote(b))),
                )
            }
            2 => {
                let n = 18 + rng.below(50);
                let op = [">", ">=", "<", "<="][rng.below(4) as usize];
                (
                    format!("age {op} {n}"),
                    users_where(format!("age {op} {n}")),
                )
            }
            3 => {
                let low = 18 + rng.below(50);
                let high = low + rng.below(20);
                (
                    format!("age BETWEEN {low} AND {high}"),
                    users_where(format!("age BETWEEN {low} AND {high}")),
                )
            }
            4 => ("vip".to_string(), users_where("vip".to_string())),
            5 => {
                let kind = KINDS[rng.below(3) as usize];
                let first = 1 + rng.below(DAYS);
                let last = first + rng.below(5);
                (
                    format!(
                        "kind={kind} DURING BETWEEN '2026-01-{first:02}' AND '2026-01-{last:02}'"
                    ),
                    format!(
                        "u.user_id IN (SELECT user_id FROM events WHERE kind = '{kind}' \
                         AND ts >= TIMESTAMP '2026-01-{first:02} 00:00:00' \
                         AND ts < TIMESTAMP '2026-01-{first:02} 00:00:00' + INTERVAL '{} days')",
                        last - first + 1
                    ),
                )
            }
            6 => {
                let kind = KINDS[rng.below(3) as usize];
                (
                    format!("kind={kind}"),
                    format!("u.user_id IN (SELECT user_id FROM events WHERE kind = '{kind}')"),
                )
            }
            _ => (
                "buyers".to_string(),
                "u.user_id IN (SELECT user_id FROM events WHERE kind = 'buy')".to_string(),
            ),
        };
    }
    match rng.below(3) {
        0 => {
            let (a, p) = expression(rng, depth - 1);
            (format!("NOT ({a})"), format!("NOT ({p})"))
        }
        n => {
            let op = if n == 1 { "AND" } else { "OR" };
            let parts: Vec<(String, String)> = (0..2 + rng.below(2))
                .map(|_| expression(rng, depth - 1))
                .collect();
            (
                parts
                    .iter()
                    .map(|(a, _)| format!("({a})"))
                    .collect::<Vec<_>>()
                    .join(&format!(" {op} ")),
                parts
                    .iter()
                    .map(|(_, p)| format!("({p})"))
                    .collect::<Vec<_>>()
                    .join(&format!(" {op} ")),
            )
        }
    }
}
