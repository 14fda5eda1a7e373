"""`onereason train`: the User-layer-only baseline still trains and saves a loadable model."""

import json
import shutil

from transformers import AutoModelForCausalLM

from onereason.pipeline import RunConfig
from onereason.train import next_item


def test_user_layer_only_model_trains(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("pretrain", "model", "corpus"))
    cfg = RunConfig.model_validate_json((copy / "config.json").read_text()).train
    cfg.loop.epochs = 3
    stats = next_item.run(cfg, copy, progress=False)
    assert stats["steps"] > 0 and stats["samples"] > 0
    log = [json.loads(l) for l in (copy / "train" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    AutoModelForCausalLM.from_pretrained(str(copy / "model"))
