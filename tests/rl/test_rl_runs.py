"""RL runs on the tiny run: the cached log-probs equal a plain forward, GRPO learns a toy task,
bad input is skipped and counted, a thinking run resumes, RFT and MOPD unify, the eval reports
every mode."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from onereason.bench import rl_eval
from onereason.corpus.user_layer import HistoryText
from onereason.itemic.sid import load_sid_tokens
from onereason.rl import grpo
from onereason.rl.grpo import GrpoConfig
from onereason.rl.prompts import PromptPool
from onereason.rl.rollout import HFBackend, two_stage
from onereason.rl.trainer import token_logprobs
from onereason.rl.unify import MopdConfig, RftConfig, run_mopd, run_rft


def _tiny(**kw) -> GrpoConfig:
    base = {"steps": 2, "prompts_per_step": 4, "group": 2, "candidates": 4, "trace_tokens": 48, "max_items": 20,
            "policy": {"micro_batch": 4, "lr": 1e-3, "checkpoint_every": 1}}
    return GrpoConfig.model_validate({**base, **kw})


def _pool(run_dir):
    _, sid = load_sid_tokens(run_dir)
    return PromptPool(pd.read_parquet(run_dir / "data" / "interactions.parquet"), sid.codec.item_domain, 20)


def test_token_logprobs_equal_a_plain_forward(tiny_run):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "sft" / "model")).eval()
    prompts = _pool(run_dir).sample(3, seed=0, step=0)
    trajs = two_stage(HFBackend(model, sid, tok, trace_tokens=32), prompts, HistoryText(sid, tok), tok, True, 1, 3)
    with torch.no_grad():
        got = token_logprobs(model, trajs, tok.pad_token_id)
        want = []
        for t in trajs:  # each trace, then each item, teacher-forced in one unpadded sequence
            logp = torch.log_softmax(model(input_ids=torch.tensor([t.prefix])).logits[0].float(), -1)
            want += [logp[j - 1, t.prefix[j]] for j in range(t.n_prompt, t.n_prompt + t.trace_len)]
            for item in t.item_tokens:
                seq = t.prefix + item
                lp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
                want += [lp[len(t.prefix) + j - 1, item[j]] for j in range(len(item))]
    assert len(got) == len(want) and sum(t.trace_len for t in trajs) > 0
    assert torch.allclose(got, torch.stack(want), atol=1e-4)


class FixedTarget(PromptPool):
    """A toy task with a learnable answer: whatever the history, the next item is `target`."""

    target = ""

    def prompt(self, u, t):
        p = super().prompt(u, t)
        p.window = [self.target]
        return p


def test_grpo_learns_a_toy_task(tiny_run, monkeypatch):
    """The next item is always one fixed item, which the SFT model's lists contain only under some
    traces: the hit rate must climb."""
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "sft" / "model"))
    pool, text = _pool(run_dir), HistoryText(sid, tok)
    best = []  # (−share of lists holding the item, M, item) for items in at most 40% of the lists
    for m in range(2, 7):
        trajs = two_stage(HFBackend(model, sid, tok, trace_tokens=32), pool.sample(16, 0, 0), text, tok, True, 2, m)
        counts = pd.Series([x for t in trajs for x in t.items]).value_counts() / len(trajs)
        best += [(-share, m, item) for item, share in counts.items() if share <= 0.4]
    _, m, FixedTarget.target = min(best)
    monkeypatch.setattr(grpo, "PromptPool", FixedTarget)
    summary = grpo.run(_tiny(out="rl/toy", steps=8, prompts_per_step=8, candidates=m, trace_tokens=32,
                             reward={"coverage": 0.0, "diversity": 0.0, "format_gate": False},
                             policy={"lr": 2e-3, "checkpoint_every": 8}),
                       run_dir, progress=False)
    rows = [json.loads(l) for l in (run_dir / "rl/toy/train_log.jsonl").read_text().splitlines()]
    first, last = rows[0]["hit"], np.mean([r["hit"] for r in rows[-3:]])  # step 0 rolls out before any update
    assert last > first + 0.3, [r["hit"] for r in rows]
    assert summary["last"]["reward"] > summary["first"]["reward"]


def test_bad_input_is_skipped_and_counted(tiny_run, monkeypatch):
    run_dir, _ = tiny_run

    class EmptyTruth(PromptPool):
        def prompt(self, u, t):
            p = super().prompt(u, t)
            if hash(p.prompt_id) % 3 == 0:
                p.window = []
            return p

    class NoItems(HFBackend):
        def items(self, prefixes, domains, m):
            out = super().items(prefixes, domains, m)
            return [[]] + out[1:]  # the first trace of every call gets no candidates

    def nan_reward(trajs):
        trajs[0].reward = float("nan")

    monkeypatch.setattr(grpo, "PromptPool", EmptyTruth)
    monkeypatch.setattr(grpo, "HFBackend", NoItems)
    with pytest.warns(UserWarning, match="skipped"):
        summary = grpo.run(_tiny(out="rl/bad", prompts_per_step=8), run_dir, progress=False, reward_hook=nan_reward)
    sk = summary["skipped"]
    assert sk["empty_ground_truth"] > 0 and sk["no_items"] == 2 and sk["nan_reward"] == 2
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "rl/bad/model"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_thinking_run_logs_resumes_and_unifies(tiny_run):
    run_dir, _ = tiny_run
    cfg = _tiny(out="rl/think", mode="both", steps=3)
    grpo.run(cfg.model_copy(update={"steps": 2}), run_dir, progress=False)
    summary = grpo.run(cfg, run_dir, progress=False)  # resumes at step 2
    rows = [json.loads(l) for l in (run_dir / "rl/think/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and summary["steps"] == 3
    for key in ("reward", "hit", "coverage", "diversity", "format_ok", "clip_frac_reasoning", "clip_frac_item", "kl",
                "trace_tokens", "generation_s", "optimization_s"):
        assert key in rows[-1], key
    assert rows[-1]["reasoning_tokens"] > 0 and rows[-1]["item_tokens"] > 0
    assert (run_dir / "rl/think/rewards.png").exists()

    experts = {"movies": "rl/think/model"}
    # the tiny model rarely writes a well-formed trace: keep hits without the format filter here
    rft = run_rft(RftConfig(experts=experts, prompts_per_domain=16, group=2, candidates=16, trace_tokens=48,
                            require_format=False,
                            max_items=20, loop={"epochs": 1, "batch_tokens": 4096, "lr": 1e-4}), run_dir, progress=False)
    assert rft["domains"]["movies"]["kept"] == rft["samples"] > 0
    mopd = run_mopd(MopdConfig(experts=experts, steps=2, prompts_per_step=4, trace_tokens=48, max_items=20,
                               policy={"micro_batch": 4}), run_dir, progress=False)
    assert mopd["steps"] == 2 and math.isfinite(mopd["reverse_kl_last"])
    with pytest.raises(ValueError, match="unknown domain"):
        run_mopd(MopdConfig(experts={"books": "rl/think/model"}), run_dir, progress=False)

    report = rl_eval.run(rl_eval.RlEvalConfig(max_users=12, beams=8, ks=[4, 8], trace_tokens=48, methods=[
        rl_eval.parse_method("SFT=sft/model:non-thinking"), rl_eval.parse_method("RL=rl/think/model:thinking"),
        rl_eval.parse_method("race=rl/think/model:race"), rl_eval.parse_method("experts=movies@rl/rft/model:thinking")]),
        run_dir, progress=False)
    assert set(report["methods"]) == {"SFT", "RL", "race", "experts"}
    assert all(r["metrics"]["all"]["sid_validity@8"] == 1.0 for r in report["methods"].values())
    assert (run_dir / "rl/eval.md").exists() and (run_dir / "rl/eval.png").exists()
    assert len((run_dir / "rl/eval_recommendations.jsonl").read_text().splitlines()) == report["users"]
    diffs = rl_eval.compare(run_dir / "rl/eval_recommendations.jsonl", "SFT", columns=("recall@4", "pass@8"))
    assert set(diffs) == {"RL", "race", "experts"}
    for m, d in diffs.items():  # the paired mean difference is the difference of the report's means
        mean, lo, hi = d["recall@4"]
        got = report["methods"][m]["metrics"]["all"]["recall@4"] - report["methods"]["SFT"]["metrics"]["all"]["recall@4"]
        assert mean == pytest.approx(got) and lo <= mean + 1e-12 and mean <= hi + 1e-12
    with pytest.raises(ValueError, match="no method 'RL grpo'"):
        rl_eval.compare(run_dir / "rl/eval_recommendations.jsonl", "RL grpo")


def test_merge_race_alternates_and_dedups():
    assert rl_eval.merge_race(["a", "b", "c"], ["b", "d"], 4) == ["a", "b", "d", "c"]
    with pytest.raises(ValueError, match="NAME=MODEL_DIR:MODE"):
        rl_eval.parse_method("no mode here")
