"""Throughput on a trained run directory (default: runs/demo).

Prints:
  1. training tokens/s of onereason's loop (accelerate, scheduler, clipping, per-layer loss,
     jsonl + TensorBoard logging, checkpoint-free) vs a bare PyTorch forward + backward + AdamW
     loop on the same model and the same batches: on the packed rows of the `full`
     pre-training stage (when the run has them) and on padded User-layer sequences;
  2. constrained beam-search recommendation throughput (users/s) at beam 20 and 64;
  3. peak resident memory.

    python bench/throughput.py [--run-dir runs/demo] [--steps 40] [--users 512]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM

from onereason.bench.lists import recommend_next
from onereason.corpus.mixture import Packed
from onereason.corpus.user_layer import HistoryText, eval_prompts, training_sequences
from onereason.model.backbone import build_model
from onereason.pipeline import RunConfig
from onereason.train.loop import LoopConfig, Sample, collate, epoch_batches, train
from onereason.itemic.sid import load_sid_tokens


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_loop(model, samples, batches, pad_id, lr) -> float:
    """Tokens/s of the plainest correct loop: forward (HF's own loss), backward, AdamW step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for b in batches:
        batch = collate([samples[i] for i in b], pad_id)
        batch.pop("groups")
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int((batch["input_ids"] != pad_id).sum())
    return tokens / (time.perf_counter() - t0)


def compare(what: str, preset: str, vocab: int, samples: list[Sample], pad_id: int, loop_cfg: LoopConfig,
            steps: int, groups: list[str] | None = None) -> None:
    """Both loops see the same samples: the first `steps` batches of our schedule. The bare loop
    runs those batches as they are; ours re-batches the same samples for one epoch."""
    lengths = np.array([len(s.ids) for s in samples])
    plan = epoch_batches(lengths, loop_cfg)[:steps]
    bare = bare_loop(build_model(preset, vocab, seed=0), samples, plan, pad_id, loop_cfg.lr)
    sub = [samples[i] for b in plan for i in b]
    with tempfile.TemporaryDirectory() as tmp:
        _, stats = train(build_model(preset, vocab, seed=0), sub, pad_id, loop_cfg.replace(epochs=1.0),
                         Path(tmp), progress=False, group_names=groups)
    print(f"{what}: training tokens/s  onereason loop {stats['tokens_per_s']:,.0f}  bare PyTorch {bare:,.0f}  "
          f"ratio {stats['tokens_per_s'] / bare:.3f}  (peak RSS {peak_mb():,.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--users", type=int, default=512)
    args = ap.parse_args()
    if not (args.run_dir / "model").exists():
        raise SystemExit(f"{args.run_dir}/model not found: run `make demo` (or onereason run --name ...) first")
    tok, sid = load_sid_tokens(args.run_dir)
    cfg = RunConfig.model_validate_json((args.run_dir / "config.json").read_text())
    preset = cfg.pretrain.model
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, model preset {preset}")

    rows_path = args.run_dir / "pretrain" / "full" / "rows.npz"
    if rows_path.exists():
        rows = Packed.load(rows_path)
        mask = (rows.layers >= 0) & (rows.positions > 0)
        samples = [Sample(*r) for r in zip(rows.ids, mask, rows.positions, rows.layers)]
        full = cfg.pretrain.full
        loop_cfg = LoopConfig(lr=full.lr, batch_tokens=full.batch_tokens, checkpoint_every=10 ** 9, log_every=10)
        compare(f"packed rows (context {full.context}, batch {full.batch_tokens} tokens)", preset, len(tok), samples,
                tok.pad_token_id, loop_cfg, args.steps, ["token", "item", "relational", "user"])

    inter = pd.read_parquet(args.run_dir / "data" / "interactions.parquet")
    seqs = [s for _, s in training_sequences(inter, HistoryText(sid, tok), cfg.next_item.max_items)]
    samples = [Sample(s, [0] + [1] * (len(s) - 1)) for s in seqs]
    loop_cfg = cfg.next_item.loop.replace(checkpoint_every=10 ** 9, log_every=10)
    compare(f"padded User-layer sequences (batch {loop_cfg.batch_tokens} tokens)", preset, len(tok), samples,
            tok.pad_token_id, loop_cfg, args.steps)

    model = AutoModelForCausalLM.from_pretrained(str(args.run_dir / "model"))
    p = eval_prompts(inter, "test", cfg.eval.max_items)
    p = p.subset(list(range(min(args.users, len(p.users)))))
    for beams, bs in ((20, 32), (64, 16)):
        t0 = time.perf_counter()
        recommend_next(model, tok, sid, p, beams, bs)
        dt = time.perf_counter() - t0
        print(f"constrained beam {beams:>2} (batch {bs}): {len(p.users) / dt:6.1f} users/s over {len(p.users)} users  "
              f"(peak RSS {peak_mb():,.0f} MB)")


if __name__ == "__main__":
    main()
