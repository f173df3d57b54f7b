#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test (unit tests of
# each crate and the one integration test binary, which runs the sqllogictest
# files, the embedding-API tests, the CLI tests, the wire-protocol tests, the
# client-library tests and the differential tests against PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cohortdb/target}"
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# The wire-protocol tests run psql against the server; the differential tests
# start a PostgreSQL server of their own (Debian's package) to compare with.
if ! command -v psql >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing PostgreSQL (psql and the server) for the wire-protocol and differential tests"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq postgresql postgresql-client >/dev/null
fi
# The client-library tests (tests/clients/) run psycopg + SQLAlchemy, asyncpg,
# node-postgres and pgjdbc against the server; this only checks when they are there.
scripts/install-clients.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast
