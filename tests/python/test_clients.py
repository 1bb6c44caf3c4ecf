"""The README's client recipes, each spelled exactly as the README spells it,
against the recon binary: ADBC dbapi + pandas, polars (an ADBC connection; a
URI over TLS), SQLAlchemy through sqlalchemy-adbc, Superset's driver
(flightsql-dbapi, in a venv of its own: it needs SQLAlchemy 1.4) and Harlequin's
ADBC adapter. The versions are pinned in requirements.txt and
requirements-superset.txt."""

import datetime
import ipaddress
import os
import subprocess
import sys
import textwrap

import adbc_driver_flightsql.dbapi as flightsql
import polars as pl
import pytest
import sqlalchemy
from conftest import PASSWORD, USER, start_server, stop_server


def port_of(uri):
    return int(uri.rsplit(":", 1)[1])


# --- ADBC dbapi + pandas -------------------------------------------------------


def test_adbc_pandas_with_a_bound_parameter(auth_server):
    with flightsql.connect(
        auth_server, db_kwargs={"username": USER, "password": PASSWORD}
    ) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT merchant_id, risk_level FROM merchants WHERE risk_level = ? ORDER BY merchant_id",
            ("HIGH",),
        )
        df = cur.fetch_df()
    assert df.to_dict("list") == {"merchant_id": ["MCH-B002"], "risk_level": ["HIGH"]}


# --- polars -----------------------------------------------------------------------


def test_polars_read_database_on_an_adbc_connection(auth_server):
    with flightsql.connect(
        auth_server, db_kwargs={"username": USER, "password": PASSWORD}
    ) as conn:
        df = pl.read_database(
            "SELECT statement_id, amount_posted FROM aggregator_statements ORDER BY statement_id",
            conn,
        )
    assert df["statement_id"].to_list() == ["STMT-1", "STMT-2", "STMT-3"]
    assert df.schema["amount_posted"] == pl.Float64


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """recon with TLS on its Flight SQL port (a self-signed certificate for
    127.0.0.1 / localhost) and authentication off (loopback)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp = tmp_path_factory.mktemp("tls")
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    proc, uri = start_server(
        tmp_path_factory, ["--tls-cert", str(cert_path), "--tls-key", str(key_path)]
    )
    yield port_of(uri), str(cert_path)
    stop_server(proc)


def test_polars_read_database_uri_over_tls(tls_server):
    """`read_database_uri` picks the ADBC driver by the URI's scheme; the
    driver trusts the system's roots, which SSL_CERT_FILE names (Go's rule).
    It runs in a process of its own: the roots are read once per process."""
    port, cert = tls_server
    script = textwrap.dedent(
        f"""
        import polars as pl
        df = pl.read_database_uri(
            "SELECT merchant_id FROM merchants ORDER BY merchant_id",
            "flightsql://localhost:{port}",
            engine="adbc",
        )
        print(df["merchant_id"].to_list())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "SSL_CERT_FILE": cert},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['MCH-A001', 'MCH-B002']"


# --- SQLAlchemy (sqlalchemy-adbc) ------------------------------------------------


def sqlalchemy_url(uri):
    return (
        f"adbc+flightsql://127.0.0.1:{port_of(uri)}"
        f"?tls=false&username={USER}&password={PASSWORD}"
    )


def test_sqlalchemy_adbc_query_with_a_bound_parameter(auth_server):
    engine = sqlalchemy.create_engine(sqlalchemy_url(auth_server))
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT merchant_name FROM merchants WHERE merchant_id = :id"),
            {"id": "MCH-B002"},
        ).all()
    assert rows == [("Bügel GmbH",)]
    engine.dispose()


def test_sqlalchemy_adbc_inspects_columns(auth_server):
    engine = sqlalchemy.create_engine(sqlalchemy_url(auth_server))
    inspector = sqlalchemy.inspect(engine)
    columns = {c["name"]: c for c in inspector.get_columns("final_index", schema="public")}
    assert {"transaction_id", "amount", "fraud_score", "policy_flags"} <= set(columns)
    assert "public" in inspector.get_schema_names()
    # The pitfall the README names: sqlalchemy-adbc keeps only lower-case
    # `table` / `view` types, and recon reports JDBC's upper-case TABLE / VIEW
    # (what DBeaver and the JDBC driver filter on). If this starts listing
    # tables, the README's note is out of date.
    assert inspector.get_table_names(schema="public") == []
    engine.dispose()


# --- Superset (flightsql-dbapi's datafusion:// dialect) -----------------------------

SUPERSET = """
import sys
import sqlalchemy
engine = sqlalchemy.create_engine(sys.argv[1])
with engine.connect() as conn:
    rows = conn.execute(
        sqlalchemy.text("SELECT risk_level, count(*) AS n FROM merchants GROUP BY risk_level ORDER BY risk_level")
    ).fetchall()
    print([tuple(r) for r in rows])
inspector = sqlalchemy.inspect(engine)
tables = inspector.get_table_names("public")
print("final_index" in tables, "merchants" in tables)
print(sorted(c["name"] for c in inspector.get_columns("merchants", "public")))
"""


def test_superset_datafusion_uri(auth_server):
    python = os.environ.get("SUPERSET_PYTHON")
    if not python:
        pytest.fail("SUPERSET_PYTHON must name the Python of the Superset driver venv (scripts/test.sh sets it)")
    uri = f"datafusion://{USER}:{PASSWORD}@127.0.0.1:{port_of(auth_server)}?insecure=true"
    result = subprocess.run(
        [python, "-c", SUPERSET, uri], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[('HIGH', 1), ('LOW', 1)]"
    assert lines[1] == "True True"
    assert lines[2] == str(sorted(["merchant_id", "merchant_name", "onboarding_date", "risk_level"]))


# --- Harlequin (harlequin-adbc) ------------------------------------------------


def harlequin_adapter(**options):
    """The adapter `harlequin -a adbc` loads, from its entry point, with the
    options the command line passes."""
    from importlib.metadata import entry_points

    [adapter] = [e for e in entry_points(group="harlequin.adapter") if e.name == "adbc"]
    return adapter.load()(**options)


def test_harlequin_adbc_adapter(auth_server):
    # harlequin -a adbc --driver-type flightsql \
    #   --db-kwargs-str "username=…;password=…" grpc://host:port
    adapter = harlequin_adapter(
        conn_str=(auth_server,),
        driver_type="flightsql",
        db_kwargs_str=f"username={USER};password={PASSWORD}",
    )
    conn = adapter.connect()
    cursor = conn.execute("SELECT merchant_id FROM merchants ORDER BY merchant_id")
    assert [name for name, _ in cursor.columns()] == ["merchant_id"]
    assert cursor.fetchall().column("merchant_id").to_pylist() == ["MCH-A001", "MCH-B002"]
    catalog = conn.get_catalog()
    [db] = catalog.items
    schemas = {s.label: s for s in db.children}
    relations = {r.label: r.type_label for r in schemas["public"].children}
    assert relations["final_index"] == "v"
    assert relations["merchants"] == "t"


def test_harlequin_without_credentials_reports_the_refusal(auth_server):
    from harlequin.exception import HarlequinConnectionError, HarlequinQueryError

    adapter = harlequin_adapter(conn_str=(auth_server,), driver_type="flightsql")
    with pytest.raises((HarlequinConnectionError, HarlequinQueryError)) as refused:
        adapter.connect().execute("SELECT 1")
    assert "UNAUTHENTICATED" in refused.value.msg
