#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test (unit tests of
# each crate and the one integration test binary, which runs the sqllogictest
# files, the embedding-API tests and the CLI tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cohortdb/target}"
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast
