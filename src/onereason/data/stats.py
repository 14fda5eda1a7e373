"""Dataset statistics: users, items, interactions and sequence lengths, per domain."""

from __future__ import annotations

import numpy as np
import pandas as pd

from onereason.data.schema import Dataset


def dataset_stats(ds: Dataset) -> pd.DataFrame:
    """One row per domain plus 'all': the numbers a reader checks against a dataset's README."""
    rows = []
    groups = [(d, g) for d, g in ds.interactions.groupby("domain")]
    if len(groups) > 1:
        groups.append(("all", ds.interactions))
    for dom, g in groups:
        lengths = g.groupby("user_id").size().to_numpy()
        items = ds.items if dom == "all" else ds.items[ds.items["domain"] == dom]
        rows.append({
            "domain": dom, "users": g["user_id"].nunique(), "items": len(items),
            "interactions": len(g), "train": int((g["split"] == "train").sum()),
            "valid": int((g["split"] == "valid").sum()), "test": int((g["split"] == "test").sum()),
            "density": len(g) / max(1, g["user_id"].nunique() * len(items)),
            "seq_min": int(lengths.min()), "seq_p50": float(np.median(lengths)),
            "seq_mean": float(lengths.mean()), "seq_p90": float(np.percentile(lengths, 90)),
            "seq_max": int(lengths.max()),
        })
    return pd.DataFrame(rows)
