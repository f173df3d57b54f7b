//! The crash test: a `cohortdb sql` child process runs a seeded random
//! sequence of statements (INSERT, COPY from a file, DELETE, UPDATE,
//! CHECKPOINT, VACUUM) on one data directory and is killed with SIGKILL at a
//! random moment; the directory must then pass `cohortdb check`, and reopened
//! it must hold exactly what the statements the child acknowledged (printed
//! the command tag of) produced, plus the statement in flight either whole or
//! not at all; and its tags (the table's ids are its user key, its statement
//! numbers a tag index) must match its rows exactly. Many kills in a row on
//! the same directory, each recovery starting from the last.
//!
//! `COHORTDB_CRASH_SEED` replays a run; `COHORTDB_CRASH_KILLS` sets the
//! number of kills (default 200). The seed is in every failure message.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::Int64Array;
use cohortdb::Database;
use cohortdb_engine::demo::Rng;
use libtest_mimic::{Failed, Trial};

pub fn trials() -> Vec<Trial> {
    vec![crate::trial(
        "crash::sigkill_loses_no_acknowledged_statement",
        sigkill_loses_no_acknowledged_statement,
    )]
}

/// Per statement number: how many rows carry it and the sum of their ids.
type Model = BTreeMap<i64, (i64, i64)>;

/// One statement of the workload; `stmt` numbers are unique over the run.
#[derive(Debug, Clone)]
enum Op {
    /// Rows with ids 1..=rows and this statement's number.
    Insert {
        stmt: i64,
        rows: i64,
    },
    /// The same from a CSV file.
    Copy {
        stmt: i64,
        rows: i64,
    },
    /// Deletes the rows of statement `of` with even ids.
    Delete {
        of: i64,
    },
    /// Gives the rows of statement `of` with ids divisible by 3 the number
    /// `stmt`.
    Update {
        stmt: i64,
        of: i64,
    },
    Checkpoint,
    Vacuum,
}

impl Op {
    fn sql(&self, dir: &Path) -> std::io::Result<String> {
        Ok(match self {
            Op::Insert { stmt, rows } => {
                format!("INSERT INTO t SELECT x, {stmt} FROM generate_series(1, {rows}) g(x);")
            }
            Op::Copy { stmt, rows } => {
                let path = dir.join(format!("copy-{stmt}.csv"));
                let lines: String = (1..=*rows).map(|id| format!("{id},{stmt}\n")).collect();
                std::fs::write(&path, lines)?;
                format!("COPY t FROM '{}' (FORMAT csv);", path.display())
            }
            Op::Delete { of } => format!("DELETE FROM t WHERE stmt = {of} AND id % 2 = 0;"),
            Op::Update { stmt, of } => {
                format!("UPDATE t SET stmt = {stmt} WHERE stmt = {of} AND id % 3 = 0;")
            }
            Op::Checkpoint => "CHECKPOINT;".to_string(),
            Op::Vacuum => "VACUUM;".to_string(),
        })
    }

    fn apply(&self, model: &mut Model, ids: &mut BTreeMap<i64, Vec<i64>>) {
        let changed: Vec<(i64, Vec<i64>)> = match self {
            Op::Insert { stmt, rows } | Op::Copy { stmt, rows } => {
                vec![(*stmt, (1..=*rows).collect())]
            }
            Op::Delete { of } => {
                let all = ids.get(of).cloned().unwrap_or_default();
                vec![(*of, all.into_iter().filter(|id| id % 2 != 0).collect())]
            }
            Op::Update { stmt, of } => {
                let all = ids.get(of).cloned().unwrap_or_default();
                let (moved, kept): (Vec<i64>, Vec<i64>) =
                    all.into_iter().partition(|id| id % 3 == 0);
                vec![(*of, kept), (*stmt, moved)]
            }
            Op::Checkpoint | Op::Vacuum => Vec::new(),
        };
        for (stmt, list) in changed {
            if list.is_empty() {
                model.remove(&stmt);
            } else {
                model.insert(stmt, (list.len() as i64, list.iter().sum()));
            }
            ids.insert(stmt, list);
        }
    }
}

