//! The `recommend-speed` suite: item-kNN at the issue's scale (1M users,
//! 100k items, 20M interactions by default) through SQL, against `implicit`
//! in the same run.
//!
//! Data: `--users` users and one item per ten users, the items in categories
//! of 100. Each user has a geometric number of interactions (mean 20, at
//! least 1) and a home category (categories drawn from a power law); an
//! interaction is with an item of the home category with probability 0.8 (the
//! item drawn from a power law within it), else with any item (a power law over
//! all: item i of m with probability ∝ i^−0.7, so the top 1% of items take
//! about a quarter of these draws). Tastes give the neighbourhoods structure;
//! the global draws make popular items everyone's neighbours, as in retail.
//! The (user, item) pairs are written once to a CSV that both sides load.
//!
//! cohortdb (in this process, one database on disk): `COPY` into
//! `interactions (user_id BIGINT USER KEY, item_id BIGINT)`, then `CREATE
//! RECOMMENDER r ... USING item_knn` (cosine, 200 neighbours) timed once, with
//! this process's resident memory before and after (the built model stays
//! loaded) and the file's size; the top 10 of 1,000 random users, each
//! `SELECT * FROM recommend('r', id, 10)` timed alone (p50, p99), and the
//! same through the engine API; and the top 10 of every user with
//! `recommend_batch('r', '*', 10)`, `runs` times. Then new interactions
//! arrive, `runs` times 0.1% and then `runs` times 1% of the users (each a
//! random user's, drawn as the data's are, INSERTed): each time `REFRESH
//! RECOMMENDER r` is timed, then a build from scratch of the same rows, and
//! the two models must be equal.
//!
//! The peer (bench/peers/recommend_speed_implicit.py): implicit's
//! CosineRecommender(K=200) fitted on the same pairs, then the top 10 of every
//! user (already-liked items filtered), in batches of 10,000 users.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cohortdb::Database;
use cohortdb_engine::demo::Rng;
use cohortdb_engine::recommend::{Request, Scores};
use serde_json::{Value, json};

use crate::memory::{vm_hwm_kib, vm_rss_kib};
use crate::report::median;
use crate::suites::{SuiteResult, Workload};

const BENCH_DIR: &str = env!("CARGO_MANIFEST_DIR");
const MEAN_INTERACTIONS: f64 = 20.0;
const POWER: f64 = 0.7;
const CATEGORY_ITEMS: u64 = 100;
const IN_CATEGORY: f64 = 0.8;
const SAMPLED_USERS: usize = 1_000;
const K: usize = 10;

/// An index below `n` from the power law ∝ (i + 1)^−POWER, by the inverse
/// of its continuous CDF (x/n)^(1−POWER).
fn power_law(rng: &mut Rng, n: u64) -> u64 {
    (((n as f64) * rng.f64().powf(1.0 / (1.0 - POWER))) as u64).min(n - 1)
}

/// The catalogue of `users` users: one item per ten users, in whole
/// categories.
fn catalogue(users: u64) -> u64 {
    (users / 10)
        .max(CATEGORY_ITEMS)
        .next_multiple_of(CATEGORY_ITEMS)
}

/// An item (from 0) of a user with home category `home` among `items`.
fn draw_item(rng: &mut Rng, items: u64, home: u64) -> u64 {
    if rng.f64() < IN_CATEGORY {
        home * CATEGORY_ITEMS + power_law(rng, CATEGORY_ITEMS)
    } else {
        power_law(rng, items)
    }
}

