"""The recommend-speed suite's peer: implicit's item-kNN at scale.

Reads the (user_id, item_id) pairs the suite generated (CSV with a header),
fits CosineRecommender(K=200) on the binary user x item matrix (repeated
pairs count once), and recommends the top 10 of every user with
filter_already_liked_items=True, in batches of 10,000 users (one batch of
all users would hold users x touched items scores at once). Both steps are
run RUNS times and timed.

Prints one JSON object: {"versions", "users", "items", "pairs",
"fit_seconds": [...], "recommend_seconds": [...], "rows"}.

Usage: python recommend_speed_implicit.py PAIRS_CSV RUNS
"""

import json
import sys
import time

import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
import threadpoolctl

import implicit
from implicit.nearest_neighbours import CosineRecommender

K = 10
BATCH = 10_000


def main():
    path, runs = sys.argv[1], int(sys.argv[2])
    pairs = pd.read_csv(path)
    users = pairs["user_id"].to_numpy()
    items = pairs["item_id"].to_numpy()
    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)),
        shape=(users.max() + 1, items.max() + 1),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    active = np.flatnonzero(np.diff(matrix.indptr))
    fit_seconds, recommend_seconds, rows = [], [], 0
    with threadpoolctl.threadpool_limits(1, "blas"):
        for _ in range(runs):
            model = CosineRecommender(K=200)
            started = time.perf_counter()
            model.fit(matrix, show_progress=False)
            fit_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            rows = 0
            for start in range(0, len(active), BATCH):
                ids = active[start : start + BATCH]
                found, _ = model.recommend(
                    ids, matrix[ids], N=K, filter_already_liked_items=True
                )
                rows += int((found >= 0).sum())
            recommend_seconds.append(time.perf_counter() - started)
            print(
                f"implicit: fit {fit_seconds[-1]:.1f} s, top {K} of {len(active)} users "
                f"{recommend_seconds[-1]:.1f} s",
                file=sys.stderr,
            )
    print(
        json.dumps(
            {
                "versions": {
                    "implicit": implicit.__version__,
                    "scipy": scipy.__version__,
                    "numpy": np.__version__,
                },
                "users": int(len(active)),
                "items": int(matrix.shape[1]),
                "pairs": int(matrix.nnz),
                "fit_seconds": fit_seconds,
                "recommend_seconds": recommend_seconds,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
