"""Reads a cohortdb data directory's segment files with pyarrow and with DuckDB,
as any Parquet tool would, and its deletion vectors with pyroaring, and prints what
they hold.

Usage: segment_files.py DATA_DIR

Prints, for each segments/*.parquet file: its name, the row count pyarrow reads and
the one DuckDB reads, and its cohortdb.* metadata; then the Arrow schema of the
first file; then every row of every file (deleted rows included: deletion vectors
are cohortdb's, other tools do not apply them), read by DuckDB, ordered by the
first column; then, for each deletes/*.dv file, the deleted positions its portable
roaring bitmap holds as pyroaring reads it (bytes 28 .. end - 4, docs/format.md).
Exits non-zero when pyarrow and DuckDB disagree.
"""

import glob
import os
import sys

import struct

import duckdb
import pyarrow.parquet as pq
from pyroaring import BitMap


def main() -> int:
    data = sys.argv[1]
    files = sorted(glob.glob(os.path.join(data, "segments", "*.parquet")))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for path in files:
        table = pq.read_table(path)
        (duck_rows,) = con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()
        metadata = pq.read_metadata(path).metadata or {}
        ours = sorted(
            f"{k.decode()}={v.decode()}" for k, v in metadata.items() if k.startswith(b"cohortdb.")
        )
        print(f"{os.path.basename(path)} pyarrow_rows={table.num_rows} duckdb_rows={duck_rows} {' '.join(ours)}")
        if table.num_rows != duck_rows:
            print("pyarrow and DuckDB disagree", file=sys.stderr)
            return 1
    if not files:
        return 0
    schema = pq.read_schema(files[0])
    print("schema: " + ", ".join(f"{f.name} {f.type}{'' if f.nullable else ' not null'}" for f in schema))
    pattern = os.path.join(data, "segments", "*.parquet")
    rows = con.execute(f"SELECT * FROM read_parquet('{pattern}') ORDER BY 1").fetchall()
    arrow_rows = sum(pq.read_table(p).num_rows for p in files)
    if arrow_rows != len(rows):
        print("pyarrow and DuckDB disagree on the total", file=sys.stderr)
        return 1
    for row in rows:
        print("|".join("NULL" if v is None else str(v) for v in row))
    for path in sorted(glob.glob(os.path.join(data, "deletes", "*.dv"))):
        with open(path, "rb") as f:
            content = f.read()
        (bitmap_bytes,) = struct.unpack_from("<I", content, 24)
        positions = BitMap.deserialize(content[28 : 28 + bitmap_bytes])
        print(f"{os.path.basename(path)}: {list(positions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
