//! The `audience` suite: audience counts, a listing and a profile over a tag
//! store of users (about 400 tags over twenty skewed attributes, and 30-day
//! behaviour windows over per-day event bitmaps), timed on cohortdb
//! (`audience_count` and friends through SQL, in-process) against
//!
//! - a raw lower bound: the same bitmaps built with roaring in this process
//!   and the same set algebra in direct roaring calls ([`raw`]);
//! - DuckDB on the same data, tags as columns of a wide users table and as a
//!   long `user_tags(user_id, tag)` table (set operations, and GROUP BY
//!   HAVING), the best of the three per workload;
//! - chDB with a precomputed `groupBitmap` state per tag and per event type
//!   and day, combined with bitmapAnd/bitmapOr/bitmapAndnot.
//!
//! Every system's answers are checked equal to the raw bound's before
//! anything is timed; a difference stops the run. The data and each
//! system's database are built once per (users, tags, seed) under the
//! system temp directory ([`data`], [`load`]) and reused.
//!
//! Memory: cohortdb's tag store bytes (`cohortdb_tags`), the loading child's
//! and this process's resident memory, the peers' peaks, and an estimate for
//! 100M users × 1,000 tags from a model of roaring's sizes checked against
//! the bytes measured here.

pub mod data;
mod expr;
pub mod load;
mod notes;
mod peers;
mod raw;

use std::collections::BTreeMap;
use std::time::Instant;

use cohortdb::Database;
use cohortdb::arrow::array::{AsArray, RecordBatch};
use cohortdb::arrow::datatypes::Int64Type;

use crate::check::{self, Rows};
use crate::memory::{status_kib, vm_hwm_kib, vm_rss_kib};
use crate::peers::Peer;
use crate::report::median;
use crate::suites::{PeerSetup, SuiteResult, Workload, cohortdb_run, setup_peers};
use expr::{Expr, not, one_of, value};
use notes::{Context, MemoryFigures};
use peers::{load_peer, run_peer_workloads};
use raw::RawTags;

/// The raw bound's column in the results.
const RAW: &str = "raw roaring";

