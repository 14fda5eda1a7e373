"""The one-token marks a history item can carry after its SID: the time-gap bucket since the
previous event and the rating. `itemic` adds the chosen marks to the tokenizer; the User layer and
prompts (`corpus/user_layer.HistoryText`) write them."""

from __future__ import annotations

import math

# Datasets without real times (amazon-scientific) store positions 0, 1, 2, ...; a Unix time
# after 1973 is the sign of a real clock.
REAL_TIME = 10**8

# Time-gap buckets: (upper bound in days, token); the last is open-ended.
GAP_BUCKETS = ((1, "0d"), (2, "1d"), (7, "3d"), (14, "1w"), (30, "2w"), (60, "1mo"), (182, "2mo"), (365, "6mo"),
               (math.inf, "1y"))
RATINGS = range(11)  # a rating is rounded to an integer and clipped to 0..10
MARKS = ("gap", "rating")


def gap_token(seconds: float) -> str:
    """The bucket token of a time gap: `<|gap_3d|>` for 2-6 days."""
    days = max(0.0, seconds) / 86400
    return next(f"<|gap_{name}|>" for upper, name in GAP_BUCKETS if days < upper)


def rating_token(rating: float) -> str:
    return f"<|rating_{int(min(max(round(rating), RATINGS[0]), RATINGS[-1]))}|>"


def mark_vocab(marks: list[str]) -> list[str]:
    """The special tokens of the chosen marks, for the tokenizer (`itemic`)."""
    out = []
    if "gap" in marks:
        out += [f"<|gap_{name}|>" for _, name in GAP_BUCKETS]
    if "rating" in marks:
        out += [f"<|rating_{r}|>" for r in RATINGS]
    return out
