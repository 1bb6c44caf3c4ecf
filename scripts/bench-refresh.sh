#!/usr/bin/env bash
# Index refresh benchmark: recon's REFRESH INDEX of the three views vs DuckDB
# computing the same SQL from the same Parquet files, same run, at 1 M and 5 M
# transactions, plus the refresh after 10 k new transactions
# (tests/benches/refresh.rs explains). Installs duckdb into a venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/recon-target}"
venv="${RECON_BENCH_VENV:-$HOME/.cache/recon-bench-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import duckdb' 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check duckdb==2.0.1
# The same release build as the quickstart's (same crates, so the same features:
# nothing is rebuilt). The bench binary itself only writes the data set and
# sends statements — the timed work runs in the release server — so it is run
# from the test build instead of a second, differently-featured release build.
cargo build --release --quiet -p recon-server --bin recon -p recon-client --bin recon-cli
RECON_BIN="$CARGO_TARGET_DIR/release/recon" BENCH_PYTHON="$venv/bin/python" \
  cargo test --quiet -p recon-integration-tests --bench refresh -- --bench "$@"
