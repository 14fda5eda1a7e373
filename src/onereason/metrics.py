"""Recommendation metrics as the reference benchmark defines them (docs/design.md §4).

For one sample: candidates c1..ck in order (None marks an invalid SID) and ground truth G
(ordered; G[0] is the first ground-truth item). A candidate repeated later in the list counts once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

KS = (1, 4, 5, 10, 20, 32, 64)


def pass_at_k(cands: Sequence[str | None], truth: Sequence[str], k: int) -> float:
    g = set(truth)
    return float(any(c in g for c in cands[:k]))


def recall_at_k(cands: Sequence[str | None], truth: Sequence[str], k: int) -> float:
    g = set(truth)
    return len(set(cands[:k]) & g) / len(g)


def position1_pass_at_k(cands: Sequence[str | None], truth: Sequence[str], k: int) -> float:
    return float(truth[0] in cands[:k])


def ndcg_at_k(cands: Sequence[str | None], truth: Sequence[str], k: int) -> float:
    """Binary relevance; each ground-truth item earns gain once, at its first position."""
    g, seen, dcg = set(truth), set(), 0.0
    for i, c in enumerate(cands[:k]):
        if c in g and c not in seen:
            seen.add(c)
            dcg += 1.0 / math.log2(i + 2)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(g), k)))
    return dcg / idcg


def sid_validity_at_k(cands: Sequence[str | None], k: int) -> float | None:
    """Share of generated candidates that are real items; None when nothing was generated."""
    top = cands[:k]
    return sum(c is not None for c in top) / len(top) if top else None


METRICS = {"pass": pass_at_k, "recall": recall_at_k, "ndcg": ndcg_at_k, "position1_pass": position1_pass_at_k}


def per_sample(column: str, cands: Sequence[Sequence[str | None]], truths: Sequence[Sequence[str]]) -> list[float]:
    """One value per sample of a column such as `recall@10`: what a paired comparison resamples."""
    name, k = column.rsplit("@", 1)
    return [METRICS[name](c, t, int(k)) for c, t in zip(cands, truths)]


def evaluate_lists(cands: list[Sequence[str | None]], truths: list[Sequence[str]], ks: Sequence[int],
                   groups: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Mean of every metric@k over samples, for 'all' and for each group (domain).

    Samples with empty ground truth are an error: they have no defined recall."""
    if len(cands) != len(truths):
        raise ValueError(f"{len(cands)} candidate lists for {len(truths)} ground truths")
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for i, (c, t) in enumerate(zip(cands, truths)):
        if not t:
            raise ValueError(f"sample {i}: empty ground truth")
        for g in ("all",) if groups is None else ("all", groups[i]):
            counts[g]["n"] += 1
            for k in ks:
                for name, fn in METRICS.items():
                    sums[g][f"{name}@{k}"] += fn(c, t, k)
                v = sid_validity_at_k(c, k)
                if v is not None:
                    sums[g][f"sid_validity@{k}"] += v
                    counts[g][f"sid_validity@{k}"] += 1
    out = {}
    for g, s in sums.items():
        n = counts[g]["n"]
        out[g] = {"n": n, **{m: v / (counts[g][m] if m.startswith("sid_validity") else n) for m, v in s.items()}}
    return out


def paired_bootstrap(a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Mean of a − b over the same samples with a 95% percentile interval from resampling samples.

    Two methods scored on one user sample share the users' difficulty, so the interval of their
    per-user difference is much narrower than the two means' own intervals."""
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap: {len(a)} vs {len(b)} samples; the pairs must be the same samples")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        raise ValueError("paired_bootstrap: no samples")
    idx = np.random.default_rng(seed).integers(0, d.size, size=(samples, d.size))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)
