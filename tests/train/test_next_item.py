"""`onereason train`: the User-layer-only baseline still trains and saves a loadable model."""

import json
import math
import shutil

import pytest
from transformers import AutoModelForCausalLM

from onereason.pipeline import RunConfig
from onereason.train import next_item


def test_user_layer_only_model_trains(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("pretrain", "model", "corpus"))
    cfg = RunConfig.model_validate_json((copy / "config.json").read_text()).next_item
    cfg.loop.epochs = 3
    stats = next_item.run(cfg, copy, progress=False)
    assert stats["steps"] > 0 and stats["samples"] > 0
    log = [json.loads(l) for l in (copy / "train" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    AutoModelForCausalLM.from_pretrained(str(copy / "model"))


def test_a_pre_trained_run_is_not_overwritten(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "model" / "model.safetensors").read_bytes()
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text()).next_item
    with pytest.raises(ValueError, match="would overwrite its model"):
        next_item.run(cfg, run_dir, progress=False)
    assert (run_dir / "model" / "model.safetensors").read_bytes() == before
