"""`compare_evals`: two runs' eval recommendations, paired per user."""

import json
from pathlib import Path

import pytest

from onereason.bench.evaluate import compare_evals


def write_eval(run: Path, rows: list[tuple[str, list[str], list[str]]]) -> Path:
    (run / "eval").mkdir(parents=True)
    with open(run / "eval" / "recommendations.jsonl", "w") as f:
        for user, target, items in rows:
            f.write(json.dumps({"user_id": user, "target": target, "items": items, "scores": [0.0] * len(items)}) + "\n")
    return run


def test_difference_is_per_user_and_order_free(tmp_path):
    a = write_eval(tmp_path / "a", [("u1", ["x"], ["x", "y"]), ("u2", ["z"], ["y", "z"])])
    b = write_eval(tmp_path / "b", [("u2", ["z"], ["q", "r"]), ("u1", ["x"], ["x", "y"])])  # other file order
    d = compare_evals(a, b, columns=("recall@1", "recall@10"))
    assert d["recall@1"] == pytest.approx((0.0, 0.0, 0.0))  # u1 ties, u2 misses at 1 in both
    mean, lo, hi = d["recall@10"]
    assert mean == pytest.approx(0.5) and 0.0 <= lo <= mean <= hi <= 1.0  # only u2 differs (+1)


def test_different_users_or_targets_are_refused(tmp_path):
    a = write_eval(tmp_path / "a", [("u1", ["x"], ["x"]), ("u2", ["z"], ["z"])])
    with pytest.raises(ValueError, match="different users"):
        compare_evals(a, write_eval(tmp_path / "b", [("u1", ["x"], ["x"])]))
    with pytest.raises(ValueError, match="different targets"):
        compare_evals(a, write_eval(tmp_path / "c", [("u1", ["x"], ["x"]), ("u2", ["y"], ["z"])]))
    with pytest.raises(FileNotFoundError, match="onereason eval --name d"):
        compare_evals(a, tmp_path / "d")


def test_a_cut_file_names_its_line(tmp_path):
    a = write_eval(tmp_path / "a", [("u1", ["x"], ["x"])])
    b = write_eval(tmp_path / "b", [("u1", ["x"], ["x"])])
    with open(b / "eval" / "recommendations.jsonl", "a") as f:
        f.write('{"user_id": "u2", "tar')  # an eval killed while writing
    with pytest.raises(ValueError, match=r"recommendations.jsonl:2: not a JSON row"):
        compare_evals(a, b)
