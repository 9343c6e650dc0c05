"""psycopg 3 against the hub's PostgreSQL door, driven by tests/it/pg.rs.

Usage: python3 pg_client.py SCENARIO, with PGHOST, PGPORT and CITYHUB_TOKEN (and, for some
scenarios, CITYHUB_OTHER_TOKEN, CITYHUB_EXPECTED) in the environment. Each scenario
asserts what it expects and prints one JSON line of what it saw; a failed assertion exits
non-zero with the reason.
"""

import json
import os
import sys
import threading
import time

import psycopg
from psycopg import errors


def connect(token=None, **kwargs):
    return psycopg.connect(
        host=os.environ["PGHOST"],
        port=os.environ["PGPORT"],
        dbname=kwargs.pop("dbname", "cityhub"),
        user=kwargs.pop("user", "pytest-analyst"),
        password=token or os.environ["CITYHUB_TOKEN"],
        sslmode=kwargs.pop("sslmode", "disable"),
        **kwargs,
    )


def expected():
    return json.loads(os.environ["CITYHUB_EXPECTED"])


def rows_as_lists(rows):
    return [[value if not hasattr(value, "isoformat") else value.isoformat() for value in row]
            for row in rows]


def queries():
    """Parameters in text and binary, masking equal to HTTP's answer, refusals."""
    want = expected()
    with connect(autocommit=True) as conn:
        text = conn.execute(
            "SELECT id, kind, phone FROM gongan.events WHERE id >= %s ORDER BY id", (2,)
        ).fetchall()
        assert rows_as_lists(text) == want["from_2"], (text, want["from_2"])
        with conn.cursor(binary=True) as cur:
            cur.execute(
                "SELECT id, kind, phone, at, score, ok FROM gongan.events WHERE kind = %s ORDER BY id",
                ("patrol",),
            )
            binary = cur.fetchall()
            names = [column.name for column in cur.description]
        assert names == ["id", "kind", "phone", "at", "score", "ok"], names
        assert [row[0] for row in binary] == want["patrol_ids"], binary
        assert all(isinstance(row[3].year, int) for row in binary), binary
        assert [row[2] for row in binary] == want["patrol_phones"], binary
        # The same statement prepared once and run with other values.
        for value in (1, 3):
            one = conn.execute("SELECT count(*) FROM gongan.events WHERE id > %s", (value,),
                               prepare=True).fetchone()
            assert one[0] == want["total"] - value, (value, one)
        try:
            conn.execute("SELECT * FROM gongan.people")
            raise AssertionError("a conditional dataset without a grant was read")
        except errors.InsufficientPrivilege as err:
            assert "share-requests" in str(err), str(err)
            refused = str(err)
        for statement in [
            "CREATE TABLE gongan.x (a int)",
            "INSERT INTO gongan.events (id) VALUES (99)",
            "DELETE FROM gongan.events",
            "COPY gongan.events FROM '/etc/passwd'",
            "SELECT * FROM '/etc/passwd'",
        ]:
            try:
                conn.execute(statement)
                raise AssertionError(f"{statement} was not refused")
            except errors.FeatureNotSupported as err:
                assert "not allowed" in str(err) or "not available" in str(err), str(err)
        try:
            conn.execute("SELEC 1")
            raise AssertionError("bad SQL was accepted")
        except errors.SyntaxError as err:
            assert "does not parse" in str(err), str(err)
    print(json.dumps({"refused": refused}))


def big_cursor():
    """A million rows through a server-side cursor, fetched in pieces."""
    with connect() as conn:
        with conn.cursor(name="big") as cur:
            cur.itersize = 20000
            cur.execute("SELECT value, value * 2 AS twice FROM generate_series(1, 1000000)")
            count = 0
            total = 0
            for value, twice in cur:
                assert twice == value * 2
                count += 1
                total += value
        conn.commit()
    assert count == 1_000_000, count
    assert total == 500000500000, total
    print(json.dumps({"rows": count}))


def cancel():
    """conn.cancel() stops a long statement with 57014; the session goes on."""
    with connect(autocommit=True) as conn:
        def later():
            time.sleep(1.0)
            conn.cancel()

        threading.Thread(target=later).start()
        try:
            conn.execute(
                "SELECT sum(a.value % 7) FROM generate_series(1, 1000) b "
                "CROSS JOIN generate_series(1, 100000000) a"
            )
            raise AssertionError("the statement was not cancelled")
        except errors.QueryCanceled as err:
            message = str(err)
        after = conn.execute("SELECT 41 + 1").fetchone()[0]
    assert after == 42, after
    print(json.dumps({"cancelled": message}))


def timeout():
    """query.timeout_secs ends a statement with 57014 and says which limit it met."""
    with connect(autocommit=True) as conn:
        try:
            conn.execute(
                "SELECT sum(a.value % 7) FROM generate_series(1, 1000) b "
                "CROSS JOIN generate_series(1, 100000000) a"
            )
            raise AssertionError("the statement outlived its time limit")
        except errors.QueryCanceled as err:
            assert "query.timeout_secs" in str(err), str(err)
            print(json.dumps({"timeout": str(err)}))


def memory():
    """query.memory_limit_bytes ends a statement that cannot spill with 53200."""
    with connect(autocommit=True) as conn:
        try:
            conn.execute("SELECT array_agg(value) FROM generate_series(1, 20000000)").fetchall()
            raise AssertionError("the statement outgrew its memory limit unnoticed")
        except errors.OutOfMemory as err:
            assert "query.memory_limit_bytes" in str(err), str(err)
            print(json.dumps({"memory": str(err)}))


