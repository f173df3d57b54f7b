//! The peers' side of the audience suite: how DuckDB and chDB are asked
//! each workload (several formulations each; the best one counts), their
//! loads, and the check-then-time jobs run through bench/peers/runner.py.

use serde::Serialize;

use super::data::AudienceFiles;
use super::expr;
use super::load::{self, LoadReport};
use super::{Audience, Kind};
use crate::check::{self, Rows};
use crate::peers::{Peer, StepResult};
use crate::suites::{PeerSetup, run_peer_steps};

/// One way of asking a peer for a workload: what is checked (once), and
/// what is timed, fetched as rows or as Arrow.
pub(super) struct Formulation {
    pub(super) label: &'static str,
    check_sql: String,
    pub(super) timed_sql: String,
    fetch: &'static str,
}

impl Formulation {
    fn count(label: &'static str, sql: String) -> Formulation {
        Formulation {
            label,
            check_sql: sql.clone(),
            timed_sql: sql,
            fetch: "rows",
        }
    }
}

/// DuckDB over a long-table query of the audience's ids `ids`: the profile
/// of `column` against every user.
fn duckdb_long_profile(ids: &str, column: &str) -> String {
    let prefix = format!("{column}=");
    // Every tag of `column` sorts between `column=` and `column>`.
    let upper = format!("{column}>");
    format!(
        "WITH a AS ({ids}), size AS (SELECT count(*) AS n FROM a), \
         dim AS (SELECT user_id, tag FROM user_tags WHERE tag >= '{prefix}' AND tag < '{upper}'), \
         hit AS (SELECT tag, count(*) AS users FROM dim WHERE user_id IN (SELECT user_id FROM a) GROUP BY tag), \
         pop AS (SELECT tag, count(*) AS population FROM dim GROUP BY tag), \
         total AS (SELECT count(*) AS n FROM users) \
         SELECT substr(pop.tag, {start}) AS value, coalesce(hit.users, 0) AS users, \
         coalesce(hit.users, 0) / size.n AS share, pop.population, \
         100 * (coalesce(hit.users, 0) / size.n) / (pop.population / total.n) AS tgi \
         FROM pop LEFT JOIN hit ON hit.tag = pop.tag CROSS JOIN size CROSS JOIN total ORDER BY value",
        start = prefix.len() + 1
    )
}

fn duckdb_wide_profile(predicate: &str, column: &str) -> String {
    format!(
        "WITH a AS (SELECT {column} FROM users WHERE {predicate}), size AS (SELECT count(*) AS n FROM a), \
         hit AS (SELECT {column}, count(*) AS users FROM a GROUP BY {column}), \
         pop AS (SELECT {column}, count(*) AS population FROM users GROUP BY {column}), \
         total AS (SELECT count(*) AS n FROM users) \
         SELECT pop.{column} AS value, coalesce(hit.users, 0) AS users, \
         coalesce(hit.users, 0) / size.n AS share, pop.population, \
         100 * (coalesce(hit.users, 0) / size.n) / (pop.population / total.n) AS tgi \
         FROM pop LEFT JOIN hit ON hit.{column} = pop.{column} CROSS JOIN size CROSS JOIN total \
         ORDER BY value"
    )
}

/// DuckDB's formulations of a workload: the wide table, and the long table
/// as set operations and (where it applies) as GROUP BY HAVING.
pub(super) fn duckdb_formulations(audience: &Audience) -> Vec<Formulation> {
    let predicate = audience.expr.duckdb_wide();
    let wide_ids = format!("SELECT user_id FROM users WHERE {predicate}");
    let mut long = vec![("long, set operations", audience.expr.duckdb_sets())];
    if let Some(having) = audience.expr.duckdb_having() {
        long.push(("long, GROUP BY HAVING", having));
    }
    let mut all = vec![("wide", wide_ids)];
    all.extend(long);
    all.into_iter()
        .map(|(label, ids)| match audience.kind {
            Kind::Count => {
                let sql = if label == "wide" {
                    format!("SELECT count(*) FROM users WHERE {predicate}")
                } else {
                    format!("SELECT count(*) FROM ({ids})")
                };
                Formulation::count(label, sql)
            }
            Kind::List => Formulation {
                label,
                check_sql: format!("SELECT count(*), sum(user_id) FROM ({ids})"),
                timed_sql: ids,
                fetch: "arrow",
            },
            Kind::Profile(column) => {
                let sql = if label == "wide" {
                    duckdb_wide_profile(&predicate, column)
                } else {
                    duckdb_long_profile(&ids, column)
                };
                Formulation::count(label, sql)
            }
        })
        .collect()
}

