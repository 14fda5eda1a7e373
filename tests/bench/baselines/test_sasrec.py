"""SASRec baseline: trains, early-stops on valid, evaluates on test with full ranking; its numbers are
the metric functions applied to the lists it returns (no claim about how well a tiny model learns)."""

import pandas as pd

from onereason.metrics import evaluate_lists
from onereason.bench.baselines.sasrec import SASRecConfig, train_and_evaluate


def walks() -> pd.DataFrame:
    """Each user walks i, i+1, i+2, ... through 30 items; the last item is test, the one before valid."""
    rows = [(f"u{u}", f"i{(u % 30 + t) % 30}", t, "d", float("nan")) for u in range(60) for t in range(8)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "domain", "rating"])
    inter["split"] = inter.groupby("user_id").cumcount(ascending=False).map({0: "test", 1: "valid"}).fillna("train")
    return inter


def check_result(res: dict, inter: pd.DataFrame, ks: list[int], epochs: int, eval_every: int) -> None:
    """What any trained baseline's result must satisfy: one full list of distinct catalog items per test
    user, metrics recomputable from those lists, the best epoch one of the evaluated ones."""
    test = inter[inter["split"] == "test"].set_index("user_id")["item_id"]
    assert set(res["lists"]) == set(test.index)
    catalog = set(inter["item_id"])
    assert all(len(v) == max(ks) == len(set(v)) and set(v) <= catalog for v in res["lists"].values())
    users = list(res["lists"])
    assert res["metrics"] == evaluate_lists([res["lists"][u] for u in users], [[test[u]] for u in users], ks,
                                            ["d"] * len(users))
    assert res["best_epoch"] % eval_every == 0 and eval_every <= res["best_epoch"] <= epochs
    assert 0.0 <= res["valid_ndcg@10"] <= 1.0


def test_sasrec_result_is_consistent():
    inter = walks()
    res = train_and_evaluate(inter, SASRecConfig(hidden=32, dropout=0.1, epochs=6, patience=6, batch_size=32,
                                                 lr=3e-3), [1, 5], progress=False, item_vectors=True)
    assert res["metrics"]["all"]["n"] == 60
    check_result(res, inter, [1, 5], epochs=6, eval_every=2)
    vec = res["item_vectors"]  # one 32-d row per item train holds, the rows the model scores with
    assert set(vec["item_id"]) == set(inter.loc[inter["split"] == "train", "item_id"])
    assert {len(v) for v in vec["vector"]} == {32}


def test_sasrec_with_the_successor_memory_chooses_its_weight_on_valid():
    """Every walk steps i → i+1, so the train split's successor table alone names each next item: with the
    grid [0, 1] valid must choose 1, and then every test list starts with the target (arithmetic, not quality)."""
    inter = walks()
    res = train_and_evaluate(inter, SASRecConfig(hidden=16, dropout=0.1, epochs=2, patience=2, batch_size=32),
                             [1, 5], progress=False, successor_weights=[0.0, 1.0])
    fused = res["successors"]
    assert fused["weight"] == 1.0 and fused["valid_ndcg@10"][1.0] == 1.0
    assert fused["metrics"]["all"]["recall@1"] == 1.0 and fused["lists"].keys() == res["lists"].keys()
    assert all(len(x) == 5 and len(set(x)) == 5 for x in fused["lists"].values())