fn sigkill_loses_no_acknowledged_statement() -> Result<(), Failed> {
    let seed = match std::env::var("COHORTDB_CRASH_SEED") {
        Ok(seed) => seed
            .parse()
            .map_err(|e| format!("COHORTDB_CRASH_SEED: {e}"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    let kills: usize = match std::env::var("COHORTDB_CRASH_KILLS") {
        Ok(n) => n
            .parse()
            .map_err(|e| format!("COHORTDB_CRASH_KILLS: {e}"))?,
        Err(_) => 200,
    };
    run(seed, kills).map_err(|e| Failed::from(format!("seed {seed}: {e}")))
}

fn run(seed: u64, kills: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("data");
    {
        let db = Database::open(&data).map_err(|e| e.to_string())?;
        crate::block_on(async {
            let session = db.session();
            session
                .execute("CREATE TABLE t (id BIGINT USER KEY, stmt BIGINT NOT NULL)")
                .await?;
            session.execute("CREATE TAG INDEX ON t (stmt)").await?;
            Ok(())
        })
        .map_err(|e| format!("{e:?}"))?;
    }
    let mut rng = Rng::new(seed);
    let mut model = Model::new();
    let mut ids: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut next_stmt = 1i64;
    let mut in_flight_applied = 0usize;
    for kill in 0..kills {
        // The statements this child is given, planned on a copy of the model
        // so that deletes and updates name rows that will exist.
        let mut planned_model = model.clone();
        let mut planned_ids = ids.clone();
        let mut ops = Vec::new();
        for _ in 0..40 {
            let existing: Vec<i64> = planned_ids
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(s, _)| *s)
                .collect();
            let pick = |rng: &mut Rng| -> Option<i64> {
                (!existing.is_empty()).then(|| existing[rng.below(existing.len() as u64) as usize])
            };
            let roll = rng.below(100);
            let op = match roll {
                0..50 => Op::Insert {
                    stmt: next_stmt,
                    rows: 1 + rng.below(400) as i64,
                },
                50..60 => Op::Copy {
                    stmt: next_stmt,
                    rows: 1 + rng.below(400) as i64,
                },
                60..75 => match pick(&mut rng) {
                    Some(of) => Op::Delete { of },
                    None => Op::Checkpoint,
                },
                75..88 => match pick(&mut rng) {
                    Some(of) => Op::Update {
                        stmt: next_stmt,
                        of,
                    },
                    None => Op::Checkpoint,
                },
                88..96 => Op::Checkpoint,
                _ => Op::Vacuum,
            };
            if matches!(op, Op::Insert { .. } | Op::Copy { .. } | Op::Update { .. }) {
                next_stmt += 1;
            }
            op.apply(&mut planned_model, &mut planned_ids);
            ops.push(op);
        }
        let script: String = ops
            .iter()
            .map(|op| op.sql(dir.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| e.to_string())?
            .join("\n");
        let acknowledged = run_and_kill(&data, &script, Duration::from_millis(rng.below(400)))?;
        // The directory as the crash left it is sound.
        let report = cohortdb::check(&data);
        if !report.problems.is_empty() {
            return Err(format!("kill {kill}: check found {:?}", report.problems));
        }
        let found = contents(&data)?;
        for op in &ops[..acknowledged] {
            op.apply(&mut model, &mut ids);
        }
        if found != model {
            let Some(in_flight) = ops.get(acknowledged) else {
                return Err(format!(
                    "kill {kill}: after all {acknowledged} statements acknowledged: {}",
                    diff(&found, &model)
                ));
            };
            let mut with = model.clone();
            let mut with_ids = ids.clone();
            in_flight.apply(&mut with, &mut with_ids);
            if found != with {
                return Err(format!(
                    "kill {kill}: {acknowledged} statements acknowledged, {in_flight:?} in flight; without it: {}; with it: {}",
                    diff(&found, &model),
                    diff(&found, &with)
                ));
            }
            model = with;
            ids = with_ids;
            in_flight_applied += 1;
        }
    }
    // Both outcomes of a statement in flight must have been seen for the test
    // to mean something; with hundreds of kills at random times they are.
    if kills >= 100 && in_flight_applied == 0 {
        return Err("no kill landed after a statement took effect but before its acknowledgement; the kills are not landing inside statements".into());
    }
    Ok(())
}

/// The statement numbers whose (rows, sum of ids) differ: found vs expected.
fn diff(found: &Model, expected: &Model) -> String {
    let mut keys: Vec<&i64> = found.keys().chain(expected.keys()).collect();
    keys.sort();
    keys.dedup();
    let lines: Vec<String> = keys
        .into_iter()
        .filter(|k| found.get(k) != expected.get(k))
        .map(|k| {
            format!(
                "stmt {k}: found {:?}, expected {:?}",
                found.get(k),
                expected.get(k)
            )
        })
        .collect();
    lines.join("; ")
}

/// Runs `script` in a child on `data`, kills it with SIGKILL after `delay`
/// (unless it finished), and returns how many statements it acknowledged.
fn run_and_kill(data: &Path, script: &str, delay: Duration) -> Result<usize, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohortdb"))
        .args(["sql", "--data"])
        .arg(data)
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|line| !line.trim().is_empty())
            .count()
    });
    let started = Instant::now();
    while started.elapsed() < delay {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let status = child.wait().map_err(|e| e.to_string())?;
    let acknowledged = reader.join().map_err(|_| "reader panicked".to_string())?;
    if status.success() {
        return Ok(acknowledged);
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut stderr);
    }
    // Killed (no exit code); a failure of its own is a test failure.
    if status.code().is_some() {
        return Err(format!("the child failed: {stderr}"));
    }
    Ok(acknowledged)
}

