//! The `wire` suite: round trips over the PostgreSQL protocol, cohortdb's server
//! against a PostgreSQL server, both on loopback TCP and driven by the same
//! client (tokio-postgres) in this process.
//!
//! Each workload sends a fixed number of queries, split over 1 or 8
//! connections, through the simple protocol (the SQL text each time) or the
//! extended one (a statement prepared once per connection, then bound and
//! executed): a trivial `SELECT 1` and a point lookup in a 10,000-row table
//! without an index (cohortdb has none; PostgreSQL is given none either). The
//! timed figure is the wall time of all queries; every query's latency is kept
//! for the percentiles. The engines take turns run by run (cohortdb, then
//! PostgreSQL, then cohortdb again), so that the machine's changing load falls
//! on both alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cohortdb::{Auth, Database, ServerOptions};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::peers::{self, Peer};
use crate::report::median;
use crate::suites::{SuiteResult, Workload};

/// Queries per workload run, over all its connections.
pub const QUERIES: usize = 4_000;
/// Rows in the lookup table.
const LOOKUP_ROWS: i64 = 10_000;

#[derive(Clone, Copy)]
enum Protocol {
    Simple,
    Extended,
}

#[derive(Clone, Copy)]
enum Query {
    Trivial,
    PointLookup,
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Trivial => "SELECT 1",
            Query::PointLookup => "point lookup",
        }
    }
}

/// Runs the suite on cohortdb and, when asked for, PostgreSQL.
pub async fn wire(runs: usize, peers: &[Peer]) -> Result<SuiteResult, String> {
    let port = serve_cohortdb().await?;
    let mut servers: Vec<(&'static str, String)> = vec![(
        "cohortdb",
        format!("host=127.0.0.1 port={port} user=cohortdb dbname=cohortdb"),
    )];
    let mut versions = BTreeMap::new();
    let postgres = if peers.contains(&Peer::Postgres) {
        let server = peers::start_postgres()?;
        versions.insert("postgres".to_string(), server.version.clone());
        servers.push((
            "postgres",
            format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                server.port
            ),
        ));
        Some(server)
    } else {
        None
    };
    for (engine, dsn) in &servers {
        create_lookup_table(engine, dsn).await?;
    }
    let mut workloads = Vec::new();
    let mut latencies = String::from(
        "| workload | engine | queries/s | p50 µs | p99 µs |\n|---|---|---|---|---|\n",
    );
    for query in [Query::Trivial, Query::PointLookup] {
        for connections in [1, 8] {
            for protocol in [Protocol::Simple, Protocol::Extended] {
                let name = format!(
                    "{}, {}, {connections} conn",
                    query.name(),
                    match protocol {
                        Protocol::Simple => "simple",
                        Protocol::Extended => "extended",
                    }
                );
                // The engines take turns, run by run, so that a change in
                // the machine's load meanwhile falls on both alike.
                let mut times = vec![Vec::with_capacity(runs); servers.len()];
                let mut each_query = vec![Vec::new(); servers.len()];
                for _ in 0..runs {
                    for (i, (_, dsn)) in servers.iter().enumerate() {
                        let (elapsed, mut each) = run(dsn, query, protocol, connections).await?;
                        times[i].push(elapsed);
                        each_query[i].append(&mut each);
                    }
                }
                let mut seconds = BTreeMap::new();
                for (((engine, _), times), mut all) in servers.iter().zip(times).zip(each_query) {
                    all.sort_by(f64::total_cmp);
                    latencies.push_str(&format!(
                        "| {name} | {engine} | {:.0} | {:.0} | {:.0} |\n",
                        QUERIES as f64 / median(&times),
                        percentile(&all, 0.50) * 1e6,
                        percentile(&all, 0.99) * 1e6,
                    ));
                    seconds.insert(engine.to_string(), times);
                }
                workloads.push(Workload {
                    name,
                    rows: QUERIES as u64,
                    bytes: None,
                    seconds,
                });
            }
        }
    }
    drop(postgres);
    Ok(SuiteResult {
        workloads,
        versions,
        notes: latencies,
        details: serde_json::Value::Null,
    })
}

