"""The config base: unknown keys and out-of-range values are refused by name, wherever they come from."""

import importlib
import json
import pkgutil

import pytest
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

import onereason
from onereason.cli import app
from onereason.config import Config, ConfigError, build, field_paths, parse_sets
from onereason.pipeline import RunConfig
from onereason.rl.grpo import GrpoConfig
from onereason.rundir import prompt_items
from onereason.train.loop import LoopConfig


def test_every_config_class_is_strict():
    """Each `*Config` (and the other settings models) derives from the strict base; the HTTP request models
    are not configs."""
    for info in pkgutil.walk_packages(onereason.__path__, "onereason."):
        importlib.import_module(info.name)
    seen = set()

    def walk(cls):
        for sub in cls.__subclasses__():
            seen.add(sub)
            walk(sub)

    walk(BaseModel)
    configs = [c for c in seen if c.__module__.startswith("onereason.") and c.__name__.endswith("Config")]
    assert len(configs) >= 25
    loose = [c.__name__ for c in configs if not issubclass(c, Config)]
    assert loose == []


@pytest.mark.parametrize("data, key", [
    ({"sft": {"lopo": {"lr": 1e-3}}}, "sft.lopo: Extra inputs are not permitted"),
    ({"sft": {"loop": {"lr": -1}}}, "sft.loop.lr: Input should be greater than 0 (got -1)"),
    ({"bench": {"tiger": {"epochs": "many"}}}, "bench.tiger.epochs"),
    ({"evaluation": {}}, "evaluation: Extra inputs are not permitted"),
])
def test_a_bad_config_file_is_refused_naming_the_file_and_key(tmp_path, monkeypatch, data, key):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--name", "x", "--until", "data"])
    assert result.exit_code == 2
    flat = "".join(result.output.split())  # rich wraps long lines
    assert str(cfg) in flat and "".join(key.split()) in flat
    assert not (tmp_path / "runs").exists()  # refused before anything is written


def test_set_is_refused_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, key in ((["--set", "sft.loop.lrr=0.1"], "sft.loop.lrr"), (["--set", "rl.steps=-3"], "rl.steps"),
                      (["--set", "rl.steps"], "expectedKEY=VALUE"),
                      (["--set", "rl.steps.x=1"], "rl.steps:Inputshouldbeavalidinteger")):
        result = CliRunner().invoke(app, ["run", "--name", "x", "--until", "data", *args])
        assert result.exit_code == 2 and key in "".join(result.output.split()), result.output
    # a stage command's --set is relative to its section, like its config
    result = CliRunner().invoke(app, ["eval", "--name", "x", "--set", "beamz=3"])
    assert result.exit_code == 2 and "eval.beamz:Extrainputsarenotpermitted" in "".join(result.output.split())
    result = CliRunner().invoke(app, ["serve", "start", "--name", "x", "--set", "max_batch=0"])
    assert result.exit_code == 2 and "max_batch" in result.output


def test_an_invalid_assignment_is_refused():
    cfg = RunConfig()
    with pytest.raises(ValidationError, match="lr"):
        cfg.sft.loop.lr = -5
    with pytest.raises(ValidationError, match="no_such_key"):
        cfg.sft.loop.no_such_key = 1
    with pytest.raises(ConfigError, match="LoopConfig: epochs"):
        cfg.sft.loop.replace(epochs=-1)
    assert cfg.sft.loop.lr == 1e-3


def test_a_partial_section_keeps_the_defaults_its_parent_declares():
    """SFT declares its loop with lr 1e-3 and the bench its TIGER with 12 epochs; naming one sibling keeps
    the others (pydantic alone would rebuild the section from the class defaults: lr 3e-3, 40 epochs)."""
    default = RunConfig()
    assert default.sft.loop.lr != LoopConfig().lr
    cfg = build(RunConfig, {"sft": {"loop": {"epochs": 0.5}}, "bench": {"tiger": {"eval_users": 7}}})
    assert cfg.sft.loop.epochs == 0.5 and cfg.sft.loop.lr == default.sft.loop.lr
    assert cfg.sft.loop.warmup_ratio == default.sft.loop.warmup_ratio
    assert cfg.bench.tiger.eval_users == 7 and cfg.bench.tiger.epochs == default.bench.tiger.epochs
    assert RunConfig.model_validate_json('{"sft": {"loop": {"epochs": 0.5}}}') == cfg.model_copy(
        update={"bench": default.bench})


