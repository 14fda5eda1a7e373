"""Shared fixtures: a tiny but real run (a dense slice of MovieLens-100K through the generic
loader, real MiniLM embeddings, a tiny Qwen3 trained for a few epochs), built once per session;
a real redis-server on loopback for the Redis store (`make test` setup installs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"


@pytest.fixture(scope="session")
def ml_slice(tmp_path_factory) -> tuple[Path, Path]:
    """MovieLens-100K cut to the 120 most-rated movies and 80 users, written as CSV files."""
    root = DATASETS / "ml-100k"
    inter = pd.read_csv(root / "ml-100k.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    items = pd.read_csv(root / "ml-100k.item", sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    top = inter["item_id"].value_counts().index[:120]
    inter = inter[inter["item_id"].isin(top)]
    users = inter["user_id"].value_counts().index[:80]
    inter = inter[inter["user_id"].isin(users)]
    items = items[items["item_id"].isin(top)]
    items = items.assign(genres=items["class"].str.replace(" ", "|"))
    out = tmp_path_factory.mktemp("ml_slice")
    inter.rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(out / "ratings.csv", index=False)
    items.rename(columns={"item_id": "movieId", "movie_title": "title"}).to_csv(out / "movies.csv", index=False)
    return out / "ratings.csv", out / "movies.csv"


def tiny_config(ratings: Path, movies: Path):
    from onereason.pipeline import DataConfig, GenericSource, RunConfig

    cfg = RunConfig(data=DataConfig(datasets=[], generic=[GenericSource(
        interactions=ratings, items=movies, domain="movies",
        columns={"user_id": "userId", "item_id": "movieId", "categories": "genres"})]))
    cfg.itemic.levels, cfg.itemic.codebook_size, cfg.itemic.vocab_size = 2, 16, 400
    cfg.next_item.model = "tiny"
    cfg.next_item.loop.epochs, cfg.next_item.loop.lr, cfg.next_item.loop.batch_tokens = 6, 1e-2, 2048
    cfg.next_item.loop.checkpoint_every = 20
    cfg.corpus.max_items, cfg.corpus.long_items = 20, 40  # and so every prompt holds 20 items
    p = cfg.pretrain
    p.model, p.checkpoint_every = "tiny", 5
    for stage, tokens in (("text", 16_000), ("warmup", 8_000), ("full", 24_000), ("long", 8_000)):
        s = getattr(p, stage)
        s.tokens, s.lr, s.context, s.batch_tokens = tokens, 1e-2, 256 if stage == "long" else 128, 1024
    p.full.user_epochs, p.full.selections, p.report.select_users = None, 2, 20  # tokens, and early stopping at 2 points
    p.report.r0_items, p.report.users, p.report.beams, p.report.ppl_context = 16, 40, 10, 128
    cfg.eval.decoding.beams, cfg.eval.batch_size = 10, 16
    d = cfg.sft.data
    d.r0_samples, d.r1_samples, d.r2_samples, d.r3_cuts_per_user = 100, 100, 100, 3
    d.r0_interest_samples = 40
    cfg.sft.loop.epochs, cfg.sft.loop.batch_tokens, cfg.sft.loop.checkpoint_every = 1, 4096, 20
    e = cfg.sft_eval
    e.sample.max_users, e.decoding.beams, e.decoding.trace_tokens = 24, 10, 96
    e.hypotheses, e.batch_size = [1, 3], 16
    r = cfg.rl
    r.steps, r.prompts_per_step, r.group = 2, 4, 2
    r.decoding.beams, r.decoding.trace_tokens = 4, 32
    r.policy.micro_batch = 4
    v = cfg.rl_eval
    v.sample.max_users, v.batch_size = 12, 16
    v.decoding = {"beams": 8, "ks": [4, 8], "trace_tokens": 32}
    cfg.bench = cfg.bench.model_validate(TINY_BENCH)
    return cfg.model_validate(cfg.model_dump())  # the whole run checked, as a config file would be


TINY_BENCH = dict(sample={"max_users": 12}, decoding={"beams": 10, "ks": [1, 4, 5, 10], "trace_tokens": 32},
                  batch_size=16, per_hypothesis=True,
                  sasrec={"hidden": 16, "epochs": 4, "batch_size": 32}, sasrec_lr=[1e-2],
                  tiger={"d_model": 32, "layers": 1, "heads": 2, "d_kv": 16, "d_ff": 64, "epochs": 2, "batch_size": 32,
                         "beams": 5, "eval_users": 20}, tiger_lr=[1e-2],
                  lcrec_lr=[1e-2], lcrec_epochs=0.3, r0_items=8, r1_pairs=6, ppl_context=128)


@pytest.fixture(scope="session")
def tiny_run(ml_slice, tmp_path_factory) -> tuple[Path, dict]:
    """The whole pipeline on the slice: (run dir, summary)."""
    from onereason import pipeline

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    summary = pipeline.run(tiny_config(*ml_slice), run_dir, progress=False, log=lambda *_: None)
    return run_dir, summary


@pytest.fixture(scope="session")
def latent_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run before SFT, SFT'd with 2 latent steps (a third of an epoch)."""
    from onereason.pipeline import RunConfig
    from onereason.train import sft

    run_dir = tmp_path_factory.mktemp("runs") / "latent"
    shutil.copytree(tiny_run[0], run_dir, ignore=shutil.ignore_patterns("sft", "rl", "report", "bench", "eval"))
    cfg = RunConfig.model_validate(json.loads((run_dir / "config.json").read_text())).sft
    cfg = cfg.model_copy(update={"latent_steps": 2, "loop": cfg.loop.model_copy(update={"epochs": 0.3})})
    sft.run(cfg, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make test installs it from Debian's packages)")
    import redis

    from onereason.serve.smoke import free_port

    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path_factory.mktemp("redis"))], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)
