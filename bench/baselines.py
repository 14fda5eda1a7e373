"""Baselines trained and evaluated on a run's split, with a small grid tuned on the valid split:
SASRec (`onereason.bench.baselines.sasrec`) and TIGER-style (`onereason.bench.baselines.tiger`, the run's own SIDs and
trie). Prints one table (test split, full ranking, history items not removed) with the grid, the
chosen setting and the training time, and writes runs/<name>/bench/baselines.json.

    python bench/baselines.py --run-dir runs/demo [--only tiger] [--grid-lr 1e-3,3e-3] [--epochs 40]
        [--item-vectors runs/demo/bench/sasrec_vectors.parquet] [--successors]

`--successors` also gives the chosen SASRec the successor memory the generative model's eval gives it (the
weight chosen on valid from `eval.successor_weights`' grid), printed as "sasrec + successors".
`--item-vectors` also writes the chosen SASRec's item embeddings (item_id, vector), the collaborative
vectors `itemic.collab_vectors` reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from onereason.bench.baselines import sasrec, tiger
from onereason.bench.evaluate import EvalConfig
from onereason.itemic.sid import load_sid_tokens

KS = [1, 5, 10, 20]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--only", default="sasrec,tiger")
    ap.add_argument("--grid-lr", default="1e-3,3e-3", help="learning rates tried; the valid split picks one")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--item-vectors", type=Path, help="write the chosen SASRec's item embeddings here (parquet)")
    ap.add_argument("--successors", action="store_true", help="also SASRec + the successor memory")
    a = ap.parse_args()
    successor_weights = EvalConfig().successor_weights if a.successors else None
    inter = pd.read_parquet(a.run_dir / "data" / "interactions.parquet")
    _, sid = load_sid_tokens(a.run_dir)
    lrs = [float(x) for x in a.grid_lr.split(",")]
    out: dict = {}
    for name in a.only.split(","):
        runs = []
        for lr in lrs:
            if name == "sasrec":
                r = sasrec.train_and_evaluate(inter, sasrec.SASRecConfig(lr=lr, epochs=max(a.epochs, 200)), KS,
                                              item_vectors=a.item_vectors is not None,
                                              successor_weights=successor_weights)
            else:
                r = tiger.train_and_evaluate(inter, sid, tiger.TigerConfig(lr=lr, epochs=a.epochs), KS)
            runs.append(r)
            print(f"{name} lr {lr:g}: valid NDCG@10 {r['valid_ndcg@10']:.4f} (epoch {r['best_epoch']}, "
                  f"{r['seconds']:.0f} s)", flush=True)
        best = max(runs, key=lambda r: r["valid_ndcg@10"])
        if name == "sasrec" and a.item_vectors:
            a.item_vectors.parent.mkdir(parents=True, exist_ok=True)
            best.pop("item_vectors").to_parquet(a.item_vectors)  # the other runs are not written out
        out[name] = {"chosen": best, "grid": [{"lr": lr, "valid_ndcg@10": r["valid_ndcg@10"],
                                               "best_epoch": r["best_epoch"], "seconds": r["seconds"]}
                                              for lr, r in zip(lrs, runs)]}
    print("| method | lr (by valid) | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | train s (grid) |")
    print("|---|---|---|---|---|---|---|")
    rows = [(name, o["chosen"]["metrics"], o) for name, o in out.items()]
    if "successors" in out.get("sasrec", {}).get("chosen", {}):
        fused = out["sasrec"]["chosen"]["successors"]
        rows.append((f"sasrec + successors (weight {fused['weight']:g})", fused["metrics"], out["sasrec"]))
    for name, metrics, o in rows:
        m, c = metrics["all"], o["chosen"]["config"]
        print(f"| {name} | {c['lr']:g} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} | "
              f"{m['ndcg@20']:.4f} | {sum(g['seconds'] for g in o['grid']):.0f} |")
    (a.run_dir / "bench").mkdir(exist_ok=True)
    (a.run_dir / "bench" / "baselines.json").write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
