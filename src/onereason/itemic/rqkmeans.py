"""Residual k-means (faiss) over item embeddings, with collision resolution and codebook stats."""

from __future__ import annotations

import math
from collections import defaultdict

import faiss
import numpy as np


MAX_CODEBOOK = 256


def default_codebook_size(n_items: int, levels: int) -> int:
    """A power of two near 2·N^(1/L), capped at 256: enough room for few collisions on small data
    without so many codes that each is seen too rarely to learn (`itemic.build` doubles it where a
    prefix still overflows)."""
    k = 2 * n_items ** (1.0 / levels)
    return int(min(MAX_CODEBOOK, max(8, 2 ** math.ceil(math.log2(k)))))


def residual_kmeans(emb: np.ndarray, levels: int, k: int, seed: int = 0, niter: int = 25
                    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """codes [N, L], centroids per level [K, D], residuals *before* each level [N, D]."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    codes = np.zeros((len(x), levels), dtype=np.int64)
    centroids, residuals = [], []
    for level in range(levels):
        residuals.append(x.copy())
        kk = min(k, len(x))
        km = faiss.Kmeans(x.shape[1], kk, niter=niter, seed=seed + level, verbose=False)
        km.train(x)
        _, assign = km.index.search(x, 1)
        codes[:, level] = assign[:, 0]
        centroids.append(km.centroids.copy())
        x = x - km.centroids[assign[:, 0]]
    return codes, centroids, residuals


def collision_rate(codes: np.ndarray) -> float:
    """Share of items that would need a new SID: N minus the number of distinct SIDs, over N."""
    return 1.0 - len(np.unique(codes, axis=0)) / len(codes)


def resolve_collisions(codes: np.ndarray, last_centroids: np.ndarray, last_residual: np.ndarray
                       ) -> np.ndarray:
    """Make every SID unique. Within a shared prefix, the item nearest the shared centroid keeps
    its code; each other item moves to the nearest last-level code still free under that prefix.
    If a prefix holds more items than there are codes, an extra level numbers them instead."""
    codes = codes.copy()
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(map(tuple, codes)):
        groups[c].append(i)
    used: dict[tuple, set[int]] = defaultdict(set)
    for c in groups:
        used[c[:-1]].add(c[-1])
    overflow = False
    for c, members in groups.items():
        if len(members) == 1:
            continue
        d = ((last_residual[members][:, None, :] - last_centroids[None]) ** 2).sum(-1)  # [m, K]
        order = np.argsort(d[:, c[-1]])
        for j in order[1:]:
            free = [code for code in np.argsort(d[j]) if code not in used[c[:-1]]]
            if not free:
                overflow = True
                break
            codes[members[j], -1] = free[0]
            used[c[:-1]].add(int(free[0]))
    if overflow:
        extra = np.zeros((len(codes), 1), dtype=np.int64)
        seen: dict[tuple, int] = defaultdict(int)
        for i, c in enumerate(map(tuple, codes)):
            extra[i, 0] = seen[c]
            seen[c] += 1
        codes = np.concatenate([codes, extra], axis=1)
    assert len(np.unique(codes, axis=0)) == len(codes)
    return codes


def unique_codes(emb: np.ndarray, levels: int, k: int, seed: int = 0, grow: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """(unique codes, raw codes, K): residual k-means, then collision resolution. With `grow`, K
    doubles (up to 256) while a shared prefix holds more items than K, so no item needs an extra
    level (an extra level costs every item one more token)."""
    while True:
        raw, centroids, residuals = residual_kmeans(emb, levels, k, seed=seed)
        codes = resolve_collisions(raw, centroids[-1], residuals[-1])
        if not grow or codes.shape[1] == levels or k >= MAX_CODEBOOK:
            return codes, raw, k
        k = min(MAX_CODEBOOK, 2 * k)


def codebook_stats(codes: np.ndarray, k: int) -> list[dict]:
    """Per level: utilization (share of the K codes in use) and entropy (bits, and over log2 K)."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=k).astype(float)
        p = counts[counts > 0] / counts.sum()
        h = float(-(p * np.log2(p)).sum())
        kk = max(k, int(codes[:, level].max()) + 1)
        out.append({"level": level, "utilization": float((counts > 0).sum() / kk),
                    "entropy_bits": h, "entropy_norm": h / math.log2(kk) if kk > 1 else 0.0})
    return out
