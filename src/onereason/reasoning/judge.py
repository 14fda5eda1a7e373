"""R1 relation judges: how are item A and item B related, and why.

Two implementations of one interface (`judge(pairs) -> list[Relation]`):
- `GroundedJudge` decides from the data itself (shipped complement/substitute lists, next-item
  co-occurrence in training sequences, category and interest overlap, text-embedding
  similarity) and says which evidence it used;
- `LLMJudge` asks any OpenAI-compatible endpoint and parses a JSON answer.
Candidate pairs come from co-occurrence and from embedding neighbours.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np
import pandas as pd

from onereason.reasoning.chat_client import ChatClient
from onereason.reasoning.interests import Interests

RELATIONS = ("complement", "substitute", "same-interest", "unrelated")


@dataclass(frozen=True)
class Relation:
    label: str
    reason: str


class Judge(Protocol):
    def judge(self, pairs: list[tuple[str, str]]) -> list[Relation]: ...


def leaf_category(cats) -> str:
    cats = [c for c in cats if c]
    return cats[-1] if cats else ""


class GroundedJudge:
    """Rules over real signals, strongest evidence first. `use_lists=False` hides the shipped
    complement/substitute lists (to measure agreement with them honestly).

    Thresholds come from the shipped lists of amazon-office-2014 (MiniLM cosine quartiles:
    substitutes .55/.65/.75, complements .27/.36/.48, random pairs .13/.21/.32): alternatives
    read alike and share a category; complements are related text of a different kind."""

    def __init__(self, items: pd.DataFrame, emb: np.ndarray, transitions: Counter, interests: Interests,
                 use_lists: bool = True, substitute_cos: float = 0.55, complement_cos: float = 0.35,
                 complement_count: int = 2):
        self.index = {item: i for i, item in enumerate(items["item_id"])}
        self.emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.category = dict(zip(items["item_id"], items["categories"].map(leaf_category)))
        self.interests, self.transitions = interests, transitions
        self.substitute_cos, self.complement_cos = substitute_cos, complement_cos
        self.complement_count = complement_count
        self.lists: dict[str, set[tuple[str, str]]] = {}
        for col in ("complements", "substitutes"):
            if use_lists and col in items:
                self.lists[col] = {(a, b) for a, bs in zip(items["item_id"], items[col]) for b in bs}

    def _listed(self, col: str, a: str, b: str) -> bool:
        pairs = self.lists.get(col, set())
        return (a, b) in pairs or (b, a) in pairs

    def relate(self, a: str, b: str) -> Relation:
        if self._listed("complements", a, b):
            return Relation("complement", "the catalogue lists them as bought together")
        if self._listed("substitutes", a, b):
            return Relation("substitute", "the catalogue lists one as bought instead of the other")
        cos = float(self.emb[self.index[a]] @ self.emb[self.index[b]])
        co = self.transitions.get((a, b), 0) + self.transitions.get((b, a), 0)
        same_cat = bool(self.category[a]) and self.category[a] == self.category[b]
        ia, ib = self.interests.of[a], self.interests.of[b]
        name = self.interests.names
        kinds = f"both {name[ia]}" if ia == ib else f"{name[ia]} with {name[ib]}"
        if co >= self.complement_count:
            return Relation("complement", f"users take one right after the other ({co} times; {kinds})")
        if (same_cat or ia == ib) and cos >= self.substitute_cos:
            where = f"category {self.category[a]}" if same_cat else f"interest {name[ia]}"
            return Relation("substitute", f"similar descriptions (cosine {cos:.2f}) in the same {where}: "
                                          "one can replace the other")
        if co == 1:
            return Relation("complement", f"taken one after the other once ({kinds}, cosine {cos:.2f})")
        if not (same_cat or ia == ib) and cos >= self.complement_cos:
            return Relation("complement", f"related items of different kinds ({kinds}, cosine {cos:.2f})")
        if ia == ib or same_cat:
            why = f"same interest, {name[ia]}" if ia == ib else f"same category, {self.category[a]}"
            return Relation("same-interest", f"{why}, but not alike enough to replace each other (cosine {cos:.2f})")
        return Relation("unrelated", f"different interests ({name[ia]} / {name[ib]}), unlike texts "
                                     f"(cosine {cos:.2f}), never taken together")

    def judge(self, pairs: list[tuple[str, str]]) -> list[Relation]:
        return [self.relate(a, b) for a, b in pairs]


def describe(items: pd.DataFrame) -> dict[str, str]:
    """One line per item for an LLM prompt: title, category, brand."""
    return {i: f"{t} (category: {leaf_category(c) or '?'}; brand: {b or '?'})"
            for i, t, c, b in zip(items["item_id"], items["title"], items["categories"], items["brand"])}


JUDGE_PROMPT = """How are these two products related?
A: {a}
B: {b}
Answer with JSON only: {{"relation": one of {labels}, "reason": one short sentence}}."""


def parse_relation(content: str) -> Relation:
    """The first JSON object in the answer, with a known relation and a reason; ValueError otherwise."""
    m = re.search(r"\{.*\}", content, re.S)
    if not m:
        raise ValueError(f"no JSON object in answer {content[:80]!r}")
    d = json.loads(m.group(0))
    if not isinstance(d, dict) or d.get("relation") not in RELATIONS or not str(d.get("reason", "")).strip():
        raise ValueError(f"answer is not a relation with a reason: {content[:80]!r}")
    return Relation(d["relation"], str(d["reason"]).strip())


class LLMJudge:
    """Relations from an OpenAI-compatible endpoint (retries, timeouts, concurrency, disk cache)."""

    def __init__(self, client: ChatClient, items: pd.DataFrame):
        self.client, self.text = client, describe(items)

    def judge(self, pairs: list[tuple[str, str]]) -> list[Relation]:
        convs = [[{"role": "user", "content": JUDGE_PROMPT.format(a=self.text[a], b=self.text[b],
                                                                  labels=", ".join(RELATIONS))}]
                 for a, b in pairs]
        return self.client.complete_many(convs, parse_relation)


def candidate_pairs(items: pd.DataFrame, emb: np.ndarray, transitions: Counter, neighbours: int = 3,
                    min_count: int = 2) -> list[tuple[str, str]]:
    """Pairs worth labelling: next-item transitions seen ≥ min_count times, and each item's nearest
    text-embedding neighbours in its domain. Unordered, deduplicated, in a fixed order."""
    pairs = {tuple(sorted(p)) for p, n in transitions.items() if n >= min_count}
    x = np.ascontiguousarray(emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12), np.float32)
    ids = items["item_id"].to_numpy()
    for dom in items["domain"].unique():
        rows = np.flatnonzero(items["domain"].to_numpy() == dom)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x[rows])
        _, nn = index.search(x[rows], min(neighbours + 1, len(rows)))
        for r, row in zip(rows, nn):
            pairs.update(tuple(sorted((ids[r], ids[rows[j]]))) for j in row if j >= 0 and rows[j] != r)
    return sorted(pairs)


def random_pairs(items: pd.DataFrame, n: int, rng: np.random.Generator, exclude: set[tuple[str, str]]
                 ) -> list[tuple[str, str]]:
    """Up to n distinct unordered pairs of two items of the same domain (domains drawn by their
    item count), none in `exclude`: the negatives that likely-related candidates lack."""
    by_domain = [g.to_numpy() for _, g in items.groupby("domain")["item_id"] if len(g) >= 2]
    if not by_domain:
        return []
    sizes = np.array([len(g) for g in by_domain], float)
    share = sizes / sizes.sum()
    out: dict[tuple[str, str], None] = {}
    for _ in range(20 * n):
        if len(out) >= n:
            break
        g = by_domain[rng.choice(len(by_domain), p=share)]
        p = tuple(sorted(map(str, rng.choice(g, 2, replace=False))))
        if p not in exclude:
            out[p] = None
    return list(out)
