"""Runs one benchmark job on a peer engine (DuckDB, PostgreSQL or chDB) for cohortdb-bench.

The job arrives as JSON on standard input; timings (seconds, measured around each
step's statements with time.perf_counter, results fetched) and normalised result
rows go to standard output as JSON, with the process's peak resident memory so
far after each step. Normalisation must match bench/src/check.rs.

A step's "fetch" is "rows" (the default: Python tuples) or "arrow": the result
fetched as Arrow (DuckDB: a pyarrow Table; chDB: Arrow IPC bytes), for results
of millions of rows where building Python objects would be most of the time;
such a step returns no rows.
"""
import datetime
import decimal
import json
import resource
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

        def run(sql, fetch):
            if fetch == "arrow":
                # A relation's Arrow result: the cursor's would copy the rows once more.
                rel = con.sql(sql)
                (getattr(rel, "to_arrow_table", None) or rel.arrow)()
                return []
            return con.execute(sql).fetchall()

        return run
    if job["engine"] == "chdb":
        from chdb import session

        sess = session.Session(job["database"])
        sess.query(f"SET max_threads = {job['threads']}")
        sess.query("SET output_format_json_quote_64bit_integers = 0")

        def run(sql, fetch):
            if fetch == "arrow":
                sess.query(sql, "Arrow").bytes()
                return []
            text = sess.query(sql, "JSONCompact").bytes()
            return [tuple(row) for row in json.loads(text)["data"]] if text else []

        return run
    import psycopg

    con = psycopg.connect(job["dsn"], autocommit=True)

    def run(sql, fetch):
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
                run(sql, "rows")
            start = time.perf_counter()
            for sql in step["sql"]:
                rows = run(sql, step.get("fetch", "rows"))
            seconds.append(time.perf_counter() - start)
        result = [[normalise(v) for v in row] for row in rows] if step.get("check") else None
        max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.append(
            {"name": step["name"], "seconds": seconds, "rows": result, "max_rss_kib": max_rss_kib}
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
