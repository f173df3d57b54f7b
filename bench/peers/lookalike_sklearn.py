"""scikit-learn's side of the lookalike suite (bench/src/lookalike.rs).

The features are cohortdb's: one column per tag, that is per value of every
users attribute (the Parquet file's columns but user_id) and per event type a
user ever had (events.parquet). The matrix of every user is built once (CSR,
float32 ones, rows in user-id order: row i is user id i + 1) and its time
reported apart. Then, `runs` times each:

- fit: LogisticRegression (C=1, lbfgs, max_iter=1000) on the seed (label 1)
  and a sample of `negatives` other users (label 0, a seeded numpy sample,
  the same in every run);
- predict: predict_proba of every user.

The last run's probabilities rank the candidates (every user but the seed)
against the hidden users (the planted audience's users outside the seed), and
AUC, lift@10% and recall@20% are computed as cohortdb computes them.

Input: a JSON job on standard input; output: a JSON report on standard output.
"""

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy
import scipy.sparse as sp
import sklearn
from sklearn.linear_model import LogisticRegression

# The Caravan quality script of the integration tests: its ranking metrics.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "clients"))
import lookalike_caravan as caravan  # noqa: E402


def attribute_codes(path):
    """Each users column but user_id as dictionary codes (int16), checked to
    be in user-id order."""
    schema = pq.read_schema(path)
    ids = pq.read_table(path, columns=["user_id"]).column("user_id").to_numpy()
    if not np.array_equal(ids, np.arange(1, len(ids) + 1)):
        raise SystemExit(f"{path}: user ids are not 1..n in order")
    columns = []
    for name in schema.names:
        if name == "user_id":
            continue
        # Text columns are read as dictionary arrays (as Parquet stores them),
        # one dictionary for all row groups; vip (BOOLEAN) is encoded here.
        column = pq.read_table(path, columns=[name], read_dictionary=[name]).unify_dictionaries().column(name)
        if not pa.types.is_dictionary(column.type):
            column = pa.chunked_array([pc.dictionary_encode(column.combine_chunks())])
        codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in column.chunks]).astype(np.int16)
        columns.append((name, len(column.chunks[0].dictionary), codes))
    return len(ids), columns


def event_types(path, users):
    """A users x event types boolean matrix: who ever had each type."""
    table = pq.read_table(path, columns=["user_id", "event_type"], read_dictionary=["event_type"])
    column = table.unify_dictionaries().column("event_type")
    has = np.zeros((users, len(column.chunks[0].dictionary)), dtype=bool)
    for ids, types in zip(table.column("user_id").chunks, column.chunks):
        has[ids.to_numpy() - 1, types.indices.to_numpy(zero_copy_only=False)] = True
    return has


def one_hot(users, columns, has):
    """The CSR matrix of every user's tags."""
    fixed = len(columns)
    per_row = fixed + has.sum(axis=1, dtype=np.int64)
    indptr = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(per_row, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    starts = indptr[:-1]
    offset = 0
    for k, (_, values, codes) in enumerate(columns):
        indices[starts + k] = offset + codes
        offset += values
    # Event type t goes after the attributes and the row's earlier types.
    position = fixed + np.cumsum(has, axis=1, dtype=np.int64) - has
    for t in range(has.shape[1]):
        rows = np.flatnonzero(has[:, t])
        indices[starts[rows] + position[rows, t]] = offset + t
    width = offset + has.shape[1]
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(users, width))


def ranking_metrics(scores, positive, seed):
    """The integration test's metrics (computed as cohortdb computes them),
    as a dict."""
    auc, lift, recall = caravan.ranking_metrics(scores, positive, seed)
    return {"auc": float(auc), "lift_at_10": float(lift), "recall_at_20": float(recall)}


def main():
    job = json.load(sys.stdin)
    started = time.perf_counter()
    users, columns = attribute_codes(job["users_parquet"])
    has = event_types(job["events_parquet"], users)
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    x = one_hot(users, columns, has)
    build_seconds = time.perf_counter() - started
    del has, columns

    seed = np.fromfile(job["seed_ids"], dtype="<i8") - 1
    hidden = np.fromfile(job["hidden_ids"], dtype="<i8") - 1
    in_seed = np.zeros(users, dtype=bool)
    in_seed[seed] = True
    rng = np.random.default_rng(job["random_seed"])
    negatives = rng.choice(np.flatnonzero(~in_seed), size=job["negatives"], replace=False)
    rows = np.concatenate([seed, negatives])
    sample = x[rows]
    labels = np.concatenate([np.ones(len(seed), dtype=np.int8), np.zeros(len(negatives), dtype=np.int8)])

    fit_seconds, predict_seconds, iterations = [], [], []
    for _ in range(job["runs"]):
        started = time.perf_counter()
        model = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000)
        model.fit(sample, labels)
        fit_seconds.append(time.perf_counter() - started)
        iterations.append(int(model.n_iter_[0]))
        started = time.perf_counter()
        scores = model.predict_proba(x)[:, 1]
        predict_seconds.append(time.perf_counter() - started)

    candidates = ~in_seed
    positive = np.zeros(users, dtype=bool)
    positive[hidden] = True
    quality = ranking_metrics(scores[candidates], positive[candidates], job["random_seed"])
    json.dump(
        {
            "versions": {"scikit-learn": sklearn.__version__, "scipy": scipy.__version__, "numpy": np.__version__},
            "users": users,
            "features": x.shape[1],
            "nonzeros": int(x.nnz),
            "train_rows": len(rows),
            "read_seconds": read_seconds,
            "build_seconds": build_seconds,
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            "lbfgs_iterations": iterations,
            "quality": quality,
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