pub(super) fn chdb_formulations(audience: &Audience) -> Vec<Formulation> {
    let (leaves, bitmap) = audience.expr.chdb();
    let with = |more: &str| {
        let parts: Vec<&str> = [leaves.as_str(), more]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        format!("WITH {}", parts.join(", "))
    };
    let formulation = match audience.kind {
        Kind::Count => {
            let mut all = vec![Formulation::count(
                "scalar subqueries",
                audience.expr.chdb_count(),
            )];
            if let Some(sql) = audience.expr.chdb_one_scan() {
                all.push(Formulation::count("one scan", sql));
            }
            return all;
        }
        Kind::List => Formulation {
            label: "scalar subqueries",
            check_sql: format!(
                "{} SELECT bitmapCardinality(a), arraySum(bitmapToArray(a))",
                with(&format!("{bitmap} AS a"))
            ),
            timed_sql: format!(
                "{} SELECT arrayJoin(bitmapToArray({bitmap})) AS user_id",
                with("")
            ),
            fetch: "arrow",
        },
        Kind::Profile(column) => {
            let prefix = format!("{column}=");
            let definitions = format!(
                "{bitmap} AS a, bitmapCardinality(a) AS size, \
                 (SELECT bm FROM tag_bitmaps WHERE tag = '{all}') AS u, bitmapCardinality(u) AS total",
                all = expr::CHDB_ALL
            );
            Formulation::count(
                "scalar subqueries",
                format!(
                    "{} SELECT substring(tag, {start}) AS value, bitmapAndCardinality(a, bm) AS users, \
                     users / size AS share, bitmapAndCardinality(bm, u) AS population, \
                     100 * share / (population / total) AS tgi \
                     FROM tag_bitmaps WHERE startsWith(tag, '{prefix}') ORDER BY value",
                    with(&definitions),
                    start = prefix.len() + 1
                ),
            )
        }
    };
    vec![formulation]
}

fn formulations(peer: Peer, audience: &Audience) -> Vec<Formulation> {
    match peer {
        Peer::Duckdb => duckdb_formulations(audience),
        Peer::Chdb => chdb_formulations(audience),
        Peer::Postgres => Vec::new(),
    }
}

/// A step of the peer runner (bench/peers/runner.py).
#[derive(Serialize)]
struct PeerStep {
    name: String,
    sql: Vec<String>,
    runs: usize,
    check: bool,
    fetch: &'static str,
}

/// Loads a peer's database unless its marker says it is loaded.
pub(super) fn load_peer(setup: &PeerSetup, files: &AudienceFiles) -> Result<LoadReport, String> {
    let name = setup.peer.name();
    if let Some(report) = load::loaded(files, name) {
        return Ok(report);
    }
    eprintln!("loading {name}");
    let statements = match setup.peer {
        Peer::Duckdb => load::duckdb_statements(files),
        Peer::Chdb => load::chdb_statements(files),
        Peer::Postgres => return Err("postgres is not a peer of the audience suite".into()),
    };
    let steps: Vec<PeerStep> = statements
        .iter()
        .map(|(step, sql)| PeerStep {
            name: step.clone(),
            sql: sql.clone(),
            runs: 1,
            check: false,
            fetch: "rows",
        })
        .collect();
    let results = run_peer_steps(setup, &steps)?;
    let report = LoadReport {
        hwm_start_kib: None,
        steps: statements
            .iter()
            .zip(&results)
            .map(|((step, _), result)| load::LoadStep {
                name: step.clone(),
                seconds: result.seconds[0],
                hwm_kib: result.max_rss_kib,
            })
            .collect(),
    };
    load::mark_loaded(files, name, &report)?;
    Ok(report)
}

/// A peer's timings of one workload: each formulation's label and seconds.
pub(super) type ByFormulation = Vec<(&'static str, Vec<f64>)>;

/// Checks every formulation of every workload on a peer against the
/// expected answers (the raw bound's), then times them: a warm-up run and
/// `runs` timed runs each. Returns, per workload, each formulation's label
/// and timings, and the runner's peak resident memory.
pub(super) fn run_peer_workloads(
    setup: &PeerSetup,
    audiences: &[Audience],
    expected: &[Rows],
    runs: usize,
) -> Result<(Vec<ByFormulation>, Option<u64>), String> {
    let peer = setup.peer.name();
    let plans: Vec<Vec<Formulation>> = audiences
        .iter()
        .map(|a| formulations(setup.peer, a))
        .collect();
    let mut checks = Vec::new();
    for (audience, plan) in audiences.iter().zip(&plans) {
        for f in plan {
            checks.push(PeerStep {
                name: format!("{} ({})", audience.name, f.label),
                sql: vec![f.check_sql.clone()],
                runs: 1,
                check: true,
                fetch: "rows",
            });
        }
    }
    eprintln!("checking {peer}'s answers");
    let mut results = run_peer_steps(setup, &checks)?.into_iter();
    for ((audience, plan), expected) in audiences.iter().zip(&plans).zip(expected) {
        for f in plan {
            let result = results.next().ok_or("the runner returned too few steps")?;
            let actual = result.rows.as_ref().ok_or("a checked step returns rows")?;
            if let Some(d) = check::difference(expected, actual) {
                return Err(format!(
                    "\"{}\": {peer} ({}) differs from the raw bound: {d}\n  SQL: {}",
                    audience.name, f.label, f.check_sql
                ));
            }
        }
    }
    let mut timed = Vec::new();
    for (audience, plan) in audiences.iter().zip(&plans) {
        for f in plan {
            for (kind, n) in [("warm-up", 1), ("timed", runs)] {
                timed.push(PeerStep {
                    name: format!("{} ({}) {kind}", audience.name, f.label),
                    sql: vec![f.timed_sql.clone()],
                    runs: n,
                    check: false,
                    fetch: f.fetch,
                });
            }
        }
    }
    eprintln!("timing {peer}");
    let results: Vec<StepResult> = run_peer_steps(setup, &timed)?;
    let peak = results.iter().filter_map(|r| r.max_rss_kib).max();
    let mut results = results.into_iter().skip(1).step_by(2);
    let mut out = Vec::new();
    for plan in &plans {
        let mut per = Vec::new();
        for f in plan {
            let result = results.next().ok_or("the runner returned too few steps")?;
            per.push((f.label, result.seconds));
        }
        out.push(per);
    }
    Ok((out, peak))
}
