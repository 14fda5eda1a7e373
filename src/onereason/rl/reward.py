"""The set-wise reward: one trace's candidate list is judged as a whole.

    R = w_hit · hit + w_coverage · coverage + w_diversity · diversity
        + w_interest · interest + w_prefix · prefix + w_revenue · revenue,   gated by the trace format

- hit: any ground-truth item (the user's next window) is among the candidates;
- coverage: the share of the next window the candidates cover;
- diversity: distinct interests (or first-level codes) among the candidates / number of candidates;
- interest (off by default): 1 when a hypothesis the trace lists is the interest of a window item, so a
  trace that chose the right interest earns credit even when the beam then misses the item;
- prefix (off by default): partial credit per SID level, the longest code prefix any candidate shares
  with any window item over the number of levels (1 for a hit);
- revenue (off by default; runs whose items carry a price or bid): the value of the window items the list
  hits over the catalog's largest value, what the hits would earn if they converted.
A thinking trace that breaks the three-part format earns −format_penalty whatever its items. The item tokens get
their own signal, `item_hits`: 1 for a candidate in the window, else 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from pydantic import Field

from onereason.config import Config
from onereason.metrics import pass_at_k, recall_at_k


class RewardConfig(Config):
    hit: float = Field(1.0, ge=0)
    coverage: float = Field(0.5, ge=0)
    diversity: float = Field(0.1, ge=0)
    format_gate: bool = Field(True, description="a malformed thinking trace earns −format_penalty")
    format_penalty: float = Field(0.5, ge=0, description="what a malformed trace loses (0: it earns nothing)")
    interest: float = Field(0.0, ge=0, description="credit for a trace listing a window item's interest")
    prefix: float = Field(0.0, ge=0, description="credit for the longest SID prefix shared with a window item")
    revenue: float = Field(0.0, ge=0, description="credit for the value (price / bid) of the hit items")


@dataclass
class Reward:
    hit: float
    coverage: float
    diversity: float
    format_ok: bool
    total: float
    interest: float = 0.0
    prefix: float = 0.0
    revenue: float = 0.0


def set_reward(candidates: Sequence[str], window: Sequence[str], group_of: dict[str, int],
               cfg: RewardConfig, format_ok: bool = True, listed: Collection[int] = (),
               codes: Callable[[str], Sequence[int]] | None = None, value: dict[str, float] | None = None
               ) -> Reward:
    """The reward of one candidate list against the user's next window. `group_of` maps an item to its
    interest (or first-level code) for diversity; `listed`: the interests the trace hypothesizes;
    `codes`: an item's SID codes (for the prefix term); `value`: item → price or bid over the catalog's largest
    (for the revenue term). Empty candidates or window give NaN (skipped)."""
    if not candidates or not window:
        nan = float("nan")
        return Reward(nan, nan, nan, format_ok, nan)
    k = len(candidates)
    hit, covered = pass_at_k(candidates, window, k), recall_at_k(candidates, window, k)  # what the bench reports
    diversity = len({group_of.get(c, -1) for c in candidates}) / len(candidates)
    interest = float(any(group_of.get(w) in listed for w in window))
    prefix = max((shared_prefix(codes(c), codes(w)) for c in candidates for w in window), default=0.0) if codes else 0.0
    revenue = sum(value.get(c, 0.0) for c in set(candidates) & set(window)) if value else 0.0
    total = (cfg.hit * hit + cfg.coverage * covered + cfg.diversity * diversity + cfg.interest * interest
             + cfg.prefix * prefix + cfg.revenue * revenue)
    if cfg.format_gate and not format_ok:
        total = -cfg.format_penalty
    return Reward(hit, covered, diversity, format_ok, total, interest, prefix, revenue)


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of SID levels two items agree on before they first differ."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / max(len(a), 1)


def item_hits(candidates: Sequence[str], window: Sequence[str]) -> list[float]:
    truth = set(window)
    return [float(c in truth) for c in candidates]


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