/// Serves an in-memory database on a loopback port, on runtime threads of its
/// own, and returns the port.
pub async fn serve_cohortdb() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("a loopback listener");
            let options = ServerOptions {
                auth: Auth::Trust,
                ..ServerOptions::default()
            };
            let _ = Database::open_in_memory()
                .serve_listener(listener, options)
                .await;
        });
    });
    Ok(port)
}

async fn connect(dsn: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .map_err(|e| format!("{dsn}: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn create_lookup_table(engine: &str, dsn: &str) -> Result<(), String> {
    let client = connect(dsn).await?;
    let fill = match engine {
        "cohortdb" => format!(
            "INSERT INTO lookup SELECT value, 'user ' || value FROM generate_series(1, {LOOKUP_ROWS})"
        ),
        _ => format!(
            "INSERT INTO lookup SELECT g, 'user ' || g FROM generate_series(1, {LOOKUP_ROWS}) AS g"
        ),
    };
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS lookup; CREATE TABLE lookup (id BIGINT NOT NULL, name TEXT); {fill}"
        ))
        .await
        .map_err(|e| format!("{engine}: {e}"))
}

/// One run: `QUERIES` queries over `connections` connections at once. Returns
/// the wall time and every query's latency, in seconds.
async fn run(
    dsn: &str,
    query: Query,
    protocol: Protocol,
    connections: usize,
) -> Result<(f64, Vec<f64>), String> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(Arc::new(connect(dsn).await?));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            tokio::spawn(
                async move { drive(&client, query, protocol, c, QUERIES / connections).await },
            )
        })
        .collect();
    let mut latencies = Vec::with_capacity(QUERIES);
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    Ok((started.elapsed().as_secs_f64(), latencies))
}

/// The queries of one connection, checked, with their latencies.
async fn drive(
    client: &Client,
    query: Query,
    protocol: Protocol,
    connection: usize,
    count: usize,
) -> Result<Vec<f64>, String> {
    let error = |e: tokio_postgres::Error| e.to_string();
    let prepared = match (protocol, query) {
        (Protocol::Extended, Query::Trivial) => {
            Some(client.prepare("SELECT 1").await.map_err(error)?)
        }
        (Protocol::Extended, Query::PointLookup) => Some(
            client
                .prepare("SELECT name FROM lookup WHERE id = $1")
                .await
                .map_err(error)?,
        ),
        (Protocol::Simple, _) => None,
    };
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let id = ((connection * count + i) as i64 % LOOKUP_ROWS) + 1;
        let started = Instant::now();
        let answer = match (&prepared, query) {
            (Some(statement), Query::Trivial) => client
                .query_one(statement, &[])
                .await
                .map_err(error)?
                .get::<_, i32>(0)
                .to_string(),
            (Some(statement), Query::PointLookup) => client
                .query_one(statement, &[&id])
                .await
                .map_err(error)?
                .get::<_, String>(0),
            (None, Query::Trivial) => {
                first_value(client.simple_query("SELECT 1").await.map_err(error)?)
            }
            (None, Query::PointLookup) => first_value(
                client
                    .simple_query(&format!("SELECT name FROM lookup WHERE id = {id}"))
                    .await
                    .map_err(error)?,
            ),
        };
        latencies.push(started.elapsed().as_secs_f64());
        let expected = match query {
            Query::Trivial => "1".to_string(),
            Query::PointLookup => format!("user {id}"),
        };
        if answer != expected {
            return Err(format!(
                "{} answered {answer:?}, not {expected:?}",
                query.name()
            ));
        }
    }
    Ok(latencies)
}

fn first_value(messages: Vec<SimpleQueryMessage>) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// The `p` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
