"""Unify per-domain experts into one model (`onereason rl rft`, `onereason rl mopd`).

- RFT (rejection-sampling fine-tuning): each expert samples two-stage trajectories on prompts of its
  own domain; a trajectory is kept when its trace is well-formed and its candidate list hits the
  user's next window, and becomes an SFT sample (prompt → trace → the first hit item). One model
  is fine-tuned on the union, from the SFT checkpoint, with the SFT loop.
- MOPD (multi-teacher on-policy distillation): the student samples on a mixed-domain prompt set;
  the expert of each prompt's domain scores the student's own tokens; the per-token advantage is
  the negative reverse KL, A_t = −clip(log π_student(t) − log π_teacher(t), −c, c), trained with the
  same clipped policy loss as GRPO.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from onereason import rundir
from onereason.chat import IM_END
from onereason.corpus.user_layer import HistoryText
from onereason.itemic.sid import load_sid_tokens
from onereason.model.backbone import load_model
from onereason.protocol import Decoding
from onereason.reasoning.interests import Interests
from onereason.rl.grpo import item_values, score
from onereason.rl.prompts import PromptPool, RlPrompt
from onereason.rl.rollout import HFBackend, RolloutConfig, Trajectory, rollout_modes, rollout_step
from onereason.rl.trainer import PolicyConfig, PolicyTrainer, token_bounds
from onereason.rundir import write_text
from onereason.train.loop import LoopConfig, Sample, plot_log, save_model, train


class UnifyConfig(RolloutConfig):
    experts: dict[str, str] = Field(description="domain → expert model directory, relative to the run directory")
    init: str = Field(str(rundir.SFT_MODEL), description="the model that becomes the unified one")
    out: str = "rl/unified"
    mode: str = Field("both", pattern="^(thinking|non-thinking|both)$",
                      description="rollouts: both (each prompt thinking or not with probability 1/2) trains the "
                      "unified model's two modes; thinking alone leaves its non-thinking mode untrained")

    @field_validator("experts")
    @classmethod
    def _experts(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("experts: name at least one domain → model directory")
        return v


class RftConfig(UnifyConfig):
    out: str = "rl/rft"
    prompts_per_domain: int = Field(400, ge=1)
    require_format: bool = Field(True, description="keep only hits whose trace is well-formed")
    loop: LoopConfig = LoopConfig(epochs=1, lr=1e-4, warmup_ratio=0.05, checkpoint_every=100)


class MopdConfig(UnifyConfig):
    out: str = "rl/mopd"
    steps: int = Field(60, ge=1)
    prompts_per_step: int = Field(16, ge=1)
    group: int = Field(2, ge=1)
    decoding: Decoding = Decoding(beams=4, temperature=1.0, top_p=1.0)
    adv_clip: float = Field(5.0, gt=0, description="c in A_t = −clip(log π_s − log π_t, −c, c)")
    # no KL to the initial model: the experts are the target, a pull back toward the SFT model works against them
    policy: PolicyConfig = PolicyConfig(kl_beta=0.0)


def _prepare(cfg: UnifyConfig, run_dir: Path):
    """Check the experts, load what both methods need, and open the output folder with the config in it."""
    tok, sid = load_sid_tokens(run_dir)
    _check(cfg, run_dir, sid.codec.domains)
    out = run_dir / cfg.out
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", cfg.model_dump_json(indent=2))
    return (tok, sid, HistoryText(sid, tok), pd.read_parquet(run_dir / rundir.INTERACTIONS),
            Interests.load(run_dir / rundir.INTERESTS), item_values(run_dir) if cfg.reward.revenue else None, out)


def _check(cfg: UnifyConfig, run_dir: Path, domains: list[str]) -> None:
    unknown = sorted(set(cfg.experts) - set(domains))
    if unknown:
        raise ValueError(f"experts: unknown domain(s) {unknown}; the run has {sorted(domains)}")
    missing = [str(run_dir / m) for m in cfg.experts.values() if not (run_dir / m / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"experts: no model at {', '.join(missing)} (run `onereason rl grpo --domain D` first)")


def rft_samples(trajs: list[Trajectory], prompts: list[RlPrompt], sid, end_turn: int,
                require_format: bool = True) -> list[Sample]:
    """Kept trajectories as SFT samples: prompt (mask 0), then the think block as rolled out (the trace, or
    an empty block without thinking) + "\\n\\n" + first hit item + `<|im_end|>` (mask 1). Kept = a hit in
    the candidate list and (by default) a well-formed trace."""
    out = []
    for t in trajs:
        hit = next((x for x in t.items if x in set(prompts[t.prompt].window)), None)
        if hit is None or (require_format and not t.format_ok):
            continue
        prompt = t.prefix[:t.n_prompt]
        answer = t.prefix[t.n_prompt:-1] + sid.ids(hit) + [end_turn]  # prefix = prompt, block, "\n\n", begin
        out.append(Sample(prompt + answer, [0] * len(prompt) + [1] * len(answer)))
    return out


def run_rft(cfg: RftConfig, run_dir: Path, progress: bool = True) -> dict:
    tok, sid, text, inter, interests, value, out = _prepare(cfg, run_dir)
    end_turn = tok.convert_tokens_to_ids(IM_END)
    samples, per_domain = [], {}
    t0 = time.perf_counter()
    for d, expert_dir in cfg.experts.items():
        expert = load_model(run_dir / expert_dir)
        pool = PromptPool(inter, sid.codec.item_domain, rundir.prompt_items(run_dir), cfg.window, [d])
        prompts = [p for p in pool.sample(cfg.prompts_per_domain, cfg.seed, 0) if p.window]
        backend = HFBackend(expert, sid, tok, cfg.decoding)
        trajs = []
        for s in tqdm(range(0, len(prompts), 16), desc=f"rft sample {d}", disable=not progress):
            chunk = prompts[s:s + 16]
            part = rollout_step(backend, chunk, rollout_modes(cfg, len(chunk), s), text, tok, cfg, cfg.seed + s, s)
            for t in part:
                t.prompt += s
            trajs += part
        trajs = score(trajs, prompts, interests, sid.codec, cfg.reward, value)
        kept = rft_samples(trajs, prompts, sid, end_turn, cfg.require_format)
        hits = sum(t.components["hit"] > 0 for t in trajs)
        per_domain[d] = {"prompts": len(prompts), "trajectories": len(trajs), "hits": hits, "kept": len(kept),
                         "hit_rate": hits / len(trajs) if trajs else None}
        samples += kept
    if not samples:
        n_hits = sum(v["hits"] for v in per_domain.values())
        raise ValueError(f"rft: no trajectory kept ({n_hits} hits, all with malformed traces); sample more "
                         "prompts, a larger candidate list, or set require_format=false" if n_hits else
                         "rft: no trajectory hit; sample more prompts or a larger candidate list")
    sample_s = time.perf_counter() - t0
    model = load_model(run_dir / cfg.init)
    model, stats = train(model, samples, tok.pad_token_id, cfg.loop, out, progress=progress)
    save_model(model, tok, out / "model")
    plot_log(out / "train_log.jsonl", out / "loss.png", ["loss", "lr"], "RFT")
    summary = {"domains": per_domain, "samples": len(samples), "sampling_seconds": sample_s, **stats}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def mopd_advantages(student: torch.Tensor, teacher: torch.Tensor, clip: float) -> torch.Tensor:
    """Negative per-token reverse KL: positive where the teacher likes the student's token more than
    the student does."""
    return -(student - teacher).clamp(-clip, clip)


def run_mopd(cfg: MopdConfig, run_dir: Path, progress: bool = True) -> dict:
    tok, sid, text, inter, interests, value, out = _prepare(cfg, run_dir)
    pool = PromptPool(inter, sid.codec.item_domain, rundir.prompt_items(run_dir), cfg.window, list(cfg.experts))
    trainer = PolicyTrainer(run_dir / cfg.init, out, cfg.policy, cfg.steps, cfg.seed)
    teachers = {d: load_model(run_dir / m).to(trainer.acc.device).eval()
                for d, m in cfg.experts.items()}
    backend = HFBackend(trainer.policy, sid, tok, cfg.decoding)
    pad = tok.pad_token_id
    bar = tqdm(total=cfg.steps, initial=trainer.start, desc="mopd", disable=not progress)
    for step in range(trainer.start, cfg.steps):
        t0 = time.perf_counter()
        prompts = [p for p in pool.sample(cfg.prompts_per_step, cfg.seed, step) if p.window]
        trajs = rollout_step(backend, prompts, rollout_modes(cfg, len(prompts), step), text, tok, cfg,
                             cfg.seed * 100_003 + step, step) if prompts else []
        trajs = score(trajs, prompts, interests, sid.codec, cfg.reward, value)
        t1 = time.perf_counter()
        if not trajs:  # every prompt without ground truth, or every trajectory without items: nothing to learn
            trainer.skipped["empty_batch"] += 1
            warnings.warn(f"mopd step {step}: no trajectory to train on, step skipped")
            trainer.end_step(step, {"trajectories": 0, "generation_s": t1 - t0, "optimization_s": 0.0})
            bar.update(1)
            continue
        student = trainer.logprobs(trainer.policy, trajs, pad)
        teacher = torch.zeros_like(student)
        bounds = token_bounds(trajs)
        for d, model in teachers.items():  # each prompt's tokens scored by its domain's expert
            idx = [j for j, t in enumerate(trajs) if prompts[t.prompt].domain == d]
            if idx:
                scored = trainer.logprobs(model, [trajs[j] for j in idx], pad)
                at = 0
                for j in idx:
                    n = bounds[j + 1] - bounds[j]
                    teacher[bounds[j]:bounds[j + 1]] = scored[at:at + n]
                    at += n
        adv = mopd_advantages(student, teacher, cfg.adv_clip)
        row = trainer.update(trajs, adv, torch.ones_like(adv), pad, old=student)
        row.update({"reverse_kl": float((student - teacher).mean()), "trajectories": len(trajs),
                    "hit": float(np.mean([t.components["hit"] for t in trajs])),
                    "reward": float(np.mean([t.reward for t in trajs])),
                    "trace_tokens": float(np.mean([t.trace_len for t in trajs])),
                    "generation_s": t1 - t0, "optimization_s": time.perf_counter() - t1})
        trainer.end_step(step, row)
        bar.update(1)
        bar.set_postfix(rkl=f"{row['reverse_kl']:.3f}", hit=f"{row['hit']:.2f}")
    bar.close()
    save_model(trainer.policy, tok, out / "model")
    plot_log(out / "train_log.jsonl", out / "mopd.png", ["reverse_kl", "hit", "reward", "trace_tokens"], "MOPD")
    rows = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    seconds = float(sum(r["generation_s"] + r["optimization_s"] for r in rows))
    trained = [r for r in rows if r["trajectories"]]
    n = max(1, len(trained) // 5)
    summary = {"steps": len(rows), "skipped_steps": len(rows) - len(trained), "seconds": seconds,
               **{f"{k}_{w}": float(np.mean([r[k] for r in part])) if part else None
                  for k in ("reverse_kl", "hit") for w, part in (("first", trained[:n]), ("last", trained[-n:]))}}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
