#!/usr/bin/env bash
# The whole job on one machine (README's first command): installs what is
# missing (C toolchain, the tansu broker), builds recon and recon-cli, starts
# the broker and `recon serve`, generates the seed's data set, refreshes the
# three indexes, prints how to connect and a few example queries with their
# results, then keeps running until Ctrl-C and stops everything it started.
#
#   ./scripts/quickstart.sh [--exit-after-print] [--transactions N]
#
# Environment (all optional): QUICKSTART_DIR (default ./recon-quickstart; it is
# emptied on start and holds the warehouse and the logs), BROKER_PORT (9092),
# FLIGHT_PORT (50051), HTTP_PORT (8080), RECON_BIN_DIR (use the recon and
# recon-cli binaries there instead of building), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

exit_after_print=false
transactions=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --exit-after-print) exit_after_print=true ;;
    --transactions) transactions="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

dir="${QUICKSTART_DIR:-./recon-quickstart}"
broker_port="${BROKER_PORT:-9092}"
flight_port="${FLIGHT_PORT:-50051}"
http_port="${HTTP_PORT:-8080}"
started=$(date +%s)

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$broker_port" "$flight_port" "$http_port"; do
  port_free "$port" || { echo "port $port on 127.0.0.1 is in use (set BROKER_PORT/FLIGHT_PORT/HTTP_PORT)" >&2; exit 1; }
done

if [ -n "${RECON_BIN_DIR:-}" ]; then
  bin="$RECON_BIN_DIR"
else
  echo "== installing what is missing and building (release)"
  ensure_system_packages
  ensure_tansu
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/recon-target}"
  cargo build --release --quiet -p recon-server --bin recon -p recon-client --bin recon-cli
  bin="$CARGO_TARGET_DIR/release"
fi
tansu=$(tansu_bin)
[ -x "$tansu" ] || { echo "no tansu binary (cargo install tansu --locked --features dynostore)" >&2; exit 1; }

# A fresh folder each run: the broker keeps its log in memory, so offsets
# start again at 0 and an old ingest checkpoint would not match them.
if [ -e "$dir" ] && [ ! -e "$dir/.recon-quickstart" ]; then
  echo "$dir exists and was not made by the quickstart; set QUICKSTART_DIR" >&2
  exit 1
fi
rm -rf "$dir"
mkdir -p "$dir/logs"
touch "$dir/.recon-quickstart"

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'echo; echo "stopping"; exit 0' INT TERM

echo "== starting the tansu broker on 127.0.0.1:$broker_port"
"$tansu" broker --listener-url "tcp://127.0.0.1:$broker_port" \
  --advertised-listener-url "tcp://127.0.0.1:$broker_port" \
  --storage-engine memory://tansu/ >"$dir/logs/tansu.log" 2>&1 &
pids+=($!)

echo "== starting recon serve (Flight SQL 127.0.0.1:$flight_port, HTTP 127.0.0.1:$http_port)"
RUST_LOG="${RUST_LOG:-info}" "$bin/recon" serve --warehouse "$dir/warehouse" \
  --kafka-brokers "127.0.0.1:$broker_port" \
  --flight-addr "127.0.0.1:$flight_port" --http-addr "127.0.0.1:$http_port" \
  >"$dir/logs/recon.log" 2>&1 &
pids+=($!)

cli=("$bin/recon-cli" --port "$flight_port")
for _ in $(seq 1 120); do
  "${cli[@]}" sql "SELECT 1" >/dev/null 2>&1 && break
  kill -0 "${pids[1]}" 2>/dev/null || { echo "recon stopped; see $dir/logs/recon.log" >&2; tail -n 20 "$dir/logs/recon.log" >&2; exit 1; }
  sleep 0.5
done

echo "== generating the seed's data set at $transactions transactions"
"${cli[@]}" generate --transactions "$transactions" \
  --statements $((transactions * 6 / 10)) --signals $((transactions * 3 / 10)) \
  --merchants 200 --policies 20 --status-updates 0.1 \
  --kafka-brokers "127.0.0.1:$broker_port" --http-url "http://127.0.0.1:$http_port" --wait

echo "== refreshing the index snapshots"
for view in batch_index final_index merchant_daily_kpi; do
  "${cli[@]}" sql "REFRESH INDEX $view" --format csv | tail -n +2 \
    | awk -F, '{ printf "  %-20s %9s rows in %5s ms (%s)\n", $1, $4, $5, $8 }'
done

cat <<INFO

recon is running (warehouse $dir/warehouse, logs $dir/logs), ready in $(( $(date +%s) - started )) s.

Connect:
  DBeaver / JDBC   jdbc:arrow-flight-sql://127.0.0.1:$flight_port?useEncryption=false
  ADBC (Python)    import adbc_driver_flightsql.dbapi as flight_sql
                   conn = flight_sql.connect("grpc://127.0.0.1:$flight_port")
                   cur = conn.cursor(); cur.execute("SELECT * FROM final_index LIMIT 10")
                   print(cur.fetch_arrow_table().to_pandas())
  recon-cli        $bin/recon-cli --port $flight_port        (shell; \\d lists tables)
  HTTP             curl http://127.0.0.1:$http_port/ml_signals  |  /metrics  |  /healthz
  Kafka            produce JSON events to transactions_topic on 127.0.0.1:$broker_port

Example queries:
INFO

example() {
  echo
  echo "recon> $1;"
  "${cli[@]}" sql "$1"
}
example "SELECT reconciliation_status, count(*) AS statement_rows, round(sum(discrepancy), 2) AS discrepancy FROM batch_index GROUP BY reconciliation_status ORDER BY reconciliation_status"
example "SELECT risk_label, final_status, count(*) AS n FROM final_index GROUP BY risk_label, final_status ORDER BY n DESC LIMIT 6"
example "SELECT merchant_id, day, tx_count, round(daily_value, 2) AS daily_value, unmatched_count, merchant_kpi FROM merchant_daily_kpi ORDER BY daily_value DESC LIMIT 5"
example "SELECT view, rows, duration_ms FROM index_snapshots WHERE current ORDER BY view"

if $exit_after_print; then
  echo
  echo "done in $(( $(date +%s) - started )) s (--exit-after-print: stopping)"
  exit 0
fi
echo
echo "Press Ctrl-C to stop the broker and the server."
wait "${pids[1]}"
