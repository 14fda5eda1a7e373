"""One causal-LM training loop under accelerate: token-budget batches, AdamW + cosine schedule,
atomic resumable checkpoints (model, optimizer, scheduler, RNG, data position), jsonl loss log.

The same function runs in one CPU process or under `accelerate launch`; each process takes
every n-th batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from pydantic import BaseModel, Field
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from onereason.corpus.user_layer import batches_by_length


class LoopConfig(BaseModel):
    """Optimization and checkpointing."""

    epochs: float = Field(20.0, gt=0, description="passes over the samples (fractions allowed)")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    batch_tokens: int = Field(4096, ge=16, description="padded tokens per batch (4096 beat 8192 and 2048 on valid)")
    grad_clip: float = 1.0
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0


@dataclass
class Sample:
    """Token ids and the per-token loss mask (1 = predict this token)."""

    ids: list[int]
    mask: list[int]


def collate(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 where the mask is 0 or on padding."""
    n = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), n), -100, dtype=torch.long)
    attn = torch.zeros((len(samples), n), dtype=torch.long)
    for i, s in enumerate(samples):
        t = torch.tensor(s.ids)
        ids[i, : len(t)] = t
        attn[i, : len(t)] = 1
        labels[i, : len(t)] = torch.where(torch.tensor(s.mask, dtype=torch.bool), t, -100)
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


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
        (tmp / "loop_state.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        old = sorted((p for p in ckpt_dir.glob("step_*")), key=lambda p: int(p.name.split("_")[1]))
        for p in old[:-keep]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()


def train(model: torch.nn.Module, samples: list[Sample], pad_id: int, cfg: LoopConfig, out_dir: Path,
          accelerator: Accelerator | None = None, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train `model` on `samples`; checkpoints in out_dir/checkpoints, log in out_dir/train_log.jsonl.
    Resumes from the latest checkpoint there. Returns the trained (unwrapped) model and summary numbers."""
    if not samples:
        raise ValueError("training: no samples (every user has fewer than two training items?)")
    accelerator = accelerator or Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
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
    model, optim, sched = accelerator.prepare(model, optim, sched)

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
        log_path.write_text("".join(l + "\n" for l in kept))

    model.train()
    mine = batches[accelerator.process_index::accelerator.num_processes][:total]
    bar = tqdm(total=total, initial=start, desc="train", disable=not (progress and accelerator.is_main_process))
    t0, tokens, losses = time.perf_counter(), 0, []
    for step in range(start, total):
        batch = collate([samples[i] for i in mine[step]], pad_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss = model(**batch).loss
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        losses.append(loss.item())
        bar.update(1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            mean = float(accelerator.gather(torch.tensor([np.mean(losses)], device=accelerator.device)).mean())
            rate = tokens * accelerator.num_processes / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{rate:,.0f}")
            if accelerator.is_main_process:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step + 1, "loss": mean, "lr": sched.get_last_lr()[0],
                                        "tokens_per_s": rate}) + "\n")
            losses = []
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_checkpoint(accelerator, ckpt_dir, step + 1, cfg.keep_checkpoints)
    bar.close()
    elapsed = time.perf_counter() - t0
    if total > start:
        save_checkpoint(accelerator, ckpt_dir, total, cfg.keep_checkpoints)
    return accelerator.unwrap_model(model), {
        "steps": total, "resumed_from": start, "seconds": elapsed,
        "tokens_per_s": tokens * accelerator.num_processes / max(elapsed, 1e-9)}


def plot_loss(log_path: Path, png: Path, title: str = "training loss") -> None:
    """Loss and learning rate per step from train_log.jsonl, as a PNG beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (item tokens)")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot([r["step"] for r in rows], [r["lr"] for r in rows], color="tab:gray", alpha=0.5, label="lr")
    ax2.set_ylabel("learning rate")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
