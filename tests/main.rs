//! The one integration test binary: sqllogictest files run in-process, the
//! embedding API used exactly as an outside crate would, the `cohortdb` CLI run
//! as a built binary, the wire protocol through real PostgreSQL clients, and client libraries in
//! other languages running scripts from tests/clients/, and differential tests
//! against a real PostgreSQL. Trials are collected here and run by libtest-mimic.

mod api;
mod audiences;
mod cli;
mod clients;
mod crash;
mod differential;
/// The throw-away PostgreSQL server the benchmarks use as a peer (they read
/// fields the tests do not).
#[path = "../bench/src/postgres.rs"]
#[allow(dead_code)]
mod postgres;
mod slt;
mod wire;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let mut trials = slt::trials();
    trials.extend(api::trials());
    trials.extend(audiences::trials());
    trials.extend(cli::trials());
    trials.extend(wire::trials());
    trials.extend(clients::trials());
    trials.extend(crash::trials());
    trials.extend(differential::trials());
    libtest_mimic::run(&args, trials).exit();
}

/// Runs an async test body on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future<Output = Result<(), Failed>>>(
    body: F,
) -> Result<(), Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("runtime: {e}")))?
        .block_on(body)
}

/// A trial for a plain test function.
pub fn trial(name: &str, test: fn() -> Result<(), Failed>) -> Trial {
    Trial::test(name, test)
}
