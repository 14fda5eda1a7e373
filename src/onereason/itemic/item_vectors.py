"""Collaborative item vectors read from a file, the other source besides co-occurrence
(`itemic/cooccurrence.py`): e.g. a SASRec's item embeddings (`bench/baselines.py --item-vectors`)
or a production model's. Only vectors learned from the train split belong here (docs/design.md §6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def read_item_vectors(path: Path, item_ids: list[str]) -> np.ndarray:
    """[N, d] L2-normalized rows in `item_ids` order from a parquet of (item_id, vector); an item the
    file lacks gets a zero row, as co-occurrence gives an item train never shows."""
    if not Path(path).exists():
        raise FileNotFoundError(f"itemic.collab_vectors: {path} does not exist")
    df = pd.read_parquet(path)
    missing = {"item_id", "vector"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected item_id, vector")
    dims = df["vector"].map(len)
    if dims.nunique() > 1:
        row = int(np.flatnonzero(dims != dims.iloc[0])[0])
        raise ValueError(f"{path}: row {row} (item {df['item_id'].iloc[row]}) has {dims.iloc[row]} dimensions, "
                         f"row 0 has {dims.iloc[0]}")
    if df["item_id"].duplicated().any():
        raise ValueError(f"{path}: item {df.loc[df['item_id'].duplicated(), 'item_id'].iloc[0]} appears twice")
    if not set(item_ids) & set(df["item_id"]):
        raise ValueError(f"{path}: none of its {len(df)} items is in the run's catalog")
    index = {item: i for i, item in enumerate(item_ids)}
    out = np.zeros((len(item_ids), int(dims.iloc[0])), dtype=np.float32)
    for item, v in zip(df["item_id"], df["vector"]):
        if item in index:
            out[index[item]] = v
    return unit_rows(out)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, all-zero rows (items without a vector) left at zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
