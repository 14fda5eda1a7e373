"""Metric functions against hand-computed cases (docs/design.md §4)."""

import math

import pandas as pd
import pytest

from onereason.bench.baselines.popular import most_popular
from onereason.metrics import (evaluate_lists, ndcg_at_k, paired_bootstrap, pass_at_k, position1_pass_at_k,
                                     recall_at_k, sid_validity_at_k)

L2 = math.log2


def test_single_target():
    c = ["a", "b", "c", "d"]
    assert pass_at_k(c, ["c"], 2) == 0.0 and pass_at_k(c, ["c"], 3) == 1.0
    assert recall_at_k(c, ["c"], 4) == 1.0
    assert ndcg_at_k(c, ["c"], 4) == pytest.approx(1 / L2(4))
    assert ndcg_at_k(c, ["a"], 1) == 1.0


def test_several_targets():
    c, g = ["x", "a", "y", "b"], ["b", "a", "z"]
    assert recall_at_k(c, g, 4) == pytest.approx(2 / 3)
    assert recall_at_k(c, g, 2) == pytest.approx(1 / 3)
    assert position1_pass_at_k(c, g, 2) == 0.0 and position1_pass_at_k(c, g, 4) == 1.0
    idcg = 1 + 1 / L2(3) + 1 / L2(4)
    assert ndcg_at_k(c, g, 4) == pytest.approx((1 / L2(3) + 1 / L2(5)) / idcg)


def test_duplicates_in_candidates_count_once():
    c, g = ["a", "a", "b"], ["a", "b"]
    assert recall_at_k(c, g, 2) == 0.5
    assert ndcg_at_k(c, g, 3) == pytest.approx((1 + 1 / L2(4)) / (1 + 1 / L2(3)))


def test_empty_candidates_and_invalid_sids():
    assert pass_at_k([], ["a"], 10) == 0.0 and ndcg_at_k([], ["a"], 10) == 0.0
    assert sid_validity_at_k([], 10) is None
    assert sid_validity_at_k(["a", None, "b", None], 4) == 0.5


def test_evaluate_lists_groups_and_empty_truth():
    res = evaluate_lists([["a", "b"], ["c"], []], [["b"], ["d"], ["a"]], [1, 2], ["x", "x", "y"])
    assert res["all"]["n"] == 3 and res["x"]["n"] == 2
    assert res["all"]["pass@2"] == pytest.approx(1 / 3) and res["x"]["pass@2"] == 0.5
    assert res["all"]["sid_validity@2"] == 1.0  # the empty list is not counted as valid or invalid
    with pytest.raises(ValueError, match="sample 1: empty ground truth"):
        evaluate_lists([["a"], ["b"]], [["a"], []], [1])


def test_most_popular_uses_train_only():
    inter = pd.DataFrame({"user_id": list("uuuvvw"), "item_id": list("abcbcc"), "domain": "d",
                          "split": ["train", "train", "test", "train", "test", "test"]})
    assert most_popular(inter, 2) == {"d": ["b", "a"]}


def test_paired_bootstrap():
    assert paired_bootstrap([0.3, 0.5, 0.1], [0.3, 0.5, 0.1]) == (0.0, 0.0, 0.0)
    assert paired_bootstrap([1.0] * 5, [0.0] * 5) == (1.0, 1.0, 1.0)
    # a constant per-user gain has no spread, however noisy the users are
    a = [0.9, 0.1, 0.5, 0.7]
    assert paired_bootstrap(a, [x - 0.2 for x in a]) == pytest.approx((0.2, 0.2, 0.2))
    mean, lo, hi = paired_bootstrap([1, 0, 1, 0] * 25, [0] * 100)
    assert mean == 0.5 and 0.38 < lo < 0.5 < hi < 0.62  # ≈ ± 1.96 · sqrt(.25 / 100)
    with pytest.raises(ValueError, match="same samples"):
        paired_bootstrap([1.0], [1.0, 0.0])