/// Writes the pairs of `users` users to `path` (once per size and seed);
/// returns (items, interactions).
fn generate(path: &Path, users: u64, seed: u64) -> Result<(u64, u64), String> {
    let items = catalogue(users);
    let categories = items / CATEGORY_ITEMS;
    let meta = path.with_extension("json");
    if let Ok(text) = std::fs::read_to_string(&meta)
        && let Ok(v) = serde_json::from_str::<Value>(&text)
        && path.exists()
    {
        return Ok((
            v["items"].as_u64().unwrap_or(items),
            v["interactions"].as_u64().unwrap_or(0),
        ));
    }
    eprintln!("generating {users} users' interactions");
    let mut rng = Rng::new(seed);
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "user_id,item_id").map_err(|e| e.to_string())?;
    let mut count = 0u64;
    let stop = 1.0 / MEAN_INTERACTIONS;
    for user in 1..=users {
        let home = power_law(&mut rng, categories);
        loop {
            let item = draw_item(&mut rng, items, home);
            writeln!(out, "{user},{}", item + 1).map_err(|e| e.to_string())?;
            count += 1;
            if rng.f64() < stop {
                break;
            }
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    std::fs::write(
        &meta,
        json!({"users": users, "items": items, "interactions": count}).to_string(),
    )
    .map_err(|e| e.to_string())?;
    Ok((items, count))
}

/// The column of a build from scratch beside a refresh.
const WHOLE: &str = "cohortdb from scratch";

/// Refreshes after the same number of new interactions.
struct Refresh {
    rows: u64,
    refresh_seconds: Vec<f64>,
    whole_seconds: Vec<f64>,
    /// What the last REFRESH said it computed.
    notice: String,
}

/// Appends 0.1% and then 1% of `users` new interactions to `interactions`,
/// `runs` times each, and times `REFRESH RECOMMENDER r` and a build from
/// scratch after each; the two models must be equal.
async fn refreshes<F, Fut>(
    db: &Database,
    run: &F,
    users: u64,
    seed: u64,
    runs: usize,
) -> Result<Vec<Refresh>, String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(f64, Vec<arrow::array::RecordBatch>), String>>,
{
    let mut rng = Rng::new(seed ^ 0xf2e5);
    let mut out = Vec::new();
    for rows in [users / 1000, users / 100] {
        let mut refresh = Refresh {
            rows: rows.max(1),
            refresh_seconds: Vec::new(),
            whole_seconds: Vec::new(),
            notice: String::new(),
        };
        for _ in 0..runs {
            refresh_once(db, run, &mut rng, &mut refresh, users).await?;
        }
        out.push(refresh);
    }
    run("DROP RECOMMENDER whole".into()).await?;
    Ok(out)
}

/// Appends `into.rows` new interactions, then times a refresh and a build
/// from scratch into `into`.
async fn refresh_once<F, Fut>(
    db: &Database,
    run: &F,
    rng: &mut Rng,
    into: &mut Refresh,
    users: u64,
) -> Result<(), String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(f64, Vec<arrow::array::RecordBatch>), String>>,
{
    let items = catalogue(users);
    let categories = items / CATEGORY_ITEMS;
    let rows = into.rows;
    eprintln!("cohortdb: {rows} new interactions, refresh and build from scratch");
    let values: Vec<String> = (0..rows)
        .map(|_| {
            let user = 1 + rng.below(users);
            let home = power_law(rng, categories);
            format!("({user}, {})", draw_item(rng, items, home) + 1)
        })
        .collect();
    run(format!(
        "INSERT INTO interactions VALUES {}",
        values.join(", ")
    ))
    .await?;
    let session = db.session();
    let started = Instant::now();
    session
        .execute("REFRESH RECOMMENDER r")
        .await
        .map_err(|e| e.to_string())?;
    let refresh_seconds = started.elapsed().as_secs_f64();
    let notice = match session.take_messages().as_slice() {
        [cohortdb::Message::Notice { message, .. }] => message.clone(),
        other => return Err(format!("REFRESH RECOMMENDER said {other:?}")),
    };
    let (whole_seconds, _) = run(
        "CREATE OR REPLACE RECOMMENDER whole ON interactions (user_id, item_id) USING item_knn"
            .into(),
    )
    .await?;
    let tags = db.tags();
    let model = |name: &str| tags.recommenders[name].model().map_err(|e| e.to_string());
    if model("r")? != model("whole")? {
        return Err(format!(
            "after {rows} new interactions the refreshed model differs from a build"
        ));
    }
    eprintln!("refresh {refresh_seconds:.1} s, from scratch {whole_seconds:.1} s: {notice}");
    into.refresh_seconds.push(refresh_seconds);
    into.whole_seconds.push(whole_seconds);
    into.notice = notice;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the suite; see the module documentation.
pub async fn recommend_speed(users: u64, seed: u64, runs: usize) -> Result<SuiteResult, String> {
    let python = crate::peers::ensure_packages(
        "pandas, scipy, implicit, threadpoolctl",
        &["pandas", "scipy", "implicit", "threadpoolctl"],
    )?;
    let dir = std::env::temp_dir().join("cohortdb-bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let csv = dir.join(format!("recommend-speed-v2-{users}-{seed}.csv"));
    let (items, interactions) = generate(&csv, users, seed)?;

    let data = dir.join(format!("recommend-speed-{users}-{seed}.db"));
    let _ = std::fs::remove_dir_all(&data);
    let db = Database::open(&data).map_err(|e| e.to_string())?;
    let session = db.session();
    let run = |sql: String| {
        let session = &session;
        async move {
            let started = Instant::now();
            let batches = session
                .execute(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            Ok::<_, String>((started.elapsed().as_secs_f64(), batches))
        }
    };
    eprintln!("cohortdb: loading {interactions} interactions");
    run("CREATE TABLE interactions (user_id BIGINT USER KEY, item_id BIGINT)".into()).await?;
    let (load_seconds, _) = run(format!(
        "COPY interactions FROM '{}' WITH (FORMAT csv, HEADER true)",
        csv.display()
    ))
    .await?;
    run("CHECKPOINT".into()).await?;

    eprintln!("cohortdb: building item-kNN");
    let rss_before = vm_rss_kib()?;
    let hwm_before = vm_hwm_kib()?;
    let (build_seconds, _) =
        run("CREATE RECOMMENDER r ON interactions (user_id, item_id) USING item_knn".into())
            .await?;
    let rss_after = vm_rss_kib()?;
    // The process's peak so far; when the build set it, its peak.
    let hwm_after = vm_hwm_kib()?;
    let stored = std::sync::Arc::clone(&db.tags().recommenders["r"]);
    let model = stored.model().map_err(|e| e.to_string())?;

    eprintln!("cohortdb: {SAMPLED_USERS} single-user top {K}s");
    let mut rng = Rng::new(seed ^ 0x5eed);
    let sample: Vec<u64> = (0..SAMPLED_USERS).map(|_| 1 + rng.below(users)).collect();
    let mut sql_ms = Vec::with_capacity(SAMPLED_USERS);
    for id in &sample {
        let (seconds, batches) = run(format!(
            "SELECT item_id, score FROM recommend('r', {id}, {K})"
        ))
        .await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows != K {
            return Err(format!("recommend for user {id}: {rows} rows, not {K}"));
        }
        sql_ms.push(seconds * 1e3);
    }
    let tags = db.tags();
    let ids = arrow::array::Int64Array::from(sample.iter().map(|&i| i as i64).collect::<Vec<_>>());
    let ordinals = tags.ordinals(&ids).map_err(|e| e.to_string())?;
    let request = Request {
        k: K,
        ..Request::default()
    };
    let mut scratch = Scores::default();
    let mut api_ms = Vec::with_capacity(SAMPLED_USERS);
    for ordinal in &ordinals {
        let started = Instant::now();
        let top = model.recommend(*ordinal, &request, &mut scratch);
        api_ms.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(top);
    }
    for v in [&mut sql_ms, &mut api_ms] {
        v.sort_by(f64::total_cmp);
    }
    eprintln!(
        "build {build_seconds:.1} s; one user's top {K}: SQL p50 {:.2} ms p99 {:.2} ms, engine API p50 {:.3} ms p99 {:.3} ms",
        percentile(&sql_ms, 0.5),
        percentile(&sql_ms, 0.99),
        percentile(&api_ms, 0.5),
        percentile(&api_ms, 0.99)
    );

    eprintln!("cohortdb: top {K} of every user, {runs} runs");
    let mut batch_seconds = Vec::new();
    let mut batch_rows = 0;
    for _ in 0..runs {
        let (seconds, batches) = run(format!(
            "SELECT count(*) FROM recommend_batch('r', '*', {K})"
        ))
        .await?;
        batch_seconds.push(seconds);
        batch_rows = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
            batches[0].column(0),
        )
        .value(0);
    }

    let refreshes = refreshes(&db, &run, users, seed, runs).await?;

    eprintln!("implicit: fitting and the top {K} of every user");
    let output = Command::new(&python)
        .arg(Path::new(BENCH_DIR).join("peers/recommend_speed_implicit.py"))
        .arg(&csv)
        .arg(runs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("recommend_speed_implicit.py: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "recommend_speed_implicit.py failed: {}",
            output.status
        ));
    }
    let peer: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("recommend_speed_implicit.py printed no JSON: {e}"))?;
    let seconds_of = |v: &Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let mut workloads = vec![
        Workload {
            name: "build item-kNN (cosine, 200 neighbours)".into(),
            rows: interactions,
            bytes: None,
            seconds: BTreeMap::from([
                ("cohortdb".to_string(), vec![build_seconds]),
                ("implicit".to_string(), seconds_of(&peer["fit_seconds"])),
            ]),
        },
        Workload {
            name: format!("top {K} of every user"),
            rows: model.interactions.user_count() as u64,
            bytes: None,
            seconds: BTreeMap::from([
                ("cohortdb".to_string(), batch_seconds.clone()),
                (
                    "implicit".to_string(),
                    seconds_of(&peer["recommend_seconds"]),
                ),
            ]),
        },
    ];
    for r in &refreshes {
        workloads.push(Workload {
            name: format!(
                "bring the model up to date after {} new interactions",
                r.rows
            ),
            rows: r.rows,
            bytes: None,
            seconds: BTreeMap::from([
                ("cohortdb".to_string(), r.refresh_seconds.clone()),
                (WHOLE.to_string(), r.whole_seconds.clone()),
                ("implicit".to_string(), seconds_of(&peer["fit_seconds"])),
            ]),
        });
    }
    let model_mib = (rss_after.saturating_sub(rss_before)) as f64 / 1024.0;
    let notes = format!(
        "{users} users, {items} items in categories of {CATEGORY_ITEMS}, {interactions} \
         interactions (mean {MEAN_INTERACTIONS} per user, {IN_CATEGORY} of them in the user's \
         home category, power laws {POWER}); {} users and {} distinct pairs in the model. \
         Loaded with COPY in {load_seconds:.1} s.\n\n\
         - build: {build_seconds:.1} s; resident memory {:.0} MiB before, peak {:.0} MiB \
         during the build{}, {:.0} MiB after it with the model loaded (+{model_mib:.0} MiB); \
         file {:.0} MiB\n\
         - top {K} for one user through SQL (`SELECT * FROM recommend('r', id, {K})`, \
         {SAMPLED_USERS} random users, each a statement): p50 {:.2} ms, p99 {:.2} ms \
         (bar: p50 ≤ 5 ms)\n\
         - the same through the engine API: p50 {:.3} ms, p99 {:.3} ms\n\
         - top {K} of every user (`recommend_batch('r', '*', {K})`, {batch_rows} rows): \
         median {:.1} s; implicit {:.1} s\n\
         - bringing the model up to date after new interactions (INSERTed): `REFRESH \
         RECOMMENDER r` against a build from scratch of the same rows (`{WHOLE}`, which \
         gave an equal model) and implicit's fit of the original pairs (it has no \
         update):\n{}",
        model.interactions.user_count(),
        model.interactions.len(),
        rss_before as f64 / 1024.0,
        hwm_after as f64 / 1024.0,
        if hwm_after > hwm_before {
            ""
        } else {
            " (at most: the load's peak was higher)"
        },
        rss_after as f64 / 1024.0,
        stored.entry.bytes as f64 / (1 << 20) as f64,
        percentile(&sql_ms, 0.5),
        percentile(&sql_ms, 0.99),
        percentile(&api_ms, 0.5),
        percentile(&api_ms, 0.99),
        median(&batch_seconds),
        median(&seconds_of(&peer["recommend_seconds"])),
        refreshes
            .iter()
            .map(|r| format!(
                "  - {} rows: refresh median {:.1} s, from scratch {:.1} s; the last said: {}\n",
                r.rows,
                median(&r.refresh_seconds),
                median(&r.whole_seconds),
                r.notice
            ))
            .collect::<String>(),
    );
    eprintln!("{notes}");
    let mut versions = BTreeMap::new();
    if let Some(v) = peer["versions"].as_object() {
        for (name, version) in v {
            versions.insert(name.clone(), version.as_str().unwrap_or("").to_string());
        }
    }
    drop(model);
    drop(db);
    let _ = std::fs::remove_dir_all(&data);
    Ok(SuiteResult {
        workloads,
        versions,
        notes,
        details: json!({
            "users": users,
            "items": items,
            "interactions": interactions,
            "model_users": stored.entry.users,
            "model_pairs": stored.entry.interactions,
            "load_seconds": load_seconds,
            "build_seconds": build_seconds,
            "resident_kib_before_build": rss_before,
            "resident_kib_after_build": rss_after,
            "peak_kib_before_build": hwm_before,
            "peak_kib_after_build": hwm_after,
            "file_bytes": stored.entry.bytes,
            "sql_ms": {"p50": percentile(&sql_ms, 0.5), "p99": percentile(&sql_ms, 0.99)},
            "api_ms": {"p50": percentile(&api_ms, 0.5), "p99": percentile(&api_ms, 0.99)},
            "batch_seconds": batch_seconds,
            "batch_rows": batch_rows,
            "refreshes": refreshes.iter().map(|r| json!({
                "rows": r.rows,
                "refresh_seconds": r.refresh_seconds,
                "whole_seconds": r.whole_seconds,
                "notice": r.notice,
            })).collect::<Vec<_>>(),
            "implicit": peer,
        }),
    })
}
