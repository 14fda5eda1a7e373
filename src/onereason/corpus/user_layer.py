"""The User layer: a user's behaviour sequence as item tokens, with time gaps and ratings as
short text marks where the data has them.

One sequence per user predicts every next item in one causal pass (docs/design.md §6). Only
`train`-split interactions enter training sequences; a prompt for evaluation holds the
history before its target. Training text and prompts are rendered by the same `HistoryText`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from onereason.data.histories import Event, items_of, user_histories
from onereason.itemic.sid import SidTokens

# Datasets without real times (amazon-scientific) store positions 0, 1, 2, ...; a Unix time
# after 1973 is the sign of a real clock.
REAL_TIME = 10**8


def gap_text(seconds: float) -> str:
    """Coarse, readable time gap: ' +0d', ' +3d', ' +2w', ' +5mo', ' +1y'."""
    days = max(0.0, seconds) / 86400
    if days < 7:
        return f" +{int(days)}d"
    if days < 60:
        return f" +{int(days // 7)}w"
    if days < 730:
        return f" +{int(days // 30)}mo"
    return f" +{int(days // 365)}y"


class HistoryText:
    """Renders events as `[gap] SID [rating]` per item: as token ids (`<bos>` first) for the User
    layer and prompts, or as text for chat-format SFT samples. Both come from `pieces`.

    The gap (time since the previous event) appears only for real clocks, the rating only
    where one exists. A prompt adds the gap to the request time and the target domain's
    begin token, so generation continues exactly where a training sequence would."""

    def __init__(self, sid: SidTokens, tokenizer):
        self.sid, self.tok = sid, tokenizer
        self._cache: dict[str, list[int]] = {}

    def _text(self, s: str) -> list[int]:
        if s not in self._cache:
            self._cache[s] = self.tok.encode(s, add_special_tokens=False)
        return self._cache[s]

    def pieces(self, events: list[Event]) -> list[str | Event]:
        """Text marks and events (items) in order."""
        out: list[str | Event] = []
        for j, e in enumerate(events):
            if j and e.timestamp > REAL_TIME:
                out.append(gap_text(e.timestamp - events[j - 1].timestamp))
            out.append(e)
            if not math.isnan(e.rating):
                out.append(f" rated {e.rating:g}")
        return out

    def ids(self, events: list[Event]) -> list[int]:
        out = [self.tok.bos_token_id]
        for p in self.pieces(events):
            out += self._text(p) if isinstance(p, str) else self.sid.ids(p.item)
        return out

    def text(self, events: list[Event]) -> str:
        return "".join(p if isinstance(p, str) else self.sid.codec.item_text(p.item) for p in self.pieces(events))

    def prompt(self, events: list[Event], domain: str, now: int | None = None) -> list[int]:
        """History, the gap to `now` (the request time, when the clock is real), the begin token."""
        out = self.ids(events)
        if now is not None and events and now > REAL_TIME:
            out += self._text(gap_text(now - events[-1].timestamp))
        return out + [self.sid.begin_id[domain]]


def training_sequences(inter: pd.DataFrame, text: HistoryText, max_items: int,
                       splits: tuple[str, ...] = ("train",)) -> list[tuple[str, list[int]]]:
    """(domain, token ids) of every training user's sequence, cut into windows of at most
    `max_items` items (long MovieLens histories). Windows of one item teach nothing."""
    out = []
    for events in user_histories(inter, splits).values():
        for start in range(0, len(events), max_items):
            window = events[start:start + max_items]
            if len(window) >= 2:
                out.append((text.sid.codec.item_domain[window[0].item], text.ids(window)))
    return out


@dataclass
class EvalPrompts:
    """Users with a target in the split: their history before it, the targets, the request time."""

    users: list[str]
    histories: list[list[Event]]
    truths: list[list[str]]
    times: list[int]

    def subset(self, keep: list[int]) -> "EvalPrompts":
        return EvalPrompts(*([xs[i] for i in keep] for xs in (self.users, self.histories, self.truths, self.times)))

    def only(self, users: list[str]) -> "EvalPrompts":
        """These users, in this order (a shared sample across methods); a user without a target is an error."""
        at = {u: i for i, u in enumerate(self.users)}
        missing = [u for u in users if u not in at]
        if missing:
            raise ValueError(f"{len(missing)} requested user(s) have no target in this split, e.g. {missing[:3]}")
        return self.subset([at[u] for u in users])


def eval_prompts(inter: pd.DataFrame, target_split: str, max_items: int) -> EvalPrompts:
    """For `test` the history holds train + valid items; for `valid`, train items only."""
    history_splits = ("train",) if target_split == "valid" else ("train", "valid")
    hist = user_histories(inter, history_splits)
    targets = user_histories(inter, (target_split,))
    users = [u for u in targets if hist.get(u)]
    return EvalPrompts(users, [hist[u][-max_items:] for u in users], [items_of(targets[u]) for u in users],
                       [targets[u][0].timestamp for u in users])


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
