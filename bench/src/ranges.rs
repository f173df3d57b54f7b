//! The `ranges` suite: numeric range audiences (`spend > 10000`, `age BETWEEN
//! 25 AND 34`) over a tag index of two integer columns, one with tens of
//! thousands of distinct values (a heavy-tailed `spend` in cents) and one with 63
//! (`age`), timed on cohortdb (`audience_count` through SQL, in-process)
//! against
//!
//! - the per-value union: the values' bitmaps built with roaring in this
//!   process, a range answered as the union of the bitmaps of every value in
//!   it — what a range costs without the range levels (engine/src/tags.rs);
//! - DuckDB counting the rows of the same table that match.
//!
//! Every answer is checked equal before timing; the first range query after
//! opening, which builds the range levels of `spend`, is timed apart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cohortdb::Database;
use cohortdb::arrow::array::{ArrayRef, Int32Builder, Int64Builder, RecordBatch};
use cohortdb::arrow::datatypes::{DataType, Field, Schema};
use cohortdb_engine::demo::Rng;
use cohortdb_engine::export::FileWriter;
use cohortdb_engine::import::{CsvOptions, FileFormat};
use roaring::{MultiOps, RoaringBitmap};

use crate::check::{self, Rows};
use crate::peers::{Peer, Step};
use crate::report::{median, milliseconds};
use crate::suites::{SuiteResult, Workload, cohortdb_run, copy_sql, run_peer, setup_peers};

/// The per-value union's column in the results.
const PER_VALUE: &str = "per-value union";
/// cohortdb through `Database::audience_count`, no SQL: the tag store's own
/// cost.
const RUST_API: &str = "cohortdb rust api";

const CREATE: &str = "CREATE TABLE users (user_id BIGINT USER KEY, spend INTEGER, age INTEGER)";

/// Spend, in cents, is Pareto (alpha 1.2) from 10.00, capped here.
const SPEND_MAX: i32 = 100_000_000;

/// One user's spend and age, from the user's own stream of the seed.
fn user(rng: &mut Rng) -> (i32, i32) {
    let spend = (1000.0 / (1.0 - rng.f64()).powf(1.0 / 1.2)).min(f64::from(SPEND_MAX)) as i32;
    let age = 18 + rng.below(63) as i32;
    (spend, age)
}

/// Each column's values' users: the bitmaps of user ordinals, by value.
type ValueBitmaps = BTreeMap<&'static str, BTreeMap<i32, RoaringBitmap>>;

/// A range of a column: the audience expression and the SQL predicate.
struct Range {
    name: &'static str,
    column: &'static str,
    low: Option<i32>,
    high: Option<i32>,
    audience: &'static str,
}

fn ranges() -> Vec<Range> {
    vec![
        Range {
            name: "age BETWEEN 25 AND 34 (10 values)",
            column: "age",
            low: Some(25),
            high: Some(34),
            audience: "age BETWEEN 25 AND 34",
        },
        Range {
            name: "spend > 10000",
            column: "spend",
            low: Some(10001),
            high: None,
            audience: "spend > 10000",
        },
        Range {
            name: "spend BETWEEN 2000 AND 500000",
            column: "spend",
            low: Some(2000),
            high: Some(500000),
            audience: "spend BETWEEN 2000 AND 500000",
        },
        Range {
            name: "spend <= 1500",
            column: "spend",
            low: None,
            high: Some(1500),
            audience: "spend <= 1500",
        },
    ]
}

impl Range {
    fn sql(&self) -> String {
        let mut parts = Vec::new();
        if let Some(low) = self.low {
            parts.push(format!("{} >= {low}", self.column));
        }
        if let Some(high) = self.high {
            parts.push(format!("{} <= {high}", self.column));
        }
        format!("SELECT count(*) FROM users WHERE {}", parts.join(" AND "))
    }

    fn values<'a>(&self, bitmaps: &'a ValueBitmaps) -> impl Iterator<Item = &'a RoaringBitmap> {
        let low = self.low.unwrap_or(i32::MIN);
        let high = self.high.unwrap_or(i32::MAX);
        bitmaps[self.column].range(low..=high).map(|(_, b)| b)
    }
}

/// Writes (once) the users as Parquet; returns the file and each column's
/// values' bitmaps of user ordinals (user `i` has id `i + 1` and, loaded in
/// id order, ordinal `i`).
fn prepare(users: u64, seed: u64) -> Result<(PathBuf, ValueBitmaps), String> {
    let dir = std::env::temp_dir().join("cohortdb-bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("ranges-v2-users{users}-seed{seed}.parquet"));
    let write = !path.exists();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("spend", DataType::Int32, false),
        Field::new("age", DataType::Int32, false),
    ]));
    let part = path.with_extension("parquet.part");
    let mut writer = if write {
        eprintln!("generating {users} users into {}", path.display());
        Some(
            FileWriter::create(&part, FileFormat::Parquet, &CsvOptions::default(), &schema)
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let mut spends: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    let mut ages: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    let mut rng = Rng::new(seed);
    let mut next = 0u64;
    while next < users {
        let n = (users - next).min(65_536);
        let (mut id, mut spend, mut age) = (
            Int64Builder::new(),
            Int32Builder::new(),
            Int32Builder::new(),
        );
        for _ in 0..n {
            let (s, a) = user(&mut rng);
            spends.entry(s).or_default().push(next as u32);
            ages.entry(a).or_default().push(next as u32);
            id.append_value(next as i64 + 1);
            spend.append_value(s);
            age.append_value(a);
            next += 1;
        }
        if let Some(writer) = &mut writer {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(id.finish()),
                Arc::new(spend.finish()),
                Arc::new(age.finish()),
            ];
            let batch =
                RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
            writer.write(&batch).map_err(|e| e.to_string())?;
        }
    }
    if let Some(writer) = writer {
        writer.finish().map_err(|e| e.to_string())?;
        std::fs::rename(&part, &path).map_err(|e| e.to_string())?;
    }
    let bitmaps = |values: BTreeMap<i32, Vec<u32>>| {
        values
            .into_iter()
            .map(|(v, users)| {
                let bitmap = RoaringBitmap::from_sorted_iter(users).expect("ascending ordinals");
                (v, bitmap)
            })
            .collect()
    };
    Ok((
        path,
        BTreeMap::from([("spend", bitmaps(spends)), ("age", bitmaps(ages))]),
    ))
}

