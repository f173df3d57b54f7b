//! The audience suite's notes under the results table and its JSON details:
//! the workloads' statements and answers, the bars, each peer's
//! formulations, the loads, memory, and the estimate for 100M users × 1,000
//! tags.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::data::{self, AudienceFiles, Layout};
use super::load::LoadReport;
use super::peers::{chdb_formulations, duckdb_formulations};
use super::{Audience, Kind, RAW};
use crate::check::Rows;
use crate::report::{median, milliseconds as ms};
use crate::suites::Workload;

/// Figures of memory, for the notes and the JSON.
#[derive(Default, Serialize)]
pub(super) struct MemoryFigures {
    /// `cohortdb_tags` by table: (table, tags, users summed, bytes).
    pub(super) tag_store: Vec<(String, u64, u64, u64)>,
    pub(super) raw_bytes: u64,
    pub(super) raw_bitmaps: usize,
    /// This process's anonymous resident memory before opening cohortdb.
    pub(super) anon_before_open_kib: u64,
    /// This process after opening cohortdb and running every workload once:
    /// resident, of which anonymous (heap) and file-backed (the mapped tag
    /// and segment files), and the peak so far.
    pub(super) rss_after_warm_kib: u64,
    pub(super) anon_after_warm_kib: u64,
    pub(super) file_after_warm_kib: u64,
    pub(super) hwm_after_warm_kib: u64,
    /// This process's anonymous memory once the raw bitmaps were built too.
    pub(super) anon_with_raw_kib: u64,
    pub(super) directory_bytes: u64,
    pub(super) peers_peak_kib: BTreeMap<String, u64>,
}

/// Everything the notes and the JSON details are written from.
pub(super) struct Context<'a> {
    pub(super) files: &'a AudienceFiles,
    pub(super) audiences: &'a [Audience],
    pub(super) expected: &'a [Rows],
    pub(super) workloads: &'a [Workload],
    pub(super) formulations: &'a super::Formulations,
    pub(super) cohortdb_load: &'a LoadReport,
    pub(super) peer_loads: &'a BTreeMap<String, LoadReport>,
    pub(super) memory: &'a MemoryFigures,
    pub(super) open_seconds: f64,
    pub(super) raw_build_seconds: f64,
    pub(super) floor: &'a [f64],
    pub(super) api_seconds: &'a super::ApiSeconds,
    pub(super) profile_note: &'a str,
    /// cohortdb's first run of each workload, through SQL.
    pub(super) first_seconds: &'a [f64],
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

