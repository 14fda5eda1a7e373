"""The Relational layer: item-to-item statements from real signals.

- next-item transitions counted in training sequences (train split only: no valid/test pair);
- shared category and shared brand (a few sampled partners per item);
- the complement / substitute lists a dataset ships (amazon-office-2014).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from onereason.data.histories import items_of, user_histories
from onereason.itemic.sid import SidCodec


def transition_counts(inter: pd.DataFrame) -> Counter:
    """(a, b) → how often b directly followed a in a train-split sequence (a ≠ b)."""
    counts: Counter = Counter()
    for events in user_histories(inter, ("train",)).values():
        seq = items_of(events)
        counts.update((a, b) for a, b in zip(seq, seq[1:]) if a != b)
    return counts


def relational_documents(items: pd.DataFrame, inter: pd.DataFrame, codec: SidCodec, min_count: int = 2,
                         partners: int = 2, seed: int = 0) -> list[tuple[str, str]]:
    """(domain, text) documents."""
    rng = np.random.default_rng(seed)
    s, dom = codec.item_text, codec.item_domain
    docs = [(dom[a], f"After {s(a)}, users often take {s(b)} next ({n} times).")
            for (a, b), n in sorted(transition_counts(inter).items()) if n >= min_count]
    for col, template in (("categories", "{a} and {b} are in the same category, {v}."),
                          ("brand", "{a} and {b} are both made by {v}.")):
        groups: dict[str, list[str]] = {}
        for item, v in zip(items["item_id"], items[col]):
            for value in ([v] if isinstance(v, str) else list(v)):
                if value:
                    groups.setdefault(value, []).append(item)
        for value, members in groups.items():
            if len(members) < 2:
                continue
            for a in members:
                for b in rng.choice(members, size=min(partners + 1, len(members)), replace=False):
                    if b != a:
                        docs.append((dom[a], template.format(a=s(a), b=s(b), v=value)))
    for col, template in (("complements", "{a} goes well with {b}: they are complements."),
                          ("substitutes", "{a} can replace {b}: they are substitutes.")):
        if col in items:
            for a, others in zip(items["item_id"], items[col]):
                docs += [(dom[a], template.format(a=s(a), b=s(b))) for b in others if b in codec.index]
    return docs
