"""recon through the unmodified ADBC Flight SQL driver (what pandas/polars use)."""

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import PASSWORD, USER


def test_get_info_names_the_server(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "recon"
    assert info["vendor_version"]
    assert info["driver_name"]


@pytest.mark.parametrize("depth", ["catalogs", "db_schemas", "tables", "columns", "all"])
def test_get_objects_at_every_depth(conn, depth):
    objects = conn.adbc_get_objects(depth=depth).read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    assert "recon" in catalogs
    if depth == "catalogs":
        return
    schemas = {s["db_schema_name"]: s for s in catalogs["recon"]["catalog_db_schemas"]}
    assert "public" in schemas
    if depth == "db_schemas":
        return
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    assert {"aggregator_statements", "merchants", "policy_data", "ml_fraud_signals"} <= set(tables)
    if depth == "tables":
        return
    columns = [c["column_name"] for c in tables["merchants"]["table_columns"]]
    assert columns == ["merchant_id", "merchant_name", "risk_level", "onboarding_date"]


def test_get_objects_filters(conn):
    objects = conn.adbc_get_objects(
        depth="tables", catalog_filter="recon", db_schema_filter="public", table_name_filter="merchant_"
    ).read_all().to_pylist()
    tables = [t["table_name"] for t in objects[0]["catalog_db_schemas"][0]["db_schema_tables"]]
    assert tables == ["merchants"]


def test_get_table_schema(conn):
    schema = conn.adbc_get_table_schema("aggregator_statements", catalog_filter="recon", db_schema_filter="public")
    assert schema.names == ["statement_id", "transaction_id", "posting_date", "amount_posted", "fee_charged"]
    assert schema.field("amount_posted").type == pa.float64()


def test_get_table_types(conn):
    assert {"TABLE", "VIEW"} <= set(conn.adbc_get_table_types())


def test_execute_fetch_arrow_and_pandas(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT merchant_id, merchant_name FROM merchants ORDER BY merchant_id")
        table = cur.fetch_arrow_table()
    assert table.column("merchant_name").to_pylist() == ["Acme", "Bügel GmbH"]
    with conn.cursor() as cur:
        cur.execute("SELECT statement_id, amount_posted FROM aggregator_statements ORDER BY 1")
        df = cur.fetch_df()
    assert list(df["statement_id"]) == ["STMT-1", "STMT-2", "STMT-3"]
    assert df["amount_posted"].iloc[0] == 100.0


def test_parameterised_query(conn):
    with conn.cursor() as cur:
        cur.execute(
            "SELECT statement_id FROM aggregator_statements WHERE amount_posted > ? AND statement_id <> ? ORDER BY 1",
            parameters=(1.0, "STMT-9"),
        )
        assert cur.fetchall() == [("STMT-1",), ("STMT-2",)]
        cur.execute("SELECT statement_id FROM aggregator_statements WHERE amount_posted > ?", parameters=(50.0,))
        assert cur.fetchall() == [("STMT-1",)]


def test_all_five_functions(conn):
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT s.statement_id,
                   calc_discrepancy(s.fee_charged, s.amount_posted) AS discrepancy,
                   flag_compliance(0.5, p.policy_type) AS compliance,
                   mask_sensitive(m.merchant_name) AS masked,
                   derive_status(NULL, 'unmatched') AS status,
                   kpi_calculation(m.merchant_id, s.amount_posted) AS kpi
            FROM aggregator_statements s
            CROSS JOIN policy_data p
            JOIN merchants m ON m.merchant_id = 'MCH-A001'
            ORDER BY s.statement_id
            """
        )
        rows = cur.fetchall()
    assert rows == [
        ("STMT-1", 98.5, "REQUIRES_KYC", "Ac**", "DISCREPANCY", 110.0),
        ("STMT-2", 2.62, "REQUIRES_KYC", "Ac**", "DISCREPANCY", 2.94),
        ("STMT-3", 0.0, "REQUIRES_KYC", "Ac**", "DISCREPANCY", 0.0),
    ]


def test_bad_sql_is_reported_and_the_connection_still_works(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELEC 1")
        assert "SELEC" in str(err.value)
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELECT * FROM no_such_table")
        assert "no_such_table" in str(err.value)
        cur.execute("SELECT 1 AS one")
        assert cur.fetchall() == [(1,)]


def test_auth_off_accepts_plain_connections(server):
    with flightsql.connect(server) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM merchants")
        assert cur.fetchone() == (2,)


def test_auth_on_right_password(auth_server):
    kwargs = {"username": USER, "password": PASSWORD}
    with flightsql.connect(auth_server, db_kwargs=kwargs) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM merchants")
        assert cur.fetchone() == (2,)


def test_auth_on_wrong_password_is_unauthenticated(auth_server):
    kwargs = {"username": USER, "password": "wrong"}
    with pytest.raises(adbc_driver_manager.Error) as err:
        with flightsql.connect(auth_server, db_kwargs=kwargs) as c, c.cursor() as cur:
            cur.execute("SELECT 1")
    assert "nauthenticated" in str(err.value)


def test_auth_on_without_credentials_is_refused(auth_server):
    with pytest.raises(adbc_driver_manager.Error) as err:
        with flightsql.connect(auth_server) as c, c.cursor() as cur:
            cur.execute("SELECT 1")
    assert "nauthenticated" in str(err.value)


def test_adbc_ingest_appends_signals_durably(conn):
    """adbc_ingest (Flight SQL CommandStatementIngest) appends to ml_fraud_signals:
    missing columns become NULL (a missing inference_time becomes the time of
    receipt, as over HTTP), the rows are queryable at once, and the table keeps
    its contract schema."""
    signals = pa.table(
        {
            "fraud_signal_id": ["FS-PY-1", "FS-PY-2", "FS-PY-3"],
            "transaction_id": ["T-1", "T-2", "T-unknown"],
            "fraud_score": pa.array([0.91, 0.15, 0.5], type=pa.float32()),
            "model_version": ["py-1", None, "py-1"],
        }
    )
    with conn.cursor() as cur:
        assert cur.adbc_ingest("ml_fraud_signals", signals, mode="append") == 3
        cur.execute(
            "SELECT fraud_signal_id, transaction_id, round(fraud_score, 2) AS score, "
            "model_version, inference_time FROM ml_fraud_signals "
            "WHERE fraud_signal_id LIKE 'FS-PY-%' ORDER BY fraud_signal_id"
        )
        rows = cur.fetchall()
    assert [row[:4] for row in rows] == [
        ("FS-PY-1", "T-1", 0.91, "py-1"),
        ("FS-PY-2", "T-2", 0.15, None),
        ("FS-PY-3", "T-unknown", 0.5, "py-1"),
    ]
    assert all(row[4] is not None for row in rows), rows


def test_adbc_ingest_refusals(conn):
    with conn.cursor() as cur:
        bad_column = pa.table({"fraud_signal_id": ["FS-X"], "colour": ["red"]})
        with pytest.raises(adbc_driver_manager.Error, match="unknown column"):
            cur.adbc_ingest("ml_fraud_signals", bad_column, mode="append")
        with pytest.raises(adbc_driver_manager.Error, match="not a batch table"):
            cur.adbc_ingest("transactions", pa.table({"transaction_id": ["T"]}), mode="append")
        with pytest.raises(adbc_driver_manager.Error, match="exists"):
            cur.adbc_ingest("ml_fraud_signals", pa.table({"fraud_signal_id": ["FS-Y"]}), mode="create")
        cur.execute("SELECT count(*) FROM ml_fraud_signals WHERE fraud_signal_id IN ('FS-X', 'FS-Y')")
        assert cur.fetchone() == (0,)
