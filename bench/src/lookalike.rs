//! The `lookalike` suite: how fast cohortdb scores every user from a seed
//! audience, against scikit-learn in the same run, and how well.
//!
//! Data: the `audience` suite's users (nineteen Zipf-skewed attributes,
//! `vip`, and 90 days of events, [`audience::data`]) and its loaded cohortdb database
//! ([`audience::load`]), copied once next to it (`lookalike-cohortdb`) so this
//! suite's stored tag never shows in the audience suite's tag store and the
//! two suites can run at the same time. The generator draws attributes
//! independently, so a seed defined by an attribute would leave nothing
//! correlated with it once its own column is left out; the seed is planted
//! instead: a *planted audience* of 2% of the users is the top of a linear
//! score over seven attribute values ([`PLANTED`]) plus logistic noise from a
//! hash of the user id (so the audience follows a logistic model of those
//! tags), and the seed is the stored tag `lookalike_seed`, half of it (1% of
//! the users: 100k at 10M). The other half is hidden among the candidates
//! (every user but the seed), which gives a quality check at scale: the AUC of
//! the hidden users, against the planted score itself (the best possible
//! ranking).
//!
//! Timed on cohortdb (`runs` runs each, medians): `SELECT count(*) FROM
//! lookalike('lookalike_seed', 'size=5%')` through SQL, and the engine API
//! step by step (features, `fit`, `Model::score` of every candidate, `top`);
//! the logistic scorer through the API once. scikit-learn
//! ([`python`]): LogisticRegression fitted on the seed and 4× as many sampled
//! other users (one-hot tags), and predict_proba of all users. The ISLR
//! Caravan quality script of the integration tests runs against an in-process
//! server in the same run and its figures are reported.

mod python;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use cohortdb::Database;
use cohortdb::arrow::array::{ArrayRef, AsArray, RecordBatch};
use cohortdb::arrow::datatypes::{Float64Type, Int64Type};
use cohortdb_engine::lookalike::{self, Method, RankingMetrics, Settings};
use cohortdb_engine::privacy::Policy;
use cohortdb_engine::tags::{Tags, TagsRead, today};
use roaring::RoaringBitmap;
use serde_json::json;

use crate::audience::data::{self, AudienceFiles};
use crate::audience::load;
use crate::memory::vm_hwm_kib;
use crate::report::{median, milliseconds};
use crate::suites::{SuiteResult, Workload, cohortdb_run};

/// The stored tag holding the seed.
const SEED_TAG: &str = "lookalike_seed";
/// The planted audience is one user in this many; the seed half of it.
const PLANTED_ONE_IN: u64 = 50;
/// How many users `lookalike` returns (its `size` option).
const SIZE: &str = "5%";
const SIZE_SHARE: f64 = 0.05;
/// scikit-learn's negatives per seed user.
const NEGATIVES_PER_SEED_USER: u64 = 4;
/// Seeds the ties of `top`, the metrics and scikit-learn's sample.
const RANDOM_SEED: u64 = 0;
const SKLEARN: &str = "scikit-learn";

/// The planted score: (condition on a users attribute, weight on the logit
/// scale). The values' shares of users run from 3% (oc004) to 28% (s000).
const PLANTED: [(&str, f64); 7] = [
    ("interest IN ('i003', 'i004', 'i005')", 1.5),
    ("occupation = 'oc004'", 1.2),
    ("membership = 'm001'", 0.9),
    ("age_band = 'a002'", 0.8),
    ("spend_tier = 's000'", 0.7),
    ("device IN ('d001', 'd002')", 0.6),
    ("city_tier = 't003'", -0.8),
];

/// The planted score of a users row, as SQL.
fn planted_score_sql() -> String {
    let terms: Vec<String> = PLANTED
        .iter()
        .map(|(condition, weight)| format!("CASE WHEN {condition} THEN {weight:.1} ELSE 0.0 END"))
        .collect();
    terms.join(" + ")
}

/// Standard logistic noise from a multiplicative hash of the user id: the
/// logit of a uniform number in (0, 1).
fn noise_sql() -> String {
    let u = "((CAST((user_id * 2654435761) % 4294967291 AS DOUBLE) + 0.5) / 4294967291.0)";
    format!("ln({u} / (1.0 - {u}))")
}

