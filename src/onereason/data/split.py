"""Temporal leave-one-out, for datasets that publish no split of their own."""

from __future__ import annotations

import numpy as np
import pandas as pd


def leave_one_out(inter: pd.DataFrame) -> pd.Series:
    """Per user, by time (file order breaks ties): last → test, second to last → valid.

    Users with fewer than 3 interactions keep everything in train (RecBole does the same).
    """
    order = inter.reset_index(drop=True).assign(_row=np.arange(len(inter)))
    order = order.sort_values(["user_id", "timestamp", "_row"], kind="stable")
    pos_from_end = order.groupby("user_id").cumcount(ascending=False).to_numpy()
    size = order.groupby("user_id")["item_id"].transform("size").to_numpy()
    split = np.where((pos_from_end == 0) & (size >= 3), "test",
                     np.where((pos_from_end == 1) & (size >= 3), "valid", "train"))
    return pd.Series(split, index=order["_row"].to_numpy()).sort_index().set_axis(inter.index)
