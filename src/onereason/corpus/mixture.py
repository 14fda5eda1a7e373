"""Drawing a token budget from the layers by mixture weights, and packing it into rows of a
fixed context length.

A packed row holds several documents; each starts again at position 0, and transformers
turns restarting position ids into a block-diagonal causal mask, so documents never attend
to each other. Documents longer than the context are cut into context-sized pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from onereason.rundir import atomic_path


@dataclass
class Packed:
    """[R, T] arrays: token ids, position ids, and the layer of each token (-1 = padding)."""

    ids: np.ndarray
    positions: np.ndarray
    layers: np.ndarray

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            np.savez(tmp, ids=self.ids, positions=self.positions, layers=self.layers)

    @classmethod
    def load(cls, path: Path) -> "Packed":
        z = np.load(path)
        return cls(z["ids"], z["positions"], z["layers"])

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
         longest_first: bool = False) -> list[np.ndarray]:
    """Documents until `target_tokens` are reached (the last one cut to fit): weighted
    permutations (each document once per pass, domains scaled by `domain_weights`, default 1),
    repeated as needed. `longest_first` takes the longest documents first (the long stage)."""
    ids = [np.asarray(x, dtype=np.int64) for x in docs["ids"]]
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
            out.append(ids[i][: max(2, target_tokens - total)])
            total += len(out[-1])
            if total >= target_tokens:
                break
    return out


def pack(docs: list[tuple[int, np.ndarray]], context: int, pad_id: int) -> Packed:
    """Next-fit packing of (layer, ids) documents into rows of `context` tokens."""
    pieces = [(layer, d[s:s + context]) for layer, d in docs for s in range(0, len(d), context)]
    rows: list[list[tuple[int, np.ndarray]]] = []
    used = context
    for layer, p in pieces:
        if used + len(p) > context:
            rows.append([])
            used = 0
        rows[-1].append((layer, p))
        used += len(p)
    ids = np.full((len(rows), context), pad_id, dtype=np.int32)
    pos = np.zeros((len(rows), context), dtype=np.int32)
    lay = np.full((len(rows), context), -1, dtype=np.int8)
    for r, row in enumerate(rows):
        t = 0
        for layer, p in row:
            ids[r, t:t + len(p)] = p
            pos[r, t:t + len(p)] = np.arange(len(p))
            lay[r, t:t + len(p)] = layer
            t += len(p)
        pos[r, t:] = np.arange(context - t)  # padding: a segment of its own, never a label
    return Packed(ids, pos, lay)


def build_rows(layers: dict[str, pd.DataFrame], names: list[str], weights: dict[str, float],
               domain_weights: dict[str, float], budget_tokens: int, context: int, pad_id: int, seed: int,
               longest_first: bool = False) -> Packed:
    """Draw each layer's share of the budget, shuffle the documents together, pack."""
    rng = np.random.default_rng(seed)
    total_w = sum(weights.values())
    docs: list[tuple[int, np.ndarray]] = []
    for li, name in enumerate(names):
        w = weights.get(name, 0.0)
        if w > 0:
            docs += [(li, d) for d in draw(layers[name], int(budget_tokens * w / total_w), domain_weights, rng,
                                           longest_first and name == "user")]
    order = rng.permutation(len(docs))
    return pack([docs[i] for i in order], context, pad_id)
