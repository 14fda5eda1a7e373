"""General English text for the Token layer and the tokenizer: the shipped State of the Union
addresses (public domain, see datasets/README.md) or any .jsonl / .txt file of your own.

Every tenth document is held out: the stage report measures perplexity on it, and it never
enters training text or tokenizer training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from onereason.data.registry import default_data_dir
from onereason.data.schema import DataError

SHIPPED_TEXT = {"sotu": Path("sotu") / "sotu.jsonl"}
HELDOUT_EVERY = 10


def resolve_text(name_or_path: str) -> Path:
    """A shipped corpus name ('sotu') or a path."""
    if name_or_path in SHIPPED_TEXT:
        return default_data_dir() / SHIPPED_TEXT[name_or_path]
    return Path(name_or_path)


def load_general_text(name_or_path: str) -> pd.DataFrame:
    """Documents (doc, text, split ∈ {train, heldout}). A .jsonl file has one object with a
    `text` field per line; any other file is plain text with blank lines between documents."""
    path = resolve_text(name_or_path)
    if not path.is_file():
        raise DataError(path, f"general text not found (data.general_text={name_or_path!r})", field="general_text")
    docs: list[str] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(path, "expected a JSON object with a 'text' field", line=lineno, field="text") from None
            if not isinstance(text, str):
                raise DataError(path, "'text' is not a string", line=lineno, field="text")
            docs.append(text.strip())
    else:
        docs = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n")]
    docs = [d for d in docs if d]
    if len(docs) < 2:
        raise DataError(path, f"{len(docs)} non-empty documents; need at least 2 (one is held out)")
    split = ["heldout" if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 or (i == 1 and len(docs) < HELDOUT_EVERY)
             else "train" for i in range(len(docs))]
    return pd.DataFrame({"doc": range(len(docs)), "text": docs, "split": split})
