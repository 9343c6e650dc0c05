"""Flight SQL clients against the hub, driven by tests/it/flight.rs: the ADBC Flight SQL
driver (with pandas on top) and pyarrow.flight directly.

Usage: python3 flight_client.py SCENARIO, with CITYHUB_FLIGHT (host:port) and CITYHUB_TOKEN
(and, for some scenarios, CITYHUB_EXPECTED) in the environment. Each scenario asserts what
it expects and prints one JSON line of what it saw.
"""

import json
import os
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import pandas
import pyarrow.flight as flight

URI = "grpc://" + os.environ["CITYHUB_FLIGHT"]
TOKEN = os.environ["CITYHUB_TOKEN"]


def expected():
    return json.loads(os.environ["CITYHUB_EXPECTED"])


def adbc(token=TOKEN):
    return flightsql.connect(
        URI, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    )


def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def any_command(type_name, field_1: bytes):
    """A Flight SQL command: google.protobuf.Any around a message whose field 1 is bytes."""
    def length_delimited(field, payload):
        return bytes([field << 3 | 2]) + varint(len(payload)) + payload

    message = length_delimited(1, field_1)
    type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{type_name}".encode()
    return length_delimited(1, type_url) + length_delimited(2, message)


def adbc_queries():
    """Statements, parameters, metadata, pandas; masks and refusals as over HTTP."""
    want = expected()
    with adbc() as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT id, kind, phone FROM gongan.events WHERE id >= 2 ORDER BY id")
            table = cur.fetch_arrow_table()
            assert table.to_pylist() == want["from_2"], (table.to_pylist(), want["from_2"])
            cur.execute("SELECT id, phone FROM gongan.events WHERE kind = ? ORDER BY id", ("patrol",))
            patrol = cur.fetch_arrow_table().to_pylist()
            assert patrol == want["patrol"], patrol
            try:
                cur.execute("SELECT * FROM gongan.people")
                cur.fetch_arrow_table()
                raise AssertionError("a conditional dataset without a grant was read")
            except flightsql.Error as err:
                assert "share-requests" in str(err), str(err)
                refused = str(err)
            for statement in [
                "DROP TABLE gongan.events",
                "INSERT INTO gongan.events (id) VALUES (9)",
                "COPY gongan.events TO '/tmp/out.csv'",
                "SELECT * FROM '/etc/passwd'",
            ]:
                try:
                    cur.execute(statement)
                    cur.fetch_arrow_table()
                    raise AssertionError(f"{statement} was not refused")
                except flightsql.Error as err:
                    assert "not allowed" in str(err) or "not available" in str(err), str(err)
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        listed = sorted(
            f"{schema['db_schema_name']}.{table['table_name']}"
            for catalog in objects
            for schema in catalog["catalog_db_schemas"] or []
            for table in schema["db_schema_tables"] or []
        )
        columns = conn.adbc_get_table_schema("events", db_schema_filter="gongan").names
        info = conn.adbc_get_info()
        frame = pandas.read_sql("SELECT kind, count(*) AS n FROM gongan.events GROUP BY kind ORDER BY kind", conn)
    print(json.dumps({
        "refused": refused,
        "listed": listed,
        "columns": columns,
        "frame": frame.to_dict(orient="records"),
        "vendor": info.get("vendor_name"),
        "vendor_version": info.get("vendor_version"),
    }))


def pyarrow_direct():
    """pyarrow.flight: a handshake with the token as password, then GetFlightInfo/DoGet."""
    client = flight.FlightClient(URI)
    header = client.authenticate_basic_token(b"pyarrow-user", TOKEN.encode())
    options = flight.FlightCallOptions(headers=[header])
    descriptor = flight.FlightDescriptor.for_command(
        any_command("CommandStatementQuery", b"SELECT id, phone FROM gongan.events ORDER BY id")
    )
    info = client.get_flight_info(descriptor, options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.schema.names == ["id", "phone"], table.schema
    try:
        client.get_flight_info(descriptor)
        raise AssertionError("a call without a token was answered")
    except flight.FlightUnauthenticatedError as err:
        unauthenticated = str(err)
    print(json.dumps({"rows": table.to_pylist(), "unauthenticated": unauthenticated}))


def cancel():
    """CancelFlightInfo stops a running statement's stream."""
    client = flight.FlightClient(URI)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    descriptor = flight.FlightDescriptor.for_command(any_command(
        "CommandStatementQuery",
        b"SELECT a.value % 7 AS r FROM generate_series(1, 1000) b "
        b"CROSS JOIN generate_series(1, 100000000) a",
    ))
    info = client.get_flight_info(descriptor, options)
    reader = client.do_get(info.endpoints[0].ticket, options)
    first = reader.read_chunk()
    assert first.data.num_rows > 0
    # CancelFlightInfoRequest { info = 1 }; the answer is CancelFlightInfoResult { status = 1 }.
    info_bytes = info.serialize()
    request = b"\x0a" + varint(len(info_bytes)) + info_bytes
    results = list(client.do_action(flight.Action("CancelFlightInfo", request), options))
    assert results[0].body.to_pybytes() == b"\x08\x01", results[0].body.to_pybytes()  # CANCELLED
    try:
        while True:
            reader.read_chunk()
    except StopIteration:
        raise AssertionError("the stream ended without saying it was cancelled")
    except flight.FlightCancelledError as err:
        message = str(err)
    print(json.dumps({"cancelled": message}))


if __name__ == "__main__":
    globals()[sys.argv[1]]()