/// The planted audience's user ids: the top of score plus noise. (The sum
/// is a column of a subquery: ordered by the expression itself, DataFusion
/// fails to plan, "SortPreservingMergeExec ... does not satisfy order
/// requirements", once common subexpressions are taken out of it.)
fn planted_sql(users: u64) -> String {
    format!(
        "SELECT user_id FROM (SELECT user_id, {} + {} AS planted FROM users) scored \
         ORDER BY planted DESC, user_id LIMIT {}",
        planted_score_sql(),
        noise_sql(),
        users / PLANTED_ONE_IN
    )
}

/// The seed: half the planted audience, picked by another hash of the id.
fn seed_sql(users: u64) -> String {
    format!(
        "SELECT user_id FROM ({}) planted ORDER BY (user_id * 40503) % 65537, user_id LIMIT {}",
        planted_sql(users),
        users / PLANTED_ONE_IN / 2
    )
}

/// The audience suite's database copied for this suite with the seed tag
/// made, once per dataset.
async fn prepare_database(files: &AudienceFiles) -> Result<PathBuf, String> {
    let dir = files.dir.join("lookalike-cohortdb");
    let marker = files.dir.join("lookalike.prepared");
    if marker.exists() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    eprintln!("copying the audience database to {}", dir.display());
    let status = Command::new("cp")
        .arg("-a")
        .arg(load::cohortdb_dir(files))
        .arg(&dir)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !status.success() {
        return Err(format!("copying the audience database failed: {status}"));
    }
    let db = Database::open(&dir).map_err(|e| e.to_string())?;
    let sql = format!("CREATE TAG {SEED_TAG} AS {}", seed_sql(files.users));
    eprintln!("making the seed: {sql}");
    cohortdb_run(&db.session(), &sql).await?;
    drop(db);
    std::fs::write(&marker, seed_sql(files.users)).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Column `i` of every batch: Int64 values.
fn int64_column(batches: &[RecordBatch], i: usize) -> Result<Vec<i64>, String> {
    let mut values = Vec::new();
    for batch in batches {
        let column = batch
            .column(i)
            .as_primitive_opt::<Int64Type>()
            .ok_or("expected a BIGINT column")?;
        values.extend(column.values().iter().copied());
    }
    Ok(values)
}

/// The ordinals of the user ids of `ids`.
fn ordinals(tags: &Tags, ids: &[i64]) -> Result<Vec<u32>, String> {
    let array: ArrayRef =
        std::sync::Arc::new(cohortdb::arrow::array::Int64Array::from(ids.to_vec()));
    tags.ordinals(&array)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|o| o.ok_or_else(|| "a user id without an ordinal".to_string()))
        .collect()
}

/// Who is who: the seed, the hidden users (the planted audience outside
/// the seed), every user, and each user's planted score (for the oracle).
struct Audiences {
    seed: RoaringBitmap,
    hidden: RoaringBitmap,
    universe: RoaringBitmap,
    oracle: Vec<(u32, f32)>,
}

async fn audiences(
    session: &cohortdb::Session,
    tags: &Tags,
    users: u64,
) -> Result<Audiences, String> {
    let seed = tags
        .evaluate(SEED_TAG, &Policy::new(today()))
        .map_err(|e| e.to_string())?;
    let (_, batches) = cohortdb_run(session, &planted_sql(users)).await?;
    let planted: RoaringBitmap = ordinals(tags, &int64_column(&batches, 0)?)?
        .into_iter()
        .collect();
    if !seed.is_subset(&planted) || seed.len() != users / PLANTED_ONE_IN / 2 {
        return Err(format!(
            "the seed tag ({} users) is not half of the planted audience ({} users)",
            seed.len(),
            planted.len()
        ));
    }
    let universe = tags.universe().map_err(|e| e.to_string())?;
    let candidates = &universe - &seed;
    let sql = format!("SELECT user_id, {} FROM users", planted_score_sql());
    let (_, batches) = cohortdb_run(session, &sql).await?;
    let mut oracle = Vec::with_capacity(universe.len() as usize);
    let ids = int64_column(&batches, 0)?;
    let ords = ordinals(tags, &ids)?;
    let mut scores = Vec::with_capacity(ids.len());
    for batch in &batches {
        let column = batch
            .column(1)
            .as_primitive_opt::<Float64Type>()
            .ok_or("the planted score is a DOUBLE")?;
        scores.extend(column.values().iter().map(|&s| s as f32));
    }
    for (o, s) in ords.into_iter().zip(scores) {
        if candidates.contains(o) {
            oracle.push((o, s));
        }
    }
    Ok(Audiences {
        hidden: &planted - &seed,
        seed,
        universe,
        oracle,
    })
}