/// What a workload computes from its audience.
#[derive(Clone, Copy)]
enum Kind {
    /// How many users.
    Count,
    /// The users' ids (`audience()`).
    List,
    /// How the audience spreads over an indexed column's values
    /// (`audience_profile`).
    Profile(&'static str),
}

struct Audience {
    name: &'static str,
    expr: Expr,
    kind: Kind,
}

/// The five-tag mix: the workload of DESIGN.md §5's bar, and the audience
/// listed and profiled.
fn five_tags() -> Expr {
    Expr::And(vec![
        value("gender", "f"),
        one_of("city", &["c000", "c001"]),
        value("age_band", "a002"),
        not(Expr::Flag("vip".into())),
    ])
}

fn audiences() -> Vec<Audience> {
    let today = data::day_number(data::TODAY);
    vec![
        Audience {
            name: "1 tag",
            expr: value("interest", "i002"),
            kind: Kind::Count,
        },
        Audience {
            name: "2-tag AND",
            expr: Expr::And(vec![value("gender", "f"), value("device", "d001")]),
            kind: Kind::Count,
        },
        Audience {
            name: "5-tag AND/OR/NOT",
            expr: five_tags(),
            kind: Kind::Count,
        },
        Audience {
            name: "10-tag AND/OR/NOT",
            expr: Expr::And(vec![
                Expr::Or(vec![
                    value("gender", "f"),
                    one_of("age_band", &["a001", "a002"]),
                ]),
                one_of("city", &["c000", "c001", "c002"]),
                value("device", "d000"),
                not(Expr::Or(vec![
                    value("membership", "m001"),
                    value("os", "o001"),
                ])),
                value("interest", "i000"),
            ]),
            kind: Kind::Count,
        },
        Audience {
            name: "30-day window AND 1 tag",
            expr: Expr::And(vec![
                Expr::Event {
                    event_type: "purchase".into(),
                    from: today - 29,
                    to: today,
                },
                value("gender", "f"),
            ]),
            kind: Kind::Count,
        },
        Audience {
            name: "list the 5-tag audience's ids",
            expr: five_tags(),
            kind: Kind::List,
        },
        Audience {
            name: "profile of the 5-tag audience over city (200 values)",
            expr: five_tags(),
            kind: Kind::Profile("city"),
        },
    ]
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn number(n: f64) -> String {
    format!("{n:.4}")
}

impl Audience {
    /// cohortdb's statement.
    fn cohortdb_sql(&self) -> String {
        let text = literal(&self.expr.cohortdb());
        match self.kind {
            Kind::Count => format!("SELECT audience_count({text})"),
            Kind::List => format!("SELECT * FROM audience({text})"),
            Kind::Profile(column) => format!(
                "SELECT value, users, share, population, tgi FROM audience_profile({text}, {}) \
                 ORDER BY value",
                literal(column)
            ),
        }
    }
}

/// A listing's answer: how many ids and their sum.
fn list_answer(batches: &[RecordBatch]) -> Result<Rows, String> {
    let (mut count, mut sum) = (0u64, 0f64);
    for batch in batches {
        let ids = batch
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or("audience() returns BIGINT ids")?;
        count += ids.len() as u64;
        sum += ids.values().iter().map(|&v| v as f64).sum::<f64>();
    }
    Ok(vec![vec![number(count as f64), number(sum)]])
}

/// cohortdb's answer to a workload, as the peers' answers are compared, and
/// the seconds it took.
async fn cohortdb_answer(
    session: &cohortdb::Session,
    audience: &Audience,
) -> Result<(Rows, f64), String> {
    let (seconds, batches) = cohortdb_run(session, &audience.cohortdb_sql()).await?;
    let rows = match audience.kind {
        Kind::List => list_answer(&batches)?,
        _ => check::normalise(&batches),
    };
    Ok((rows, seconds))
}

/// The raw bound's profile rows: (value, users, share, population, tgi) in
/// value order.
fn raw_profile(
    plan: &raw::Plan<'_>,
    raw: &RawTags,
    column: &str,
) -> Result<Vec<ProfileRow>, String> {
    let audience = plan.evaluate();
    let size = audience.len() as f64;
    let total = raw.universe().len() as f64;
    Ok(raw
        .column_values(column)?
        .into_iter()
        .map(|(value, users)| {
            let hit = audience.intersection_len(users);
            let population = users.len();
            let share = (size > 0.0).then(|| hit as f64 / size);
            let tgi = share
                .filter(|_| population > 0)
                .map(|s| 100.0 * s / (population as f64 / total));
            ProfileRow {
                value,
                users: hit,
                share,
                population,
                tgi,
            }
        })
        .collect())
}

struct ProfileRow {
    value: String,
    users: u64,
    share: Option<f64>,
    population: u64,
    tgi: Option<f64>,
}

/// The raw bound's answer to a workload.
fn raw_answer(raw: &RawTags, audience: &Audience) -> Result<Rows, String> {
    let plan = raw.plan(&audience.expr)?;
    Ok(match audience.kind {
        Kind::Count => vec![vec![number(plan.count() as f64)]],
        Kind::List => {
            let ids = raw.ids(&plan.evaluate());
            let sum: f64 = ids.iter().map(|&id| id as f64).sum();
            vec![vec![number(ids.len() as f64), number(sum)]]
        }
        Kind::Profile(column) => raw_profile(&plan, raw, column)?
            .into_iter()
            .map(|r| {
                let optional = |v: Option<f64>| v.map_or("NULL".to_string(), number);
                vec![
                    r.value,
                    number(r.users as f64),
                    optional(r.share),
                    number(r.population as f64),
                    optional(r.tgi),
                ]
            })
            .collect(),
    })
}

/// One timed run of the raw bound on a workload.
fn raw_run(plan: &raw::Plan<'_>, raw: &RawTags, kind: Kind) -> Result<f64, String> {
    let started = Instant::now();
    match kind {
        Kind::Count => {
            std::hint::black_box(plan.count());
        }
        Kind::List => {
            // The users' ids, looked up by ordinal as audience() does.
            std::hint::black_box(raw.ids(&plan.evaluate()));
        }
        Kind::Profile(column) => {
            std::hint::black_box(raw_profile(plan, raw, column)?);
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// What `cohortdb_tags` says of the tag store, by table.
async fn tag_store(session: &cohortdb::Session) -> Result<Vec<(String, u64, u64, u64)>, String> {
    let (_, batches) = cohortdb_run(
        session,
        "SELECT coalesce(table_name, '(stored)'), count(*), sum(users), sum(bytes) \
         FROM cohortdb_tags GROUP BY 1 ORDER BY 1",
    )
    .await?;
    Ok(check::normalise(&batches)
        .into_iter()
        .map(|row| {
            let n = |i: usize| row[i].parse::<f64>().unwrap_or(0.0) as u64;
            (row[0].clone(), n(1), n(2), n(3))
        })
        .collect())
}

/// Whether cohortdb has `audience_profile` (another engineer's work in
/// progress when this suite was written), and whether it is committed.
async fn profile_status(session: &cohortdb::Session) -> (bool, String) {
    let available = session
        .execute("SELECT * FROM audience_profile('gender=f', 'gender')")
        .await
        .is_ok();
    let committed = std::process::Command::new("git")
        .args([
            "log",
            "-1",
            "--format=%h",
            "--",
            "sql/src/functions/audience/audience_profile.rs",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let status = match (available, committed.is_empty()) {
        (false, _) => "not in this build: the profile workload was skipped".to_string(),
        (true, true) => "in this build but not committed yet (working tree)".to_string(),
        (true, false) => format!("committed ({committed})"),
    };
    (available, status)
}

/// Runs the suite; see the module documentation.
pub async fn audience(
    users: u64,
    tags: Option<usize>,
    seed: u64,
    runs: usize,
    peers: &[Peer],
) -> Result<SuiteResult, String> {
    let files = data::prepare(users, tags, seed)?;
    let cohortdb_load = load::cohortdb(&files)?;
    let anon_before_open_kib = status_kib("RssAnon:")?;
    let started = Instant::now();
    let db = Database::open(load::cohortdb_dir(&files)).map_err(|e| e.to_string())?;
    let open_seconds = started.elapsed().as_secs_f64();
    let session = db.session();
    let (profile, profile_note) = profile_status(&session).await;
    let audiences: Vec<Audience> = audiences()
        .into_iter()
        .filter(|a| profile || !matches!(a.kind, Kind::Profile(_)))
        .collect();
    let (answers, first_seconds, mut memory) =
        first_runs(&session, &audiences, anon_before_open_kib).await?;
    memory.directory_bytes = crate::memory::directory_bytes(&load::cohortdb_dir(&files))?;

    eprintln!("building the raw bitmaps");
    let started = Instant::now();
    let mut raw = RawTags::new(&files.layout);
    data::generate(users, seed, &files.layout, &mut raw)?;
    raw.compact();
    let raw_build_seconds = started.elapsed().as_secs_f64();
    (memory.raw_bytes, memory.raw_bitmaps) = raw.bytes();
    let expected = check_cohortdb(&raw, &audiences, &answers)?;

    let peers = Peer::among(peers, &[Peer::Duckdb, Peer::Chdb]);
    let (setups, versions) = setup_peers(&peers, &files.dir)?;
    let mut peer_loads = BTreeMap::new();
    for setup in &setups {
        peer_loads.insert(setup.peer.name().to_string(), load_peer(setup, &files)?);
    }
    let (mut workloads, api_seconds, floor) = time_here(&db, &raw, &audiences, users, runs).await?;
    memory.anon_with_raw_kib = status_kib("RssAnon:")?;
    let formulations = time_peers(
        &setups,
        &audiences,
        &expected,
        runs,
        &mut workloads,
        &mut memory,
    )?;

    let context = Context {
        files: &files,
        audiences: &audiences,
        expected: &expected,
        workloads: &workloads,
        formulations: &formulations,
        cohortdb_load: &cohortdb_load,
        peer_loads: &peer_loads,
        memory: &memory,
        open_seconds,
        raw_build_seconds,
        floor: &floor,
        api_seconds: &api_seconds,
        profile_note: &profile_note,
        first_seconds: &first_seconds,
    };
    let (notes, details) = (context.notes(), context.details());
    Ok(SuiteResult {
        workloads,
        versions,
        notes,
        details,
    })
}

/// cohortdb's first run of every workload (which reads each bitmap it uses
/// from its tag file, and for the profile builds the users' value ranks),
/// its answers and seconds, and its memory once it is done, before this
/// process allocates anything else.
async fn first_runs(
    session: &cohortdb::Session,
    audiences: &[Audience],
    anon_before_open_kib: u64,
) -> Result<(Vec<Rows>, Vec<f64>, MemoryFigures), String> {
    eprintln!("cohortdb: first run of each workload");
    let (mut answers, mut seconds) = (Vec::new(), Vec::new());
    for audience in audiences {
        let (rows, s) = cohortdb_answer(session, audience).await?;
        answers.push(rows);
        seconds.push(s);
    }
    let memory = MemoryFigures {
        tag_store: tag_store(session).await?,
        anon_before_open_kib,
        rss_after_warm_kib: vm_rss_kib()?,
        anon_after_warm_kib: status_kib("RssAnon:")?,
        file_after_warm_kib: status_kib("RssFile:")?,
        hwm_after_warm_kib: vm_hwm_kib()?,
        ..MemoryFigures::default()
    };
    Ok((answers, seconds, memory))
}

/// The raw bound's answers, checked equal to cohortdb's.
fn check_cohortdb(
    raw: &RawTags,
    audiences: &[Audience],
    answers: &[Rows],
) -> Result<Vec<Rows>, String> {
    if !raw.events_within_users() {
        return Err("the generator wrote events of users that do not exist".into());
    }
    let expected: Vec<Rows> = audiences
        .iter()
        .map(|a| raw_answer(raw, a))
        .collect::<Result<_, _>>()?;
    for ((audience, ours), expected) in audiences.iter().zip(answers).zip(&expected) {
        if let Some(d) = check::difference(expected, ours) {
            return Err(format!(
                "\"{}\": cohortdb differs from the raw bound: {d}\n  SQL: {}",
                audience.name,
                audience.cohortdb_sql()
            ));
        }
    }
    Ok(expected)
}

/// cohortdb's timings through its Rust API (`Database::audience_count` and
/// `Database::audience`, no SQL), where a workload has one.
type ApiSeconds = Vec<Option<Vec<f64>>>;

/// One timed run of a workload through cohortdb's Rust API.
fn api_run(db: &Database, audience: &Audience) -> Result<Option<f64>, String> {
    let text = audience.expr.cohortdb();
    let started = Instant::now();
    match audience.kind {
        Kind::Count => {
            std::hint::black_box(db.audience_count(&text).map_err(|e| e.to_string())?);
        }
        Kind::List => {
            std::hint::black_box(db.audience(&text).map_err(|e| e.to_string())?);
        }
        Kind::Profile(_) => return Ok(None),
    }
    Ok(Some(started.elapsed().as_secs_f64()))
}

/// Times the raw bound and cohortdb (SQL, and the Rust API) on every
/// workload, run by run in turn so that all see the same machine, and
/// cohortdb's `SELECT 1` (the SQL floor).
async fn time_here(
    db: &Database,
    raw: &RawTags,
    audiences: &[Audience],
    users: u64,
    runs: usize,
) -> Result<(Vec<Workload>, ApiSeconds, Vec<f64>), String> {
    eprintln!("timing the raw bound and cohortdb");
    let session = db.session();
    let mut workloads = Vec::new();
    let mut api_seconds = Vec::new();
    for audience in audiences {
        let plan = raw.plan(&audience.expr)?;
        let sql = audience.cohortdb_sql();
        let (mut bound, mut ours) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        let mut api = Vec::with_capacity(runs);
        for _ in 0..runs {
            bound.push(raw_run(&plan, raw, audience.kind)?);
            ours.push(cohortdb_run(&session, &sql).await?.0);
            api.extend(api_run(db, audience)?);
        }
        workloads.push(Workload {
            name: audience.name.to_string(),
            rows: users,
            bytes: None,
            seconds: BTreeMap::from([(RAW.to_string(), bound), ("cohortdb".to_string(), ours)]),
        });
        api_seconds.push((!api.is_empty()).then_some(api));
    }
    let mut floor = Vec::with_capacity(runs);
    for _ in 0..runs {
        floor.push(cohortdb_run(&session, "SELECT 1").await?.0);
    }
    Ok((workloads, api_seconds, floor))
}

/// Each peer's timings by formulation, per workload.
type Formulations = BTreeMap<String, Vec<peers::ByFormulation>>;

/// Checks and times every peer; each workload gets the peer's best
/// formulation's timings.
fn time_peers(
    setups: &[PeerSetup],
    audiences: &[Audience],
    expected: &[Rows],
    runs: usize,
    workloads: &mut [Workload],
    memory: &mut MemoryFigures,
) -> Result<Formulations, String> {
    let mut formulations = Formulations::new();
    for setup in setups {
        let (per_workload, peak) = run_peer_workloads(setup, audiences, expected, runs)?;
        for (workload, per) in workloads.iter_mut().zip(&per_workload) {
            let best = per
                .iter()
                .min_by(|a, b| median(&a.1).total_cmp(&median(&b.1)))
                .ok_or("a peer has a formulation of every workload")?;
            workload
                .seconds
                .insert(setup.peer.name().to_string(), best.1.clone());
        }
        if let Some(peak) = peak {
            memory
                .peers_peak_kib
                .insert(setup.peer.name().to_string(), peak);
        }
        formulations.insert(setup.peer.name().to_string(), per_workload);
    }
    Ok(formulations)
}

/// The hidden `audience-load` suite: loads the dataset into cohortdb at
/// `dir` and prints what it measured (see [`load`]).
pub async fn load_child(
    users: u64,
    tags: Option<usize>,
    seed: u64,
    dir: &std::path::Path,
) -> Result<(), String> {
    let files = data::prepare(users, tags, seed)?;
    load::child(&files, dir).await
}
