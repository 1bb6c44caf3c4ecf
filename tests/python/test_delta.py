"""Index snapshots read by Delta readers that are not recon: the `deltalake`
package (delta-rs's Python binding), `polars.read_delta`, and
`delta_reader.py`, a replay of `_delta_log` with the standard library and
pyarrow. A real tansu broker carries the events, `recon-cli generate` writes
the data set, and further events (new transactions, later events of existing
ones) are produced with confluent-kafka. After full refreshes, incremental ones,
a FULL after incremental ones, retention pruning and an upgrade from the layout
before Delta Lake, each reader's rows equal the live view's (EXCEPT ALL both
ways in DuckDB, 0 rows), and time travel returns the earlier version's rows."""

import datetime
import json
import os
import shutil
import socket
import subprocess
import time

import adbc_driver_flightsql.dbapi as flightsql
import deltalake
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

import delta_reader
from conftest import free_port, start_server, stop_server
from test_compose import tansu

VIEWS = ["batch_index", "final_index", "merchant_daily_kpi"]
# The refresh's own time: differs between the view now and its snapshot.
RUN_TIME = {"batch_run_timestamp", "final_index_ts"}
TOPIC = "transactions_topic"
RETENTION = 3


def wait_for_port(port, what):
    deadline = time.time() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.time() < deadline, f"{what} did not listen within 30 s"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    kafka_port = free_port()
    url = f"tcp://127.0.0.1:{kafka_port}"
    broker = subprocess.Popen(
        [tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(kafka_port, "tansu")
        brokers = f"127.0.0.1:{kafka_port}"
        proc, uri = start_server(tmp_path_factory, [
            "--kafka-brokers", brokers, "--kafka-flush-interval-secs", "1",
            "--snapshot-retention", str(RETENTION),
        ])
        lake = Lake(proc, uri, brokers)
        try:
            yield lake
        finally:
            # The server running now: a test may have restarted it.
            stop_server(lake.proc)
    finally:
        broker.kill()
        broker.wait()


class Lake:
    def __init__(self, proc, uri, brokers):
        self.proc, self.uri, self.brokers = proc, uri, brokers
        self.warehouse = str(proc.warehouse)

    def sql(self, query):
        with flightsql.connect(self.uri) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

    def scalar(self, query):
        return self.sql(query).column(0)[0].as_py()

    def table(self, view):
        return os.path.join(self.warehouse, "output", view)

    def generate(self, *args):
        cli = os.path.join(os.path.dirname(os.environ["RECON_BIN"]), "recon-cli")
        subprocess.run(
            [cli, "generate", "--port", str(self.proc.port), "--kafka-brokers", self.brokers,
             "--http-url", f"http://127.0.0.1:{self.proc.http_port}", "--wait", "--quiet", *args],
            check=True, timeout=300, capture_output=True,
        )

    def produce(self, events):
        """Produces `events` (dicts) and waits until recon holds them all."""
        before = self.scalar("SELECT count(*) FROM transactions")
        producer = Producer({"bootstrap.servers": self.brokers})
        for event in events:
            producer.produce(TOPIC, key=event["transaction_id"], value=json.dumps(event))
        assert producer.flush(30) == 0
        deadline = time.time() + 60
        while self.scalar("SELECT count(*) FROM transactions") < before + len(events):
            assert time.time() < deadline, "events not ingested within 60 s"
            time.sleep(0.2)

    def refresh(self, view, full=False):
        row = self.sql(f"REFRESH INDEX {view}{' FULL' if full else ''}").to_pylist()[0]
        return row

    def current(self, view):
        return self.sql(
            f"SELECT version, kind, run_id FROM index_snapshots WHERE current AND view = '{view}'"
        ).to_pylist()[0]


def normalized(table):
    """`table` without the run-time columns, in types every reader agrees on
    (timestamps as microseconds UTC, strings as plain strings)."""
    fields = []
    columns = []
    for field, column in zip(table.schema, table.columns):
        if field.name in RUN_TIME:
            continue
        kind = field.type
        if pa.types.is_timestamp(kind):
            column = pc.cast(column, pa.timestamp("us", tz="UTC"))
        elif pa.types.is_string_view(kind) or pa.types.is_large_string(kind):
            column = pc.cast(column, pa.string())
        fields.append(field.name)
        columns.append(column)
    return pa.table(columns, names=fields)


def differences(left, right):
    """(rows of left not in right, rows of right not in left): EXCEPT ALL over
    the columns that are not floats, and rows without a counterpart whose floats
    agree to 1e-9 relative (sums such as daily_value depend on the order rows
    were added in, which parallel aggregation does not fix)."""
    db = duckdb.connect()
    left, right = normalized(left), normalized(right)
    db.register("l", left)
    db.register("r", right)
    floats = [f.name for f in left.schema if pa.types.is_floating(f.type)]
    exact = [n for n in left.column_names if n not in floats]
    names = ", ".join(f'"{n}"' for n in exact)
    same = " AND ".join(
        [f'a."{n}" IS NOT DISTINCT FROM b."{n}"' for n in exact]
        + [f'(a."{n}" IS NOT DISTINCT FROM b."{n}" OR abs(a."{n}" - b."{n}") <= 1e-9 * greatest(1, abs(a."{n}")))'
           for n in floats]
    ) or "true"

    def one_way(a, b):
        unmatched = db.execute(
            f"SELECT count(*) FROM (SELECT {names} FROM {a} EXCEPT ALL SELECT {names} FROM {b})"
        ).fetchone()[0]
        if floats:
            unmatched += db.execute(
                f"SELECT count(*) FROM {a} a WHERE NOT EXISTS (SELECT 1 FROM {b} b WHERE {same})"
            ).fetchone()[0]
        return unmatched

    return one_way("l", "r"), one_way("r", "l")


def readers(path, version=None):
    """The table at `version` (the newest by default) as each reader reads it."""
    table = deltalake.DeltaTable(path, version=version)
    by_deltalake = table.to_pyarrow_table()
    by_polars = pl.read_delta(path, version=version).to_arrow()
    by_replay = delta_reader.read(path, version)
    return {"deltalake": by_deltalake, "polars": by_polars, "replay": by_replay}


def assert_readers_equal_live(lake, views=VIEWS):
    for view in views:
        live = lake.sql(f"SELECT * FROM {view}")
        for reader, rows in readers(lake.table(view)).items():
            assert rows.num_rows == live.num_rows, (view, reader)
            assert differences(live, rows) == (0, 0), (view, reader)
        protocol, _, _ = delta_reader.actions(lake.table(view))
        assert (protocol["minReaderVersion"], protocol["minWriterVersion"]) == (1, 2), protocol


def test_delta_readers_see_every_kind_of_refresh(lake):
    lake.generate("--transactions", "3000", "--statements", "2000", "--signals", "2000", "--seed", "7")

    # Full refreshes.
    for view in VIEWS:
        assert lake.refresh(view)["kind"] == "full"
    assert_readers_equal_live(lake)
    first = lake.current("final_index")
    first_rows = lake.sql("SELECT * FROM final_index")

    # New transactions: incremental.
    lake.generate("--transactions", "200", "--statements", "0", "--signals", "0", "--policies", "0",
                  "--seed", "8")
    for view in ["batch_index", "final_index"]:
        row = lake.refresh(view)
        assert row["kind"] == "incremental" and row["rows"] >= 200, row
        # Only new transactions: their rows are added, no file is rewritten.
        assert row["files_removed"] == 0 and row["files_added"] >= 1, row
    assert_readers_equal_live(lake, ["batch_index", "final_index"])

    # Later events of existing transactions: incremental, their old rows replaced.
    old = lake.sql(
        "SELECT transaction_id, merchant_id, user_id, amount, currency, event_time "
        "FROM transactions_latest WHERE status <> 'REFUNDED' ORDER BY transaction_id LIMIT 40"
    ).to_pylist()
    lake.produce([
        {"transaction_id": r["transaction_id"], "merchant_id": r["merchant_id"], "user_id": r["user_id"],
         "amount": r["amount"], "currency": r["currency"], "status": "REFUNDED",
         "event_time": (r["event_time"] + datetime.timedelta(hours=1)).isoformat()}
        for r in old
    ])
    for view in ["batch_index", "final_index"]:
        assert lake.refresh(view)["kind"] == "incremental"
    assert_readers_equal_live(lake, ["batch_index", "final_index"])
    ids = ", ".join(f"'{r['transaction_id']}'" for r in old)
    refunded = pl.read_delta(lake.table("final_index")).filter(
        pl.col("transaction_id").is_in([r["transaction_id"] for r in old])
    )
    assert refunded.height >= 40 and set(refunded["status"]) == {"REFUNDED"}, ids

    # Time travel: the first version is still readable, by every reader and by
    # recon's index_at, and has the rows from before.
    for reader, rows in readers(lake.table("final_index"), first["version"]).items():
        assert differences(first_rows, rows) == (0, 0), reader
    at_first = lake.sql(f"SELECT * FROM index_at('final_index', {first['version']})")
    assert differences(first_rows, at_first) == (0, 0)

    # FULL after incremental ones.
    for view in VIEWS:
        assert lake.refresh(view, full=True)["kind"] == "full"
    assert_readers_equal_live(lake)

    # Retention: after more refreshes only the newest RETENTION refreshes stay
    # readable; the first version's files are vacuumed and its log entries gone.
    for _ in range(RETENTION):
        lake.refresh("final_index", full=True)
    assert_readers_equal_live(lake, ["final_index"])
    kept = lake.sql(
        "SELECT version FROM index_snapshots WHERE view = 'final_index' AND readable "
        "AND kind IN ('full', 'incremental') ORDER BY version"
    ).column(0).to_pylist()
    assert len(kept) == RETENTION, kept
    assert first["version"] < kept[0]
    assert first["version"] not in delta_reader.versions(lake.table("final_index"))
    with pytest.raises(Exception):
        deltalake.DeltaTable(lake.table("final_index"), version=first["version"]).to_pyarrow_table()
    live_files = set()
    for version in kept:
        _, _, adds = delta_reader.actions(lake.table("final_index"), version)
        live_files |= {a["path"] for a in adds}
    on_disk = {f for f in os.listdir(lake.table("final_index")) if not f.startswith("_")}
    assert on_disk == live_files
    for version in kept:
        for reader, rows in readers(lake.table("final_index"), version).items():
            assert rows.num_rows == lake.sql(
                f"SELECT count(*) AS n FROM index_at('final_index', {version})"
            ).column(0)[0].as_py(), (version, reader)

    # recon's record in each refresh commit, as any reader sees it.
    info = delta_reader.commit_info(lake.table("final_index"), kept[-1])
    assert info["recon"]["kind"] == "full" and info["recon"]["run_id"], info
    history = deltalake.DeltaTable(lake.table("final_index")).history()
    assert any("recon" in entry for entry in history), history[:2]


def test_an_old_layout_upgrades_and_readers_see_the_delta_table(lake):
    """A view written by recon before Delta Lake: its snapshot is served, then
    the first refresh writes the Delta table and removes the old layout."""
    view = "merchant_daily_kpi"
    live = lake.sql(f"SELECT * FROM {view}")
    assert live.num_rows > 0
    stop_server(lake.proc)
    folder = lake.table(view)
    shutil.rmtree(folder)
    run = "20261101T000000000Z-0ld0"
    os.makedirs(os.path.join(folder, f"snapshot-{run}"))
    pq.write_table(live, os.path.join(folder, f"snapshot-{run}", "part-0.parquet"))
    with open(os.path.join(folder, "_manifest.json"), "w") as f:
        json.dump({"snapshots": [{
            "view": view, "run_id": run, "created_at_ms": 0, "rows": live.num_rows,
            "duration_ms": 1, "location": f"output/{view}/snapshot-{run}/",
            "files": ["part-0.parquet"],
        }]}, f)

    lake.proc = restart(lake.proc)
    assert lake.current(view)["kind"] == "legacy"
    assert differences(live, lake.sql(f"SELECT * FROM {view}_snapshot")) == (0, 0)
    assert lake.refresh(view)["kind"] == "full"
    left = os.listdir(folder)
    assert not any(f.startswith("snapshot-") or f == "_manifest.json" for f in left), left
    assert_readers_equal_live(lake, [view])


def restart(proc):
    """`proc`'s server started again on the same warehouse and ports."""
    argv = proc.args
    log = open(os.path.join(proc.warehouse, "server.log"), "a")
    again = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    again.warehouse, again.port, again.http_port = proc.warehouse, proc.port, proc.http_port
    wait_for_port(proc.port, "recon")
    return again
