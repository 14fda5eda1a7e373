"""One causal-LM training loop under accelerate: token-budget batches, AdamW + cosine schedule,
atomic resumable checkpoints (model, optimizer, scheduler, RNG, data position), loss per token
group (the corpus layers), tokens/s and learning rate in a jsonl log and in TensorBoard.

The same function runs in one CPU process or under `accelerate launch` (DDP, FSDP, DeepSpeed:
see configs/); each process takes every n-th batch. Samples are either padded sequences or
packed rows whose position ids restart at every document.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from pydantic import Field
from tqdm.auto import tqdm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.tensorboard import SummaryWriter
from transformers import PreTrainedModel, get_cosine_schedule_with_warmup

from onereason.config import Config
from onereason.corpus.user_layer import batches_by_length
from onereason.model.backbone import add_dropout
from onereason.rundir import atomic_dir, atomic_path, save_figure, write_text


class LoopConfig(Config):
    """Optimization and checkpointing."""

    epochs: float = Field(20.0, gt=0, description="passes over the samples (fractions allowed)")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = 0.01
    dropout: float = Field(0.0, ge=0, lt=1, description="embedding and residual-branch dropout while training "
                           "(nothing of it is saved with the model)")
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    ema_half_life: float = Field(0.0, ge=0, lt=1, description="an exponential moving average of the weights, "
                                 "with this half-life as a share of the run's steps, is what gets scored and "
                                 "returned (0: the raw weights)")
    batch_tokens: int = Field(4096, ge=16, description="padded tokens per batch (4096 beat 8192 and 2048 on valid)")
    grad_clip: float = 1.0
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0


@dataclass
class Sample:
    """Token ids and the per-token loss mask (1 = predict this token). A packed row also has
    position ids (restarting at each document) and the group (corpus layer) of each token."""

    ids: Sequence[int]
    mask: Sequence[int]
    positions: Sequence[int] | None = None
    groups: Sequence[int] | None = None


def collate(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 where the mask is 0 or on padding; groups are -1 there.
    Packed rows (equal length) get position_ids instead of an attention mask."""
    n = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), n), -100, dtype=torch.long)
    groups = torch.full((len(samples), n), -1, dtype=torch.long)
    attn = torch.zeros((len(samples), n), dtype=torch.long)
    for i, s in enumerate(samples):
        t = torch.as_tensor(np.asarray(s.ids, dtype=np.int64))
        ids[i, : len(t)] = t
        attn[i, : len(t)] = 1
        labels[i, : len(t)] = torch.where(torch.as_tensor(np.asarray(s.mask, dtype=bool)), t, -100)
        groups[i, : len(t)] = torch.as_tensor(np.asarray(s.groups, dtype=np.int64)) if s.groups is not None else 0
    groups[labels == -100] = -1
    if samples[0].positions is None:
        return {"input_ids": ids, "attention_mask": attn, "labels": labels, "groups": groups}
    pos = torch.as_tensor(np.stack([np.asarray(s.positions, dtype=np.int64) for s in samples]))
    return {"input_ids": ids, "position_ids": pos, "labels": labels, "groups": groups}


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, n_groups: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over labelled tokens, and detached [n_groups, 2] (loss sum,
    token count) per group for logging."""
    # Position t predicts t+1: shift the labels, not the logits (a [B, T, V] copy saved).
    labels = F.pad(labels, (0, 1), value=-100)[:, 1:]  # [B, T]
    groups = F.pad(groups, (0, 1), value=-1)[:, 1:]  # [B, T]
    tok = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                          ignore_index=-100, reduction="none").view_as(labels)  # [B, T]
    valid = labels != -100  # [B, T]
    loss = tok.sum() / valid.sum().clamp(min=1)
    g = groups.clamp(min=0).reshape(-1)
    sums = torch.zeros(n_groups, device=tok.device).index_add_(0, g, (tok * valid).reshape(-1).detach())
    counts = torch.zeros(n_groups, device=tok.device).index_add_(0, g, valid.reshape(-1).float())
    return loss, torch.stack([sums, counts], dim=1)  # [G, 2]


def epoch_batches(lengths: np.ndarray, cfg: LoopConfig) -> list[np.ndarray]:
    """The whole run's batch order, a pure function of (lengths, seed): resuming at step s
    replays exactly the batches from s on."""
    out: list[np.ndarray] = []
    for epoch in range(math.ceil(cfg.epochs)):
        b = batches_by_length(lengths, cfg.batch_tokens, np.random.default_rng([cfg.seed, epoch]))
        if epoch + 1 > cfg.epochs:  # fractional last epoch
            b = b[: int(len(b) * (cfg.epochs - epoch))]
        out.extend(b)
    return out


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = [p for p in ckpt_dir.glob("step_*") if (p / "loop_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, step: int, keep: int) -> None:
    """Write into a temporary folder, then rename: a kill leaves either the old or the new checkpoint."""
    accelerator.wait_for_everyone()
    final, tmp = ckpt_dir / f"step_{step}", ckpt_dir / f".tmp_step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_text(tmp / "loop_state.json", json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        old = sorted((p for p in ckpt_dir.glob("step_*")), key=lambda p: int(p.name.split("_")[1]))
        for p in old[:-keep]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()


def train(model: torch.nn.Module, samples: list[Sample], pad_id: int, cfg: LoopConfig, out_dir: Path,
          accelerator: Accelerator | None = None, progress: bool = True,
          group_names: list[str] | None = None, score: Callable[[torch.nn.Module], float] | None = None,
          selections: int = 0, patience: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train `model` on `samples`; checkpoints in out_dir/checkpoints, log in out_dir/train_log.jsonl
    and out_dir/tensorboard. Resumes from the latest checkpoint there. `group_names` name the
    sample groups whose loss is logged separately. With `score` (higher is better, e.g. valid
    NDCG@10) and `selections` > 0, the model is scored that many times, evenly spaced, the last at
    the end, and the best-scoring weights are what comes back (early stopping on valid; the best
    weights wait in out_dir/best). With `patience`, training stops once that many scorings in a row
    were not the best (a re-run does not train on). Returns the trained (unwrapped) model and summary
    numbers."""
    if not samples:
        raise ValueError("training: no samples (every user has fewer than two training items?)")
    # cpu=True on a CPU machine: without it accelerate ignores a multi-process launch (each
    # process would train alone); with it, `accelerate launch` gives gloo DDP.
    gpu = torch.cuda.is_available()
    accelerator = accelerator or Accelerator(cpu=not gpu, mixed_precision="bf16" if gpu else "no")
    torch.manual_seed(cfg.seed)
    lengths = np.array([len(s.ids) for s in samples])
    if lengths.max() > cfg.batch_tokens:
        raise ValueError(f"training: batch_tokens={cfg.batch_tokens} is shorter than the longest sample "
                         f"({lengths.max()} tokens)")
    batches = epoch_batches(lengths, cfg)
    total = len(batches) // accelerator.num_processes
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    sched = get_cosine_schedule_with_warmup(optim, int(cfg.warmup_ratio * total), total)
    ema = _ema(model, cfg.ema_half_life, total)  # before the dropout hooks: the average is scored without them
    hooks = add_dropout(model, cfg.dropout)
    model, optim, sched = accelerator.prepare(model, optim, sched)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)  # resumes with the average it had

    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    last = latest_checkpoint(ckpt_dir)
    if last is not None:
        accelerator.load_state(str(last))
        start = json.loads((last / "loop_state.json").read_text())["step"]
    log_path = out_dir / "train_log.jsonl"
    if accelerator.is_main_process and log_path.exists():  # drop what was logged after the checkpoint
        kept = [l for l in log_path.read_text().splitlines() if json.loads(l)["step"] <= start]
        write_text(log_path, "".join(l + "\n" for l in kept))

    names = group_names or ["all"]
    board = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start + 1) if accelerator.is_main_process else None
    model.train()
    mine = batches[accelerator.process_index::accelerator.num_processes][:total]
    best_dir = out_dir / "best"
    saved = json.loads((best_dir / "best.json").read_text())["scores"] if (best_dir / "best.json").exists() else []
    kept = [x for x in saved if x["step"] <= start]  # a resumed run replays (and re-scores) the steps after
    chosen = {"scores": kept, **(max(kept, key=lambda x: x["score"]) if kept else {})}
    score_every = max(1, total // selections) if score is not None and selections > 0 else 0
    bar = tqdm(total=total, initial=start, desc="train", disable=not (progress and accelerator.is_main_process))
    t0, tokens, losses, mean = time.perf_counter(), 0, [], float("nan")
    group_stats = torch.zeros(len(names), 2, device=accelerator.device)
    end = start if _out_of_patience(chosen["scores"], patience) else total
    for step in range(start, end):
        batch = collate([samples[i] for i in mine[step]], pad_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        labels, groups = batch.pop("labels"), batch.pop("groups")
        logits = model(**batch, use_cache=False).logits
        loss, stats = causal_lm_loss(logits, labels, groups, len(names))
        group_stats += stats
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(accelerator.unwrap_model(model))
        tokens += int((batch["input_ids"] != pad_id).sum())
        losses.append(loss.item())
        bar.update(1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            mean = float(accelerator.gather(torch.tensor([np.mean(losses)], device=accelerator.device)).mean())
            per = accelerator.reduce(group_stats, reduction="sum")
            rate = tokens * accelerator.num_processes / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{rate:,.0f}")
            row = {"step": step + 1, "loss": mean, "lr": sched.get_last_lr()[0], "tokens_per_s": rate}
            if group_names:
                row.update({f"loss/{n}": float(s / c) for n, (s, c) in zip(names, per.tolist()) if c > 0})
            if board is not None:
                for k, v in row.items():
                    if k != "step":
                        board.add_scalar(k, v, step + 1)
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            losses, group_stats = [], torch.zeros_like(group_stats)
        if score_every and ((step + 1) % score_every == 0 and total - (step + 1) >= score_every // 2
                            or step + 1 == total):
            scored = ema.module if ema is not None else accelerator.unwrap_model(model)
            chosen = _select(scored, score, step + 1, chosen, best_dir, accelerator)
            model.train()
            if _out_of_patience(chosen["scores"], patience):
                end = step + 1
                break
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_checkpoint(accelerator, ckpt_dir, step + 1, cfg.keep_checkpoints)
    bar.close()
    if board is not None:
        board.close()
    elapsed = time.perf_counter() - t0
    if end > start:
        save_checkpoint(accelerator, ckpt_dir, end, cfg.keep_checkpoints)
    model = accelerator.unwrap_model(model)
    for h in hooks:
        h.remove()
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    stats = {"steps": end, "planned_steps": total, "resumed_from": start, "seconds": elapsed,
             "tokens": tokens * accelerator.num_processes,
             "final_loss": mean, "tokens_per_s": tokens * accelerator.num_processes / max(elapsed, 1e-9)}
    if chosen["scores"]:
        if chosen["step"] != end:
            model.load_state_dict(torch.load(best_dir / "model.pt", map_location="cpu"))
        stats["selection"] = chosen
    return model, stats


def _ema(model: torch.nn.Module, half_life: float, total: int) -> AveragedModel | None:
    """The weights' moving average (torch's AveragedModel), its decay set so that a step's weight halves
    after `half_life` × `total` steps; None when off."""
    if half_life == 0:
        return None
    decay = 0.5 ** (1 / max(1.0, half_life * total))
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _out_of_patience(scores: list[dict], patience: int | None) -> bool:
    """The last `patience` scorings all came after the best one."""
    if not patience or not scores:
        return False
    best = max(range(len(scores)), key=lambda i: scores[i]["score"])
    return len(scores) - 1 - best >= patience


def _select(model: torch.nn.Module, score: Callable[[torch.nn.Module], float], step: int, chosen: dict,
            best_dir: Path, accelerator: Accelerator) -> dict:
    """Score the model; if it is the best so far, keep its weights (written by rename) and the step."""
    value = float(score(model))
    chosen = {**chosen, "scores": chosen["scores"] + [{"step": step, "score": value}]}
    if value > chosen.get("score", -math.inf):
        chosen.update(step=step, score=value)
        if accelerator.is_main_process:
            best_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(best_dir / "model.pt") as tmp:
                torch.save(model.state_dict(), tmp)
    if accelerator.is_main_process:
        write_text(best_dir / "best.json", json.dumps(chosen))
    accelerator.wait_for_everyone()
    return chosen


def save_model(model: PreTrainedModel, tok, out: Path) -> None:
    """save_pretrained into a temporary folder, then rename over the old one."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))


def plot_log(log_path: Path, png: Path, keys: list[str], title: str) -> None:
    """The chosen columns of a train_log.jsonl per step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    keys = [k for k in keys if any(k in r for r in rows)]
    if not keys:  # nothing was logged for them (e.g. every step skipped): no plot rather than an empty one
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys):
        xs = [r["step"] for r in rows if k in r]
        ys = [r[k] for r in rows if k in r]
        ax.plot(xs, ys, alpha=0.35)
        if len(ys) >= 5:
            w = max(2, len(ys) // 10)
            ax.plot(xs[w - 1:], np.convolve(ys, np.ones(w) / w, mode="valid"))
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step")
    fig.suptitle(title)
    save_figure(fig, png, dpi=100)