fn count_rows(n: u64) -> Rows {
    vec![vec![format!("{:.4}", n as f64)]]
}

pub async fn ranges_suite(
    users: u64,
    seed: u64,
    runs: usize,
    peers: &[Peer],
) -> Result<SuiteResult, String> {
    let (file, bitmaps) = prepare(users, seed)?;
    let peers = Peer::among(peers, &[Peer::Duckdb]);
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (setups, versions) = setup_peers(&peers, work.path())?;
    let dir = work.path().join("cohortdb");
    {
        let db = Database::open(&dir).map_err(|e| e.to_string())?;
        let session = db.session();
        for sql in [
            CREATE.to_string(),
            copy_sql(None, "users", &file, FileFormat::Parquet),
            "CREATE TAG INDEX ON users (spend, age)".to_string(),
            "CHECKPOINT".to_string(),
        ] {
            cohortdb_run(&session, &sql).await?;
        }
    }
    // Opened again: the tag index is read from its file, the range levels
    // are not built yet.
    let db = Database::open(&dir).map_err(|e| e.to_string())?;
    let session = db.session();
    let ranges = ranges();
    let audience_sql = |r: &Range| format!("SELECT audience_count('{}')", r.audience);
    let (first, _) = cohortdb_run(&session, &audience_sql(&ranges[1])).await?;

    let mut workloads = Vec::new();
    let mut covered = Vec::new();
    for range in &ranges {
        let expected = count_rows(range.values(&bitmaps).union().len());
        covered.push((range.name, range.values(&bitmaps).count()));
        let mut ours = Vec::new();
        let mut api = Vec::new();
        let mut per_value = Vec::new();
        for _ in 0..runs {
            let (s, batches) = cohortdb_run(&session, &audience_sql(range)).await?;
            if let Some(d) = check::difference(&expected, &check::normalise(&batches)) {
                return Err(format!("{}: cohortdb {d}", range.name));
            }
            ours.push(s);
            let started = Instant::now();
            let n = db
                .audience_count(range.audience)
                .map_err(|e| e.to_string())?;
            api.push(started.elapsed().as_secs_f64());
            if let Some(d) = check::difference(&expected, &count_rows(n)) {
                return Err(format!("{}: cohortdb's Rust API {d}", range.name));
            }
            let started = Instant::now();
            let n = std::hint::black_box(range.values(&bitmaps).union()).len();
            per_value.push(started.elapsed().as_secs_f64());
            if let Some(d) = check::difference(&expected, &count_rows(n)) {
                return Err(format!("{}: per-value union {d}", range.name));
            }
        }
        workloads.push((
            range,
            expected,
            Workload {
                name: range.name.to_string(),
                rows: users,
                bytes: None,
                seconds: BTreeMap::from([
                    ("cohortdb".to_string(), ours),
                    (RUST_API.to_string(), api),
                    (PER_VALUE.to_string(), per_value),
                ]),
            },
        ));
    }
    for setup in &setups {
        let mut steps = vec![Step {
            name: "load".into(),
            before: vec![],
            sql: vec![
                CREATE.replace(" USER KEY", ""),
                copy_sql(Some(setup.peer), "users", &file, FileFormat::Parquet),
            ],
            runs: 1,
            check: false,
        }];
        steps.extend(workloads.iter().map(|(range, _, _)| Step {
            name: range.name.to_string(),
            before: vec![],
            sql: vec![range.sql()],
            runs,
            check: true,
        }));
        let results = run_peer(setup, steps)?;
        for ((range, expected, workload), result) in workloads.iter_mut().zip(&results[1..]) {
            let actual = result.rows.as_ref().expect("checked step");
            if let Some(d) = check::difference(expected, actual) {
                return Err(format!("{}: {} {d}", range.name, setup.peer.name()));
            }
            workload
                .seconds
                .insert(setup.peer.name().to_string(), result.seconds.clone());
        }
    }
    let mut notes = format!(
        "{users} users; spend has {} distinct values, age {}. The first range query on \
         spend after opening (`{}`, building the range levels) took {} ms.\n\n\
         | workload | values in the range |\n|---|---|\n",
        bitmaps["spend"].len(),
        bitmaps["age"].len(),
        ranges[1].audience,
        milliseconds(first),
    );
    for (name, n) in &covered {
        notes.push_str(&format!("| {name} | {n} |\n"));
    }
    let workloads: Vec<Workload> = workloads.into_iter().map(|(_, _, w)| w).collect();
    for w in &workloads {
        eprintln!(
            "{}: cohortdb {} ms, per-value union {} ms",
            w.name,
            milliseconds(median(&w.seconds["cohortdb"])),
            milliseconds(median(&w.seconds[PER_VALUE]))
        );
    }
    Ok(SuiteResult {
        workloads,
        versions,
        notes,
        details: serde_json::Value::Null,
    })
}
