#!/usr/bin/env bash
# The test command (README "Run the tests"); .ci/run calls exactly this.
# Works on a fresh Debian machine with the Rust toolchain: it installs what is
# missing (python3 for the CPython fidelity test), keeps the cargo build in a
# target folder outside the clone so repeated runs reuse it, and runs
# formatting, lints and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/recon-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
command -v cc >/dev/null || need_apt+=(build-essential)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== benches, each case run once as a smoke test"
cargo test --workspace --benches
echo "== cargo test (unit, sqllogictest, CPython fidelity, doc tests)"
cargo test --workspace
