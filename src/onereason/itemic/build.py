"""Stage `itemic`: items.parquet → sid_map.parquet, codebook stats, tokenizer with item tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from onereason import rundir
from onereason.config import Config
from onereason.data.schema import write_parquet
from onereason.itemic.cooccurrence import cooccurrence_embeddings
from onereason.itemic.embed import DEFAULT_MODEL, embed_texts
from onereason.itemic.item_vectors import read_item_vectors
from onereason.itemic.marks import mark_vocab
from onereason.itemic.rqkmeans import (codebook_stats, collision_rate, default_codebook_size, residual_kmeans,
                                       unique_codes)
from onereason.itemic.sid import SidCodec
from onereason.itemic.tokenizer import build_tokenizer
from onereason.rundir import atomic_dir, atomic_path, write_text


class ItemicConfig(Config):
    """Semantic IDs and tokenizer."""

    embed_model: str = Field(DEFAULT_MODEL, description="offline package name or local sentence-transformers dir")
    embed_max_tokens: int | None = Field(None, ge=8, description="cut item text to this many word pieces before "
                                         "embedding (None: the model's limit); 64 is about 3x faster on CPU")
    levels: int | None = Field(None, ge=1, le=8, description="semantic codes per item (L); None: 1 behind an "
                               "identity code, 3 without one")
    codebook_size: int | None = Field(None, ge=2, description="codes per level (K); None: sized for the data, "
                                      "doubled until no item needs an extra level (up to 256)")
    seed: int = 0
    vocab_size: int = Field(4096, ge=300, description="BPE vocabulary trained on item text")
    base_tokenizer: Path | None = Field(None, description="extend this HF tokenizer dir instead of training one")
    identity: bool | None = Field(None, description="end each SID with a code of the item's own (one token per "
                                  "item, an ID embedding behind the `levels` semantic codes, which may then be "
                                  "shared); None: where the train split has at least `identity_min_targets` "
                                  "next-item targets per item (docs/design.md §1)")
    # 12: chosen on valid (bench/LOG.md, session 40): with one level + identity, NDCG@10 +.0130 on office (15.9 targets
    # per item), −.0007 on amazon-scientific (7.8, inside the interval): an item's own row learns from its own targets
    identity_min_targets: float = Field(12.0, ge=0, description="train next-item targets per item from which "
                                        "`identity: null` turns the identity code on")
    # 1.0: chosen on valid (bench/LOG.md, 2026-12-03 late): NDCG@10 +.0055 on amazon-scientific, +.0178 on office
    collab_weight: float = Field(1.0, ge=0, description="weight of the train split's co-occurrence vectors "
                                 "concatenated to the text embedding before clustering (0: text only)")
    collab_dim: int = Field(64, ge=2, description="dimensions of the co-occurrence vectors")
    collab_vectors: Path | None = Field(None, description="parquet of (item_id, vector) joined instead of the "
                                        "co-occurrence vectors, e.g. a SASRec's item embeddings "
                                        "(`bench/baselines.py --item-vectors`); learned from the train split only")
    marks: list[Literal["gap", "rating"]] = Field(
        ["rating"], description="one-token marks written after each history item where the data has them: "
        "the time-gap bucket since the previous event, the rating (docs/design.md §2)")


def train_targets_per_item(inter: pd.DataFrame, n_items: int) -> float:
    """Next-item targets the train split holds per catalog item (each user's train events after the first):
    how much an item's own identity row gets to learn from."""
    train = inter[inter["split"] == "train"]
    return (len(train) - train["user_id"].nunique()) / max(n_items, 1)


def describe(stats: dict, config: ItemicConfig) -> str:
    """One line saying which SID layout the stage chose and why (the identity code can turn on by itself)."""
    how = "set in the config" if config.identity is not None else (
        f"{stats['train_targets_per_item']:.1f} train targets per item, "
        f"{'at least' if stats['identity'] else 'under'} itemic.identity_min_targets = {config.identity_min_targets:g}")
    layout = (f"{stats['levels'] - 1} semantic code{'s' * (stats['levels'] > 2)} + an identity code" if stats["identity"]
              else f"{stats['levels']} semantic codes")
    return f"SIDs: {layout} per item, K = {stats['codebook_size']} ({how})"


def run(config: ItemicConfig, run_dir: Path) -> dict:
    """Embed item text, cluster residually, resolve collisions, write the SID map and tokenizer."""
    items = pd.read_parquet(run_dir / rundir.ITEMS)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    per_item = train_targets_per_item(inter, len(items))
    identity = config.identity if config.identity is not None else per_item >= config.identity_min_targets
    levels = config.levels or (1 if identity else 3)
    texts = [f"{t}" if d == t else f"{t}. {d}" for t, d in zip(items["title"], items["description"])]
    emb = embed_texts(texts, config.embed_model, max_tokens=config.embed_max_tokens)
    if config.collab_weight > 0:
        ids = items["item_id"].tolist()
        collab = (read_item_vectors(config.collab_vectors, ids) if config.collab_vectors is not None else
                  cooccurrence_embeddings(inter, ids, config.collab_dim, seed=config.seed))
        emb = np.concatenate([emb, np.sqrt(config.collab_weight) * collab], axis=1).astype(np.float32)
    k = config.codebook_size or default_codebook_size(len(items), levels)
    if identity:  # the identity code tells items apart: semantic codes stay as clustered
        semantic = raw = residual_kmeans(emb, levels, k, seed=config.seed)[0]
    else:
        semantic, raw, k = unique_codes(emb, levels, k, config.seed, grow=config.codebook_size is None)
    before = collision_rate(raw)
    sid_map = pd.DataFrame({"item_id": items["item_id"], "domain": items["domain"]})
    for level in range(semantic.shape[1]):
        sid_map[f"code_{level}"] = semantic[:, level]
    if identity:
        sid_map["identity"] = np.arange(len(items))
    out = run_dir / "itemic"
    write_parquet(sid_map, out / "sid_map.parquet")
    with atomic_path(run_dir / rundir.EMBEDDINGS) as tmp:  # what was clustered (text, plus co-occurrence if enabled)
        np.save(tmp, emb)
    codec = SidCodec(sid_map)
    codes = codec.codes  # with the identity code, when there is one
    general = run_dir / rundir.GENERAL_TEXT
    if general.exists():  # held-out documents stay out of the tokenizer too
        g = pd.read_parquet(general)
        texts = texts + g.loc[g["split"] == "train", "text"].tolist()
    tok = build_tokenizer(texts, codec.code_vocab(), codec.special_vocab() + mark_vocab(config.marks),
                          config.base_tokenizer,
                          config.vocab_size)
    with atomic_dir(run_dir / "tokenizer") as tmp:
        tok.save_pretrained(str(tmp))
    stats = {
        "items": len(items), "levels": int(codes.shape[1]), "codebook_size": k,
        "collision_rate_before": before, "collision_rate_after": collision_rate(codes),
        "extra_level_added": bool(codes.shape[1] > levels + identity), "identity": bool(identity),
        "train_targets_per_item": per_item,
        "per_level": codebook_stats(codes, k), "vocab_size": len(tok),
        "config": json.loads(config.model_dump_json()),
    }
    write_text(out / "stats.json", json.dumps(stats, indent=2))
    return stats
