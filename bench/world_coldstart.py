"""Cross-domain cold start on the synthetic world, with the generator's oracle as the ceiling.

Reads a run made on a world (`{"data": {"datasets": [], "world": {...}}}`, through `sft-eval`),
regenerates the world's truth from the run's config (deterministic by seed), and splits the
evaluated test users by how much history they have in the target item's domain: none (cold),
1-2 events, 3 or more. Recall@10 per group for every method of `sft/recommendations.jsonl`,
and for the oracle: rank the target domain's items by P(topic | the user's last latent topic)
under the true persona's transition matrix × the item's popularity inside its interest.

    python bench/world_coldstart.py --run runs/world
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from onereason.bench.metrics import evaluate_lists
from onereason.data.world import run_truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    _, ds, truth, params = run_truth(args.run)
    inter = ds.interactions.reset_index(drop=True)
    events = truth["events"].reset_index(drop=True)
    inter["topic"] = events["topic"]
    recs = [json.loads(l) for l in (args.run / "sft" / "recommendations.jsonl").read_text().splitlines()]
    items = truth["items"].set_index("item_id")
    topics = params["topics"]
    persona = truth["personas"].set_index("user_id")["persona"]
    history = inter[inter["split"] != "test"].sort_values(["user_id", "timestamp"], kind="stable")
    last_topic = history.groupby("user_id")["topic"].last()
    per_domain = history.groupby(["user_id", "domain"]).size()
    groups, oracle = [], []
    for r in recs:
        u, target = r["user_id"], r["target"][0]
        dom = items.at[target, "domain"]
        n = int(per_domain.get((u, dom), 0))
        groups.append("cold: 0 events in the target domain" if n == 0 else "1-2 events" if n <= 2 else "3+ events")
        row = np.array(params["personas"][persona[u]]["M"])[topics.index(last_topic[u])]
        cand = items.index[items["domain"] == dom]
        score = row[[topics.index(t) for t in items.loc[cand, "topic"]]] * items.loc[cand, "popularity"].to_numpy()
        oracle.append(list(cand[np.argsort(-score)[:args.k]]))
    truths = [r["target"] for r in recs]
    methods = {m: [r["items"][m] for r in recs] for m in recs[0]["items"]}
    methods["oracle (true persona, topic chain, popularity)"] = oracle
    names = ["all", *sorted(set(groups))]
    print(f"Recall@{args.k}, test users of {args.run}\n")
    for m, lists in methods.items():
        res = evaluate_lists(lists, truths, [args.k], groups)
        if m == next(iter(methods)):
            print("| method | " + " | ".join(f"{g} ({res[g]['n']})" for g in names) + " |")
            print("|---" * (len(names) + 1) + "|")
        print(f"| {m} | " + " | ".join(f"{res[g][f'recall@{args.k}']:.4f}" for g in names) + " |")


if __name__ == "__main__":
    main()
