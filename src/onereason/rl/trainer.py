"""What every RL algorithm here shares: the policy's log-probs of its own trajectories, the clipped
policy-gradient loss with split clip ranges, and one update over a rollout batch (micro-batches,
inner epochs, optional KL to a reference), under accelerate, with resumable checkpoints and a
jsonl log. GRPO (`grpo.py`) and MOPD (`unify.py`) differ only in where the advantages come from.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from pydantic import Field
from transformers import get_constant_schedule_with_warmup

from onereason.config import Config
from onereason.decoding.constrained import left_pad
from onereason.model.backbone import load_model
from onereason.rl.rollout import Trajectory
from onereason.rundir import write_text
from onereason.train.loop import latest_checkpoint, save_checkpoint


class PolicyConfig(Config):
    """The policy-gradient update; each modification is a switch for ablations."""

    clip_reasoning: float = Field(0.2, gt=0, description="clip range ε of reasoning-token ratios")
    clip_item: float = Field(0.1, gt=0, description="clip range ε of item-token ratios (split_clip)")
    split_clip: bool = Field(True, description="False: item tokens use clip_reasoning too")
    kl_beta: float = Field(0.05, ge=0, description="weight of the k3 KL to the reference (initial) model; 0: no "
                           "reference model (without it the traces of amazon-scientific lost their format)")
    inner_epochs: int = Field(2, ge=1, description="optimizer steps per rollout batch (the clip ranges act from the 2nd)")
    micro_batch: int = Field(8, ge=1, description="trajectories per forward pass")
    lr: float = Field(3e-4, gt=0, description="1e-3 broke the trace format within 20 steps on the default model")
    warmup_steps: int = Field(5, ge=0)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = Field(20, ge=1)
    keep_checkpoints: int = 2


def token_logprobs(model, trajs: list[Trajectory], pad_id: int) -> torch.Tensor:
    """log π(token) of every trajectory's own tokens, flat: per trajectory its trace tokens, then each
    candidate's codes + end token. One pass over the prefixes; the candidates continue from its
    cache (copied per candidate), so a trajectory's M items cost M·L tokens, not M prefixes."""
    ids, attn = left_pad([t.prefix for t in trajs], pad_id)
    device = next(model.parameters()).device
    ids, attn = ids.to(device), attn.to(device)
    width = ids.shape[1]
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    want_items = any(t.items for t in trajs)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=want_items)
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # [B, W, V]
    pieces: list[torch.Tensor] = []
    rows = [b for b, t in enumerate(trajs) for _ in t.items]
    if want_items:
        items = torch.tensor([x for t in trajs for x in t.item_tokens], device=device)  # [R, L]
        cache = out.cache
        cache.batch_select_indices(torch.tensor(rows, device=device))
        sel = torch.tensor(rows, device=device)
        cont = model(input_ids=items[:, :-1], attention_mask=torch.cat([attn[sel], torch.ones_like(items[:, :-1])], 1),
                     position_ids=pos[sel, -1:] + 1 + torch.arange(items.shape[1] - 1, device=device), cache=cache)
        # token 0 is predicted at the prefix's last position (the begin token), token l ≥ 1 by the continuation
        item_logits = torch.cat([out.logits[sel, -1:], cont.logits], 1).float()  # [R, L, V]
        item_logp = torch.log_softmax(item_logits, -1).gather(-1, items[..., None])[..., 0]  # [R, L]
    r = 0
    for b, t in enumerate(trajs):
        off = width - len(t.prefix)
        j = torch.arange(off + t.n_prompt, off + t.n_prompt + t.trace_len, device=device)
        pieces.append(logp[b, j - 1, ids[b, j]])
        pieces.append(item_logp[r:r + len(t.items)].reshape(-1) if t.items else logp.new_zeros(0))
        r += len(t.items)
    return torch.cat(pieces)


def token_kinds(trajs: list[Trajectory]) -> torch.Tensor:
    """True where the flat token is an item token, False for a reasoning token."""
    return torch.cat([torch.cat([torch.zeros(t.trace_len, dtype=torch.bool),
                                 torch.ones(sum(map(len, t.item_tokens)), dtype=torch.bool)]) for t in trajs])


