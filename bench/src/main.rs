//! cohortdb-bench: side-by-side benchmarks of cohortdb against peers.
//!
//! `cargo run --release -p cohortdb-bench -- <suite> [--users N] [--runs R]`
//! generates the seeded demo data at the chosen scale, runs every workload of the
//! suite on cohortdb (in-process) and on each peer (DuckDB and chDB through their
//! Python packages in bench/.venv, PostgreSQL started on a private socket) in the
//! same run, checks the peers' answers equal cohortdb's, and reports medians and
//! ratios as a Markdown table and as JSON under bench/results/.

mod audience;
mod check;
mod data;
mod experiment;
mod load;
mod lookalike;
mod memory;
mod peers;
mod postgres;
mod ranges;
mod recommend;
mod recommend_speed;
mod report;
mod scan;
mod suites;
mod wire;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// See the workspace Cargo.toml: the allocator scans and loads want.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cohortdb-bench",
    about = "Side-by-side benchmarks of cohortdb and its peers"
)]
struct Cli {
    /// Which suite to run.
    suite: Suite,
    /// Number of users in the generated data (items: one per hundred; events: ten per user on average).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Timed runs per workload; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seed of the data generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Peers to compare with (default: duckdb,chdb for the audience suite,
    /// duckdb,postgres for the others; `--peers` alone: none). chdb is a peer
    /// of the audience suite only.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    peers: Option<Vec<peers::Peer>>,
    /// audience only: about this many users tags (default: the base layout's
    /// 415), every attribute but gender and city scaled to fit.
    #[arg(long)]
    tags: Option<usize>,
    /// Exposure rows for the experiment suite.
    #[arg(long, default_value_t = 10_000_000)]
    exposures: u64,
    /// Directory for the JSON results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// load-child only: the data directory to load into.
    #[arg(long, hide = true)]
    child_data: Option<PathBuf>,
    /// load-child only: the demo table to load.
    #[arg(long, hide = true, default_value = "events")]
    child_table: String,
    /// load-child only: the input file format.
    #[arg(long, hide = true, default_value = "parquet", value_parser = ["csv", "parquet"])]
    child_format: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Suite {
    /// CSV and Parquet ingest of the demo tables.
    Load,
    /// Group-by, join, window and CTE queries over users, events and items.
    Analytics,
    /// A 3-variation experiment report over --exposures rows.
    Experiment,
    /// Round trips over the PostgreSQL protocol: SELECT 1 and a point lookup, 1
    /// and 8 connections, simple and extended protocol (cohortdb and PostgreSQL).
    Wire,
    /// Full scans, selective filters, a point lookup and LIMIT over events.
    Scan,
    /// Audience counts, a listing and a profile over bitmap tags, against a raw
    /// roaring bound, DuckDB and chDB.
    Audience,
    /// Numeric range audiences (`spend > 10000`) over a tag index, against the
    /// union of the values' bitmaps and DuckDB.
    Ranges,
    /// Lookalike scoring of the audience suite's users from a planted seed
    /// (cohortdb's SQL and engine API against scikit-learn), and the Caravan
    /// quality script.
    Lookalike,
    /// Recommendation quality on MovieLens (item-kNN, EASE, popularity through
    /// the engine API) against the `implicit` library.
    Recommend,
    /// item-kNN at scale through SQL (build, one user's top 10, every user's)
    /// against `implicit`: --users users, one item per ten, 20 interactions
    /// each on average.
    RecommendSpeed,
    /// The audience suite's load: the dataset into cohortdb at --child-data, in
    /// this process, printing the timings and peak memory as JSON.
    #[value(hide = true)]
    AudienceLoad,
    /// The load suite's memory probe: one COPY and CHECKPOINT into --child-data
    /// in this process, whose peak resident memory it prints as JSON.
    #[value(hide = true)]
    LoadChild,
}

fn main() {
    let cli = Cli::parse();
    if cli.runs == 0 {
        eprintln!("error: --runs must be at least 1");
        std::process::exit(2);
    }
    let chosen = match (&cli.peers, cli.suite) {
        (Some(peers), _) => peers.clone(),
        (None, Suite::Audience) => vec![peers::Peer::Duckdb, peers::Peer::Chdb],
        (None, _) => vec![peers::Peer::Duckdb, peers::Peer::Postgres],
    };
    if chosen.contains(&peers::Peer::Chdb) && !matches!(cli.suite, Suite::Audience) {
        eprintln!("error: chdb is a peer of the audience suite only");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let (results, scale) = match cli.suite {
            Suite::Load => {
                let files = data::prepare(cli.users, cli.seed)?;
                (
                    load::load(&files, cli.users, cli.seed, cli.runs, &chosen).await?,
                    cli.users,
                )
            }
            Suite::Analytics => {
                let files = data::prepare(cli.users, cli.seed)?;
                (
                    suites::analytics(&files, cli.runs, &chosen).await?,
                    cli.users,
                )
            }
            Suite::Scan => {
                let files = data::prepare(cli.users, cli.seed)?;
                (
                    scan::scan(&files, cli.users, cli.runs, &chosen).await?,
                    cli.users,
                )
            }
            Suite::LoadChild => {
                let files = data::prepare(cli.users, cli.seed)?;
                let dir = cli
                    .child_data
                    .as_deref()
                    .ok_or("load-child needs --child-data")?;
                return memory::child(&files, &cli.child_table, &cli.child_format, dir).await;
            }
            Suite::Audience => (
                audience::audience(cli.users, cli.tags, cli.seed, cli.runs, &chosen).await?,
                cli.users,
            ),
            Suite::AudienceLoad => {
                let dir = cli
                    .child_data
                    .as_deref()
                    .ok_or("audience-load needs --child-data")?;
                return audience::load_child(cli.users, cli.tags, cli.seed, dir).await;
            }
            Suite::Ranges => (
                ranges::ranges_suite(cli.users, cli.seed, cli.runs, &chosen).await?,
                cli.users,
            ),
            Suite::Lookalike => (
                lookalike::lookalike(cli.users, cli.seed, cli.runs).await?,
                cli.users,
            ),
            Suite::Recommend => {
                let result = recommend::recommend(cli.runs)?;
                let ratings = result.details["ratings"].as_u64().unwrap_or(0);
                (result, ratings)
            }
            Suite::RecommendSpeed => (
                recommend_speed::recommend_speed(cli.users, cli.seed, cli.runs).await?,
                cli.users,
            ),
            Suite::Wire => (wire::wire(cli.runs, &chosen).await?, wire::QUERIES as u64),
            Suite::Experiment => {
                let file = experiment::prepare(cli.exposures, cli.seed)?;
                (
                    suites::experiment(&file, cli.exposures, cli.runs, &chosen).await?,
                    cli.exposures,
                )
            }
        };
        let variant = match (cli.suite, cli.tags) {
            (Suite::Audience, Some(tags)) => format!("-tags{tags}"),
            _ => String::new(),
        };
        report::write(
            &cli.out, cli.suite, scale, &variant, cli.runs, &chosen, &results,
        )
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
