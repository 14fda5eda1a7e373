"""RL runs on the tiny run: the cached log-probs equal a plain forward, a GRPO update moves toward
positive advantages, bad input is skipped and counted, a thinking run resumes, RFT and MOPD unify,
the eval reports every mode."""

import json
import math
import re
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from onereason.bench import rl_eval
from onereason.bench.lists import merge_race
from onereason.corpus.user_layer import HistoryText
from onereason.itemic.sid import load_sid_tokens
from onereason.protocol import Decoding
from onereason.reasoning.sft_data import r3_prompts
from onereason.rl import grpo
from onereason.rl.grpo import GrpoConfig
from onereason.rl.prompts import PromptPool
from onereason.rl.rollout import HFBackend, draw_hypotheses, two_stage
from onereason.rl.trainer import PolicyConfig, PolicyTrainer, token_logprobs
from onereason.rl.unify import MopdConfig, RftConfig, run_mopd, run_rft


def _tiny(**kw) -> GrpoConfig:
    base = {"steps": 2, "prompts_per_step": 4, "group": 2, "decoding": {"beams": 4, "trace_tokens": 48, "temperature": 1.0},
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
    trajs = two_stage(HFBackend(model, sid, tok, Decoding(trace_tokens=32, temperature=1.0, top_p=1.0)), prompts, HistoryText(sid, tok), tok, True, 1, 3)
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


def test_a_grpo_update_raises_the_advantage_weighted_logprob(tiny_run, tmp_path):
    """The loss's sign, as arithmetic rather than a tiny model's learning curve: one small optimizer step
    on the GRPO loss raises Σ w·A·log π over the batch's own tokens (to first order Adam steps along the
    gradient's sign, so this holds on any machine). Rewards are set by hand so every group has a spread."""
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    trainer = PolicyTrainer(run_dir / "sft" / "model", tmp_path / "rl",
                            PolicyConfig(lr=1e-5, warmup_steps=0, inner_epochs=1, kl_beta=0.0, micro_batch=8), 1)
    trajs = two_stage(HFBackend(trainer.policy, sid, tok, Decoding(trace_tokens=32, temperature=1.0, top_p=1.0)), _pool(run_dir).sample(4, 0, 0),
                      HistoryText(sid, tok), tok, True, 2, 4)
    for i, t in enumerate(trajs):
        t.reward, t.components = float(i % 2), {"hit": float(i % 2)}
        t.item_rewards = np.array([float((i + j) % 2) for j in range(len(t.items))])
    adv, weight = grpo.grpo_targets(trajs, item_advantage=True, nonhit_weight=0.5)
    assert adv.abs().sum() > 0 and set(weight.tolist()) == {0.5, 1.0}

    def objective() -> float:
        return float((trainer.logprobs(trainer.policy, trajs, tok.pad_token_id) * adv * weight).sum())

    before = objective()
    trainer.update(trajs, adv, weight, tok.pad_token_id)
    assert objective() > before


def test_two_inner_epochs_clip_against_pi_old_and_warm_up_per_rl_step(tiny_run, tmp_path):
    """With 2 inner epochs the second step's ratios are against π_old (the policy before the step), so a large
    lr clips some of them; the warm-up advances once per RL step, not once per inner epoch."""
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    cfg = PolicyConfig(lr=3e-2, warmup_steps=4, inner_epochs=2, kl_beta=0.0, micro_batch=8)
    trainer = PolicyTrainer(run_dir / "sft" / "model", tmp_path / "rl", cfg, 3)
    trajs = two_stage(HFBackend(trainer.policy, sid, tok, Decoding(trace_tokens=32, temperature=1.0, top_p=1.0)),
                      _pool(run_dir).sample(4, 0, 0), HistoryText(sid, tok), tok, True, 2, 4)
    for i, t in enumerate(trajs):
        t.reward, t.components = float(i % 2), {"hit": float(i % 2)}
        t.item_rewards = np.array([float((i + j) % 2) for j in range(len(t.items))])
    adv, weight = grpo.grpo_targets(trajs, item_advantage=True, nonhit_weight=0.5)
    lrs = []
    for _ in range(2):
        row = trainer.update(trajs, adv, weight, tok.pad_token_id)
        lrs.append(trainer.optim.param_groups[0]["lr"])
    assert lrs == pytest.approx([cfg.lr * 1 / 4, cfg.lr * 2 / 4])
    assert row["clip_frac_reasoning"] + row["clip_frac_item"] > 0


def test_hypotheses_are_drawn_per_prompt_and_an_old_single_n_still_loads():
    cfg = GrpoConfig.model_validate({"hypotheses": 3})
    assert cfg.hypotheses == [3] and GrpoConfig().hypotheses == [1, 2, 3, 4, 5]
    with pytest.raises(ValidationError, match="1..5"):
        GrpoConfig.model_validate({"hypotheses": [0, 6]})
    ns = draw_hypotheses([1, 2, 3, 4, 5], 200, seed=0, step=0)
    assert set(ns) == {1, 2, 3, 4, 5} and ns == draw_hypotheses([1, 2, 3, 4, 5], 200, seed=0, step=0)
    assert ns != draw_hypotheses([1, 2, 3, 4, 5], 200, seed=0, step=1)


def test_thinking_prompts_ask_for_their_own_n(tiny_run):
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)

    class Recorder(HFBackend):
        def traces(self, prompts, histories, seed, hypotheses):
            self.prompts = prompts
            return [tok.encode("\n", add_special_tokens=False) + [tok.convert_tokens_to_ids("</think>")]
                    for _ in prompts]

    backend = Recorder(None, sid, tok, Decoding(temperature=1.0))
    backend.items = lambda prefixes, domains, m: [[] for _ in prefixes]
    prompts = _pool(run_dir).sample(3, 0, 0)
    two_stage(backend, prompts, HistoryText(sid, tok), tok, True, 1, 2, [1, 4, 2])
    assert [re.findall(r"Expand (\d) interests", tok.decode(p)) for p in backend.prompts] == [["1"], ["4"], ["2"]]
    alone = [r3_prompts([p.history], [p.domain], n, HistoryText(sid, tok), tok)[0] for p, n in zip(prompts, [1, 4, 2])]
    assert backend.prompts == alone  # tokenized in one batch, the same ids as one at a time


