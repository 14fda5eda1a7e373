"""Drawing a token budget from the layers by mixture weights, and packing it into rows of a
fixed context length.

A packed row holds several documents; each starts again at position 0, and transformers
turns restarting position ids into a block-diagonal causal mask, so documents never attend
to each other. Text documents longer than the context are cut into context-sized pieces; a User-layer
window is never cut (`corpus.max_items` sizes it to fit). Each document says where its loss
starts (a User-layer window's first target item, `corpus/user_layer.windows`), and tokens in
`untargeted` (history marks) are never targets.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from onereason.corpus.user_layer import target_mask
from onereason.rundir import atomic_path


@dataclass
class Packed:
    """[R, T] arrays: token ids, position ids, the layer of each token (-1 = padding), and whether
    a token is a loss target."""

    ids: np.ndarray
    positions: np.ndarray
    layers: np.ndarray
    targets: np.ndarray

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            np.savez(tmp, ids=self.ids, positions=self.positions, layers=self.layers, targets=self.targets)

    @classmethod
    def load(cls, path: Path) -> "Packed":
        z = np.load(path)
        return cls(z["ids"], z["positions"], z["layers"], z["targets"])

    def tokens_per_layer(self, names: list[str]) -> dict[str, int]:
        return {n: int((self.layers == i).sum()) for i, n in enumerate(names)}


def check_mixture(layers: dict[str, pd.DataFrame], weights: dict[str, float], domain_weights: dict[str, float],
                  where: str) -> None:
    """Every weighted layer exists and has documents; every weighted domain exists. Raises
    before any training starts, naming the config field."""
    for name, w in weights.items():
        if name not in layers:
            raise ValueError(f"{where}.mixture: unknown layer {name!r}; layers are {sorted(layers)}")
        if w < 0:
            raise ValueError(f"{where}.mixture.{name}: weight {w} is negative")
        if w > 0 and len(layers[name]) == 0:
            raise ValueError(f"{where}.mixture.{name}: weight {w} but the layer has no documents "
                             "(see corpus/stats.json)")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"{where}.mixture: no layer has a positive weight")
    known = {d or "general" for df in layers.values() for d in df["domain"].unique()}
    for d, w in domain_weights.items():
        if d not in known:
            raise ValueError(f"{where}.domain_weights: unknown domain {d!r}; domains are {sorted(known)}")
        if w < 0:
            raise ValueError(f"{where}.domain_weights.{d}: weight {w} is negative")


def draw(docs: pd.DataFrame, target_tokens: int, domain_weights: dict[str, float], rng: np.random.Generator,
         longest_first: bool = False) -> list[tuple[np.ndarray, int]]:
    """(ids, first target token) of documents until `target_tokens` are reached: weighted
    permutations (each document once per pass, domains scaled by `domain_weights`, default 1),
    repeated as needed. The last text document is cut to fit; User-layer windows (with a `first`
    column) stay whole. `longest_first` takes the longest documents first (the long stage)."""
    ids = [np.asarray(x, dtype=np.int64) for x in docs["ids"]]
    windows = "first" in docs
    first = docs["first"].tolist() if windows else [1] * len(ids)
    w = np.array([domain_weights.get(d or "general", 1.0) for d in docs["domain"]], dtype=float)
    live = np.flatnonzero(w > 0)
    if len(live) == 0 or target_tokens <= 0:
        return []
    out, total = [], 0
    while total < target_tokens:
        if longest_first:
            order = live[np.argsort([-len(ids[i]) for i in live], kind="stable")]
        else:  # Efraimidis–Spirakis: sort by u^(1/w), a weighted permutation without replacement
            order = live[np.argsort(-rng.random(len(live)) ** (1.0 / w[live]))]
        for i in order:
            out.append((ids[i] if windows else ids[i][: max(2, target_tokens - total)], first[i]))
            total += len(out[-1][0])
            if total >= target_tokens:
                break
    return out


def pack(docs: list[tuple[int, np.ndarray, np.ndarray]], context: int, pad_id: int) -> Packed:
    """Best-fit-decreasing packing of (layer, ids, targets) documents into rows of `context` tokens
    (whole windows of a few hundred tokens leave next-fit rows a quarter empty); a longer document
    is cut into pieces, each starting with a token that is no target (nothing before it)."""
    pieces = [(layer, d[s:s + context], np.r_[False, t[s + 1:s + context]])
              for layer, d, t in docs for s in range(0, len(d), context)]
    rows: list[list[tuple[int, np.ndarray, np.ndarray]]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted: the tightest row that fits comes first
    for i in sorted(range(len(pieces)), key=lambda i: -len(pieces[i][1])):
        n = len(pieces[i][1])
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, r = free.pop(at)
        else:
            room, r = context, len(rows)
            rows.append([])
        rows[r].append(pieces[i])
        bisect.insort(free, (room - n, r))
    ids = np.full((len(rows), context), pad_id, dtype=np.int32)
    pos = np.zeros((len(rows), context), dtype=np.int32)
    lay = np.full((len(rows), context), -1, dtype=np.int8)
    tgt = np.zeros((len(rows), context), dtype=bool)  # padding: a segment of its own, never a target
    for r, row in enumerate(rows):
        t = 0
        for layer, p, m in row:
            ids[r, t:t + len(p)] = p
            pos[r, t:t + len(p)] = np.arange(len(p))
            lay[r, t:t + len(p)] = layer
            tgt[r, t:t + len(p)] = m
            t += len(p)
        pos[r, t:] = np.arange(context - t)
    return Packed(ids, pos, lay, tgt)


def build_rows(layers: dict[str, pd.DataFrame], names: list[str], weights: dict[str, float],
               domain_weights: dict[str, float], budget_tokens: int, context: int, pad_id: int, seed: int,
               longest_first: bool = False, untargeted: np.ndarray | None = None) -> Packed:
    """Draw each layer's share of the budget, shuffle the documents together, pack. A User-layer
    window longer than `context` is an error: it would be cut inside an item."""
    rng = np.random.default_rng(seed)
    total_w = sum(weights.values())
    skip = np.asarray([] if untargeted is None else untargeted, dtype=np.int64)
    docs: list[tuple[int, np.ndarray, np.ndarray]] = []
    for li, name in enumerate(names):
        w = weights.get(name, 0.0)
        if w > 0:
            for d, first in draw(layers[name], int(budget_tokens * w / total_w), domain_weights, rng,
                                 longest_first and name == "user"):
                if name == "user" and len(d) > context:
                    raise ValueError(f"a User-layer window has {len(d)} tokens, more than the context ({context}): "
                                     "lower corpus.max_items (or corpus.long_items for the long stage)")
                docs.append((li, d, target_mask(d, first, skip)))
    order = rng.permutation(len(docs))
    return pack([docs[i] for i in order], context, pad_id)
