"""Pre-training stages on the tiny run: the warm-up gradient mask, text initialization, logs per
layer, the stage report, bad configs failing before training, two gloo processes agreeing,
and a kill -9 followed by a resume that reproduces the loss curve."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from onereason.corpus.build import LAYERS
from onereason.model.backbone import build_model
from onereason.pipeline import RunConfig
from onereason.train import pretrain
from onereason.itemic.sid import load_sid_tokens
from onereason.train.pretrain import init_item_rows_from_text, item_token_ids

HERE = Path(__file__).parent


def _state(path):
    return AutoModelForCausalLM.from_pretrained(str(path)).state_dict()


def test_warmup_changes_only_item_token_rows(tiny_run):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    before, after = _state(run_dir / "pretrain/text/model"), _state(run_dir / "pretrain/warmup/model")
    emb = "model.embed_tokens.weight"
    rows = torch.zeros(before[emb].shape[0], dtype=torch.bool)  # the tokenizer also has SFT's interest tokens
    rows[item_token_ids(tok, sid)] = True
    for k in before:
        if k in (emb, "lm_head.weight"):
            assert torch.equal(before[k][~rows], after[k][~rows]), k  # bit-identical
            assert not torch.equal(before[k][rows], after[k][rows]), k
        else:
            assert torch.equal(before[k], after[k]), k


def test_text_init_puts_code_rows_at_the_mean_title_embedding(tiny_run):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    model = build_model("tiny", len(tok), seed=0)
    emb = model.get_input_embeddings().weight.detach().clone()
    init_item_rows_from_text(model, tok, sid, items)
    titles = dict(zip(items["item_id"], items["title"]))
    members = [i for i, c in zip(sid.codec.item_ids, sid.codec.codes[:, 0]) if c == sid.codec.codes[0, 0]]
    want = torch.stack([emb[tok.encode(titles[i], add_special_tokens=False)].mean(0) for i in members]).mean(0)
    got = model.get_input_embeddings().weight[int(sid.code_ids[0][sid.codec.codes[0, 0]])]
    assert torch.allclose(got, want, atol=1e-6)


def test_logs_loss_per_layer_and_reports_every_stage(tiny_run):
    run_dir, _ = tiny_run
    log = [json.loads(l) for l in (run_dir / "pretrain/full/train_log.jsonl").read_text().splitlines()]
    assert {f"loss/{n}" for n in LAYERS} <= set().union(*log) and {"lr", "tokens_per_s"} <= set(log[-1])
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    assert list((run_dir / "pretrain/full/tensorboard").glob("events.out.tfevents.*"))
    report = json.loads((run_dir / "pretrain/report.json").read_text())
    assert list(report) == ["text", "warmup", "full", "long"]
    for stage in report.values():
        m = stage["metrics"]
        assert 0 <= m["r0_stated"]["title_to_sid_acc"] <= 1 and m["perplexity"] > 1
        assert 0 <= m["next_item"]["recall@10"] <= 1
    assert report["long"]["context"] == 256 and report["full"]["context"] == 128
    window = int(pd.read_parquet(run_dir / "corpus/user.parquet")["ids"].map(len).max())
    assert 0 <= sum(report["full"]["tokens_per_layer"].values()) - 24_000 < len(LAYERS) + window  # windows stay whole
    assert (run_dir / "pretrain/loss.png").stat().st_size > 10_000
    assert "| held-out text perplexity |" in (run_dir / "pretrain/report.md").read_text()
    chosen = json.loads((run_dir / "pretrain/full/summary.json").read_text())["selection"]  # early stopping on valid
    assert len(chosen["scores"]) == 2 and chosen["score"] == max(x["score"] for x in chosen["scores"])
    assert report["full"]["user_epochs"] > 0


def test_a_budget_in_user_epochs_follows_the_data():
    full = pretrain.PretrainConfig().full
    assert full.user_epochs == 16 and pretrain.stage_tokens(full, 100) == round(16 * 100 / 0.7)
    assert pretrain.stage_tokens(full, 200) == round(16 * 200 / 0.7)  # twice the data, twice the tokens
    assert pretrain.stage_tokens(full.replace(user_epochs=None), 100) == full.tokens


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.full.mixture.update(relational=0.0, items=0.2), "pretrain.full.mixture: unknown layer 'items'"),
    # below the field's own minimum (8), so built without validation to reach the stage's check
    (lambda c: setattr(c, "full", c.full.model_construct(**{**c.full.model_dump(), "context": 4})),
     r"pretrain.full.context=4 is shorter than one item \(\d+ tokens\)"),
    (lambda c: c.full.domain_weights.update(books=1.0), "pretrain.full.domain_weights: unknown domain 'books'"),
    (lambda c: setattr(c, "full", c.full.replace(context=64)),
     r"pretrain.full.context=64 is shorter than the longest User-layer window \(\d+ tokens\): lower corpus.max_items"),
    (lambda c: setattr(c, "full", c.full.replace(user_epochs=2.0, mixture={"token": 1.0})),
     "pretrain.full.user_epochs=2.0 but the mixture has no User layer"),
])
def test_bad_stage_config_fails_before_training(tiny_run, edit, message):
    run_dir, _ = tiny_run
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text()).pretrain
    edit(cfg)
    stamp = {p: p.stat().st_mtime_ns for p in (run_dir / "pretrain" / "full").rglob("*")}
    with pytest.raises(ValueError, match=message):
        pretrain.run(cfg, run_dir, "full", progress=False)
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "pretrain" / "full").rglob("*")} == stamp


def test_empty_layer_with_weight_fails_before_training(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("full", "long", "checkpoints"))
    pd.read_parquet(copy / "corpus/relational.parquet").iloc[:0].to_parquet(copy / "corpus/relational.parquet")
    cfg = RunConfig.model_validate_json((copy / "config.json").read_text()).pretrain
    with pytest.raises(ValueError, match="pretrain.full.mixture.relational: weight 0.05 but the layer has no documents"):
        pretrain.run(cfg, copy, "full", progress=False)
    assert not (copy / "pretrain" / "full").exists()


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_two_gloo_processes_agree_on_the_loss(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(HERE / "two_process_worker.py"), str(tmp_path)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["processes"] == r1["processes"] == 2 and r0["backend"] == "gloo"
    assert r0["final_loss"] == r1["final_loss"]
    assert r0["checksum"] == r1["checksum"]  # DDP kept the replicas identical


def test_kill_9_mid_stage_then_rerun_resumes_to_the_same_loss_curve(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    shutil.copytree(run_dir, tmp_path / "runs" / "k", ignore=shutil.ignore_patterns("full", "long"))
    args = ["pretrain", "--name", "k", "--stage", "full"]
    killed = subprocess.run([sys.executable, str(HERE / "kill_worker.py"), "13", *args], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stage = tmp_path / "runs/k/pretrain/full"
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step_10", "step_5"]
    assert not (stage / "model").exists()
    done = subprocess.run([sys.executable, "-m", "onereason.cli", *args], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((stage / "summary.json").read_text())["resumed_from"] == 10
    ref = [json.loads(l) for l in (run_dir / "pretrain/full/train_log.jsonl").read_text().splitlines()]
    got = [json.loads(l) for l in (stage / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    for a, b in zip(got, ref):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3), a["step"]


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(HERE.parents[1] / "configs" / f"{name}.yaml"))
    assert cfg.mixed_precision == "bf16" and cfg.num_processes > 1
