"""A successor memory beside the LM: how often item b directly followed item a in train-split sequences,
mixed into the model's next-item distribution after the beam,

    p(b) = (1 − w) · p_LM(b | history) + w · n(a → b) / n(a → ·),   a = the history's last item

(a cache / kNN-LM interpolation: Grave et al. 2017, Khandelwal et al. 2020). Why: an item seen a few times
in train shares its SID codes with many others, so the small LM does not memorize that it follows a given
item; a count table does, at no training cost. On amazon-scientific SASRec hits 74% of the test targets
whose (last item → target) pair train holds, the LM alone 55% (bench/LOG.md, session 43).

A successor outside the beam enters with p_LM = 0 (a lower bound: the beam kept the LM's most probable
items). The weight is chosen on valid users (`bench.evaluate.choose_successor_weight`) and stored in the
model directory, so it belongs to those weights: a retrained model has no choice until it is made again.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from onereason import rundir
from onereason.corpus.relational_layer import transition_counts
from onereason.decoding.constrained import Recommendation

WEIGHT_FILE = "successors.json"  # in a model directory: {"weight", "grid", "valid_ndcg@10", "users"}


@dataclass
class SuccessorMemory:
    weight: float
    next_items: dict[str, dict[str, float]]  # a → {b: P(b | a)}, b ≠ a
    domain_of: dict[str, str]

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 1:
            raise ValueError(f"successor weight {self.weight}: must lie in [0, 1]")

    @classmethod
    def from_interactions(cls, inter: pd.DataFrame, weight: float) -> SuccessorMemory:
        """The train split's transitions only: no valid or test pair reaches the table."""
        table: dict[str, dict[str, float]] = defaultdict(dict)
        for (a, b), n in transition_counts(inter).items():
            table[a][b] = n
        for row in table.values():
            total = sum(row.values())
            for b in row:
                row[b] /= total
        items = inter.drop_duplicates("item_id")
        return cls(weight, dict(table), dict(zip(items["item_id"], items["domain"])))

    def with_weight(self, weight: float) -> SuccessorMemory:
        """The same table under another weight (choosing one reuses the counts)."""
        return replace(self, weight=weight)

    def successors(self, last_item: str, domain: str) -> dict[str, float]:
        """P(b | last item) for the successors b in `domain`, in the table's order."""
        return {b: p for b, p in self.next_items.get(last_item, {}).items() if self.domain_of.get(b) == domain}

    def fuse(self, rec: Recommendation, last_item: str, domain: str, k: int | None = None) -> Recommendation:
        """The LM's list (log-probabilities) mixed with the last item's successors in `domain`; log scores."""
        w = self.weight
        if w == 0:
            return rec
        mix = {item: (1 - w) * math.exp(s) for item, s in zip(rec.items, rec.scores)}
        for b, p in self.successors(last_item, domain).items():
            mix[b] = mix.get(b, 0.0) + w * p
        ranked = sorted(mix.items(), key=lambda kv: -kv[1])[:k or len(rec.items)]
        return Recommendation([i for i, _ in ranked], [math.log(p) if p > 0 else -math.inf for _, p in ranked])

    def fuse_all(self, recs: list[Recommendation], last_items: list[str], domains: list[str]) -> list[Recommendation]:
        return [self.fuse(r, a, d) for r, a, d in zip(recs, last_items, domains)]


def save_weight(model_dir: Path, weight: float, grid: list[float], curve: dict[float, float], users: int) -> None:
    """The weight chosen on valid, with the curve it was chosen from."""
    saved = {"weight": weight, "grid": grid, "users": users, "valid_ndcg@10": {str(w): v for w, v in curve.items()}}
    rundir.write_text(model_dir / WEIGHT_FILE, json.dumps(saved, indent=1))


def saved_choice(model_dir: Path) -> dict | None:
    """The choice saved for this model ({"weight", "grid", ...}), or None when none was made."""
    path = model_dir / WEIGHT_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        saved["weight"] = float(saved["weight"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a successor-weight file ({e}); delete it to choose the weight again") from None
    return saved


def saved_weight(model_dir: Path, grid: list[float] | None = None) -> float | None:
    """The weight chosen for this model, or None when none was chosen (or chosen from another grid)."""
    saved = saved_choice(model_dir)
    return None if saved is None or grid is not None and saved.get("grid") != grid else saved["weight"]


def load_memory(inter: pd.DataFrame, model_dir: Path) -> SuccessorMemory | None:
    """The memory a model was given on valid (over the run's interactions `inter`), or None (LM only) where
    none was chosen or the weight is 0."""
    weight = saved_weight(model_dir)
    return SuccessorMemory.from_interactions(inter, weight) if weight else None