/// What the reopened directory holds, per statement number, after checking
/// that its tags match its rows: each statement number's tag has the ids of
/// its rows (unique within a statement), no other statement number has a
/// tag, and every id is a user.
fn contents(data: &Path) -> Result<Model, String> {
    let db = Database::open(data).map_err(|e| e.to_string())?;
    let mut model = Model::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let batches = runtime
        .block_on(db.session().execute(
            "SELECT stmt, count(*), sum(id), audience_count('stmt=' || stmt) FROM t GROUP BY stmt",
        ))
        .map_err(|e| e.to_string())?;
    let totals = runtime
        .block_on(db.session().execute(
            "SELECT (SELECT count(*) FROM cohortdb_tags WHERE name LIKE 'stmt=%'), \
                    (SELECT count(DISTINCT stmt) FROM t), \
                    audience_count('NOT stmt=-1'), \
                    (SELECT count(DISTINCT id) FROM t)",
        ))
        .map_err(|e| e.to_string())?;
    let total = |i: usize| {
        totals[0]
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.value(0))
    };
    if total(0) != total(1) || total(2) != total(3) {
        return Err(format!(
            "tags out of step with rows: {:?} statement tags for {:?} statements, {:?} users for {:?} ids",
            total(0),
            total(1),
            total(2),
            total(3)
        ));
    }
    for batch in batches {
        let column = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| format!("column {i} is not BIGINT"))
        };
        let (stmt, count, sum, tagged) = (column(0)?, column(1)?, column(2)?, column(3)?);
        for row in 0..batch.num_rows() {
            if tagged.value(row) != count.value(row) {
                return Err(format!(
                    "tag stmt={} has {} users, the table {} rows",
                    stmt.value(row),
                    tagged.value(row),
                    count.value(row)
                ));
            }
            model.insert(stmt.value(row), (count.value(row), sum.value(row)));
        }
    }
    Ok(model)
}
