"""DuckDB as the baseline of `sql_suite_bench`: one in-process DuckDB database, driven over
stdin/stdout by the benchmark so that its runs alternate with the hub's and DataFusion's.

Each input line is a JSON command; each answer is one JSON line:
  {"setup": ["SQL", ...]}                       -> {"ok": true}
  {"run": "SQL"}                                -> {"ms": 12.3, "rows": 10}
  {"concurrent": ["SQL", ...], "threads": 32, "per_thread": 5}
                                                -> {"seconds": 1.2, "latencies_ms": [...]}
Results are materialised as Arrow tables, as the hub's HTTP answers are Arrow streams.
Errors answer {"error": "..."} and the runner goes on.
"""

import json
import sys
import threading
import time

import duckdb

connection = duckdb.connect()
# The same zone as the hub's sessions, so that date_trunc and casts agree.
connection.execute("SET TimeZone = 'UTC'")


def run(cursor, sql):
    started = time.perf_counter()
    table = cursor.sql(sql).to_arrow_table()
    return (time.perf_counter() - started) * 1000.0, table.num_rows


def concurrent(queries, threads, per_thread):
    latencies = [[] for _ in range(threads)]
    errors = []

    def analyst(index):
        cursor = connection.cursor()
        try:
            for i in range(per_thread):
                ms, _ = run(cursor, queries[(index + i) % len(queries)])
                latencies[index].append(ms)
        except Exception as err:  # reported to the benchmark, which fails the run
            errors.append(str(err))

    started = time.perf_counter()
    workers = [threading.Thread(target=analyst, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    if errors:
        return {"error": errors[0]}
    return {"seconds": seconds, "latencies_ms": [ms for one in latencies for ms in one]}


for line in sys.stdin:
    command = json.loads(line)
    try:
        if "setup" in command:
            for sql in command["setup"]:
                connection.execute(sql)
            answer = {"ok": True, "version": duckdb.__version__}
        elif "run" in command:
            ms, rows = run(connection, command["run"])
            answer = {"ms": ms, "rows": rows}
        elif "concurrent" in command:
            answer = concurrent(
                command["concurrent"], command["threads"], command["per_thread"]
            )
        else:
            answer = {"error": "unknown command"}
    except Exception as err:
        answer = {"error": str(err)}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
