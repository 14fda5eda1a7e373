"""The training loop: label masking, every weight updated, and resume after a crash that matches an
uninterrupted run."""

import json
import math

import numpy as np
import pytest
import torch

import onereason.train.loop as loop
from onereason.model.backbone import build_model
from onereason.train.loop import LoopConfig, Sample, collate, train

PAD = 1


def _samples(n=48, seed=0):
    """A learnable toy language: each sequence counts upward from a random start (mod 40, offset 2)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start, length = int(rng.integers(0, 40)), int(rng.integers(6, 16))
        ids = [0] + [2 + (start + i) % 40 for i in range(length)]
        out.append(Sample(ids, [0] + [1] * length))
    return out


def test_collate_masks_prompt_and_padding():
    b = collate([Sample([5, 6, 7], [0, 1, 1]), Sample([8, 9], [0, 1])], pad_id=PAD)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 9, PAD]]
    assert b["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _killed_at_step_11(monkeypatch, model, samples, cfg, out) -> None:
    """Train until the 11th batch is collated, then die as a kill would (checkpoints up to then stay)."""
    calls, real = {"n": 0}, loop.collate

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(loop, "collate", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(model, samples, PAD, cfg, out, progress=False)
    monkeypatch.setattr(loop, "collate", real)


def test_learns_and_resumes_after_crash_to_the_same_weights(tmp_path, monkeypatch):
    cfg = LoopConfig(epochs=3, lr=1e-2, batch_tokens=128, checkpoint_every=4, log_every=1, warmup_ratio=0.1)
    samples = _samples()
    init = dict(build_model("tiny", 48, seed=0).named_parameters())
    full, stats = train(build_model("tiny", 48, seed=0), samples, PAD, cfg, tmp_path / "a", progress=False)
    log_a = [json.loads(l) for l in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == list(range(1, stats["steps"] + 1))  # log_every=1
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log_a)
    assert all(not torch.equal(init[k], v) for k, v in full.named_parameters())  # every parameter was updated

    _killed_at_step_11(monkeypatch, build_model("tiny", 48, seed=0), samples, cfg, tmp_path / "b")
    assert loop.latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_8"
    resumed, stats_b = train(build_model("tiny", 48, seed=1), samples, PAD, cfg, tmp_path / "b", progress=False)
    assert stats_b["resumed_from"] == 8 and stats_b["steps"] == stats["steps"]
    a, b = _params(full), _params(resumed)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    log_b = [json.loads(l) for l in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [round(r["loss"], 4) for r in log_b if r["step"] > 8] == [round(r["loss"], 4) for r in log_a if r["step"] > 8]


def test_sample_longer_than_batch_is_a_clear_error(tmp_path):
    long = [Sample(list(range(2, 42)), [1] * 40)]
    with pytest.raises(ValueError, match="batch_tokens=32 is shorter than the longest sample"):
        train(build_model("tiny", 48), long, PAD, LoopConfig(batch_tokens=32), tmp_path)


def test_early_stopping_returns_the_weights_that_scored_best(tmp_path):
    """Scored 4 times; the second scoring is the best, so its weights (not the last) come back."""
    cfg = LoopConfig(epochs=2, lr=1e-2, batch_tokens=128, checkpoint_every=100, log_every=100)
    seen: list[dict] = []

    def score(model):
        seen.append(_params(model))
        return [0.1, 0.5, 0.3, 0.2][len(seen) - 1]

    model, stats = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg, tmp_path, progress=False,
                         score=score, selections=4)
    scores = stats["selection"]["scores"]
    assert [x["score"] for x in scores] == [0.1, 0.5, 0.3, 0.2] and scores[-1]["step"] == stats["steps"]
    assert stats["selection"]["step"] == scores[1]["step"] < stats["steps"]
    got = _params(model)
    assert all(torch.equal(got[k], seen[1][k]) for k in got) and not all(torch.equal(got[k], seen[3][k]) for k in got)
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == scores[1]["step"]
    _, again = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg, tmp_path, progress=False,
                     score=score, selections=4)  # finished: nothing re-trained, the choice kept
    assert again["selection"]["step"] == scores[1]["step"] and len(seen) == 4


def test_dropout_changes_training_and_leaves_no_hooks(tmp_path):
    cfg = LoopConfig(epochs=1, lr=1e-2, batch_tokens=128, checkpoint_every=100, log_every=100)
    plain, _ = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg, tmp_path / "a", progress=False)
    dropped, _ = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg.model_copy(update={"dropout": 0.3}),
                       tmp_path / "b", progress=False)
    a, b = _params(plain), _params(dropped)
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert not any(m._forward_hooks for m in dropped.modules())


def test_patience_stops_training_and_a_rerun_does_not_train_on(tmp_path):
    """Scored at 8 points; the second is best, so with patience 2 training stops at the fourth scoring."""
    cfg = LoopConfig(epochs=2, lr=1e-2, batch_tokens=128, checkpoint_every=100, log_every=100)
    seen: list[float] = []

    def score(model):
        seen.append([0.1, 0.5, 0.3, 0.2, 0.9, 0.9, 0.9, 0.9][len(seen)])
        return seen[-1]

    model, stats = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg, tmp_path, progress=False,
                         score=score, selections=8, patience=2)
    steps = [x["step"] for x in stats["selection"]["scores"]]
    assert len(seen) == 4 and stats["steps"] == steps[-1] < stats["planned_steps"]
    assert stats["selection"]["step"] == steps[1]
    _, again = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg, tmp_path, progress=False,
                     score=score, selections=8, patience=2)
    assert len(seen) == 4 and again["steps"] == stats["steps"] and again["selection"]["step"] == steps[1]


def test_ema_half_life_is_a_share_of_the_run():
    """A weight that jumps from 0 to 1 is half-way there in the average after half_life × total steps."""
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = loop._ema(lin, 0.1, total=200)  # half-life 20 steps
    ema.update_parameters(lin)  # the first update copies
    with torch.no_grad():
        lin.weight.fill_(1.0)
    for _ in range(20):
        ema.update_parameters(lin)
    assert ema.module.weight.item() == pytest.approx(0.5, abs=1e-6)
    assert loop._ema(lin, 0.0, total=200) is None


def test_ema_is_scored_returned_and_resumed(tmp_path, monkeypatch):
    """The average, not the raw weights, is what is scored and what comes back, and a run killed mid-way
    resumes with the average it had."""
    cfg = LoopConfig(epochs=3, lr=1e-2, batch_tokens=128, checkpoint_every=4, log_every=100, ema_half_life=0.2)
    raw, _ = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg.model_copy(update={"ema_half_life": 0.0}),
                   tmp_path / "raw", progress=False)
    seen: list[dict] = []

    def score(model):
        seen.append(_params(model))
        return float(len(seen))  # the last scoring is the best

    avg, stats = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg, tmp_path / "a", progress=False,
                       score=score, selections=2)
    got, plain = _params(avg), _params(raw)
    assert all(torch.equal(got[k], seen[-1][k]) for k in got)
    assert not all(torch.allclose(got[k], plain[k]) for k in got)  # the average is not the last weights

    _killed_at_step_11(monkeypatch, build_model("tiny", 48, seed=0), _samples(), cfg, tmp_path / "b")
    resumed, _ = train(build_model("tiny", 48, seed=1), _samples(), PAD, cfg, tmp_path / "b", progress=False)
    again = _params(resumed)
    assert all(torch.allclose(got[k], again[k], atol=1e-5) for k in got)
