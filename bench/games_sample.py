"""A dataset the defaults were never tuned on, fed through the generic CSV loader (issue 23): the
`--items` most interacted items of ../shared/data/games-6k (Amazon 2018 Video Games, UniSRec processing),
each user's sequence kept to those items, and a seeded sample of the users with at least 5 left (a sample of
all 16,859 items would leave 3.6 events per item). Written as `interactions.csv` (user_id, item_id,
timestamp = position in the user's sequence) and `items.csv`.

    python bench/games_sample.py --users 5000 --items 3000 --out runs/exp/games5k
    onereason run --config runs/exp/games.json --name games-d --until eval   # games.json names those files

Each test row of games-6k holds a user's whole sequence (history + last item), so the loader's temporal
leave-one-out gives its last two items as test and valid targets (after the item filter).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def sample(src: Path, users: int, n_items: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sequences kept to the `n_items` most frequent items; `users` of those with ≥ 5 events left, drawn
    without replacement; one row per event; the items they touch."""
    test = pd.read_csv(src / "Games-6k.test.inter", sep="\t", dtype=str)
    test.columns = [c.split(":")[0] for c in test.columns]
    seqs = [h.split() + [t] for h, t in zip(test["item_id_list"], test["item_id"])]
    top = set(pd.Series([i for s in seqs for i in s]).value_counts().index[:n_items])
    kept = [(u, [i for i in s if i in top]) for u, s in zip(test["user_id"], seqs)]
    kept = [(u, s) for u, s in kept if len(s) >= 5]
    pick = np.random.default_rng(seed).choice(len(kept), size=min(users, len(kept)), replace=False)
    rows = [(kept[k][0], item, t) for k in sorted(pick) for t, item in enumerate(kept[k][1])]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.read_csv(src / "Games-6k.item", sep="\t", dtype=str, quoting=3)
    items.columns = [c.split(":")[0] for c in items.columns]
    items = items[items["item_id"].isin(set(inter["item_id"]))]
    return inter, items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/games-6k")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    inter, items = sample(a.src, a.users, a.items, a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    inter.to_csv(a.out / "interactions.csv", index=False)
    items.to_csv(a.out / "items.csv", index=False)
    per_user = inter.groupby("user_id").size()
    print(f"{inter['user_id'].nunique():,} users, {len(items):,} items, {len(inter):,} events; "
          f"sequence length median {int(np.median(per_user))}, max {per_user.max()} → {a.out}")


if __name__ == "__main__":
    main()
