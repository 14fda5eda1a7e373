"""Stage `pretrain --stage text|warmup|full|long`: the model learns what item tokens mean.

    text    the backbone's own language pre-training on the Token layer (what a downloaded
            LLM already has; skipped when `model` is a local HF directory)
    warmup  backbone frozen; only the item-token rows of the embedding / LM head learn
            (a gradient mask), rows initialized from the text of the items under each code
    full    every parameter, on the full four-layer mixture
    long    a longer context with the longest user histories, a small share of the budget

Each stage starts from the previous stage's model, draws its token budget from the corpus
layers by its mixture weights, packs it into rows, trains with the shared loop (resumable),
and is measured by the caller's `measure` (bench/stage_report.py: R0 perception, held-out perplexity,
next-item Recall@10) into pretrain/report.{json,md} with the loss curves in pretrain/loss.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from pydantic import Field
from transformers import AutoModelForCausalLM, PreTrainedModel

from onereason import rundir
from onereason.config import Config
from onereason.corpus.build import LAYERS, load_layer
from onereason.corpus.mixture import Packed, build_rows, check_mixture
from onereason.corpus.user_layer import HistoryText
from onereason.itemic.sid import load_sid_tokens
from onereason.model.backbone import PRESETS, build_model, count_parameters
from onereason.rundir import write_text
from onereason.train.loop import LoopConfig, Sample, save_model, train

STAGES = ("text", "warmup", "full", "long")


class ReportConfig(Config):
    """Sizes of the per-stage measurements (kept small: they run after every stage)."""

    r0_items: int = Field(200, ge=1, description="items per R0 group (held-out / stated)")
    users: int = Field(1000, ge=1, description="valid-split users for next-item recall")
    beams: int = Field(20, ge=10)
    select_users: int = Field(500, ge=1, description="valid users whose NDCG@10 picks a stage's best weights "
                              "(stages with `selections`)")
    ppl_context: int = Field(512, ge=16)
    batch_size: int = Field(32, ge=1)
    seed: int = 0


class StageConfig(Config):
    """One stage: its budget in tokens, context, optimizer and layer mixture."""

    tokens: int = Field(..., ge=1, description="tokens drawn from the layers (the budget), unless user_epochs is set")
    user_epochs: float | None = Field(None, gt=0, description="instead: passes over the User layer, so the budget "
                                      "follows the data (tokens = user_epochs × User-layer tokens ÷ its mixture share)")
    selections: int = Field(0, ge=0, description="times valid NDCG@10 is measured during the stage (evenly, the "
                            "last at the end); the best-scoring weights are kept (0: the last)")
    patience: int | None = Field(None, ge=1, description="with `selections`: stop the stage once this many "
                                 "scorings in a row were not the best (its cosine schedule is cut there)")
    context: int = Field(512, ge=8, description="packed row length")
    lr: float = Field(3e-3, gt=0)
    batch_tokens: int = Field(4096, ge=8, description="tokens per optimizer step (rows × context)")
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="training-time dropout (see LoopConfig.dropout)")
    ema_half_life: float = Field(0.0, ge=0, lt=1, description="score and keep a moving average of the weights "
                                 "(see LoopConfig.ema_half_life)")
    mixture: dict[str, float] = Field(..., description=f"weight per layer ({', '.join(LAYERS)})")
    domain_weights: dict[str, float] = Field(default_factory=dict,
                                             description="factor per domain ('general' = general text); default 1")


class PretrainConfig(Config):
    """The backbone and the three stages (plus the backbone's own text stage)."""

    model: str = Field("small", description="size preset (tiny|small|medium|base) or a local HF causal LM directory")
    item_init: str = Field("text", pattern="^(text|default)$",
                           description="item-token rows before warm-up: mean text embedding of the items under "
                           "each code, or the model's default")
    text: StageConfig = StageConfig(tokens=1_200_000, mixture={"token": 1.0})
    # Budgets: 1.4x the first ones (0.4M / 3.7M / 0.32M), the best of 0.5x / 1x / 1.4x / 2x on valid on
    # amazon-scientific (bench/LOG.md, 2026-12-02); the User-layer-only model peaks at 1x.
    warmup: StageConfig = StageConfig(tokens=560_000, lr=1e-2, weight_decay=0.0,
                                      mixture={"item": 0.5, "relational": 0.2, "user": 0.3})
    # full: 16 User-layer epochs, what 1.4x gave amazon-scientific (15.8), as epochs so that ml-100k (3.1 epochs
    # at the same tokens) and office get theirs; early stopping on valid NDCG@10 at 8 points, stopping after 2
    # without a better one (on amazon-scientific the same choice as all 8, at 12 of the 16 epochs).
    # ema_half_life 0.05 (about 0.8 User-layer epochs): valid NDCG@10 +.0026 [+.0007, +.0043] on amazon-scientific
    # against the raw weights, the only dataset measured (bench/LOG.md, session 37).
    full: StageConfig = StageConfig(tokens=5_180_000, user_epochs=16, selections=8, patience=2, ema_half_life=0.05,
                                    mixture={"token": 0.1, "item": 0.15, "relational": 0.05, "user": 0.7})
    # long re-warms after the full stage's cosine reached 0: at 1e-3 that undid next-item at every budget (bench/LOG.md)
    long: StageConfig = StageConfig(tokens=448_000, context=2048, lr=1e-4, batch_tokens=8192,
                                    mixture={"token": 0.1, "item": 0.1, "user": 0.8})
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    seed: int = 0
    report: ReportConfig = ReportConfig()


def stages_to_run(config: PretrainConfig) -> list[str]:
    """Every stage in order; a local HF LLM brings its own language, so it skips `text`."""
    return [s for s in STAGES if s != "text" or config.model in PRESETS]


def item_token_ids(tok, sid) -> list[int]:
    """The rows the itemic stage added: code tokens, SID and domain begin/end tokens."""
    return tok.convert_tokens_to_ids(sid.codec.code_vocab() + sid.codec.special_vocab())


@torch.no_grad()
def init_item_rows_from_text(model: PreTrainedModel, tok, sid, items: pd.DataFrame) -> None:
    """Each code token's row = the mean input embedding of the title tokens of the items that
    carry that code at that level; a domain's begin/end rows = the mean over its items."""
    emb = model.get_input_embeddings().weight  # [V, H]
    titles = dict(zip(items["item_id"], items["title"]))
    enc = tok([titles[i] for i in sid.codec.item_ids], add_special_tokens=False)["input_ids"]
    item_vec = torch.stack([emb[torch.tensor(e or [tok.eos_token_id])].mean(0) for e in enc])  # [N, H]
    codes = torch.tensor(sid.codec.codes)  # [N, L]
    heads = [emb] + ([model.get_output_embeddings().weight]
                     if model.get_output_embeddings().weight.data_ptr() != emb.data_ptr() else [])
    for level in range(codes.shape[1]):
        for code in codes[:, level].unique().tolist():
            vec = item_vec[codes[:, level] == code].mean(0)
            for w in heads:
                w[int(sid.code_ids[level][code])] = vec
    doms = np.array([sid.codec.item_domain[i] for i in sid.codec.item_ids])
    for d in sid.codec.domains:
        vec = item_vec[torch.from_numpy(doms == d)].mean(0)
        for w in heads:
            w[sid.begin_id[d]] = vec
            w[sid.end_id[d]] = vec


def freeze_all_but_rows(model: PreTrainedModel, rows: list[int]) -> None:
    """Warm-up: every parameter frozen except the embedding / LM head, whose gradient is
    masked to `rows`. (With weight decay 0, Adam then leaves every other row bit-identical.)"""
    for p in model.parameters():
        p.requires_grad_(False)
    mask = torch.zeros(model.get_input_embeddings().weight.shape[0], 1)
    mask[rows] = 1.0
    for w in {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
        w.requires_grad_(True)
        w.register_hook(lambda g: g * mask.to(g.device, g.dtype))


def _previous_model(config: PretrainConfig, run_dir: Path, stage: str, vocab: int) -> PreTrainedModel:
    i = STAGES.index(stage)
    for prev in reversed(STAGES[:i]):
        path = run_dir / "pretrain" / prev / "model"
        if (path / "config.json").exists():
            return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        if prev == "text" and config.model not in PRESETS:  # a real LLM brings its own language
            return build_model(config.model, vocab)
        raise FileNotFoundError(f"{path}: run `onereason pretrain --stage {prev}` first")
    if config.model not in PRESETS:
        raise ValueError(f"pretrain.model={config.model!r} is a pre-trained LLM: skip the text stage")
    return build_model(config.model, vocab, seed=config.seed)


def check_stage(config: PretrainConfig, stage: str, layers: dict[str, pd.DataFrame], item_len: int) -> None:
    """Every config error a stage can have, raised before any training starts."""
    if stage not in STAGES:
        raise ValueError(f"pretrain: unknown stage {stage!r}; stages are {list(STAGES)}")
    sc: StageConfig = getattr(config, stage)
    check_mixture(layers, sc.mixture, sc.domain_weights, f"pretrain.{stage}")
    if sc.context < item_len + 2:
        raise ValueError(f"pretrain.{stage}.context={sc.context} is shorter than one item ({item_len} tokens) "
                         "plus <bos> and <eos>")
    longest = int(layers["user"]["ids"].map(len).max()) if len(layers["user"]) else 0
    if longest > sc.context:
        key = "long_items" if stage == "long" else "max_items"
        raise ValueError(f"pretrain.{stage}.context={sc.context} is shorter than the longest User-layer window "
                         f"({longest} tokens): lower corpus.{key} or raise the context (a window is never cut)")
    if sc.user_epochs is not None and sc.mixture.get("user", 0) <= 0:
        raise ValueError(f"pretrain.{stage}.user_epochs={sc.user_epochs} but the mixture has no User layer")
    if sc.batch_tokens < sc.context:
        raise ValueError(f"pretrain.{stage}.batch_tokens={sc.batch_tokens} is smaller than one row "
                         f"(context={sc.context})")


def stage_tokens(sc: StageConfig, user_tokens: int) -> int:
    """A stage's budget: its tokens, or `user_epochs` passes over the User layer (`user_tokens` per
    pass) with the other layers in their mixture shares."""
    if sc.user_epochs is None:
        return sc.tokens
    share = sc.mixture.get("user", 0.0) / sum(sc.mixture.values())
    return max(1, round(sc.user_epochs * user_tokens / share))


def run(config: PretrainConfig, run_dir: Path, stage: str, progress: bool = True,
        measure: Callable[[PreTrainedModel], dict] | None = None,
        score: Callable[[PreTrainedModel], float] | None = None) -> dict:
    """Train one stage from the previous one, save its model and its summary with `measure(model)` (the
    bench's stage metrics, passed in so that training does not depend on evaluation). A stage with
    `selections` keeps the weights with the best `score(model)` (valid NDCG@10, also passed in)."""
    tok, sid = load_sid_tokens(run_dir)
    layers = {n: load_layer(run_dir, "user_long" if (n == "user" and stage == "long") else n) for n in LAYERS}
    check_stage(config, stage, layers, sid.length)
    sc: StageConfig = getattr(config, stage)
    user_tokens = int(layers["user"]["ids"].map(len).sum())
    out = run_dir / "pretrain" / stage
    out.mkdir(parents=True, exist_ok=True)

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.is_main_process:
        write_text(out / "config.json", config.model_dump_json(indent=2))  # under `accelerate launch`: one process writes, all train
    rows_path = out / "rows.npz"  # the packed budget, fixed once: a resumed run replays the same rows
    with state.main_process_first():
        if not rows_path.exists():
            build_rows(layers, list(LAYERS), sc.mixture, sc.domain_weights, stage_tokens(sc, user_tokens), sc.context,
                       tok.pad_token_id, seed=config.seed + STAGES.index(stage),
                       longest_first=stage == "long", untargeted=HistoryText(sid, tok).mark_ids).save(rows_path)
    rows = Packed.load(rows_path)
    samples = [Sample(*row) for row in zip(rows.ids, rows.targets, rows.positions, rows.layers)]  # numpy views

    model = _previous_model(config, run_dir, stage, len(tok))
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, sc.context)
    if stage == "warmup":
        if config.item_init == "text":
            init_item_rows_from_text(model, tok, sid, pd.read_parquet(run_dir / rundir.ITEMS))
        freeze_all_but_rows(model, item_token_ids(tok, sid))
    loop = LoopConfig(epochs=1.0, lr=sc.lr, batch_tokens=sc.batch_tokens, warmup_ratio=sc.warmup_ratio,
                      weight_decay=sc.weight_decay, dropout=sc.dropout, ema_half_life=sc.ema_half_life,
                      checkpoint_every=config.checkpoint_every,
                      log_every=config.log_every, seed=config.seed)
    model, stats = train(model, samples, tok.pad_token_id, loop, out, progress=progress, group_names=list(LAYERS),
                         score=score, selections=sc.selections, patience=sc.patience)
    for p in model.parameters():
        p.requires_grad_(True)
    if not state.is_main_process:
        return stats
    save_model(model, tok, out / "model")
    if stage == STAGES[-1]:
        save_model(model, tok, run_dir / rundir.MODEL)  # what `eval` and later stages load
    summary = out / "summary.json"
    if stats["resumed_from"] == stats["steps"] and summary.exists():  # nothing left to train: keep its timing
        stats.update({k: json.loads(summary.read_text())[k] for k in ("seconds", "tokens", "tokens_per_s")})
    per_layer = rows.tokens_per_layer(list(LAYERS))
    stats.update({"stage": stage, "rows": len(samples), "context": sc.context, "tokens_per_layer": per_layer,
                  "user_epochs": per_layer["user"] / max(1, user_tokens) * stats["steps"] / stats["planned_steps"],
                  "parameters": count_parameters(model)})
    stats["metrics"] = measure(model) if measure else {}
    write_text(summary, json.dumps(stats, indent=2))
    return stats
