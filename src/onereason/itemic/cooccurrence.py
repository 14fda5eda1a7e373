"""Collaborative item vectors from co-occurrence in users' train-split sequences.

Concatenated to the text embedding before clustering, they pull items that users take together
into the same SID prefixes (docs/design.md §6). Only `train` interactions are read: valid/test
targets never shape the codes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from onereason.data.histories import items_of, user_histories
from onereason.itemic.item_vectors import unit_rows


def cooccurrence_embeddings(inter: pd.DataFrame, item_ids: list[str], dim: int = 64, window: int = 3,
                            seed: int = 0) -> np.ndarray:
    """[N, dim] L2-normalized rows of a truncated SVD of the PPMI matrix of items that occur
    within `window` positions of each other; items never seen in train get a zero row.

    Each occurrence also counts the item with itself, so two items that always appear
    together share their context (both rows hold both items) and end up close."""
    index = {item: i for i, item in enumerate(item_ids)}
    rows, cols = [], []
    for events in user_histories(inter, ("train",)).values():
        ids = [index[i] for i in items_of(events)]
        rows.extend(ids)
        cols.extend(ids)
        for off in range(1, window + 1):
            rows.extend(ids[:-off] + ids[off:])
            cols.extend(ids[off:] + ids[:-off])
    n = len(item_ids)
    if not rows:
        return np.zeros((n, dim), dtype=np.float32)
    counts = torch.sparse_coo_tensor(torch.tensor([rows, cols]), torch.ones(len(rows)), (n, n),
                                     check_invariants=True).coalesce()
    i, v = counts.indices(), counts.values()
    total, row_sum = v.sum(), torch.zeros(n).index_add_(0, i[0], v)
    pmi = torch.log(v * total / (row_sum[i[0]] * row_sum[i[1]]))
    keep = pmi > 0
    ppmi = torch.sparse_coo_tensor(i[:, keep], pmi[keep], (n, n), check_invariants=True).coalesce()
    torch.manual_seed(seed)
    u, s, _ = torch.svd_lowrank(ppmi, q=min(dim, n - 1), niter=4)
    out = unit_rows((u * s.sqrt()).numpy().astype(np.float32))
    if out.shape[1] < dim:
        out = np.pad(out, ((0, 0), (0, dim - out.shape[1])))
    return out
