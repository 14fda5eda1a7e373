"""A first-order Markov chain: the history's last item's train-split successors, most frequent first,
then MostPopular. The successor memory (decoding/successors.py) alone, shown beside the model it is
mixed into, so a report says what the table buys by itself."""

from __future__ import annotations

import pandas as pd

from onereason.bench.baselines.popular import most_popular
from onereason.decoding.successors import SuccessorMemory


def markov_lists(inter: pd.DataFrame, last_items: list[str], domains: list[str], k: int) -> list[list[str]]:
    """k items per user: successors of the last item in its target domain, then the domain's most popular."""
    memory, pop = SuccessorMemory.from_interactions(inter, 1.0), most_popular(inter, k)
    rank = {d: {item: r for r, item in enumerate(items)} for d, items in pop.items()}
    out = []
    for a, d in zip(last_items, domains):
        nxt = memory.successors(a, d)
        ranked = sorted(nxt, key=lambda b: (-nxt[b], rank.get(d, {}).get(b, k)))  # equal counts: the more popular first
        out.append((ranked + [i for i in pop.get(d, []) if i not in nxt])[:k])
    return out