/// cohortdb's timings: SQL and the engine API, per run.
#[derive(Default)]
struct Timings {
    sql_first: f64,
    sql: Vec<f64>,
    inputs: Vec<f64>,
    fit: Vec<f64>,
    score: Vec<f64>,
    top: Vec<f64>,
    total: Vec<f64>,
    logistic_fit: f64,
    logistic_score: f64,
    features: usize,
    weighted_tags: usize,
    candidates: u64,
}

/// What each scorer measured on the hidden users.
type Quality = BTreeMap<String, RankingMetrics>;

/// One timed run of the engine API, log odds; returns the scores too.
fn api_run(tags: &Tags, timings: &mut Timings, size: usize) -> Result<Vec<(u32, f32)>, String> {
    let at = Instant::now();
    let seed = tags
        .evaluate(SEED_TAG, &Policy::new(today()))
        .map_err(|e| e.to_string())?;
    let universe = tags.universe().map_err(|e| e.to_string())?;
    let exclude = TagsRead {
        stored: [SEED_TAG.to_string()].into(),
        ..TagsRead::default()
    };
    let features = lookalike::features(tags, None, &exclude, &Policy::new(today()))
        .map_err(|e| e.to_string())?;
    let inputs = at.elapsed().as_secs_f64();
    let at = Instant::now();
    let model = lookalike::fit(&features, &seed, &universe, &Settings::default())
        .map_err(|e| e.to_string())?;
    let fit = at.elapsed().as_secs_f64();
    let at = Instant::now();
    let candidates = &universe - &seed;
    let scored = model.score(&features, &candidates);
    let score = at.elapsed().as_secs_f64();
    let kept = scored.clone();
    let at = Instant::now();
    let best = lookalike::top(scored, size, RANDOM_SEED);
    let top = at.elapsed().as_secs_f64();
    std::hint::black_box(best);
    // The clone of the scores (kept for the quality check) is not timed.
    timings.total.push(inputs + fit + score + top);
    timings.inputs.push(inputs);
    timings.fit.push(fit);
    timings.score.push(score);
    timings.top.push(top);
    timings.features = features.len();
    timings.weighted_tags = model.components[0].linear.weights.len();
    timings.candidates = candidates.len();
    Ok(kept)
}

/// The logistic scorer through the API, once: its fit and score times and
/// its scores.
fn logistic_run(
    tags: &Tags,
    audiences: &Audiences,
    timings: &mut Timings,
) -> Result<Vec<(u32, f32)>, String> {
    let exclude = TagsRead {
        stored: [SEED_TAG.to_string()].into(),
        ..TagsRead::default()
    };
    let features = lookalike::features(tags, None, &exclude, &Policy::new(today()))
        .map_err(|e| e.to_string())?;
    let settings = Settings {
        method: Method::Logistic,
        ..Settings::default()
    };
    let at = Instant::now();
    let model = lookalike::fit(&features, &audiences.seed, &audiences.universe, &settings)
        .map_err(|e| e.to_string())?;
    timings.logistic_fit = at.elapsed().as_secs_f64();
    let at = Instant::now();
    let scored = model.score(&features, &(&audiences.universe - &audiences.seed));
    timings.logistic_score = at.elapsed().as_secs_f64();
    Ok(scored)
}

