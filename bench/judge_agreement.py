"""R1: agreement of the grounded judge with the complement / substitute lists a dataset ships.

The judge runs with the lists hidden (`use_lists=False`), so it decides from co-occurrence,
categories, interests and text similarity alone. Pairs: N listed complements, N listed
substitutes, N random same-domain pairs on neither list (1:1:1, so precision depends on this mix).

    python bench/judge_agreement.py --run runs/demo-office --domain office --pairs 1000

The run needs data/ and itemic/ (e.g. `onereason run --dataset amazon-office-2014` up to itemic,
or any run that includes amazon-office-2014).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from onereason.corpus.relational_layer import transition_counts
from onereason.reasoning.interests import learn_interests
from onereason.reasoning.judge import RELATIONS, GroundedJudge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--domain", default="office")
    ap.add_argument("--pairs", type=int, default=1000, help="pairs per class")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    items = pd.read_parquet(args.run / "data" / "items.parquet")
    inter = pd.read_parquet(args.run / "data" / "interactions.parquet")
    emb = np.load(args.run / "itemic" / "embeddings.npy")
    interests = learn_interests(items, emb)
    judge = GroundedJudge(items, emb, transition_counts(inter), interests, use_lists=False)
    dom = items[items["domain"] == args.domain]
    known = set(dom["item_id"])
    truth: dict[tuple[str, str], set[str]] = {}
    for col, label in (("complements", "complement"), ("substitutes", "substitute")):
        for a, bs in zip(dom["item_id"], dom[col]):
            for b in bs:
                if b in known and a != b:
                    truth.setdefault(tuple(sorted((a, b))), set()).add(label)
    by_label = {lab: [p for p, ls in truth.items() if lab in ls] for lab in ("complement", "substitute")}
    pairs = []
    for lab, ps in by_label.items():
        pairs += [ps[i] for i in rng.permutation(len(ps))[:args.pairs]]
    ids = dom["item_id"].to_numpy()
    while len(pairs) < 3 * args.pairs:
        p = tuple(sorted(rng.choice(ids, 2, replace=False)))
        if p not in truth:
            truth[p] = {"none"}
            pairs.append(p)
    pred = judge.judge(pairs)
    confusion = Counter((",".join(sorted(truth[p])), r.label) for p, r in zip(pairs, pred))
    out = {"pairs": len(pairs), "listed": {k: len(v) for k, v in by_label.items()}}
    for lab in ("complement", "substitute"):
        hit = sum(r.label == lab and lab in truth[p] for p, r in zip(pairs, pred))
        n_pred = sum(r.label == lab for r in pred)
        n_true = sum(lab in truth[p] for p in pairs)
        out[lab] = {"precision": hit / n_pred if n_pred else None, "recall": hit / n_true, "predicted": n_pred,
                    "listed_in_sample": n_true}
    related = sum(r.label != "unrelated" and "none" not in truth[p] for p, r in zip(pairs, pred))
    out["any_relation_recall"] = related / sum("none" not in truth[p] for p in pairs)
    out["random_pairs_called_unrelated"] = (sum(r.label == "unrelated" and "none" in truth[p]
                                                for p, r in zip(pairs, pred)) / args.pairs)
    out["confusion"] = {f"{t} -> {l}": n for (t, l), n in sorted(confusion.items())}
    print(json.dumps(out, indent=2))
    labels = sorted({t for t, _ in confusion})
    print("\n| listed \\ judged | " + " | ".join(RELATIONS) + " |")
    print("|---" * (len(RELATIONS) + 1) + "|")
    for t in labels:
        print(f"| {t} | " + " | ".join(str(confusion.get((t, l), 0)) for l in RELATIONS) + " |")


if __name__ == "__main__":
    main()