def token_bounds(trajs: list[Trajectory]) -> np.ndarray:
    """Where each trajectory's tokens start and end in the flat `token_logprobs` order."""
    return np.cumsum([0] + [t.trace_len + sum(map(len, t.item_tokens)) for t in trajs])


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, is_item: torch.Tensor,
                weight: torch.Tensor, cfg: PolicyConfig, n_tokens: int, ref_logp: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate, per token, summed over tokens and divided by the rollout batch's token count:

        ratio = π(t) / π_old(t);   ε = ε_item for item tokens, ε_reasoning for reasoning tokens
        loss_t = −w · min(ratio · A, clip(ratio, 1 − ε, 1 + ε) · A)  [+ β · KL_k3(π ‖ π_ref)]
    """
    ratio = torch.exp(logp - old_logp)
    eps = torch.where(is_item, cfg.clip_item if cfg.split_clip else cfg.clip_reasoning, cfg.clip_reasoning)
    clipped = torch.minimum(torch.maximum(ratio, 1 - eps), 1 + eps)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # k3: unbiased, non-negative
        per_token = per_token + cfg.kl_beta * kl
    loss = (per_token * weight).sum() / n_tokens
    out_of_range = (ratio - clipped).abs() > 0
    stats = {"clipped_reasoning": int((out_of_range & ~is_item).sum()), "clipped_item": int((out_of_range & is_item).sum()),
             "kl_sum": float(kl.detach().sum())}
    return loss, stats


class PolicyTrainer:
    """The model being trained (and an optional frozen reference), its optimizer, checkpoints, log."""

    def __init__(self, init: Path, out: Path, cfg: PolicyConfig, total_steps: int, seed: int = 0):
        gpu = torch.cuda.is_available()
        self.acc = Accelerator(cpu=not gpu, mixed_precision="bf16" if gpu else "no")
        torch.manual_seed(seed)
        if not (init / "config.json").exists():
            raise FileNotFoundError(f"rl: no model at {init} (run `onereason sft` first, or set the init)")
        model = load_model(init)
        self.ref = None
        if cfg.kl_beta > 0:
            self.ref = load_model(init).to(self.acc.device).eval()
            self.ref.requires_grad_(False)
        optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        sched = get_constant_schedule_with_warmup(optim, cfg.warmup_steps)
        self.model, self.optim, self.sched = self.acc.prepare(model, optim, sched)
        self.cfg, self.out, self.total = cfg, out, total_steps
        self.ckpt = out / "checkpoints"
        self.ckpt.mkdir(parents=True, exist_ok=True)
        self.start = 0
        last = latest_checkpoint(self.ckpt)
        if last is not None:
            self.acc.load_state(str(last))
            self.start = json.loads((last / "loop_state.json").read_text())["step"]
        self.log_path = out / "train_log.jsonl"
        if self.log_path.exists():  # drop what was logged after the checkpoint
            kept = [l for l in self.log_path.read_text().splitlines() if json.loads(l)["step"] <= self.start]
            write_text(self.log_path, "".join(l + "\n" for l in kept))
        self.skipped: Counter = Counter()

    @property
    def policy(self):
        return self.acc.unwrap_model(self.model)

    @torch.no_grad()
    def logprobs(self, model, trajs: list[Trajectory], pad_id: int) -> torch.Tensor:
        model.eval()
        return torch.cat([token_logprobs(model, trajs[s:s + self.cfg.micro_batch], pad_id)
                          for s in range(0, len(trajs), self.cfg.micro_batch)])

    def update(self, trajs: list[Trajectory], adv: torch.Tensor, weight: torch.Tensor, pad_id: int,
               old: torch.Tensor | None = None) -> dict:
        """`inner_epochs` optimizer steps over the trajectories (flat per-token advantages and weights).
        The first epoch's log-probs are π_old for the later ones. A non-finite loss skips the step."""
        cfg, device = self.cfg, self.acc.device
        is_item = token_kinds(trajs).to(device)
        adv, weight = adv.to(device), weight.to(device)
        n_tokens = max(1, len(adv))
        bounds = token_bounds(trajs)
        ref = self.logprobs(self.ref, trajs, pad_id) if self.ref is not None else None
        stats: Counter = Counter()
        self.model.train()
        for epoch in range(cfg.inner_epochs):
            fresh = []
            total = 0.0
            for s in range(0, len(trajs), cfg.micro_batch):
                lo, hi = bounds[s], bounds[min(s + cfg.micro_batch, len(trajs))]
                logp = token_logprobs(self.model, trajs[s:s + cfg.micro_batch], pad_id)
                base = (old[lo:hi].to(device) if old is not None else logp.detach())
                loss, st = policy_loss(logp, base, adv[lo:hi], is_item[lo:hi], weight[lo:hi], cfg, n_tokens,
                                       ref[lo:hi] if ref is not None else None)
                if not torch.isfinite(loss):
                    self.skipped["nonfinite_loss"] += 1
                    warnings.warn(f"rl: non-finite loss in a micro-batch, skipped ({self.skipped['nonfinite_loss']} so far)")
                    continue
                self.acc.backward(loss)
                fresh.append(logp.detach())
                total += loss.item()
                if epoch == cfg.inner_epochs - 1:  # ratios differ from 1 only after the first step
                    stats.update(st)
            grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in self.model.parameters())
            if grads_ok and fresh:
                if cfg.grad_clip:
                    self.acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optim.step()
            else:
                self.skipped["nonfinite_grad"] += int(not grads_ok)
            self.optim.zero_grad(set_to_none=True)
            if old is None and len(fresh) == math.ceil(len(trajs) / cfg.micro_batch):
                old = torch.cat(fresh)  # π_old for the next inner epochs: the policy before any update
            stats["loss"] = total
        self.sched.step()  # once per RL step: `warmup_steps` counts rollout batches, not inner epochs
        n_item = int(is_item.sum())
        n_reason = n_tokens - n_item if len(adv) else 0
        return {"loss": stats["loss"], "clip_frac_reasoning": stats["clipped_reasoning"] / max(1, n_reason),
                "clip_frac_item": stats["clipped_item"] / max(1, n_item), "kl": stats["kl_sum"] / n_tokens,
                "reasoning_tokens": n_reason, "item_tokens": n_item}

    def end_step(self, step: int, row: dict) -> None:
        """Log the step's row; checkpoint every `checkpoint_every` steps and at the end."""
        row = {"step": step + 1, **row, "skipped": dict(self.skipped)}
        if self.acc.is_main_process:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if (step + 1) % self.cfg.checkpoint_every == 0 or step + 1 == self.total:
            save_checkpoint(self.acc, self.ckpt, step + 1, self.cfg.keep_checkpoints)
