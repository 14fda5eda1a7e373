"""End to end on a tiny config: every stage runs for real and leaves its artifacts."""

import json
import math

import pandas as pd
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
    assert log and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    recs = [json.loads(line) for line in (run_dir / "eval" / "recommendations.jsonl").read_text().splitlines()]
    assert all(len(r["items"]) == 10 and len(set(r["items"])) == 10 for r in recs)
    served = summary["serve"]  # the last stage: one real request to the service on loopback
    items = [i["id"] for i in served["answer"]["items"]]
    assert len(items) == len(set(items)) == 5 and set(items) <= set(pd.read_parquet(run_dir / "data/items.parquet")["item_id"])
    assert served["answer"]["mode"] == "slow" and served["explain"]["trace"] and served["seconds"] > 0


def test_headline_names_our_models_and_the_baselines(tiny_run, monkeypatch):
    from onereason import cli

    monkeypatch.setattr(cli, "console", Console(width=200, record=True))
    from conftest import TINY_BENCH
    from onereason.bench import suite

    results = suite.run(suite.BenchConfig(**TINY_BENCH), tiny_run[0], progress=False, log=lambda *_: None)
    cli.print_headline(results)
    out = cli.console.export_text()
    for method in ("SFT thinking", "RL race", "SASRec", "TIGER-style", "MostPopular"):
        x = results["methods"][method]["metrics"]["all"]
        assert f"{method}" in out and f"{x['ndcg@10']:.4f}" in out
    assert f"our best: {results['ratios']['all']['best']}" in out


def test_run_dir_refuses_a_different_config(tiny_run, ml_slice):
    from conftest import tiny_config

    run_dir, _ = tiny_run
    cfg = tiny_config(*ml_slice)
    cfg.pretrain.full.tokens = 99
    with pytest.raises(ValueError, match="different pretrain config"):
        prepare_run_dir(cfg, run_dir)


def test_run_dir_saved_before_a_key_was_added_is_the_same_config(tmp_path, ml_slice):
    """A key added to the code since the run was saved, at its default, changes nothing; a key the code no
    longer knows is a change."""
    from conftest import tiny_config

    cfg = tiny_config(*ml_slice)
    saved = json.loads(cfg.model_dump_json())
    del saved["pretrain"]["full"]["dropout"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    prepare_run_dir(cfg, tmp_path)
    saved["pretrain"]["full"]["retired_key"] = 1
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different pretrain config"):
        prepare_run_dir(cfg, tmp_path)


def test_identity_codes_run_through_pretraining_and_eval(ml_slice, tmp_path):
    """With `itemic.identity` an item is its semantic codes plus a code of its own: every stage up to eval
    reads the longer SID, and every recommended item is a catalog item."""
    from conftest import tiny_config
    from onereason import pipeline
    from onereason.itemic.sid import load_sid_tokens

    cfg = tiny_config(*ml_slice)
    cfg.itemic.levels, cfg.itemic.identity = 1, True
    pipeline.run(cfg, tmp_path / "run", progress=False, log=lambda *_: None, until="eval")
    tok, sid = load_sid_tokens(tmp_path / "run")
    assert sid.length == 1 + 2 + 1 and sid.codec.level_sizes[-1] == len(sid.codec.item_ids)
    recs = [json.loads(line) for line in (tmp_path / "run" / "eval" / "recommendations.jsonl").open()]
    assert recs and all(set(r["items"]) <= set(sid.codec.item_ids) for r in recs)


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
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "x", "--budget", "0"])
    assert result.exit_code == 2 and "budget: 0.0 is not a positive factor" in result.output


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
    cfg.write_text(json.dumps({"data": {"datasets": [], "world": world}, "skip": ["sft_eval"]}))
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "four", "--until", "data"])
    assert result.exit_code == 2 and "skip: unknown stage 'sft_eval'" in result.output
    # a run continued with its finished stages skipped (how a stopped `make reproduce` is resumed) ends cleanly
    cfg.write_text(json.dumps({"data": {"datasets": [], "world": world, "domains": ["video"]}, "skip": ["data"]}))
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "one", "--until", "data"])
    assert result.exit_code == 0, result.output
    assert "dataset statistics" not in result.output and "artifacts: runs/one/" in result.output


def test_budget_scales_every_training_stage_and_nothing_measured():
    from onereason.pipeline import RunConfig, scale_budget

    base = RunConfig()
    half = scale_budget(base, 0.5)
    for s in ("text", "warmup", "full", "long"):
        assert getattr(half.pretrain, s).tokens == round(getattr(base.pretrain, s).tokens * 0.5)
    assert half.sft.loop.epochs == base.sft.loop.epochs * 0.5 and half.next_item.loop.epochs == base.next_item.loop.epochs * 0.5
    assert half.rl.steps == round(base.rl.steps * 0.5)
    assert half.bench.sasrec.epochs == base.bench.sasrec.epochs // 2 and half.bench.lcrec_epochs == base.bench.lcrec_epochs / 2
    assert half.bench.tiger.epochs == base.bench.tiger.epochs // 2
    for part in ("eval", "sft_eval", "rl_eval"):  # what is measured stays
        assert getattr(half, part) == getattr(base, part)
    assert (half.bench.sample, half.bench.decoding) == (base.bench.sample, base.bench.decoding)
    assert base == RunConfig()  # the input is not modified
    tiny = scale_budget(base, 1e-6)  # counts never reach 0
    assert tiny.rl.steps == tiny.bench.sasrec.epochs == tiny.bench.tiger.epochs == 1 and tiny.pretrain.long.tokens >= 1
    with pytest.raises(ValueError, match="budget: 0"):
        scale_budget(base, 0)
    split = scale_budget(base, 0.5, pretrain_factor=2.0)  # the demo's shape: pre-training gets its own factor
    assert split.pretrain.full.tokens == 2 * base.pretrain.full.tokens and split.rl.steps == half.rl.steps
    with pytest.raises(ValueError, match="pretrain budget: -1"):
        scale_budget(base, 1.0, pretrain_factor=-1)