def test_a_renamed_key_in_a_saved_run_is_read_at_its_new_place_and_not_written():
    """A run saved before `rl.candidates` became `rl.decoding.beams` still loads, with GRPO's declared
    decoding defaults kept for the keys it does not name; a misspelled key is still refused."""
    cfg = build(RunConfig, {"rl": {"candidates": 8, "trace_tokens": 40}}, {"rl.top_p": 0.9})
    assert (cfg.rl.decoding.beams, cfg.rl.decoding.trace_tokens, cfg.rl.decoding.top_p) == (8, 40, 0.9)
    assert cfg.rl.decoding.temperature == RunConfig().rl.decoding.temperature == 1.0
    assert "candidates" not in json.loads(cfg.model_dump_json())["rl"]
    with pytest.raises(ConfigError, match="rl.candidate"):
        build(RunConfig, {"rl": {"candidate": 8}})


def test_overrides_parse_as_json_else_string_and_round_trip():
    assert parse_sets(["a.b=1e-3", "c=false", "d=[1, 2]", "e=thinking"]) == {
        "a.b": 1e-3, "c": False, "d": [1, 2], "e": "thinking"}
    cfg = build(RunConfig, {}, {"rl.mode": "thinking", "eval.decoding.ks": [5, 10]})
    assert cfg.rl.mode == "thinking" and cfg.eval.decoding.ks == [5, 10]
    assert build(RunConfig, json.loads(cfg.model_dump_json())) == cfg


def test_every_command_that_builds_a_config_takes_set():
    """Commands that only read results (statistics, comparisons) build no config; every other one has `--set`."""
    import typer.main

    no_config = {"data stats", "eval-compare", "rl compare", "bench compare"}
    group = typer.main.get_command(app)
    seen = []

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            path = f"{prefix} {name}".strip()
            if getattr(sub, "commands", None):
                walk(sub, path)
            else:
                seen.append((path, any("--set" in p.opts for p in sub.params)))

    walk(group, "")
    assert len(seen) >= 20
    assert [p for p, has in seen if not has and p not in no_config] == []
    assert [p for p, has in seen if has and p in no_config] == []


def test_prompt_length_is_declared_once_and_old_stage_keys_are_read_only_when_they_agree(tiny_run):
    """Every prompt holds corpus.max_items items (`rundir.prompt_items`); a saved run's stage `max_items`
    equal to it still loads, a different one is refused by name, and a stage config has no such key."""
    run_dir, _ = tiny_run
    assert prompt_items(run_dir) == 20 == RunConfig.model_validate_json((run_dir / "config.json").read_text()).corpus.max_items
    old = {"corpus": {"max_items": 20}, **{k: {"max_items": 20} for k in ("eval", "sft_eval", "rl", "rl_eval", "bench")},
           "sft": {"data": {"max_items": 20}}, "pretrain": {"report": {"max_items": 20}}, "next_item": {"max_items": 20}}
    assert RunConfig.model_validate(old).corpus.max_items == 20
    with pytest.raises(ValueError, match=r"eval.max_items=60: prompts hold corpus.max_items=50"):
        RunConfig.model_validate({"eval": {"max_items": 60}})
    with pytest.raises(ValueError, match=r"bench.max_items=30: prompts hold corpus.max_items=20"):
        RunConfig.model_validate({**old, "bench": {"max_items": 30}})
    with pytest.raises(ValidationError, match="max_items"):
        GrpoConfig.model_validate({"max_items": 20})


def test_a_stride_past_the_window_is_refused():
    with pytest.raises(ValueError, match=r"corpus.stride=60 is more than corpus.max_items=50"):
        RunConfig.model_validate({"corpus": {"stride": 60}})


def test_seed_reseeds_every_stage(tmp_path, monkeypatch):
    """`onereason run --seed N` is a whole-pipeline replicate: every `seed` the RunConfig holds becomes N."""
    paths = field_paths(RunConfig(), "seed")
    assert {"itemic.seed", "corpus.seed", "pretrain.seed", "sft.loop.seed", "rl.seed", "eval.sample.seed",
            "bench.sample.seed", "bench.select.seed"} <= set(paths)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--name", "x", "--until", "data", "--dataset", "ml-100k", "--seed", "7"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "x" / "config.json").read_text())

    def at(path: str):
        node = saved
        for part in path.split("."):
            node = node[part]
        return node
    assert {p: at(p) for p in paths} == {p: 7 for p in paths}
