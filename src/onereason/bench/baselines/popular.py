"""Baselines evaluated with the same split and metrics as the model."""

from __future__ import annotations

import pandas as pd


def most_popular(inter: pd.DataFrame, k: int) -> dict[str, list[str]]:
    """Top-k items per domain by train-split interaction count (full ranking, history not removed)."""
    train = inter[inter["split"] == "train"]
    counts = train.groupby(["domain", "item_id"]).size().rename("n").reset_index()
    counts = counts.sort_values(["domain", "n", "item_id"], ascending=[True, False, True], kind="stable")
    return {d: g["item_id"].head(k).tolist() for d, g in counts.groupby("domain")}
