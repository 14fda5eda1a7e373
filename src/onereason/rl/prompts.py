"""RL prompts: cut points of training users' sequences, each with the user's next window.

The ground truth of an RL prompt is a window of the next `window` training items, so coverage
is defined; valid/test targets never reach RL. Prompts are drawn per step from a seeded
generator keyed by the step, so a resumed run replays the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from onereason.data.histories import Event, user_histories


@dataclass
class RlPrompt:
    prompt_id: str
    domain: str  # the domain of the next item: the item beam starts with its begin token
    history: list[Event]
    window: list[str]


class PromptPool:
    """Every cut (user, t ≥ 1) of the train split, optionally of some domains only."""

    def __init__(self, inter: pd.DataFrame, item_domain: dict[str, str], max_items: int, window: int = 3,
                 domains: list[str] | None = None):
        self.hists = user_histories(inter, ("train",))
        self.max_items, self.window = max_items, window
        self.cuts = [(u, t) for u, h in self.hists.items() for t in range(1, len(h))
                     if domains is None or item_domain[h[t].item] in domains]
        if not self.cuts:
            raise ValueError(f"rl: no training cut with a next item in domains {domains}")
        self.item_domain = item_domain

    def __len__(self) -> int:
        return len(self.cuts)

    def prompt(self, u: str, t: int) -> RlPrompt:
        h = self.hists[u]
        nxt = h[t]
        return RlPrompt(f"{u}-{t}", self.item_domain[nxt.item], h[:t][-self.max_items:],
                        [e.item for e in h[t:t + self.window] if self.item_domain[e.item] == self.item_domain[nxt.item]])

    def sample(self, n: int, seed: int, step: int) -> list[RlPrompt]:
        idx = np.random.default_rng([seed, step]).choice(len(self.cuts), size=min(n, len(self.cuts)), replace=False)
        return [self.prompt(*self.cuts[i]) for i in idx]
