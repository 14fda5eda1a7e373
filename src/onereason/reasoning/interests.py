"""Interests: themes learned from item text (k-means over the item embeddings, or over the mean
embeddings of groups of items such as those sharing a first SID code), each named by the words that set
its items apart from the rest of the catalogue (class-based TF-IDF).

Interests are the vocabulary of R2 (interest expansion) and of the R3 trace; personas are
built on a user's distribution over them. Items are clustered per domain, so an interest
never mixes domains. With `tokens` an interest is also one special token (`<|interest_3|>`, added to
the run's tokenizer like item tokens) written before its words, so choosing an interest is choosing
one token whose probability the model states directly (docs/design.md §2).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from onereason.rundir import write_text

_WORD = re.compile(r"[a-z][a-z]+")
INTEREST = "<|interest_{}|>"
# Words that name no theme: English glue, packaging and units that every catalogue repeats.
STOPWORDS = frozenset("""a an and the for of with to in on by or at from as is are be this that it its
your you our we all new pack set pcs piece pieces inch inches mm cm ml oz lb lbs kg size color black white
includes including item items product products other more one two use used x""".split())


@dataclass
class Interests:
    """`of[item_id]` → interest index; `names[i]` a readable name; `domain[i]` the domain;
    `theme[i]` the cross-domain theme the interest belongs to (cooking videos and cooking
    products share one); with `tokens` each name begins with the interest's token."""

    of: dict[str, int]
    names: list[str]
    domain: list[str]
    theme: list[int]
    tokens: bool = False

    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def index(self) -> dict[tuple[str, str], int]:
        """(name, domain) → interest index: names repeat across domains, not within one."""
        return {(n, d): i for i, (n, d) in enumerate(zip(self.names, self.domain))}

    def find(self, name: str, domain: str) -> int | None:
        """The index of an interest named in full or by its words alone (without its token); None if unknown."""
        if (name, domain) in self.index:
            return self.index[name, domain]
        words = {n.removeprefix(f"{INTEREST.format(i)} "): i for (n, d), i in self.index.items() if d == domain}
        return words.get(name) if self.tokens else None

    def token_strings(self) -> list[str]:
        """The interests' tokens in index order (none without `tokens`)."""
        return [INTEREST.format(i) for i in range(len(self))] if self.tokens else []

    def members(self) -> list[list[str]]:
        """Each interest's items, in catalog order."""
        out: list[list[str]] = [[] for _ in range(len(self))]
        for item, i in self.of.items():
            out[i].append(item)
        return out

    def names_in(self, domain: str) -> list[str]:
        """The names of the domain's interests, in index order: the options of an interest choice."""
        return [n for n, d in zip(self.names, self.domain) if d == domain]

    @property
    def themes(self) -> int:
        return max(self.theme) + 1

    def save(self, path: Path) -> None:
        write_text(path, json.dumps({"names": self.names, "domain": self.domain, "theme": self.theme,
                                     "tokens": self.tokens, "of": self.of}))

    @classmethod
    def load(cls, path: Path) -> "Interests":
        d = json.loads(path.read_text())
        return cls(d["of"], d["names"], d["domain"], d.get("theme", list(range(len(d["names"])))), d.get("tokens", False))


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def name_clusters(texts: list[str], labels: np.ndarray, k: int, words: int = 2) -> list[str]:
    """Top `words` terms per cluster by c-TF-IDF: share of the cluster's items using the word ×
    log(k / clusters using it); a word every cluster uses (the catalogue's name) scores zero."""
    tf = [Counter() for _ in range(k)]
    for text, c in zip(texts, labels):
        tf[c].update(set(_words(text)))
    df = Counter(w for counts in tf for w in counts)
    names = []
    for c in range(k):
        size = max(1, int((labels == c).sum()))
        ranked = sorted(tf[c], key=lambda w: (-tf[c][w] / size * (np.log(k / df[w]) + 1e-3), w))
        names.append(" ".join(ranked[:words]) or f"theme {c}")
    return names


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Spherical k-means labels of the rows of `x`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False, spherical=True, min_points_per_centroid=1)
    km.train(x)
    return km.index.search(x, 1)[1][:, 0]


def learn_interests(items: pd.DataFrame, emb: np.ndarray, per_domain: int = 24, seed: int = 0,
                    tokens: bool = False, groups: np.ndarray | None = None) -> Interests:
    """k-means per domain on normalized embeddings; names made unique with a third word or a number, and
    with `tokens` preceded by the interest's token. With `groups` (one label per item row, e.g. its first
    SID code) the k-means runs over the groups' mean embeddings and an item takes its group's interest, so
    the interest is a function of the group: a model that knows an item's first code knows its interest."""
    of: dict[str, int] = {}
    names: list[str] = []
    domains: list[str] = []
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    for dom in sorted(items["domain"].unique()):
        rows = np.flatnonzero(items["domain"].to_numpy() == dom)
        if groups is None:
            k = max(1, min(per_domain, len(rows) // 10))
            labels = _kmeans(x[rows], k, seed)
        else:
            ids, member = np.unique(groups[rows], return_inverse=True)
            if len(ids) <= per_domain:
                labels, k = member, len(ids)  # a group each
            else:
                xr = x[rows]
                cent = np.stack([xr[member == g].mean(0) for g in range(len(ids))])
                _, labels = np.unique(_kmeans(cent, per_domain, seed)[member], return_inverse=True)  # none empty
                k = int(labels.max()) + 1
        sub = items.iloc[rows]
        texts = [f"{t} {' '.join(c)}" for t, c in zip(sub["title"], sub["categories"])]
        two, three = name_clusters(texts, labels, k, 2), name_clusters(texts, labels, k, 3)
        seen = Counter(two)
        local = [three[c] if seen[two[c]] > 1 else two[c] for c in range(k)]
        taken = Counter()
        for c in range(k):
            taken[local[c]] += 1
            if taken[local[c]] > 1:
                local[c] = f"{local[c]} {taken[local[c]]}"
        base = len(names)
        names += local
        domains += [dom] * k
        of.update({item: base + int(c) for item, c in zip(sub["item_id"], labels)})
    labels = np.array([of[i] for i in items["item_id"]])
    if tokens:
        names = [f"{INTEREST.format(i)} {n}" for i, n in enumerate(names)]
    return Interests(of, names, domains, themes(x, labels, domains, per_domain, seed), tokens)


def themes(x: np.ndarray, labels: np.ndarray, domains: list[str], k: int, seed: int = 0) -> list[int]:
    """Cross-domain themes: k-means over the interests' centroids after removing each domain's mean
    centroid (what makes a video a video), so the same topic in two domains falls together.
    One domain: every interest is its own theme."""
    if len(set(domains)) < 2:
        return list(range(len(domains)))
    cent = np.stack([x[labels == i].mean(0) for i in range(len(domains))])
    dom = np.array(domains)
    for d in set(domains):
        cent[dom == d] -= cent[dom == d].mean(0)
    cent = np.ascontiguousarray(cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12), np.float32)
    km = faiss.Kmeans(cent.shape[1], min(k, len(cent)), niter=50, seed=seed, verbose=False, spherical=True)
    km.train(cent)
    return [int(t) for t in km.index.search(cent, 1)[1][:, 0]]
