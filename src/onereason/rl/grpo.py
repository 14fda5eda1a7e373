"""GRPO adapted to recommendation (`onereason rl grpo`).

Per step: draw prompts (training cuts with their next window), roll out G traces × M candidates
each (`rollout.two_stage`), score each trace's candidate list with the set-wise reward, turn
rewards into advantages, and take the clipped policy-gradient step (`trainer.policy_loss`):

- reasoning tokens: A_g = R_g − mean_G R over the G traces of a prompt (divided by std_G R with
  `scale_by_std`, as the original GRPO does: that turns a group whose traces differ only in the
  small diversity term into full ±1 advantages, so it is off by default, as in Dr. GRPO);
- item tokens: a_gm = h_gm − mean h over the prompt's G·M candidates, h = per-item hit
  (`item_advantage: false` gives them A_g instead);
- with `set_to_items` item tokens also get A_g, so coverage and diversity reach the items; a prompt with
  one trajectory (non-thinking: the beam is deterministic) then takes A = R − mean R over the step's
  single-trajectory prompts, so the set-wise reward is not lost in non-thinking mode;
- weight w = `nonhit_weight` on every token of a trajectory whose list has no hit, else 1.
Prompts with an empty ground truth, traces with no candidates and NaN rewards are skipped and
counted. Written to runs/<name>/<out>/: model/, train_log.jsonl, rewards.png, summary.json.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from tqdm.auto import tqdm

from onereason import rundir
from onereason.corpus.user_layer import HistoryText
from onereason.data.schema import item_prices
from onereason.itemic.sid import SidCodec, load_sid_tokens
from onereason.reasoning.interests import Interests
from onereason.reasoning.traces import split_trace
from onereason.rl.prompts import PromptPool, RlPrompt
from onereason.rl.reward import RewardConfig, finite, item_hits, set_reward
from onereason.rl.rollout import HFBackend, RolloutConfig, Trajectory, rollout_modes, rollout_step
from onereason.rl.trainer import PolicyConfig, PolicyTrainer
from onereason.rundir import write_text
from onereason.train.loop import plot_log, save_model


class GrpoConfig(RolloutConfig):
    init: str = Field(str(rundir.SFT_MODEL), description="starting checkpoint, relative to the run directory")
    out: str = Field(str(rundir.RL), description="output folder, relative to the run directory")
    domains: list[str] | None = Field(None, description="train on prompts of these domains only (an expert)")
    steps: int = Field(60, ge=1)
    prompts_per_step: int = Field(16, ge=1)
    item_advantage: bool = Field(True, description="item tokens learn from the per-item hit signal")
    set_to_items: bool = Field(False, description="item tokens also learn from the list's set-wise advantage; "
                               "single-trajectory (non-thinking) prompts are baselined by the step's mean")
    scale_by_std: bool = Field(False, description="divide advantages by the group's std (original GRPO)")
    nonhit_weight: float = Field(0.5, ge=0, le=1, description="1.0 switches the down-weighting off")
    policy: PolicyConfig = PolicyConfig()


def group_advantages(values: np.ndarray, groups: np.ndarray, scale_by_std: bool = True) -> np.ndarray:
    """v − group mean (divided by the group std if asked); 0 in a group whose values are all equal."""
    out = np.zeros(len(values))
    for g in np.unique(groups):
        m = groups == g
        std = values[m].std()
        if std > 1e-8:
            out[m] = (values[m] - values[m].mean()) / (std if scale_by_std else 1.0)
    return out


def score(trajs: list[Trajectory], prompts: list[RlPrompt], interests: Interests, codec: SidCodec, cfg: RewardConfig,
          value: dict[str, float] | None = None) -> list[Trajectory]:
    """Set-wise reward and per-item hits on every trajectory; those without items or with a
    non-finite reward are dropped (the caller counts them). `value`: item → price / bid, scaled to ≤ 1."""
    codes = (lambda item: codec.codes[codec.index[item]]) if cfg.prefix else None
    kept = []
    for t in trajs:
        domain = prompts[t.prompt].domain
        listed = {interests.index[n, domain] for n in split_trace(t.trace)[1] if (n, domain) in interests.index}
        r = set_reward(t.items, prompts[t.prompt].window, interests.of, cfg, t.format_ok, listed, codes, value)
        t.reward = r.total
        t.components = {"hit": r.hit, "coverage": r.coverage, "diversity": r.diversity, "format_ok": float(r.format_ok),
                        "interest": r.interest, "prefix": r.prefix, "revenue": r.revenue}
        t.item_rewards = item_hits(t.items, prompts[t.prompt].window)
        if t.items and finite(t.reward):
            kept.append(t)
    return kept


def item_values(run_dir: Path) -> dict[str, float]:
    """Each priced item's price or bid over the catalog's largest (the revenue term's scale)."""
    prices = item_prices(pd.read_parquet(run_dir / rundir.ITEMS))
    if not prices:
        raise ValueError(f"rl.reward.revenue: {run_dir / rundir.ITEMS} has no price (an optional item column)")
    top = max(prices.values())
    return {item: p / top for item, p in prices.items()}


def grpo_targets(trajs: list[Trajectory], item_advantage: bool, nonhit_weight: float, scale_by_std: bool = False,
                 set_to_items: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-token advantages and weights, in `token_logprobs` order (trace tokens, then items)."""
    prompt = np.array([t.prompt for t in trajs])
    rewards = np.array([t.reward for t in trajs])
    trace_adv = group_advantages(rewards, prompt, scale_by_std)
    if set_to_items:
        _, index, sizes = np.unique(prompt, return_inverse=True, return_counts=True)
        solo = sizes[index] == 1
        trace_adv[solo] = group_advantages(rewards[solo], np.zeros(solo.sum()), scale_by_std)
    hits = np.concatenate([t.item_rewards for t in trajs])
    item_adv = group_advantages(hits, np.repeat(prompt, [len(t.items) for t in trajs]), scale_by_std)
    adv, weight, at = [], [], 0
    for t, a in zip(trajs, trace_adv):
        n_item_tokens = sum(map(len, t.item_tokens))
        if item_advantage:
            per_item = item_adv[at:at + len(t.items)] + (a if set_to_items else 0.0)
        else:
            per_item = np.full(len(t.items), a)
        at += len(t.items)
        adv.append(np.concatenate([np.full(t.trace_len, a), np.repeat(per_item, [len(x) for x in t.item_tokens])]))
        w = 1.0 if t.components["hit"] > 0 else nonhit_weight
        weight.append(np.full(t.trace_len + n_item_tokens, w))
    return (torch.tensor(np.concatenate(adv), dtype=torch.float32),
            torch.tensor(np.concatenate(weight), dtype=torch.float32))


def run(cfg: GrpoConfig, run_dir: Path, progress: bool = True, reward_hook=None) -> dict:
    """Train; `reward_hook(trajs)` may rewrite rewards after scoring (tests use it for bad rewards)."""
    out = run_dir / cfg.out
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", cfg.model_dump_json(indent=2))
    tok, sid = load_sid_tokens(run_dir)
    text = HistoryText(sid, tok)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    unknown = sorted(set(cfg.domains or []) - set(sid.codec.domains))
    if unknown:
        raise ValueError(f"rl.domains: unknown domain(s) {unknown}; the run has {sorted(sid.codec.domains)}")
    pool = PromptPool(inter, sid.codec.item_domain, rundir.prompt_items(run_dir), cfg.window, cfg.domains)
    interests = Interests.load(run_dir / rundir.INTERESTS)
    value = item_values(run_dir) if cfg.reward.revenue else None
    trainer = PolicyTrainer(run_dir / cfg.init, out, cfg.policy, cfg.steps, cfg.seed)
    backend = HFBackend(trainer.policy, sid, tok, cfg.decoding)
    bar = tqdm(total=cfg.steps, initial=trainer.start, desc=f"grpo {cfg.mode}", disable=not progress)
    for step in range(trainer.start, cfg.steps):
        t0 = time.perf_counter()
        prompts = pool.sample(cfg.prompts_per_step, cfg.seed, step)
        empty = [p for p in prompts if not p.window]
        if empty:
            trainer.skipped["empty_ground_truth"] += len(empty)
            warnings.warn(f"rl step {step}: {len(empty)} prompt(s) with an empty ground truth skipped, "
                          f"e.g. {empty[0].prompt_id}")
            prompts = [p for p in prompts if p.window]
        thinking = rollout_modes(cfg, len(prompts), step)
        trajs = rollout_step(backend, prompts, thinking, text, tok, cfg, cfg.seed * 100_003 + step, step) if prompts else []
        n_all = len(trajs)
        no_items = sum(not t.items for t in trajs)
        kept = score(trajs, prompts, interests, sid.codec, cfg.reward, value)
        if reward_hook is not None:
            reward_hook(kept)
            kept = [t for t in kept if finite(t.reward)]
        bad = n_all - no_items - len(kept)
        if no_items or bad:
            trainer.skipped["no_items"] += no_items
            trainer.skipped["nan_reward"] += bad
            warnings.warn(f"rl step {step}: skipped {no_items} trajectory(ies) without items and {bad} with a "
                          f"non-finite reward")
        t1 = time.perf_counter()
        row = {"trajectories": len(kept)}
        if kept:
            adv, weight = grpo_targets(kept, cfg.item_advantage, cfg.nonhit_weight, cfg.scale_by_std, cfg.set_to_items)
            row.update(trainer.update(kept, adv, weight, tok.pad_token_id))
            comp = pd.DataFrame([t.components for t in kept])
            row.update({"reward": float(np.mean([t.reward for t in kept])), **comp.mean().to_dict(),
                        "item_hit_rate": float(np.mean(np.concatenate([t.item_rewards for t in kept]))),
                        "trace_tokens": float(np.mean([t.trace_len for t in kept]))})
            think = [t for t in kept if t.thinking]
            if think and cfg.mode == "both":
                row["hit_thinking"] = float(np.mean([t.components["hit"] for t in think]))
        row.update({"generation_s": t1 - t0, "optimization_s": time.perf_counter() - t1})
        trainer.end_step(step, row)
        bar.update(1)
        bar.set_postfix(reward=f"{row.get('reward', float('nan')):.3f}", hit=f"{row.get('hit', float('nan')):.2f}")
    bar.close()
    save_model(trainer.policy, tok, out / "model")
    plot_log(out / "train_log.jsonl", out / "rewards.png",
             ["reward", "hit", "coverage", "diversity", "format_ok", "clip_frac_item", "trace_tokens"], f"GRPO {cfg.mode}")
    rows = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    summary = summarize(rows, dict(trainer.skipped))
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def summarize(rows: list[dict], skipped: dict) -> dict:
    """First and last fifth of the run side by side, and time shares."""
    def mean(part: list[dict], k: str) -> float | None:
        v = [r[k] for r in part if k in r]
        return float(np.mean(v)) if v else None

    n = max(1, len(rows) // 5)
    keys = ["reward", "hit", "coverage", "diversity", "format_ok", "item_hit_rate", "trace_tokens",
            "clip_frac_reasoning", "clip_frac_item", "kl"]
    gen, opt = sum(r["generation_s"] for r in rows), sum(r["optimization_s"] for r in rows)
    return {"steps": len(rows), "first": {k: mean(rows[:n], k) for k in keys}, "last": {k: mean(rows[-n:], k) for k in keys},
            "generation_share": gen / max(1e-9, gen + opt), "seconds": gen + opt,
            "trajectories_per_s": sum(r["trajectories"] for r in rows) / max(1e-9, gen), "skipped": skipped}
