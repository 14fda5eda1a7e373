"""Stage `corpus`: the four pre-training layers as token-id shards in runs/<name>/corpus/.

    token.parquet  item.parquet  relational.parquet  user.parquet  user_long.parquet

Each shard has one row per document (domain, text, ids; the User layer adds `first`, the token
where its loss starts). `user` holds windows of at most `max_items` items anchored at each user's
newest item (`corpus/user_layer.windows`); `user_long` windows of `long_items`, for the
long-sequence stage. Only
the train split of interactions feeds any layer. stats.json reports documents and tokens per
layer and domain; heldout_items.json lists the items whose SID ↔ title statements are held
out for the R0 perception check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from onereason import rundir
from onereason.config import Config
from onereason.corpus.item_layer import item_documents
from onereason.corpus.relational_layer import relational_documents
from onereason.corpus.token_layer import token_documents
from onereason.corpus.user_layer import HistoryText, training_sequences, window_stats
from onereason.data.schema import write_parquet
from onereason.itemic.sid import load_sid_tokens
from onereason.rundir import write_text

LAYERS = ("token", "item", "relational", "user")


class CorpusConfig(Config):
    """What goes into each layer."""

    heldout_items: float = Field(0.05, ge=0, lt=1, description="share of items kept out of SID ↔ title statements")
    max_items: int = Field(50, ge=2, description="items per User-layer window (and at most per prompt)")
    stride: int | None = Field(None, ge=1, description="items between the ends of a user's successive windows; "
                               "None: max_items // 2, so every target sees at least half a window of context")
    long_items: int = Field(250, ge=2, description="items per window of the long-sequence stage")

    @model_validator(mode="after")
    def _stride_fits(self) -> "CorpusConfig":
        if self.stride is not None and self.stride > self.max_items:
            raise ValueError(f"corpus.stride={self.stride} is more than corpus.max_items={self.max_items}: "
                             "items between windows would never be targets")
        return self
    per_category: int = Field(5, ge=1, description="items named per 'items in category X include' statement")
    min_transition_count: int = Field(2, ge=1, description="transitions seen fewer times are not stated")
    partners: int = Field(2, ge=0, description="same-category / same-brand partners sampled per item")
    seed: int = 0


def _shard(docs: list[tuple[str, str]], tok) -> pd.DataFrame:
    """`<bos> text <eos>` token ids per document."""
    texts = [t for _, t in docs]
    enc = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    ids = [[tok.bos_token_id, *e, tok.eos_token_id] for e in enc]
    return pd.DataFrame({"domain": [d for d, _ in docs], "text": texts, "ids": ids})


def _user_shard(seqs: list[tuple[str, list[int], int]], tok) -> pd.DataFrame:
    return pd.DataFrame({"domain": [d for d, _, _ in seqs], "text": "",
                         "ids": [[*ids, tok.eos_token_id] for _, ids, _ in seqs], "first": [f for _, _, f in seqs]})


def run(config: CorpusConfig, run_dir: Path) -> dict:
    tok, sid = load_sid_tokens(run_dir)
    items = pd.read_parquet(run_dir / rundir.ITEMS)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    general_path = run_dir / rundir.GENERAL_TEXT
    general = pd.read_parquet(general_path) if general_path.exists() else None
    rng = np.random.default_rng(config.seed)
    ids = items["item_id"].to_numpy()
    heldout = sorted(rng.choice(ids, size=int(round(config.heldout_items * len(ids))), replace=False).tolist())
    text = HistoryText(sid, tok)
    shards = {
        "token": _shard(token_documents(general, items), tok),
        "item": _shard(item_documents(items, sid.codec, set(heldout), config.per_category, config.seed), tok),
        "relational": _shard(relational_documents(items, inter, sid.codec, config.min_transition_count,
                                                  config.partners, config.seed), tok),
        "user": _user_shard(training_sequences(inter, text, config.max_items, config.stride), tok),
        "user_long": _user_shard(training_sequences(inter, text, config.long_items), tok),
    }
    out = run_dir / "corpus"
    stats: dict = {"layers": {}, "heldout_items": len(heldout), "max_tokens_per_item": text.max_item_tokens,
                   "user_windows": window_stats(inter, config.max_items, config.stride),
                   "user_long_windows": window_stats(inter, config.long_items)}
    for name, df in shards.items():
        write_parquet(df, out / f"{name}.parquet")
        lengths = df["ids"].map(len)
        stats["layers"][name] = {
            "documents": len(df), "tokens": int(lengths.sum()),
            "per_domain": {d or "general": {"documents": int(n), "tokens": int(t)}
                           for d, n, t in zip(*_per_domain(df["domain"], lengths))}}
    write_text(run_dir / rundir.HELDOUT_ITEMS, json.dumps(heldout))
    write_text(out / "config.json", config.model_dump_json(indent=2))
    write_text(out / "stats.json", json.dumps(stats, indent=2))
    return stats


def _per_domain(domains: pd.Series, lengths: pd.Series):
    g = pd.DataFrame({"d": domains, "n": 1, "t": lengths}).groupby("d")[["n", "t"]].sum()
    return g.index.tolist(), g["n"].tolist(), g["t"].tolist()


def load_layer(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / "corpus" / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run the corpus stage first (onereason corpus --name ...)")
    return pd.read_parquet(path)