/// Times cohortdb: SQL and API run by run in turn, then the logistic scorer;
/// measures each scorer's quality on the hidden users.
async fn time_cohortdb(
    db: &Database,
    audiences: &Audiences,
    runs: usize,
) -> Result<(Timings, Quality), String> {
    let session = db.session();
    let sql = format!("SELECT count(*) FROM lookalike('{SEED_TAG}', 'size={SIZE}')");
    let size = (SIZE_SHARE * audiences.universe.len() as f64).ceil() as usize;
    let mut timings = Timings::default();
    eprintln!("cohortdb: {sql} (first run)");
    let (first, batches) = cohortdb_run(&session, &sql).await?;
    timings.sql_first = first;
    let returned = int64_column(&batches, 0)?;
    if returned != [size as i64] {
        return Err(format!("lookalike returned {returned:?} users, not {size}"));
    }
    let tags = db.tags();
    let mut scored = Vec::new();
    for run in 0..runs {
        eprintln!("cohortdb: run {}", run + 1);
        timings.sql.push(cohortdb_run(&session, &sql).await?.0);
        scored = api_run(&tags, &mut timings, size)?;
    }
    let mut quality = Quality::new();
    quality.insert(
        "cohortdb log_odds".to_string(),
        lookalike::ranking_metrics(scored, &audiences.hidden, RANDOM_SEED),
    );
    eprintln!("cohortdb: the logistic scorer (one run)");
    let scored = logistic_run(&tags, audiences, &mut timings)?;
    quality.insert(
        "cohortdb logistic".to_string(),
        lookalike::ranking_metrics(scored, &audiences.hidden, RANDOM_SEED),
    );
    quality.insert(
        "planted score (the best possible)".to_string(),
        lookalike::ranking_metrics(audiences.oracle.clone(), &audiences.hidden, RANDOM_SEED),
    );
    Ok((timings, quality))
}

/// Runs the suite; see the module documentation.
pub async fn lookalike(users: u64, seed: u64, runs: usize) -> Result<SuiteResult, String> {
    let files = data::prepare(users, None, seed)?;
    load::cohortdb(&files)?;
    let dir = prepare_database(&files).await?;
    let db = Database::open(&dir).map_err(|e| e.to_string())?;
    let tags = db.tags();
    let audiences = audiences(&db.session(), &tags, users).await?;
    let load_before = load_average();
    let (timings, mut quality) = time_cohortdb(&db, &audiences, runs).await?;
    let hwm_cohortdb_kib = vm_hwm_kib()?;
    let sklearn = python::sklearn(&files, &tags, &audiences.seed, &audiences.hidden, runs)?;
    let load_after = load_average();
    quality.insert(
        "scikit-learn LogisticRegression".to_string(),
        sklearn.quality,
    );
    if sklearn.features != timings.features {
        return Err(format!(
            "scikit-learn has {} one-hot columns, cohortdb {} features",
            sklearn.features, timings.features
        ));
    }
    drop(audiences);
    drop(tags);
    drop(db);
    let caravan = python::caravan().await?;
    let workloads = workloads(users, &timings, &sklearn);
    let mut notes = notes(
        &files,
        &timings,
        &sklearn,
        &quality,
        hwm_cohortdb_kib,
        &caravan,
    );
    notes.push_str(&format!(
        "\nLoad average (1, 5, 15 min) before cohortdb's runs: {load_before}; after \
         scikit-learn's: {load_after} (the machine has {} cores; anything above the \
         suite's own one busy core is other work).\n",
        crate::suites::num_cpus()
    ));
    let details = json!({
        "seed_sql": seed_sql(users),
        "planted_sql": planted_sql(users),
        "features": timings.features,
        "weighted_tags": timings.weighted_tags,
        "candidates": timings.candidates,
        "cohortdb_sql_first_run_seconds": timings.sql_first,
        "cohortdb_logistic": {"fit_seconds": timings.logistic_fit, "score_seconds": timings.logistic_score},
        "quality_at_scale": quality.iter().map(|(k, m)| (k.clone(), json!({
            "auc": m.auc, "lift_at_10": m.lift_at_10, "recall_at_20": m.recall_at_20,
        }))).collect::<serde_json::Map<_, _>>(),
        "scikit_learn": sklearn.report,
        "cohortdb_peak_rss_kib": hwm_cohortdb_kib,
        "load_average": {"before": load_before, "after": load_after},
        "caravan": caravan.report,
    });
    let mut versions = sklearn.versions.clone();
    versions.extend(caravan.versions.clone());
    Ok(SuiteResult {
        workloads,
        versions,
        notes,
        details,
    })
}

