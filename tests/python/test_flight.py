"""Raw Arrow Flight clients (pyarrow.flight, as Go and Java programs use
Flight): GetSchema answers with the schema DoGet then streams, for a statement
query, a prepared statement and a metadata command. Flight SQL commands are
protobuf messages inside a `google.protobuf.Any`; the few fields needed here
are encoded by hand below, so the test needs no generated code."""

import pyarrow as pa
import pyarrow.flight as flight
import pytest

SQL = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """A length-delimited (string/bytes/message) or varint (bool/int) field."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint((number << 3) | 2) + varint(len(value)) + value


def any_of(message, body):
    return field(1, SQL + message) + field(2, body)


def fields(data):
    """The length-delimited fields of a protobuf message, by number."""
    out, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, i = read_varint(data, i)
            out[number] = data[i : i + length]
            i += length
        elif wire == 0:
            out[number], i = read_varint(data, i)
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def read_varint(data, i):
    shift = n = 0
    while True:
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, i


@pytest.fixture
def client(server):
    c = flight.FlightClient(server)
    yield c
    c.close()


def schema_then_stream(client, command):
    """GetSchema's schema, GetFlightInfo's schema and the schema of the
    table DoGet streams, for one command."""
    descriptor = flight.FlightDescriptor.for_command(command)
    declared = client.get_schema(descriptor).schema
    info = client.get_flight_info(descriptor)
    table = client.do_get(info.endpoints[0].ticket).read_all()
    return declared, info.schema, table


def test_get_schema_of_a_statement(client):
    command = any_of(
        "CommandStatementQuery",
        field(1, "SELECT statement_id, amount_posted, CAST(1 AS INT) AS one FROM aggregator_statements"),
    )
    declared, info, table = schema_then_stream(client, command)
    assert declared.names == ["statement_id", "amount_posted", "one"]
    assert declared == info == table.schema
    assert table.num_rows == 3


def test_get_schema_of_a_prepared_statement(client):
    request = any_of(
        "ActionCreatePreparedStatementRequest",
        field(1, "SELECT merchant_id, risk_level FROM merchants ORDER BY merchant_id"),
    )
    [result] = list(client.do_action(flight.Action("CreatePreparedStatement", request)))
    created = fields(fields(result.body.to_pybytes())[2])
    handle = created[1]
    try:
        command = any_of("CommandPreparedStatementQuery", field(1, handle))
        declared, info, table = schema_then_stream(client, command)
        assert declared.names == ["merchant_id", "risk_level"]
        assert declared == info == table.schema
        assert declared == pa.ipc.read_schema(pa.py_buffer(created[2]))
        assert table.column("merchant_id").to_pylist() == ["MCH-A001", "MCH-B002"]
    finally:
        close = any_of("ActionClosePreparedStatementRequest", field(1, handle))
        list(client.do_action(flight.Action("ClosePreparedStatement", close)))


@pytest.mark.parametrize("include_schema", [False, True])
def test_get_schema_of_get_tables(client, include_schema):
    command = any_of("CommandGetTables", field(5, include_schema))
    declared, info, table = schema_then_stream(client, command)
    assert ("table_schema" in declared.names) == include_schema
    assert declared == info == table.schema
    assert "final_index" in table.column("table_name").to_pylist()


def test_get_schema_of_bad_sql_is_invalid_argument(client):
    command = any_of("CommandStatementQuery", field(1, "SELEC nothing"))
    with pytest.raises(pa.ArrowInvalid, match="SELEC"):
        client.get_schema(flight.FlightDescriptor.for_command(command))


def test_get_schema_of_a_path_is_invalid_argument(client):
    with pytest.raises(pa.ArrowInvalid, match="command descriptor"):
        client.get_schema(flight.FlightDescriptor.for_path("final_index"))
