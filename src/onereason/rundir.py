"""Files in a run directory are written whole or not at all.

Every file the pipeline writes goes through `atomic_path`: a temporary name beside the target, renamed
onto it only when the write finished, so a killed stage leaves the previous file (or none), never half of
one, and a reader never sees a partial file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s content to (same folder, same suffix); moved onto `path` when
    the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)



# The layout of runs/<name>/ for the files several stages share: each path is spelled here only.
def interactions(run_dir: Path) -> Path:
    return Path(run_dir) / "data" / "interactions.parquet"


def items(run_dir: Path) -> Path:
    return Path(run_dir) / "data" / "items.parquet"


def general_text(run_dir: Path) -> Path:
    return Path(run_dir) / "data" / "general_text.parquet"


def embeddings(run_dir: Path) -> Path:
    """What the SIDs were clustered from (itemic)."""
    return Path(run_dir) / "itemic" / "embeddings.npy"


def heldout_items(run_dir: Path) -> Path:
    """Items whose SID ↔ title statements were held out of the Item layer (corpus)."""
    return Path(run_dir) / "corpus" / "heldout_items.json"


def interests(run_dir: Path) -> Path:
    return Path(run_dir) / "reasoning" / "interests.json"


def personas(run_dir: Path) -> Path:
    return Path(run_dir) / "reasoning" / "personas.json"


def sft_data(run_dir: Path) -> Path:
    return Path(run_dir) / "reasoning" / "sft.parquet"
