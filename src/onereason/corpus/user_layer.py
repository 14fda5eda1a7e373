"""The User layer: a user's behaviour sequence as item tokens.

One sequence per user predicts every next item in one causal pass (DESIGN.md §6). Only
`train`-split interactions enter training sequences; a prompt for evaluation holds the
history before its target.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from onereason.itemic.sid import SidTokens


def user_histories(inter: pd.DataFrame, splits: tuple[str, ...]) -> dict[str, list[str]]:
    """Items per user in time order, keeping only the given splits."""
    kept = inter[inter["split"].isin(splits)]
    kept = kept.sort_values(["user_id", "timestamp"], kind="stable")
    return {u: g.tolist() for u, g in kept.groupby("user_id", sort=False)["item_id"]}


def encode_history(items: list[str], sid: SidTokens, bos_id: int) -> list[int]:
    """`<bos>` then each item's `begin, codes.., end` token ids."""
    return [bos_id] + [t for item in items for t in sid.ids(item)]


def training_sequences(inter: pd.DataFrame, sid: SidTokens, bos_id: int, max_items: int) -> list[list[int]]:
    """Every training user's train-split sequence, cut into windows of at most `max_items` items
    (long MovieLens histories), each window one sample. Users with one item teach nothing."""
    out = []
    for items in user_histories(inter, ("train",)).values():
        for start in range(0, len(items), max_items):
            window = items[start:start + max_items]
            if len(window) >= 2:
                out.append(encode_history(window, sid, bos_id))
    return out


def eval_prompts(inter: pd.DataFrame, target_split: str, max_items: int
                 ) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """(user ids, histories, ground truth) for users with a `target_split` item.

    For `test` the history holds train + valid items; for `valid`, train items only."""
    history_splits = ("train",) if target_split == "valid" else ("train", "valid")
    hist = user_histories(inter, history_splits)
    targets = user_histories(inter, (target_split,))
    users = [u for u in targets if hist.get(u)]
    return users, [hist[u][-max_items:] for u in users], [targets[u] for u in users]


def batches_by_length(lengths: np.ndarray, max_tokens: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length sequences under a token budget (padding kept small)."""
    order = rng.permutation(len(lengths))
    chunk = 64 * max(1, max_tokens // max(1, int(lengths.mean())))
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        cur: list[int] = []
        for i in part:
            if cur and (len(cur) + 1) * lengths[i] > max_tokens:  # sorted: lengths[i] is the max
                batches.append(np.array(cur))
                cur = []
            cur.append(int(i))
        if cur:
            batches.append(np.array(cur))
    rng.shuffle(batches)
    return batches