impl Context<'_> {
    pub(super) fn notes(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.audience_notes());
        out.push_str(&self.bar_notes());
        out.push_str(&self.formulation_notes());
        out.push_str(&self.load_notes());
        out.push_str(&self.memory_notes());
        out
    }

    fn audience_notes(&self) -> String {
        let mut out = format!(
            "Data: {} users (ids 1..{0}), {} tags over {} attributes plus `vip`, {} events over \
             the {} days up to {} (seed {}). cohortdb's statements (`audience_profile`: {}):\n\n\
             | workload | tags | answer | first run ms | cohortdb statement |\n|---|---|---|---|---|\n",
            self.files.users,
            self.files.layout.tag_count(),
            self.files.layout.attributes.len(),
            self.files.events,
            data::HISTORY_DAYS,
            data::TODAY,
            self.files.seed,
            self.profile_note,
        );
        let rows = self.audiences.iter().zip(self.expected);
        for ((audience, expected), first) in rows.zip(self.first_seconds) {
            let answer = match audience.kind {
                Kind::Profile(_) => format!("{} rows", expected.len()),
                _ => expected[0][0].trim_end_matches(".0000").to_string(),
            };
            out.push_str(&format!(
                "| {} | {} | {answer} | {} | `{}` |\n",
                audience.name,
                audience.expr.tags(),
                ms(*first),
                audience.cohortdb_sql()
            ));
        }
        out.push_str(&format!(
            "\nThe SQL floor, `SELECT 1` through the same session: {} ms (median).\n\n",
            ms(median(self.floor))
        ));
        out
    }

    fn bar_notes(&self) -> String {
        let mut out = String::from(
            "Bars of DESIGN.md §5 (ratios of medians): ≤ 1.5× the raw bound, ≥ 20× faster than \
             DuckDB (ratio ≤ 0.05), faster than chDB (ratio < 1). The Rust API columns time the \
             same audience through `Database::audience_count` / `Database::audience` (no SQL): \
             what the tag store itself costs against the bound.\n\n\
             | workload | ÷ raw | ≤ 1.5 | Rust API ms | Rust API ÷ raw | ÷ duckdb | ≤ 0.05 | ÷ chdb | < 1 |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for (w, api) in self.workloads.iter().zip(self.api_seconds) {
            let ours = median(&w.seconds["cohortdb"]);
            let cell = |engine: &str, bar: f64, strict: bool| match w.seconds.get(engine) {
                Some(s) => {
                    let ratio = ours / median(s);
                    let met = if strict { ratio < bar } else { ratio <= bar };
                    (
                        format!("{ratio:.3}"),
                        if met { "yes" } else { "no" }.to_string(),
                    )
                }
                None => ("–".to_string(), "–".to_string()),
            };
            let (raw, raw_met) = cell(RAW, 1.5, false);
            let (api_ms, api_ratio) = match api {
                Some(s) => (
                    ms(median(s)),
                    format!("{:.3}", median(s) / median(&w.seconds[RAW])),
                ),
                None => ("–".to_string(), "–".to_string()),
            };
            let (duck, duck_met) = cell("duckdb", 0.05, false);
            let (ch, ch_met) = cell("chdb", 1.0, true);
            out.push_str(&format!(
                "| {} | {raw} | {raw_met} | {api_ms} | {api_ratio} | {duck} | {duck_met} | {ch} | {ch_met} |\n",
                w.name
            ));
        }
        out.push('\n');
        out
    }

    fn formulation_notes(&self) -> String {
        let mut out = String::from(
            "Each peer by formulation (median ms; the first table shows each peer's best). \
             DuckDB: tags as columns of a wide users table, or as a long `user_tags(user_id, \
             tag)` table sorted by tag, queried with INTERSECT/UNION/EXCEPT or with one GROUP BY \
             user_id HAVING over bool_or(tag = ...). chDB: one scalar subquery per term over the \
             precomputed states combined with bitmapAnd/bitmapOr/bitmapAndnot and counted with \
             bitmapAndCardinality and friends, or, for a tag or an AND of tags, one scan with \
             groupBitmapAnd.\n\n",
        );
        for (peer, per_workload) in self.formulations {
            let mut labels: Vec<&str> = Vec::new();
            for (label, _) in per_workload.iter().flatten() {
                if !labels.contains(label) {
                    labels.push(label);
                }
            }
            out.push_str(&format!(
                "| {peer}: workload | {} |\n|---|{}\n",
                labels.join(" | "),
                "---|".repeat(labels.len())
            ));
            for (audience, per) in self.audiences.iter().zip(per_workload) {
                let cells: Vec<String> = labels
                    .iter()
                    .map(|label| {
                        per.iter()
                            .find(|(l, _)| l == label)
                            .map_or("–".to_string(), |(_, s)| ms(median(s)))
                    })
                    .collect();
                out.push_str(&format!("| {} | {} |\n", audience.name, cells.join(" | ")));
            }
            out.push('\n');
        }
        out
    }

    fn load_notes(&self) -> String {
        let mut out = String::from(
            "Loads from the Parquet files (once per dataset; later runs reuse the databases): \
             seconds, and the loading process's peak resident memory after each step:\n\n\
             | system | step | s | peak RSS MB |\n|---|---|---|---|\n",
        );
        let mut loads: Vec<(&str, &LoadReport)> = vec![("cohortdb", self.cohortdb_load)];
        loads.extend(self.peer_loads.iter().map(|(n, r)| (n.as_str(), r)));
        for (system, report) in loads {
            if let Some(start) = report.hwm_start_kib {
                out.push_str(&format!(
                    "| {system} | (opened, tables created) | – | {} |\n",
                    mb(start * 1024)
                ));
            }
            for step in &report.steps {
                out.push_str(&format!(
                    "| {system} | {} | {:.2} | {} |\n",
                    step.name,
                    step.seconds,
                    step.hwm_kib.map_or("–".to_string(), |k| mb(k * 1024))
                ));
            }
            out.push_str(&format!(
                "| {system} | **total** | {:.2} | {} |\n",
                report.seconds(),
                report.peak_kib().map_or("–".to_string(), |k| mb(k * 1024))
            ));
        }
        out.push_str(&format!(
            "\nOpening the loaded cohortdb directory took {:.2} s; building the raw bitmaps in \
             the bench (generator and roaring pushes) {:.2} s.\n\n",
            self.open_seconds, self.raw_build_seconds
        ));
        out
    }

    fn memory_notes(&self) -> String {
        let m = self.memory;
        let mut out = String::from(
            "Memory. cohortdb's tag store as `cohortdb_tags` reports it (bitmaps serialized; a \
             value's day bitmaps included):\n\n| table | tags | users summed | MB |\n|---|---|---|---|\n",
        );
        for (table, tags, users, bytes) in &m.tag_store {
            out.push_str(&format!(
                "| {table} | {tags} | {users} | {} |\n",
                mb(*bytes)
            ));
        }
        let store: u64 = m.tag_store.iter().map(|t| t.3).sum();
        out.push_str(&format!(
            "\nThe raw bound's {} bitmaps serialize to {} MB (cohortdb: {} MB, {}). The \
             cohortdb directory is {} MB. This process: {} MB anonymous memory before opening \
             cohortdb; after opening it and running every workload once {} MB resident ({} MB \
             anonymous, {} MB of mapped files; peak {} MB); {} MB anonymous with the raw bitmaps too. \
             Peers' peak resident memory while querying: {}.\n\n",
            m.raw_bitmaps,
            mb(m.raw_bytes),
            mb(store),
            if store == m.raw_bytes {
                "the same bytes".to_string()
            } else {
                format!("{:+.2}%", (store as f64 / m.raw_bytes as f64 - 1.0) * 100.0)
            },
            mb(m.directory_bytes),
            mb(m.anon_before_open_kib * 1024),
            mb(m.rss_after_warm_kib * 1024),
            mb(m.anon_after_warm_kib * 1024),
            mb(m.file_after_warm_kib * 1024),
            mb(m.hwm_after_warm_kib * 1024),
            mb(m.anon_with_raw_kib * 1024),
            if m.peers_peak_kib.is_empty() {
                "–".to_string()
            } else {
                m.peers_peak_kib
                    .iter()
                    .map(|(p, k)| format!("{p} {} MB", mb(k * 1024)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        out.push_str(&self.estimate().markdown());
        out
    }

    fn estimate(&self) -> Estimate {
        let users_bytes = self
            .memory
            .tag_store
            .iter()
            .find(|t| t.0 == "users")
            .map_or(0, |t| t.3);
        let events_bytes = self
            .memory
            .tag_store
            .iter()
            .find(|t| t.0 == "events")
            .map_or(0, |t| t.3);
        Estimate {
            users: self.files.users,
            model_here: model_bytes(&self.files.layout, self.files.users),
            measured_users_bytes: users_bytes,
            events_bytes,
            anon_before_kib: self.memory.anon_before_open_kib,
            anon_after_kib: self.memory.anon_after_warm_kib,
            load_peak_kib: self.cohortdb_load.peak_kib().unwrap_or(0),
            load_start_kib: self.cohortdb_load.hwm_start_kib.unwrap_or(0),
            target_users: 100_000_000,
            target_layout: Layout::new(Some(1_000)),
        }
    }

    pub(super) fn details(&self) -> serde_json::Value {
        let audiences: Vec<_> = self
            .audiences
            .iter()
            .zip(self.expected)
            .map(|(a, e)| {
                json!({
                    "name": a.name,
                    "tags": a.expr.tags(),
                    "cohortdb_sql": a.cohortdb_sql(),
                    "duckdb": duckdb_formulations(a).iter().map(|f| json!({"label": f.label, "sql": f.timed_sql})).collect::<Vec<_>>(),
                    "chdb": chdb_formulations(a).iter().map(|f| json!({"label": f.label, "sql": f.timed_sql})).collect::<Vec<_>>(),
                    "answer": if e.len() == 1 { json!(e[0]) } else { json!(format!("{} rows", e.len())) },
                })
            })
            .collect();
        let formulations: serde_json::Map<_, _> = self
            .formulations
            .iter()
            .map(|(peer, per)| {
                let per: Vec<_> = per
                    .iter()
                    .map(|f| {
                        f.iter()
                            .map(|(label, s)| json!({"label": label, "seconds": s, "median": median(s)}))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (peer.clone(), json!(per))
            })
            .collect();
        json!({
            "users": self.files.users,
            "events": self.files.events,
            "tags": self.files.layout.tag_count(),
            "seed": self.files.seed,
            "today": data::TODAY,
            "audiences": audiences,
            "formulations": formulations,
            "loads": {"cohortdb": self.cohortdb_load, "peers": self.peer_loads},
            "open_seconds": self.open_seconds,
            "raw_build_seconds": self.raw_build_seconds,
            "select_1_seconds": self.floor,
            "first_run_seconds": self.first_seconds,
            "rust_api_seconds": self.api_seconds,
            "memory": self.memory,
            "estimate_100m_1000_tags": self.estimate().json(),
            "audience_profile": self.profile_note,
        })
    }
}

/// Serialized bytes of a users tag index under a model of roaring: users
/// spread evenly, so a value held by a share `p` of N users has, in each of
/// the N/65,536 chunks, about λ = 65,536·p users, costing 2 bytes each up to
/// a full 8 KiB bitmap container, plus 8 bytes of header for a non-empty
/// chunk (present with probability 1 − e^−λ).
fn model_bytes(layout: &Layout, users: u64) -> f64 {
    let chunks = (users as f64 / 65_536.0).ceil();
    let bitmap = |p: f64| {
        let lambda = 65_536.0 * p;
        chunks * ((1.0 - (-lambda).exp()) * 8.0 + (2.0 * lambda).min(8_192.0))
    };
    let vip = bitmap(0.08) + bitmap(0.92);
    layout
        .attributes
        .iter()
        .flat_map(|a| a.shares())
        .map(bitmap)
        .sum::<f64>()
        + vip
}

/// The estimate for 100M users × 1,000 tags, from the figures measured here.
struct Estimate {
    users: u64,
    /// The model's users-index bytes for this run's layout and users.
    model_here: f64,
    measured_users_bytes: u64,
    events_bytes: u64,
    anon_before_kib: u64,
    anon_after_kib: u64,
    load_peak_kib: u64,
    load_start_kib: u64,
    target_users: u64,
    target_layout: Layout,
}

impl Estimate {
    /// (users-index bytes, events bytes, other resident bytes, serving RSS,
    /// load peak) at the target.
    fn figures(&self) -> (f64, f64, f64, f64, f64) {
        let scale = self.target_users as f64 / self.users as f64;
        let calibration = self.measured_users_bytes as f64 / self.model_here;
        let users_bytes = model_bytes(&self.target_layout, self.target_users) * calibration;
        let events_bytes = self.events_bytes as f64 * scale;
        let kib = |k: u64| k as f64 * 1024.0;
        // Audiences read the tag files in place (mapped, not on the heap).
        // The heap opening and using the database added (the user-key
        // dictionary above all, and the bitmaps a profile reads whole) grows
        // with users; the process's heap before opening it does not.
        let other = (kib(self.anon_after_kib) - kib(self.anon_before_kib)).max(0.0) * scale;
        let serving = kib(self.anon_before_kib) + other;
        // The load's memory above its start, taken as growing with users (an
        // upper bound where part of it is fixed-size buffers).
        let load_peak = kib(self.load_start_kib)
            + kib(self.load_peak_kib.saturating_sub(self.load_start_kib)) * scale;
        (users_bytes, events_bytes, other, serving, load_peak)
    }

    fn markdown(&self) -> String {
        let (users_bytes, events_bytes, other, serving, load_peak) = self.figures();
        let gib = |b: f64| format!("{:.1}", b / (1u64 << 30) as f64);
        format!(
            "Estimate for {} users × {} tags (the same attributes, all but `gender` and `city` with \
             proportionally more values; `--tags 1000`): the users index by the roaring size \
             model calibrated on this run (model {} MB here, measured {} MB: × {:.3}) {} GiB; \
             the event bitmaps scaled by users {} GiB, both read in place from mapped tag files \
             the kernel can drop; the heap opening and querying cohortdb added, scaled by users \
             {} GiB; serving (anonymous memory, with the process's own) ≈ {} GiB. Load peak \
             (the loading child's peak above its start, scaled by users) ≈ {} GiB, against the \
             machine's 24 GiB.\n",
            self.target_users,
            self.target_layout.tag_count(),
            mb(self.model_here as u64),
            mb(self.measured_users_bytes),
            self.measured_users_bytes as f64 / self.model_here,
            gib(users_bytes),
            gib(events_bytes),
            gib(other),
            gib(serving),
            gib(load_peak),
        )
    }

    fn json(&self) -> serde_json::Value {
        let (users_bytes, events_bytes, other, serving, load_peak) = self.figures();
        json!({
            "target_users": self.target_users,
            "target_tags": self.target_layout.tag_count(),
            "model_bytes_here": self.model_here,
            "measured_users_bytes": self.measured_users_bytes,
            "users_index_bytes": users_bytes,
            "events_bytes": events_bytes,
            "other_resident_bytes": other,
            "serving_bytes": serving,
            "load_peak_bytes": load_peak,
        })
    }
}
