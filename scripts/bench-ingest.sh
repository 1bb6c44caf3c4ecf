#!/usr/bin/env bash
# Kafka ingest benchmark: recon vs a bare rdkafka consumer on the same tansu
# broker, freshness percentiles and peak RSS (tests/benches/ingest.rs explains).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/recon-target}"
cargo build --release --quiet -p recon-server --bin recon
RECON_BIN="$CARGO_TARGET_DIR/release/recon" \
  cargo bench --quiet -p recon-integration-tests --bench ingest -- --bench "$@"
