"""Stage `train`: the walking skeleton's model, trained on the User layer only
(each training user's history as item tokens, predicting every next item)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from onereason import rundir
from onereason.config import Config
from onereason.corpus.user_layer import HistoryText, target_mask, training_sequences
from onereason.itemic.sid import load_sid_tokens
from onereason.model.backbone import build_model, count_parameters
from onereason.rundir import write_text
from onereason.train.loop import LoopConfig, Sample, plot_log, save_model, train


class NextItemConfig(Config):
    """Backbone and data for next-item training."""

    model: str = Field("small", description="size preset (tiny|small|medium|base) or a local HF causal LM directory")
    loop: LoopConfig = LoopConfig()


def run(config: NextItemConfig, run_dir: Path, progress: bool = True) -> dict:
    """Train from scratch on the User layer and save runs/<name>/model, which is why a run that
    holds a pre-trained model is refused: its model (what eval, sft and rl load) would be lost."""
    if (run_dir / "pretrain").exists():
        raise ValueError(f"{run_dir}: this run is pre-trained and `train` would overwrite its model; train the "
                         f"baseline in a run of its own holding a copy of config.json, data/, itemic/ and tokenizer/")
    tok, sid = load_sid_tokens(run_dir)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    text = HistoryText(sid, tok)
    seqs = [(ids, first) for _, ids, first in training_sequences(inter, text, rundir.prompt_items(run_dir))]
    samples = [Sample(ids, target_mask(np.asarray(ids), first, text.mark_ids)) for ids, first in seqs]
    model = build_model(config.model, len(tok), seed=config.loop.seed)
    out = run_dir / "train"
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", config.model_dump_json(indent=2))
    model, stats = train(model, samples, tok.pad_token_id, config.loop, out, progress=progress)
    save_model(model, tok, run_dir / rundir.MODEL)
    plot_log(out / "train_log.jsonl", out / "loss.png", ["loss", "lr"], f"next-item training ({config.model})")
    stats.update({"samples": len(samples), "tokens_per_epoch": int(sum(len(ids) for ids, _ in seqs)),
                  "parameters": count_parameters(model)})
    write_text(out / "summary.json", json.dumps(stats, indent=2))
    return stats
