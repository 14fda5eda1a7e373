"""End to end on a tiny config: every stage runs for real and leaves its artifacts."""

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from onereason.cli import app
from onereason.pipeline import prepare_run_dir


def test_tiny_run_end_to_end(tiny_run):
    run_dir, summary = tiny_run
    for path in ["data/interactions.parquet", "data/items.parquet", "data/general_text.parquet",
                 "itemic/sid_map.parquet", "tokenizer", "corpus/token.parquet", "corpus/item.parquet",
                 "corpus/relational.parquet", "corpus/user.parquet", "corpus/stats.json", "pretrain/report.md",
                 "pretrain/loss.png", "model/config.json", "eval/results.json", "eval/results.md",
                 "sft/model/config.json", "rl/grpo/model/config.json", "rl/grpo/rewards.png", "rl/eval.md",
                 "report/report.html", "report/results.json"]:
        assert (run_dir / path).exists(), path
    assert summary["itemic"]["collision_rate_after"] == 0.0
    res = json.loads((run_dir / "eval" / "results.json").read_text())
    ours, pop = res["methods"]["onereason"]["all"], res["methods"]["MostPopular"]["all"]
    assert ours["sid_validity@10"] == 1.0
    assert ours["n"] == pop["n"] == 80
    for m, v in ours.items():
        if m != "n":
            assert 0.0 <= v <= 1.0, m
    log = [json.loads(line) for line in (run_dir / "pretrain/text/train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]  # it learned something
    recs = [json.loads(line) for line in (run_dir / "eval" / "recommendations.jsonl").read_text().splitlines()]
    assert all(len(r["items"]) == 10 and len(set(r["items"])) == 10 for r in recs)


def test_run_dir_refuses_a_different_config(tiny_run, ml_slice):
    from conftest import tiny_config

    run_dir, _ = tiny_run
    cfg = tiny_config(*ml_slice)
    cfg.pretrain.full.tokens = 99
    with pytest.raises(ValueError, match="different pretrain config"):
        prepare_run_dir(cfg, run_dir)


def test_cli_data_stats_prints_counts(monkeypatch):
    monkeypatch.setattr("onereason.cli.console", Console(width=200))
    result = CliRunner().invoke(app, ["data", "stats", "-d", "ml-100k"])
    assert result.exit_code == 0, result.output
    assert "100000" in result.output and "943" in result.output


def test_cli_unknown_dataset_is_a_clear_error():
    result = CliRunner().invoke(app, ["data", "stats", "-d", "no-such-data"])
    assert result.exit_code == 2
    assert "unknown dataset 'no-such-data'" in result.output


def test_cli_run_keeps_the_config_datasets(tmp_path, monkeypatch):
    """--config's dataset list is not replaced by the flag's default; a bad dataset fails fast and clearly."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"data": {"datasets": ["not-shipped-anywhere"]}}')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "x"])
    assert result.exit_code == 2
    assert "unknown dataset 'not-shipped-anywhere'" in result.output


def test_run_until_data_keeps_one_domain_of_a_world(tmp_path, monkeypatch):
    """`--until data` stops after the data stage; `data.domains` keeps one domain of a shared-user
    world with every event's split as the whole world's split made it (a single-domain model)."""
    import pandas as pd

    from onereason.data.world import WorldConfig, generate

    world = {"users": 60, "items_per_interest": 2}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data": {"datasets": [], "world": world, "domains": ["video"]}}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "one", "--until", "data"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "one"
    assert (run_dir / "data" / "interactions.parquet").exists() and not (run_dir / "itemic").exists()
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    assert set(inter["domain"]) == set(items["domain"]) == {"video"}
    whole = generate(WorldConfig(**world))[0].interactions
    expected = whole[whole["domain"] == "video"].reset_index(drop=True)
    pd.testing.assert_frame_equal(inter[["user_id", "item_id", "split"]], expected[["user_id", "item_id", "split"]])

    cfg.write_text(json.dumps({"data": {"datasets": [], "world": world, "domains": ["videos"]}}))
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "two", "--until", "data"])
    assert result.exit_code == 2 and "data.domains" in result.output and "'videos'" in result.output
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "three", "--until", "nothing"])
    assert result.exit_code == 2 and "unknown stage 'nothing'" in result.output
