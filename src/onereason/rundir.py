"""Files in a run directory are written whole or not at all.

Every file the pipeline writes goes through `atomic_path`: a temporary name beside the target, renamed
onto it only when the write finished, so a killed stage leaves the previous file (or none), never half of
one, and a reader never sees a partial file.
"""

from __future__ import annotations

import json
import os
import shutil
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


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """`atomic_path` for a folder (a model, a tokenizer): written under a temporary name, then renamed over
    the old one, which is removed; an error leaves the old folder as it was."""
    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: Path, dpi: int = 100, rect: tuple[float, ...] | None = None) -> None:
    """A matplotlib figure laid out (inside `rect`, e.g. below a suptitle), written whole, and closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)



# The layout of runs/<name>/ for the files several stages share, spelled here only: `run_dir / INTERACTIONS`.
RUN_CONFIG = Path("config.json")  # the RunConfig; its corpus.max_items sizes every prompt (`prompt_items`)
INTERACTIONS = Path("data/interactions.parquet")
ITEMS = Path("data/items.parquet")
GENERAL_TEXT = Path("data/general_text.parquet")
EMBEDDINGS = Path("itemic/embeddings.npy")  # what the SIDs were clustered from
HELDOUT_ITEMS = Path("corpus/heldout_items.json")  # items whose SID ↔ title statements the Item layer leaves out
INTERESTS = Path("reasoning/interests.json")
PERSONAS = Path("reasoning/personas.json")
SFT_DATA = Path("reasoning/sft.parquet")
MODEL = Path("model")  # the pre-trained model (what `eval` and `sft` start from)
SFT = Path("sft")
SFT_MODEL = SFT / "model"
RL = Path("rl/grpo")
RL_MODEL = RL / "model"
REPORT = Path("report")  # the bench's results.json, report.md/html, plots and cached parts
SERVE_VALUE = Path("serve/value.json")  # bench/serve_value.py's replay of the test split (the report shows it)


def prompt_items(run_dir: Path) -> int:
    """History items in every prompt and training window of a run: `corpus.max_items` in the run's saved
    config (declared there only), so no stage asks the model about more history than training showed it."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; a run's prompts hold its corpus.max_items items "
                                f"(make the run with `onereason run`)")
    return int(json.loads(path.read_text())["corpus"]["max_items"])
