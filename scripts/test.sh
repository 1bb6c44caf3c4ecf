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

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_system_packages
ensure_tansu
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

# A venv built from pinned requirements, rebuilt when they change.
make_venv() {
  local venv=$1 requirements=$2
  if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
  fi
}
echo "== Python venvs for the client tests and the S3 server (moto)"
venv="${RECON_VENV:-$HOME/.cache/recon-venv}"
make_venv "$venv" tests/python/requirements.txt
superset_venv="${RECON_SUPERSET_VENV:-$HOME/.cache/recon-venv-superset}"
make_venv "$superset_venv" tests/python/requirements-superset.txt
export MOTO_SERVER="$venv/bin/moto_server"
export SUPERSET_PYTHON="$superset_venv/bin/python"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== benches, each case run once as a smoke test"
cargo test --workspace --benches
echo "== cargo test (unit, sqllogictest, CPython fidelity, Flight SQL and Kafka end to end, doc tests)"
# The crash test and the Python tests run the recon binary itself.
cargo build --quiet -p recon-server --bin recon -p recon-client --bin recon-cli
cargo test --workspace

echo "== Python client tests (ADBC, pyarrow.flight, polars, SQLAlchemy, Superset, Harlequin) and the compose rehearsal against the recon binary"
RECON_BIN="$CARGO_TARGET_DIR/debug/recon" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -W ignore::Warning tests/python
