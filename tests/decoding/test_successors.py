"""The successor memory: train-split counts only, the mixture's arithmetic, the saved weight."""

import math

import pandas as pd
import pytest

from onereason.decoding.constrained import Recommendation
from onereason.decoding.successors import SuccessorMemory, WEIGHT_FILE, save_weight, saved_weight


def interactions() -> pd.DataFrame:
    rows = [("u1", "a", 0, "train"), ("u1", "b", 1, "train"), ("u1", "a", 2, "train"), ("u1", "a", 3, "train"),
            ("u1", "c", 4, "valid"), ("u2", "a", 0, "train"), ("u2", "b", 1, "train"), ("u2", "d", 2, "test"),
            ("u3", "a", 0, "train"), ("u3", "e", 1, "train")]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    return inter.assign(domain=inter["item_id"].map(lambda i: "other" if i == "e" else "d"), rating=float("nan"))


def test_the_table_holds_train_transitions_only():
    """a → b twice, a → e once, b → a once; a → a (a repeat) and the valid / test steps never count."""
    memory = SuccessorMemory.from_interactions(interactions(), 0.5)
    assert memory.next_items == {"a": {"b": pytest.approx(2 / 3), "e": pytest.approx(1 / 3)}, "b": {"a": 1.0}}
    with pytest.raises(ValueError, match="successor weight 1.5"):
        SuccessorMemory.from_interactions(interactions(), 1.5)


def test_fuse_mixes_probabilities_within_the_target_domain():
    memory = SuccessorMemory.from_interactions(interactions(), 0.25)
    rec = Recommendation(["x", "y", "z"], [math.log(0.5), math.log(0.3), math.log(0.1)])
    out = memory.fuse(rec, "a", "d")  # b: 0.25 · 2/3; e is in another domain and stays out
    expected = {"x": 0.375, "y": 0.225, "b": 0.25 * 2 / 3}
    assert out.items == ["x", "y", "b"]  # z (0.075) falls past the beam's length
    assert out.scores == pytest.approx([math.log(expected[i]) for i in out.items])
    assert memory.fuse(rec, "a", "d", k=4).items == ["x", "y", "b", "z"]
    assert memory.fuse(rec, "unknown", "d").items == ["x", "y", "z"]  # no successors: the LM's order
    memory.weight = 0.8  # b: 0.8 · 2/3 = 0.53 passes x: 0.2 · 0.5
    assert memory.fuse(rec, "a", "d").items[:2] == ["b", "x"]
    memory.weight = 0.0
    assert memory.fuse(rec, "a", "d") is rec


def test_the_saved_weight_belongs_to_its_grid(tmp_path):
    assert saved_weight(tmp_path) is None
    save_weight(tmp_path, 0.1, [0.0, 0.1], {0.0: 0.05, 0.1: 0.06}, users=7)
    assert saved_weight(tmp_path) == 0.1 and saved_weight(tmp_path, [0.0, 0.1]) == 0.1
    assert saved_weight(tmp_path, [0.0, 0.2]) is None  # another grid: to be chosen again
    (tmp_path / WEIGHT_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=f"{WEIGHT_FILE}: not a successor-weight file"):
        saved_weight(tmp_path)
