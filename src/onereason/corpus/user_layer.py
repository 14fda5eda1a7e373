"""The User layer: a user's behaviour sequence as item tokens, each item followed by one mark
token for its time gap and one for its rating where the data has them and the tokenizer carries
the marks.

One sequence per user predicts every next item in one causal pass (docs/design.md §6). Only
`train`-split interactions enter training sequences; a prompt for evaluation holds the
history before its target and nothing of the target (no request-time gap: an item's gap comes
after the item, so what the model reads before predicting item j never holds item j's time).
Training text and prompts are rendered by the same `HistoryText`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from onereason.data.histories import Event, items_of, user_histories
from onereason.itemic.marks import MARKS, REAL_TIME, gap_token, mark_vocab, rating_token
from onereason.itemic.sid import SidTokens


class HistoryText:
    """Renders events as `SID [gap] [rating]` per item: as token ids (`<bos>` first) for the User
    layer and prompts, or as text for chat-format SFT samples. Both come from `pieces`.

    A mark is one special token. The gap (time since the previous event) is written only for real
    clocks and the rating only where one exists, and each only when the run's tokenizer has that
    mark (`itemic.marks` chooses them), so an item costs at most begin + L codes + end + 2 tokens.
    A prompt ends with the target domain's begin token, so generation continues exactly where a
    training sequence would."""

    def __init__(self, sid: SidTokens, tokenizer):
        self.sid, self.tok = sid, tokenizer
        vocab = tokenizer.get_vocab()
        self.marks = [m for m in MARKS if all(t in vocab for t in mark_vocab([m]))]
        self.mark_id = {t: vocab[t] for t in mark_vocab(self.marks)}
        self.mark_ids = np.array(list(self.mark_id.values()), dtype=np.int64)

    @property
    def max_item_tokens(self) -> int:
        """Tokens one history item costs at most."""
        return self.sid.length + len(self.marks)

    def pieces(self, events: list[Event]) -> list[str | Event]:
        """Events (items) and their mark tokens, in order."""
        out: list[str | Event] = []
        for j, e in enumerate(events):
            out.append(e)
            if "gap" in self.marks and j and e.timestamp > REAL_TIME:
                out.append(gap_token(e.timestamp - events[j - 1].timestamp))
            if "rating" in self.marks and not math.isnan(e.rating):
                out.append(rating_token(e.rating))
        return out

    def ids(self, events: list[Event]) -> list[int]:
        out = [self.tok.bos_token_id]
        for p in self.pieces(events):
            out += [self.mark_id[p]] if isinstance(p, str) else self.sid.ids(p.item)
        return out

    def text(self, events: list[Event]) -> str:
        return "".join(p if isinstance(p, str) else self.sid.codec.item_text(p.item) for p in self.pieces(events))

    def prompt(self, events: list[Event], domain: str) -> list[int]:
        """The history, then the begin token of the domain to recommend in."""
        return self.ids(events) + [self.sid.begin_id[domain]]


def windows(n: int, max_items: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """(start, end, first target) windows over a sequence of n items, anchored at the newest item:
    the last window ends at item n, each earlier one `stride` items before, the first starts at 0.
    A window's targets are the items no later window trains, so every item is a target exactly
    once, with at least `max_items - stride` earlier items as context (or all it has; the first item
    is predicted from `<bos>` alone). Needs stride ≤ max_items; None: half a window."""
    stride = stride or max(1, max_items // 2)
    out = []
    end = n
    while True:
        start = max(0, end - max_items)
        first = start if start == 0 else end - stride
        out.append((start, end, first))
        if start == 0:
            return out[::-1]
        end -= stride


def training_sequences(inter: pd.DataFrame, text: HistoryText, max_items: int, stride: int | None = None,
                       splits: tuple[str, ...] = ("train",)) -> list[tuple[str, list[int], int]]:
    """(domain, token ids, first target token) of every training user's windows (`windows`):
    at most `max_items` items each, never cut inside an item. The loss starts at the first
    target item's first token (`target_mask`); windows of one item teach nothing."""
    out = []
    for events in user_histories(inter, splits).values():
        for start, end, first in windows(len(events), max_items, stride):
            if end - start < 2:
                continue
            window = events[start:end]
            ids = text.ids(window)
            context = len(text.ids(window[:first - start]))
            out.append((text.sid.codec.item_domain[window[0].item], ids, context))
    return out


def window_stats(inter: pd.DataFrame, max_items: int, stride: int | None = None) -> dict:
    """What one pass over the windows trains: windows, targets (= train items) and the mean
    number of earlier items a target sees."""
    n_windows = targets = context = 0
    for events in user_histories(inter, ("train",)).values():
        for start, end, first in windows(len(events), max_items, stride):
            if end - start >= 2:
                n_windows += 1
                targets += end - first
                context += sum(range(first - start, end - start))
    return {"windows": n_windows, "targets": targets, "mean_context_items": context / max(targets, 1)}


def target_mask(ids: np.ndarray, first: int, mark_ids: np.ndarray) -> np.ndarray:
    """Which tokens of a document are loss targets: from `first` on (a User-layer window's first
    target item; 1 elsewhere), never mark tokens (gap and rating marks are read, not predicted: the
    gradient goes to what names the next item)."""
    mask = np.arange(len(ids)) >= max(1, first)
    return mask & ~np.isin(ids, mark_ids)


@dataclass
class EvalPrompts:
    """Users with a target in the split: their history before it and the targets (nothing of the
    target, its time included, reaches a prompt)."""

    users: list[str]
    histories: list[list[Event]]
    truths: list[list[str]]

    def subset(self, keep: list[int]) -> "EvalPrompts":
        return EvalPrompts(*([xs[i] for i in keep] for xs in (self.users, self.histories, self.truths)))

    def last_items(self) -> list[str]:
        """Each history's newest item (what the successor memory conditions on)."""
        return [h[-1].item for h in self.histories]

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
    return EvalPrompts(users, [hist[u][-max_items:] for u in users], [items_of(targets[u]) for u in users])


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
