#!/usr/bin/env bash
# Flight SQL streaming benchmark: recon vs ROAPI on the same ≥5 M-row Parquet
# table, same client, same run (tests/benches/flight_stream.rs explains the figures).
# Installs ROAPI from PyPI into a venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/recon-target}"
venv="${RECON_BENCH_VENV:-$HOME/.cache/recon-bench-venv}"
if [ ! -x "$venv/bin/roapi" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check roapi==0.12.7 || echo "roapi not installable: recon only"
fi
cargo build --release --quiet -p recon-server --bin recon
RECON_BIN="$CARGO_TARGET_DIR/release/recon" ROAPI_BIN="$venv/bin/roapi" \
  cargo bench --quiet -p recon-integration-tests --bench flight_stream -- --bench "$@"
