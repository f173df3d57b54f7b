"""Bitmap values leave and enter cohortdb in the portable roaring format, read and
written by another implementation: pyroaring (the Python binding of CRoaring).

Over psycopg 3: a tag's bitmap (BYTEA) is decoded with pyroaring and has the
tag's size; the ordinals it holds are the users' (their ids, through
bitmap_to_array, are the tag's users); pyroaring combines two of our bitmaps and
sends the result back as a parameter, which cohortdb reads as the same set;
base64 text round-trips too; and an audience exports as CSV of user ids.

Usage: python bitmaps.py PORT
"""

import base64
import sys

import psycopg
from pyroaring import BitMap

port = int(sys.argv[1])
conn = psycopg.connect(host="127.0.0.1", port=port, user="cohortdb", dbname="cohortdb", autocommit=True)
cur = conn.cursor()
for sql in [
    "CREATE TABLE users (user_id BIGINT USER KEY, city TEXT, plan TEXT)",
    "INSERT INTO users SELECT x, CASE WHEN x % 3 = 0 THEN 'bj' ELSE 'sh' END, "
    "CASE WHEN x % 5 = 0 THEN 'pro' ELSE 'free' END FROM generate_series(1000, 200999) g(x)",
    "CREATE TAG INDEX ON users (city, plan)",
]:
    cur.execute(sql)


def fetch(sql, *params):
    cur.execute(sql, params)
    return cur.fetchone()[0]


failures = []


def expect(name, got, expected):
    status = "ok" if got == expected else "FAIL"
    print(f"{status} {name}: {got!r}" + ("" if got == expected else f" (expected {expected!r})"))
    if got != expected:
        failures.append(name)


bj = BitMap.deserialize(bytes(fetch("SELECT tag_bitmap('city=bj')")))
pro = BitMap.deserialize(bytes(fetch("SELECT tag_bitmap('plan=pro')")))
# Ids 1000..200999: multiples of 3 are bj, of 5 pro.
expect("city=bj size", len(bj), 66_666)
expect("plan=pro size", len(pro), 40_000)
# The ordinals pyroaring read are the users': sent back, they map to the ids
# of the tag (multiples of 3).
ids = fetch("SELECT bitmap_to_array(%s::bytea)", bj.serialize())
expect("bj ordinals are the users'", sorted(ids) == list(range(1002, 201000, 3)), True)
ids = sorted(fetch("SELECT bitmap_to_array(tag_bitmap('city=bj AND plan=pro'))"))
expect("ids of bj AND pro", ids[:3] + [len(ids)], [1005, 1020, 1035, 13_333])

# pyroaring's result, sent back as a BYTEA parameter.
both = bj & pro
sent = both.serialize()
expect("cohortdb counts pyroaring's bitmap", fetch("SELECT bitmap_count(%s::bytea)", sent), len(both))
expect(
    "the same set as cohortdb's AND",
    fetch("SELECT bitmap_count(bitmap_xor(%s::bytea, tag_bitmap('city=bj AND plan=pro')))", sent),
    0,
)
expect(
    "cohortdb's bytes are pyroaring's",
    bytes(fetch("SELECT tag_bitmap('city=bj AND plan=pro')")) == BitMap.deserialize(sent).serialize(),
    True,
)
# Base64 text both ways.
text = fetch("SELECT bitmap_to_base64(tag_bitmap('plan=pro'))")
expect("base64 from cohortdb", BitMap.deserialize(base64.b64decode(text)) == pro, True)
expect(
    "base64 into cohortdb",
    fetch("SELECT bitmap_count(bitmap_from_base64(%s))", base64.b64encode(both.serialize()).decode()),
    len(both),
)
# A saved bitmap is a tag.
cur.execute("CREATE TAG both_tag FROM BITMAP bitmap_from_base64(%s)" % ("'" + base64.b64encode(sent).decode() + "'"))
expect("saved as a tag", fetch("SELECT audience_count('both_tag')"), len(both))

# An audience as a CSV of user ids.
with cur.copy("COPY (SELECT * FROM audience('city=bj AND plan=pro')) TO STDOUT (FORMAT csv)") as copy:
    exported = sorted(int(line) for line in b"".join(bytes(block) for block in copy).decode().split())
expect("CSV export", exported == list(range(1005, 201000, 15)), True)

if failures:
    sys.exit(f"{len(failures)} check(s) failed: {failures}")
