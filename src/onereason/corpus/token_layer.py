"""The Token layer: general English text (train documents only) and the item text of the
datasets, as plain language without item tokens."""

from __future__ import annotations

import pandas as pd


def token_documents(general: pd.DataFrame | None, items: pd.DataFrame) -> list[tuple[str, str]]:
    """(domain, text) documents; general text has the domain ''."""
    docs = [("", t) for t in general.loc[general["split"] == "train", "text"]] if general is not None else []
    docs += [(d, t) for d, t in zip(items["domain"], items["description"]) if t]
    return docs
