"""Fixtures for the ADBC tests: a sample warehouse written with pyarrow in the
layouts the seed's Spark script produces, and `recon serve` (the binary named by
RECON_BIN) started on a free loopback port, with and without authentication."""

import os
import socket
import subprocess
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

USER, PASSWORD = "analyst", "pa55word"


def write_warehouse(root):
    data = os.path.join(root, "batch_parquet_data")
    os.makedirs(os.path.join(data, "merchants.parquet"))
    pq.write_table(
        pa.table(
            {
                "statement_id": ["STMT-1", "STMT-2", "STMT-3"],
                "transaction_id": ["T-1", "T-2", None],
                "posting_date": ["2026-11-01", "2026-11-02", "2026-11-03"],
                "amount_posted": [100.0, 2.675, None],
                "fee_charged": [1.5, 0.05, 0.0],
            }
        ),
        os.path.join(data, "aggregator_statements.parquet"),
    )
    pq.write_table(
        pa.table(
            {
                "merchant_id": ["MCH-A001", "MCH-B002"],
                "merchant_name": ["Acme", "Bügel GmbH"],
                "onboarding_date": ["2025-01-01", None],
                "risk_level": ["LOW", "HIGH"],
            }
        ),
        os.path.join(data, "merchants.parquet", "part-00000-x.snappy.parquet"),
    )
    open(os.path.join(data, "merchants.parquet", "_SUCCESS"), "w").close()
    pq.write_table(
        pa.table(
            {
                "policy_id": ["POL-1"],
                "policy_type": ["KYC"],
                "rule_description": ["know your customer"],
                "active_flag": [True],
            }
        ),
        os.path.join(data, "policy_data.parquet"),
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path_factory, extra_args):
    binary = os.environ.get("RECON_BIN")
    if not binary:
        pytest.fail("RECON_BIN must name the recon binary (scripts/test.sh sets it)")
    warehouse = tmp_path_factory.mktemp("warehouse")
    write_warehouse(str(warehouse))
    port = free_port()
    http_port = free_port()
    log = open(warehouse / "server.log", "w")
    proc = subprocess.Popen(
        [
            binary,
            "serve",
            "--warehouse",
            str(warehouse),
            "--flight-addr",
            f"127.0.0.1:{port}",
            "--http-addr",
            f"127.0.0.1:{http_port}",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"grpc://127.0.0.1:{port}"
    # For tests that read the warehouse or use the HTTP API.
    proc.warehouse, proc.port, proc.http_port = warehouse, port, http_port
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"recon exited with {proc.returncode}: see {warehouse}/server.log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                pytest.fail("recon did not start listening within 60 s")
            time.sleep(0.1)
    return proc, uri


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, f"recon exited with {proc.returncode} on SIGTERM"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    proc, uri = start_server(tmp_path_factory, [])
    yield uri
    stop_server(proc)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory):
    proc, uri = start_server(
        tmp_path_factory, ["--auth-user", USER, "--auth-password", PASSWORD]
    )
    yield uri
    stop_server(proc)


@pytest.fixture
def conn(server):
    with flightsql.connect(server) as c:
        yield c
