"""`compare_evals`: two runs' eval recommendations, paired per user."""

import json
from pathlib import Path

import pytest

from onereason.bench.evaluate import EvalConfig, compare_evals, eval_dir, run


def write_eval(run: Path, rows: list[tuple[str, list[str], list[str]]], split: str = "test") -> Path:
    out = eval_dir(run, split)
    out.mkdir(parents=True)
    with open(out / "recommendations.jsonl", "w") as f:
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


def test_the_split_picks_the_eval(tmp_path):
    a = write_eval(tmp_path / "a", [("u1", ["x"], ["x"])])
    write_eval(a, [("u9", ["y"], ["y"])], split="valid")
    b = write_eval(tmp_path / "b", [("u9", ["y"], ["q"])], split="valid")
    assert compare_evals(a, b, columns=("recall@1",), split="valid")["recall@1"][0] == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="onereason eval --name c --split valid` first"):
        compare_evals(a, tmp_path / "c", split="valid")
    with pytest.raises(FileNotFoundError, match="onereason eval --name b` first"):  # b has only a valid eval
        compare_evals(a, b)


def test_a_valid_eval_keeps_the_test_eval(tiny_run):
    """Choosing a model on valid must not replace the test numbers the report and comparisons read."""
    run_dir, _ = tiny_run
    test_files = {p.name: p.read_bytes() for p in (run_dir / "eval").iterdir() if p.is_file()}
    res = run(EvalConfig(sample={"split": "valid", "max_users": 10}, decoding={"beams": 5, "ks": [1, 5]}, batch_size=16),
              run_dir, progress=False)
    assert res["split"] == "valid" and res["users"] == 10
    valid = eval_dir(run_dir, "valid")
    assert len((valid / "recommendations.jsonl").read_text().splitlines()) == 10
    assert {p.name: p.read_bytes() for p in (run_dir / "eval").iterdir() if p.is_file()} == test_files
    assert not list(valid.glob(".*.tmp"))  # written by rename, nothing half-written left


def test_the_eval_uses_the_successor_weight_chosen_on_valid(tiny_run):
    """The pipeline's eval chose the weight on valid (the grid's best NDCG@10, ties to the smaller), kept it in
    the model directory, and reports the LM's own lists beside the mixed ones when it is above 0."""
    run_dir, _ = tiny_run
    saved = json.loads((run_dir / "model" / "successors.json").read_text())
    curve = {float(w): v for w, v in saved["valid_ndcg@10"].items()}
    assert saved["grid"] == EvalConfig().successor_weights and set(curve) == set(saved["grid"])
    assert saved["weight"] == max(saved["grid"], key=lambda w: (curve[w], -w))
    res = json.loads((run_dir / "eval" / "results.json").read_text())
    assert res["successor_weight"] == saved["weight"]
    assert ("onereason, LM only" in res["methods"]) == (saved["weight"] > 0)
    rows = [json.loads(line) for line in (run_dir / "eval" / "recommendations.jsonl").open()]
    assert all(len(r["items"]) == len(r["lm_items"]) for r in rows)
    if saved["weight"] == 0:
        assert all(r["items"] == r["lm_items"] for r in rows)