def refused_logins():
    """Wrong tokens and databases end the connection with the reason."""
    seen = {}
    for case, kwargs in {
        "wrong_token": {"token": "not-a-token"},
        "wrong_database": {"dbname": "postgres"},
        "producer_token": {"token": os.environ["CITYHUB_OTHER_TOKEN"]},
        "revoked_token": {"token": os.environ["CITYHUB_REVOKED_TOKEN"]},
    }.items():
        token = kwargs.pop("token", None)
        try:
            connect(token, **kwargs).close()
            raise AssertionError(f"{case}: the login was accepted")
        except psycopg.OperationalError as err:
            seen[case] = str(err)
    assert "password authentication failed" in seen["wrong_token"], seen
    assert 'database "postgres" does not exist' in seen["wrong_database"], seen
    assert "cannot run SQL" in seen["producer_token"], seen
    assert "revoked" in seen["revoked_token"], seen
    print(json.dumps(seen, ensure_ascii=False))


# What Superset's SQLAlchemy dialect and Grafana's PostgreSQL data source send while they
# connect, list tables and columns, and draw a time series (from their sources: SQLAlchemy
# 2.0's postgresql dialect `initialize`/`get_schema_names`/`get_table_names`/
# `get_columns`, Grafana's postgres datasource meta queries and `$__timeFilter`).
PROBES = [
    "select pg_catalog.version()",
    "select current_schema()",
    "show standard_conforming_strings",
    "show transaction isolation level",
    "BEGIN",
    "ROLLBACK",
    "SELECT pg_catalog.pg_namespace.nspname FROM pg_catalog.pg_namespace "
    "WHERE pg_catalog.pg_namespace.nspname NOT LIKE 'pg_%' ORDER BY pg_catalog.pg_namespace.nspname",
    "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class "
    "JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace "
    "WHERE pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p']) "
    "AND pg_catalog.pg_class.relpersistence != 't' AND pg_catalog.pg_namespace.nspname = 'gongan'",
    "SELECT 1",
    "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" "
    "FROM information_schema.columns WHERE quote_ident(table_schema) = 'gongan' "
    "AND quote_ident(table_name) = 'events'",
    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS \"table\" "
    "FROM information_schema.tables WHERE quote_ident(table_schema) NOT IN "
    "('information_schema', 'pg_catalog', '_timescaledb_cache', '_timescaledb_catalog', "
    "'_timescaledb_internal', '_timescaledb_config', 'timescaledb_information', "
    "'timescaledb_experimental') ORDER BY 1",
    "SELECT current_setting('search_path')",
    # Grafana's table picker, as its PostgreSQL data source sends it.
    """SELECT
        CASE WHEN
              quote_ident(table_schema) IN (
              SELECT
                CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM
                generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s
              )
          THEN quote_ident(table_name)
          ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
        END AS "table"
        FROM information_schema.tables
        WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog',
          '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_internal',
          '_timescaledb_config', 'timescaledb_information', 'timescaledb_experimental')
        ORDER BY 1""",
    # DBeaver's navigator: schemas with their comments, and the keywords it highlights.
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n "
    "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 "
    "AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    "SELECT string_agg(word, ',') FROM pg_catalog.pg_get_keywords()",
    # A Grafana time series panel after $__timeGroupAlias and $__timeFilter expansion.
    "SELECT floor(extract(epoch from at)/3600)*3600 AS \"time\", count(*) AS value "
    "FROM gongan.events WHERE at BETWEEN '2026-01-01T00:00:00Z' AND '2026-12-31T23:59:59Z' "
    "GROUP BY 1 ORDER BY 1",
]


def probes():
    """Every probe answers without error, through both protocols psycopg speaks."""
    answered = {}
    with connect(autocommit=True) as conn:
        for probe in PROBES:
            try:
                cur = conn.execute(probe)
                answered[probe] = rows_as_lists(cur.fetchall()) if cur.description else []
            except psycopg.Error as err:
                raise AssertionError(f"{probe}\n  failed: {err}") from err
        # The simple protocol too (psql, and drivers with prepare_threshold=None).
        for probe in PROBES[:4]:
            conn.pgconn.exec_(probe.encode())
    version = answered[PROBES[0]][0][0]
    assert version.startswith("PostgreSQL 16."), version
    schemas = [row[0] for row in answered[PROBES[6]]]
    tables = [row[0] for row in answered[PROBES[7]]]
    listed = [row[0] for row in answered[PROBES[10]]]
    picked = [row[0] for row in answered[PROBES[12]]]
    print(json.dumps({"schemas": schemas, "tables": tables, "listed": listed,
                      "picked": picked, "show": answered[PROBES[3]]}))


def rate_limited():
    """The token's rate limit holds on this door too: 53400 once the burst is spent."""
    with connect(autocommit=True) as conn:
        answered = 0
        for _ in range(20):
            try:
                conn.execute("SELECT 1").fetchall()
                answered += 1
            except errors.ConfigurationLimitExceeded as err:
                assert "rate limit" in str(err), str(err)
                print(json.dumps({"answered": answered, "refused": str(err)}))
                return
    raise AssertionError(f"20 statements in a row were all answered ({answered})")


if __name__ == "__main__":
    globals()[sys.argv[1]]()
