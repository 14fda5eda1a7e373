"""The datasets onereason knows by name, and loading several of them as one multi-domain corpus."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from onereason.data import loaders
from onereason.data.schema import DataError, Dataset, check_dataset

# The repository ships three datasets in datasets/ (see datasets/README.md for provenance).
REPO_DATA_DIR = Path(__file__).resolve().parents[3] / "datasets"


@dataclass(frozen=True)
class Shipped:
    folder: str
    domain: str
    load: Callable[[Path, str, str], Dataset]
    shipped: bool = True


SHIPPED: dict[str, Shipped] = {
    "amazon-scientific": Shipped("amazon-scientific", "scientific",
                                 lambda p, d, n: loaders.load_recbole_sequences(p, "Scientific", d, n)),
    "amazon-office-2014": Shipped("amazon-office-2014", "office", lambda p, d, n: loaders.load_lrd(p, d, n)),
    "ml-100k": Shipped("ml-100k", "movies", lambda p, d, n: loaders.load_recbole_atomic(p, "ml-100k", d, n)),
    # Not shipped (5 MB, 50k users): pass --data-dir pointing at a folder that holds games-6k/.
    "games-6k": Shipped("games-6k", "games", lambda p, d, n: loaders.load_recbole_sequences(p, "Games-6k", d, n),
                        shipped=False),
}


def default_data_dir() -> Path:
    return Path(os.environ.get("ONEREASON_DATA_DIR", REPO_DATA_DIR))


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    """Load one dataset by its registered name from `data_dir` (default: the shipped copies)."""
    if name not in SHIPPED:
        raise DataError("dataset", f"unknown dataset {name!r}; known: {sorted(SHIPPED)}", field="datasets")
    spec = SHIPPED[name]
    root = Path(data_dir or default_data_dir()) / spec.folder
    if not root.is_dir():
        hint = "" if spec.shipped else " (games-6k is not shipped: pass --data-dir to a folder holding games-6k/)"
        raise DataError(root, f"dataset folder not found{hint}")
    return spec.load(root, spec.domain, name)


def combine(parts: list[Dataset]) -> Dataset:
    """Several datasets as one multi-domain corpus. IDs are prefixed with the domain
    (`office/B000...`) so that users and items of different datasets never collide."""
    if len(parts) == 1:
        return parts[0]
    inters, items, users = [], [], []
    for ds in parts:
        dom = ds.domains()[0]
        inters.append(ds.interactions.assign(user_id=dom + "/" + ds.interactions["user_id"],
                                             item_id=dom + "/" + ds.interactions["item_id"]))
        extra = {c: ds.items[c].map(lambda xs, d=dom: [f"{d}/{x}" for x in xs])
                 for c in ("complements", "substitutes") if c in ds.items}
        items.append(ds.items.assign(item_id=dom + "/" + ds.items["item_id"], **extra))
        if ds.users is not None:
            users.append(ds.users.assign(user_id=dom + "/" + ds.users["user_id"].astype(str), domain=dom))
    merged = Dataset(name="+".join(p.name for p in parts),
                     interactions=pd.concat(inters, ignore_index=True),
                     items=pd.concat(items, ignore_index=True),
                     users=pd.concat(users, ignore_index=True) if users else None)
    for col in ("complements", "substitutes"):
        if col in merged.items:
            merged.items[col] = merged.items[col].map(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    check_dataset(merged, merged.name)
    return merged


def load_datasets(names: list[str], data_dir: Path | None = None) -> Dataset:
    """Load one or several registered datasets; several become one multi-domain corpus."""
    if not names:
        raise DataError("config", "no dataset named", field="datasets")
    return combine([load_dataset(n, data_dir) for n in names])
