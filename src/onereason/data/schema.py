"""The unified schema every loader produces, its validation, and atomic Parquet I/O."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from onereason.rundir import atomic_path

INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "domain", "rating", "split"]
ITEM_COLUMNS = ["item_id", "domain", "title", "description", "categories", "brand"]
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Bad input data. The message names the file, the line (when known) and the field."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, field: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field


@dataclass
class Dataset:
    """One loaded corpus: interactions (with their split) and the item catalog."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None

    def domains(self) -> list[str]:
        return sorted(self.items["domain"].unique())

    def only_domains(self, keep: list[str]) -> "Dataset":
        """The part of a multi-domain dataset in `keep`, with every event's split as it was: a
        single-domain model trained on it sees exactly that domain's share of the multi-domain
        training events, and its test targets are the multi-domain test targets in that domain."""
        unknown = sorted(set(keep) - set(self.domains()))
        if unknown:
            raise DataError("config", f"unknown domain {unknown[0]!r}; the data has {self.domains()}",
                            field="data.domains")
        items = self.items[self.items["domain"].isin(keep)].reset_index(drop=True)
        kept = set(items["item_id"])
        for col in ("complements", "substitutes"):
            if col in items:
                items[col] = items[col].map(lambda xs: [x for x in xs if x in kept])
        inter = self.interactions[self.interactions["domain"].isin(keep)].reset_index(drop=True)
        users = None if self.users is None else \
            self.users[self.users["user_id"].isin(inter["user_id"])].reset_index(drop=True)
        return Dataset(f"{self.name}[{','.join(keep)}]", inter, items, users)


def check_dataset(ds: Dataset, source: str | Path) -> None:
    """Schema invariants that every stage relies on; raise DataError naming the field."""
    for col in INTERACTION_COLUMNS:
        if col not in ds.interactions.columns:
            raise DataError(source, "interactions lack a column", field=col)
    for col in ITEM_COLUMNS:
        if col not in ds.items.columns:
            raise DataError(source, "items lack a column", field=col)
    dup = ds.items["item_id"].duplicated()
    if dup.any():
        raise DataError(source, f"duplicate item id {ds.items['item_id'][dup].iloc[0]!r}", field="item_id")
    unknown = ~ds.interactions["item_id"].isin(ds.items["item_id"])
    if unknown.any():
        raise DataError(
            source, f"{int(unknown.sum())} interactions name items with no catalog entry, "
            f"e.g. {ds.interactions['item_id'][unknown].iloc[0]!r}", field="item_id")
    bad = ~ds.interactions["split"].isin(SPLITS)
    if bad.any():
        raise DataError(source, f"unknown split {ds.interactions['split'][bad].iloc[0]!r}", field="split")


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write to a temporary name beside the target, then rename: never a partial file."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def item_prices(items: pd.DataFrame) -> dict[str, float]:
    """item → price (or bid) for the items that have one: the optional `price` column."""
    if "price" not in items:
        return {}
    priced = items[items["price"].notna()]
    return dict(zip(priced["item_id"], priced["price"].astype(float)))


def save_dataset(ds: Dataset, out_dir: Path) -> None:
    """Write interactions/items(/users).parquet into a run's data directory."""
    write_parquet(ds.interactions, out_dir / "interactions.parquet")
    write_parquet(ds.items, out_dir / "items.parquet")
    if ds.users is not None:
        write_parquet(ds.users, out_dir / "users.parquet")


def read_dataset(data_dir: Path, name: str = "run") -> Dataset:
    """Read what save_dataset wrote."""
    users = data_dir / "users.parquet"
    return Dataset(
        name=name,
        interactions=pd.read_parquet(data_dir / "interactions.parquet"),
        items=pd.read_parquet(data_dir / "items.parquet"),
        users=pd.read_parquet(users) if users.exists() else None,
    )
