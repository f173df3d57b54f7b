"""Runs one benchmark job on a peer engine (DuckDB or PostgreSQL) for cohortdb-bench.

The job arrives as JSON on standard input; timings (seconds, measured around each
step's statements with time.perf_counter, results fetched) and normalised result
rows go to standard output as JSON. Normalisation must match bench/src/check.rs.
"""
import datetime
import decimal
import json
import sys
import time


def normalise(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        return f"{float(value):.4f}"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def connect(job):
    if job["engine"] == "duckdb":
        import duckdb

        con = duckdb.connect(job["database"])
        con.execute(f"SET threads TO {job['threads']}")
        return lambda sql: con.execute(sql).fetchall()
    import psycopg

    con = psycopg.connect(job["dsn"], autocommit=True)

    def run(sql):
        cur = con.execute(sql)
        return cur.fetchall() if cur.description else []

    return run


def main():
    job = json.load(sys.stdin)
    run = connect(job)
    out = []
    for step in job["steps"]:
        seconds = []
        rows = []
        for _ in range(step["runs"]):
            for sql in step.get("before", []):
                run(sql)
            start = time.perf_counter()
            for sql in step["sql"]:
                rows = run(sql)
            seconds.append(time.perf_counter() - start)
        result = [[normalise(v) for v in row] for row in rows] if step.get("check") else None
        out.append({"name": step["name"], "seconds": seconds, "rows": result})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