def test_bad_input_is_skipped_and_counted(tiny_run, monkeypatch):
    run_dir, _ = tiny_run

    class EmptyTruth(PromptPool):
        def prompt(self, u, t):
            p = super().prompt(u, t)
            if zlib.crc32(p.prompt_id.encode()) % 3 == 0:  # not hash(): salted per process
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
    # every item is a candidate, so every trajectory hits whatever the model learned; the tiny model rarely
    # writes a well-formed trace, so the format filter is off here
    n_items = len(load_sid_tokens(run_dir)[1].codec.item_ids)
    rft = run_rft(RftConfig(experts=experts, prompts_per_domain=16, group=2,
                            decoding={"beams": n_items, "trace_tokens": 48, "temperature": 1.0, "top_p": 1.0},
                            require_format=False,
                            loop={"epochs": 1, "batch_tokens": 4096, "lr": 1e-4}), run_dir, progress=False)
    movies = rft["domains"]["movies"]
    assert movies["kept"] == movies["hits"] == movies["trajectories"] == rft["samples"] > 0
    mopd = run_mopd(MopdConfig(experts=experts, steps=2, prompts_per_step=4,
                               decoding={"beams": 4, "trace_tokens": 48, "temperature": 1.0, "top_p": 1.0},
                               policy={"micro_batch": 4}), run_dir, progress=False)
    assert mopd["steps"] == 2 and math.isfinite(mopd["reverse_kl_last"])
    with pytest.raises(ValueError, match="unknown domain"):
        run_mopd(MopdConfig(experts={"books": "rl/think/model"}), run_dir, progress=False)

    report = rl_eval.run(rl_eval.RlEvalConfig(sample={"max_users": 12}, decoding={"beams": 8, "ks": [4, 8], "trace_tokens": 48}, methods=[
        rl_eval.parse_method("SFT=sft/model:non-thinking"), rl_eval.parse_method("RL=rl/think/model:thinking"),
        rl_eval.parse_method("race=rl/think/model:race"), rl_eval.parse_method("experts=movies@rl/rft/model:thinking"),
        rl_eval.parse_method("split=rl/think/model:hypotheses"), rl_eval.parse_method("plain=rl/think/model:non-thinking")]),
        run_dir, progress=False)
    assert set(report["methods"]) == {"SFT", "RL", "race", "experts", "split", "plain"}
    assert all(r["metrics"]["all"]["sid_validity@8"] == 1.0 for r in report["methods"].values())
    assert (run_dir / "rl/eval.md").exists() and (run_dir / "rl/eval.png").exists()
    rows = [json.loads(x) for x in (run_dir / "rl/eval_recommendations.jsonl").read_text().splitlines()]
    assert len(rows) == report["users"]
    for r in rows:  # race fuses the same model's two modes, the lists its own methods decoded
        assert r["items"]["race"] == merge_race(r["items"]["plain"], r["items"]["RL"], 8)
    diffs = rl_eval.compare(run_dir / "rl/eval_recommendations.jsonl", "SFT", columns=("recall@4", "pass@8"))
    assert set(diffs) == {"RL", "race", "experts", "split", "plain"}
    for m, d in diffs.items():  # the paired mean difference is the difference of the report's means
        mean, lo, hi = d["recall@4"]
        got = report["methods"][m]["metrics"]["all"]["recall@4"] - report["methods"]["SFT"]["metrics"]["all"]["recall@4"]
        assert mean == pytest.approx(got) and lo <= mean + 1e-12 and mean <= hi + 1e-12
    with pytest.raises(ValueError, match="no method 'RL grpo'"):
        rl_eval.compare(run_dir / "rl/eval_recommendations.jsonl", "RL grpo")


def test_a_method_spec_without_a_mode_is_refused():
    with pytest.raises(ValueError, match="NAME=MODEL_DIR:MODE"):
        rl_eval.parse_method("no mode here")


def test_mopd_skips_a_step_with_nothing_to_train_and_has_no_pull_to_the_initial_model(tiny_run, monkeypatch):
    from onereason.rl import unify

    run_dir, _ = tiny_run

    class NoItems(HFBackend):
        def items(self, prefixes, domains, m):
            return [[] for _ in prefixes]

    monkeypatch.setattr(unify, "HFBackend", NoItems)
    cfg = MopdConfig(experts={"movies": "sft/model"}, out="rl/mopd_empty", steps=2, prompts_per_step=4,
                     decoding={"beams": 4, "trace_tokens": 16}, policy={"micro_batch": 4})
    assert cfg.policy.kl_beta == 0
    with pytest.warns(UserWarning, match="no trajectory"):
        s = run_mopd(cfg, run_dir, progress=False)
    assert s["steps"] == s["skipped_steps"] == 2 and s["reverse_kl_last"] is None
