"""Cross-domain cold start on the synthetic world, with the generator's oracle as the ceiling.

Reads a run made on a world (`{"data": {"datasets": [], "world": {...}}}`, through `sft-eval`),
regenerates the world's truth from the run's config (deterministic by seed), and splits the
evaluated test users by how much history they have in the target item's domain: none (cold),
1-2 events, 3 or more. Recall@10 / NDCG@10 per group for every method of
`sft/recommendations.jsonl` (or of any per-user lists file of that layout, e.g. bench/latent_modes.py's), and
for the oracle (onereason.bench.world).

    python bench/world_coldstart.py --run runs/world [--recs runs/world/lat_rl_test_lists.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onereason.bench.world import WorldTruth, group_metrics, recall_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--recs", type=Path, help="per-user lists (user_id, target, items per method); default "
                    "RUN/sft/recommendations.jsonl")
    args = ap.parse_args()
    world = WorldTruth(args.run)
    recs = [json.loads(l) for l in (args.recs or args.run / "sft" / "recommendations.jsonl").read_text().splitlines()]
    truths = [r["target"] for r in recs]
    groups = [world.group(r["user_id"], r["target"][0]) for r in recs]
    methods = {m: [r["items"][m] for r in recs] for m in recs[0]["items"]}
    methods["oracle (true persona, topic chain, popularity)"] = [
        world.oracle(r["user_id"], world.domain_of(r["target"][0]), args.k) for r in recs]
    print(f"Recall@{args.k} / NDCG@{args.k}, test users of {args.run}\n")
    print(recall_table(group_metrics(methods, truths, groups, args.k), args.k))


if __name__ == "__main__":
    main()
