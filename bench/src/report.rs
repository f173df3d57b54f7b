//! Reporting: a Markdown table of medians and ratios on stdout, and the full
//! timings with machine details as JSON (plus the table as Markdown) in bench/results.

use std::path::Path;

use serde_json::json;

use crate::Suite;
use crate::peers::Peer;
use crate::suites::{SuiteResult, num_cpus};

pub fn median(seconds: &[f64]) -> f64 {
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Writes the results; `variant` ends the file names (`-tags1000`), empty
/// for a suite's default data.
pub fn write(
    dir: &Path,
    suite: Suite,
    users: u64,
    variant: &str,
    runs: usize,
    peers: &[Peer],
    result: &SuiteResult,
) -> Result<(), String> {
    let suite_name = match suite {
        Suite::Load => "load",
        Suite::Analytics => "analytics",
        Suite::Experiment => "experiment",
        Suite::Wire => "wire",
        Suite::Scan => "scan",
        Suite::Audience => "audience",
        Suite::Ranges => "ranges",
        Suite::Lookalike => "lookalike",
        Suite::Recommend => "recommend",
        Suite::RecommendSpeed => "recommend-speed",
        Suite::LoadChild => "load-child",
        Suite::AudienceLoad => "audience-load",
    };
    // Only the peers that ran in this suite get columns.
    let peers: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| {
            result
                .workloads
                .iter()
                .any(|w| w.seconds.contains_key(p.name()))
        })
        .collect();
    let engines = engines(&peers, result);
    let table = markdown(suite, &engines, result);
    println!("{table}");
    let workloads: Vec<_> = result
        .workloads
        .iter()
        .map(|w| {
            let engines: serde_json::Map<_, _> = w
                .seconds
                .iter()
                .map(|(engine, s)| (engine.clone(), json!({"seconds": s, "median": median(s)})))
                .collect();
            json!({"name": w.name, "rows": w.rows, "bytes": w.bytes, "engines": engines})
        })
        .collect();
    let report = json!({
        "suite": suite_name,
        "users": users,
        "runs": runs,
        "git_sha": git_sha(),
        "machine": machine(),
        "versions": {
            "cohortdb": env!("CARGO_PKG_VERSION"),
            "peers": result.versions,
        },
        "workloads": workloads,
        "details": result.details,
    });
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let scale = match suite {
        Suite::Experiment => "exposures",
        Suite::Wire => "queries",
        Suite::Recommend => "ratings",
        _ => "users",
    };
    let stem = dir.join(format!("{suite_name}-{scale}{users}{variant}"));
    let json_text = serde_json::to_string_pretty(&report).expect("report serializes");
    std::fs::write(stem.with_extension("json"), json_text).map_err(|e| e.to_string())?;
    std::fs::write(stem.with_extension("md"), &table).map_err(|e| e.to_string())?;
    eprintln!("wrote {}.json and .md", stem.display());
    Ok(())
}

/// The columns beside cohortdb's: engines that are not peers (the audience
/// suite's raw bound) first, then the peers that ran, in the order given.
fn engines(peers: &[Peer], result: &SuiteResult) -> Vec<String> {
    let peer_names: Vec<&str> = peers.iter().map(|p| p.name()).collect();
    let mut others: Vec<String> = result
        .workloads
        .iter()
        .flat_map(|w| w.seconds.keys())
        .filter(|e| *e != "cohortdb" && !peer_names.contains(&e.as_str()))
        .cloned()
        .collect();
    others.sort();
    others.dedup();
    others.extend(peer_names.iter().map(|p| p.to_string()));
    others
}

/// Milliseconds: one decimal, or three below 1 ms.
pub fn milliseconds(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.1}")
    }
}

/// A ratio: two decimals, or three significant digits below 0.1.
fn ratio(r: f64) -> String {
    if r >= 0.1 || r == 0.0 {
        format!("{r:.2}")
    } else {
        let decimals = (2 - r.log10().floor() as i32).clamp(2, 8) as usize;
        format!("{r:.decimals$}")
    }
}

fn markdown(suite: Suite, engines: &[String], result: &SuiteResult) -> String {
    let mut header = vec![
        "workload".to_string(),
        "rows".to_string(),
        "cohortdb ms".to_string(),
    ];
    for engine in engines {
        header.push(format!("{engine} ms"));
    }
    for engine in engines {
        header.push(format!("cohortdb ÷ {engine}"));
    }
    if matches!(suite, Suite::Load) {
        header.push("cohortdb rows/s".to_string());
        header.push("cohortdb MB/s".to_string());
    }
    let mut out = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for w in &result.workloads {
        let ours = median(&w.seconds["cohortdb"]);
        let mut cells = vec![w.name.clone(), w.rows.to_string(), milliseconds(ours)];
        for engine in engines {
            cells.push(match w.seconds.get(engine) {
                Some(s) => milliseconds(median(s)),
                None => "–".to_string(),
            });
        }
        for engine in engines {
            cells.push(match w.seconds.get(engine) {
                Some(s) => ratio(ours / median(s)),
                None => "–".to_string(),
            });
        }
        if matches!(suite, Suite::Load) {
            // Rates of a load: rows and input-file megabytes (10^6 bytes) per
            // second; a CHECKPOINT reads no input, so it has none.
            match w.bytes {
                Some(bytes) => {
                    cells.push(format!("{:.0}", w.rows as f64 / ours));
                    cells.push(format!("{:.1}", bytes as f64 / 1e6 / ours));
                }
                None => cells.extend(["–".to_string(), "–".to_string()]),
            }
        }
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push_str(
        "\nTimes are medians; a ratio below 1 means cohortdb took less time than the other engine.\n",
    );
    if !result.notes.is_empty() {
        out.push('\n');
        out.push_str(&result.notes);
    }
    out
}

fn git_sha() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0);
    json!({"cpus": num_cpus(), "cpu_model": model, "memory_kib": memory_kib, "os": std::env::consts::OS})
}
