"""A user's interactions as time-ordered events: what every layer above reads a history from."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd


class Event(NamedTuple):
    item: str
    timestamp: int
    rating: float


def user_histories(inter: pd.DataFrame, splits: tuple[str, ...]) -> dict[str, list[Event]]:
    """Events per user in time order, keeping only the given splits."""
    kept = inter[inter["split"].isin(splits)].sort_values(["user_id", "timestamp"], kind="stable")
    out: dict[str, list[Event]] = {}
    for u, i, t, r in zip(kept["user_id"], kept["item_id"], kept["timestamp"], kept["rating"]):
        out.setdefault(u, []).append(Event(i, int(t), float(r)))
    return out


def items_of(events: list[Event]) -> list[str]:
    return [e.item for e in events]
