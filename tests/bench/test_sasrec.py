"""SASRec baseline: trains, early-stops on valid, evaluates on test with full ranking."""

import pandas as pd

from onereason.bench.sasrec import SASRecConfig, train_and_evaluate


def test_sasrec_learns_a_sequential_pattern():
    # Each user walks i, i+1, i+2, ... through 30 items: the next item is fully predictable.
    rows = []
    for u in range(60):
        start = u % 30
        for t in range(8):
            rows.append((f"u{u}", f"i{(start + t) % 30}", t, "d", float("nan")))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "domain", "rating"])
    pos = inter.groupby("user_id").cumcount(ascending=False)
    inter["split"] = pos.map({0: "test", 1: "valid"}).fillna("train")
    res = train_and_evaluate(inter, SASRecConfig(hidden=32, dropout=0.1, epochs=60, patience=60, batch_size=32,
                                                 lr=3e-3), [1, 5], progress=False)
    assert res["metrics"]["all"]["n"] == 60
    assert res["metrics"]["all"]["recall@5"] > 0.8  # MostPopular would get ~5/30
    assert res["best_epoch"] > 0
