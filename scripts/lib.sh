# Shared by scripts/test.sh and scripts/quickstart.sh (sourced, not run):
# install what a fresh Debian machine with only the Rust toolchain lacks.

# apt packages: a C toolchain for the bundled librdkafka, python3 with venv.
ensure_system_packages() {
  local need_apt=()
  command -v python3 >/dev/null || need_apt+=(python3)
  python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
  command -v cc >/dev/null || need_apt+=(build-essential)
  command -v make >/dev/null || need_apt+=(make)
  command -v perl >/dev/null || need_apt+=(perl)
  command -v ip >/dev/null || need_apt+=(iproute2)  # the compose rehearsal's network namespaces
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need_apt[@]}"
  fi
}

# The Kafka-protocol broker (DESIGN §10), built once into ~/.cargo/bin.
ensure_tansu() {
  if ! command -v tansu >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
    echo "installing the tansu broker (once, 10-20 minutes)"
    cargo install tansu --locked --features dynostore
  fi
}

# Path of the tansu binary.
tansu_bin() {
  command -v tansu 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
}