/// /proc/loadavg's three load averages: the machine is shared, and timings
/// taken while it was busy say so.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The table's rows: cohortdb's timings beside scikit-learn's counterpart.
fn workloads(users: u64, t: &Timings, sklearn: &python::Sklearn) -> Vec<Workload> {
    let both: Vec<f64> = sklearn
        .fit
        .iter()
        .zip(&sklearn.predict)
        .map(|(f, p)| f + p)
        .collect();
    let row = |name: &str, ours: &[f64], theirs: Option<&[f64]>| {
        let mut seconds = BTreeMap::from([("cohortdb".to_string(), ours.to_vec())]);
        if let Some(theirs) = theirs {
            seconds.insert(SKLEARN.to_string(), theirs.to_vec());
        }
        Workload {
            name: name.to_string(),
            rows: users,
            bytes: None,
            seconds,
        }
    };
    vec![
        row(
            &format!("SQL: count(*) FROM lookalike(seed, 'size={SIZE}'), log_odds"),
            &t.sql,
            Some(&both),
        ),
        row(
            "API: seed + features + fit + score + top 5%, log_odds",
            &t.total,
            Some(&both),
        ),
        row("API: fit, log_odds", &t.fit, Some(&sklearn.fit)),
        row(
            "API: score every candidate, log_odds",
            &t.score,
            Some(&sklearn.predict),
        ),
        row("API: seed, universe and features", &t.inputs, None),
        row("API: top 5%", &t.top, None),
        row(
            "API: fit, logistic (1 run)",
            &[t.logistic_fit],
            Some(&sklearn.fit),
        ),
        row(
            "API: score every candidate, logistic (1 run)",
            &[t.logistic_score],
            Some(&sklearn.predict),
        ),
    ]
}

/// The Markdown after the table: the bar, the data, quality and memory.
fn notes(
    files: &AudienceFiles,
    t: &Timings,
    sklearn: &python::Sklearn,
    quality: &Quality,
    hwm_cohortdb_kib: u64,
    caravan: &python::Caravan,
) -> String {
    let sql = median(&t.sql);
    let mut out = format!(
        "Bar: scoring {} users from a {}-user seed with the default scorer in ≤ 1 s: \
         SQL median {} ms — {}.\n\n",
        files.users,
        files.users / PLANTED_ONE_IN / 2,
        milliseconds(sql),
        if sql <= 1.0 { "met" } else { "missed" }
    );
    out.push_str(&format!(
        "cohortdb: {} features (tags), {} weighted by log_odds (min_support 5), {} candidates, \
         {SIZE} returned; first SQL run (tag bitmaps read from disk) {} ms. scikit-learn {}: \
         one-hot matrix of {} users × {} columns ({} non-zeros) built in {:.1} s (not timed \
         above), fitted on {} rows (the seed and {}× as many other users, lbfgs iterations \
         {:?}), predict_proba of all {} users.\n\n",
        t.features,
        t.weighted_tags,
        t.candidates,
        milliseconds(t.sql_first),
        sklearn.versions.get(SKLEARN).map_or("", String::as_str),
        sklearn.users,
        sklearn.features,
        sklearn.nonzeros,
        sklearn.build_seconds,
        sklearn.train_rows,
        NEGATIVES_PER_SEED_USER,
        sklearn.iterations,
        sklearn.users,
    ));
    out.push_str(
        "Quality at this scale: the hidden half of the planted audience among the candidates.\n\n\
         | scorer | AUC | lift@10% | recall@20% |\n|---|---|---|---|\n",
    );
    for (name, m) in quality {
        out.push_str(&format!(
            "| {name} | {:.4} | {:.3} | {:.4} |\n",
            m.auc, m.lift_at_10, m.recall_at_20
        ));
    }
    out.push_str(&format!(
        "\nPeak resident memory: this process {:.1} GB after cohortdb's runs, scikit-learn's \
         process {:.1} GB.\n\n",
        hwm_cohortdb_kib as f64 / 1048576.0,
        sklearn.max_rss_kib as f64 / 1048576.0
    ));
    out.push_str(&caravan.markdown);
    out
}
