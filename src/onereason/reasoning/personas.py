"""Personas: 20 user prototypes learned from training users' behaviour.

A user is described by their history only: the distribution over cross-domain themes (see
`interests.themes`) and over domains, activity (log number of items), repeat rate, interest
diversity (normalized entropy), mean rating and brand loyalty where the data has them. k-means over the standardized features gives the prototypes;
each is named from its statistics ("steady · glassware labware · focused") and keeps them, so
a trace can say which behaviour put the user there.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from onereason.data.histories import Event
from onereason.reasoning.interests import Interests
from onereason.rundir import write_text

SCALARS = ("activity", "repeat", "diversity", "rating", "brand_loyalty")


@dataclass
class Personas:
    """Centroids in the standardized feature space, the standardization, names and statistics."""

    centroids: np.ndarray  # [P, F]
    mean: np.ndarray
    std: np.ndarray
    names: list[str]
    stats: list[dict]

    def save(self, path: Path) -> None:
        write_text(path, json.dumps({"centroids": self.centroids.tolist(), "mean": self.mean.tolist(),
                                     "std": self.std.tolist(), "names": self.names, "stats": self.stats}))

    @classmethod
    def load(cls, path: Path) -> "Personas":
        d = json.loads(path.read_text())
        return cls(np.array(d["centroids"], np.float32), np.array(d["mean"], np.float32),
                   np.array(d["std"], np.float32), d["names"], d["stats"])

    def assign(self, features: np.ndarray) -> np.ndarray:
        """Nearest prototype for each row of raw features [N, F]."""
        z = (features - self.mean) / self.std
        d = ((z[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return d.argmin(1)


def interest_shares(events: list[Event], interests: Interests) -> np.ndarray:
    share = np.zeros(len(interests), np.float32)
    for e in events:
        share[interests.of[e.item]] += 1
    return share / max(1, len(events))


def user_features(events: list[Event], interests: Interests, brand: dict[str, str]) -> np.ndarray:
    """Raw features of one history: theme shares, domain shares (several domains only), then the SCALARS."""
    share = interest_shares(events, interests)
    theme = np.zeros(interests.themes, np.float32)
    np.add.at(theme, interests.theme, share)
    domains = sorted(set(interests.domain))
    dom = np.zeros(len(domains) if len(domains) > 1 else 0, np.float32)
    if len(dom):
        np.add.at(dom, [domains.index(interests.domain[i]) for i in range(len(interests))], share)
    p = share[share > 0]
    diversity = float(-(p * np.log(p)).sum() / math.log(len(interests))) if len(interests) > 1 else 0.0
    n = max(1, len(events))
    repeat = 1 - len({e.item for e in events}) / n
    ratings = [e.rating for e in events if not math.isnan(e.rating)]
    brands = Counter(brand.get(e.item, "") for e in events)
    brands.pop("", None)
    loyalty = max(brands.values()) / n if brands else 0.0
    scalars = [math.log1p(len(events)), repeat, diversity, float(np.mean(ratings)) if ratings else 0.0, loyalty]
    return np.concatenate([theme, dom, np.array(scalars, np.float32)])


def _name(stats: dict, quantiles: dict, interests: Interests) -> str:
    """Activity · top interest · breadth, from where the prototype sits among the others."""
    act = stats["items"]
    activity = ("light" if act < quantiles["items"][0] else "steady" if act < quantiles["items"][1]
                else "heavy")
    breadth = "focused" if stats["diversity"] < quantiles["diversity"][0] else (
        "explorer" if stats["diversity"] > quantiles["diversity"][1] else "mixed")
    parts = [activity, interests.names[stats["top_interests"][0][0]], breadth]
    if stats["repeat"] >= 0.2:
        parts.append("re-buyer")
    return " · ".join(parts)


def learn_personas(histories: list[list[Event]], interests: Interests, brand: dict[str, str],
                   k: int = 20, seed: int = 0, interest_weight: float = 10.0) -> tuple[Personas, np.ndarray]:
    """Prototypes from training users' histories, and each user's assignment.

    Each scalar is standardized (one with no spread, e.g. no ratings in the data, is left as is);
    the theme and domain shares are scaled together so their total variance is `interest_weight`
    times the scalars'."""
    if len(histories) < k:
        raise ValueError(f"personas: {len(histories)} users with history, fewer than k={k} prototypes")
    x = np.stack([user_features(h, interests, brand) for h in histories])
    shares = np.stack([interest_shares(h, interests) for h in histories])  # for the names and statistics
    n_int = x.shape[1] - len(SCALARS)
    mean = np.zeros(x.shape[1], np.float32)
    std = np.ones(x.shape[1], np.float32)
    mean[n_int:] = x[:, n_int:].mean(0)
    spread = x[:, n_int:].std(0)
    std[n_int:] = np.where(spread > 1e-6, spread, 1.0)
    # Without this weighting activity and diversity decide the clusters and tastes barely matter:
    # on the synthetic world, persona ARI .006 unweighted, .047 / .100 / .134 at weight 1 / 3 / 10.
    varying = max(1, int((spread > 1e-6).sum()))
    block = float(x[:, :n_int].var(0).sum())
    if block > 0:
        std[:n_int] = np.sqrt(block / (varying * interest_weight))
    z = np.ascontiguousarray((x - mean) / std, dtype=np.float32)
    km = faiss.Kmeans(z.shape[1], k, niter=50, seed=seed, verbose=False)
    km.train(z)
    _, assign = km.index.search(z, 1)
    assign = assign[:, 0]
    stats = []
    for c in range(k):
        members = x[assign == c]
        if len(members) == 0:
            members = x[:1] * 0
        share = shares[assign == c].mean(0) if (assign == c).any() else shares[0] * 0
        top = [(int(i), round(float(share[i]), 3)) for i in np.argsort(-share)[:3] if share[i] > 0]
        s = {"users": int((assign == c).sum()), "items": round(float(np.expm1(members[:, n_int].mean())), 2),
             "top_interests": top or [(0, 0.0)]}
        s.update({name: round(float(members[:, n_int + j].mean()), 3) for j, name in enumerate(SCALARS[1:], 1)})
        stats.append(s)
    q = {"items": np.quantile([s["items"] for s in stats], [1 / 3, 2 / 3]),
         "diversity": np.quantile([s["diversity"] for s in stats], [1 / 3, 2 / 3])}
    names = [_name(s, q, interests) for s in stats]
    count = Counter(names)
    for c in range(k):  # identical names: add the second interest, then a number
        if count[names[c]] > 1 and len(stats[c]["top_interests"]) > 1:
            names[c] += f" + {interests.names[stats[c]['top_interests'][1][0]]}"
    seen: Counter = Counter()
    for c in range(k):
        seen[names[c]] += 1
        if seen[names[c]] > 1:
            names[c] += f" #{seen[names[c]]}"
    return Personas(km.centroids.copy(), mean, std, names, stats), assign
