"""Revenue against relevance on a synthetic-world run (issue 27): every method of an eval's per-user lists.

    python bench/world_value.py --run runs/world --recs rl/eval_recommendations.jsonl --reference "SFT non-thinking"
    python bench/world_value.py --run runs/world --recs rl/eval_recommendations.jsonl serve/value_recommendations.jsonl \
        --out report/value

Several --recs files are joined by user (the users all of them scored; a user's target must agree), so
offline modes and served ones are paired on the same users.

For each method: Recall@k, expected revenue@k (Σ P(the user converts) × price or bid, from the world's truth),
hit value and sponsored (ad) share; each method minus the reference per user with a paired 95% interval.
Writes <recs stem>_value.json and _value.png (expected revenue against recall) beside the first lists, or
<out>.json and <out>.png (--out: a path stem relative to the run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onereason.bench.world import WorldTruth, join_rows, plot_value, value_report, value_table
from onereason.rundir import write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--recs", nargs="+", default=["rl/eval_recommendations.jsonl"],
                    help="per-user lists, relative to the run; several are joined by user")
    ap.add_argument("--out", default=None, help="output path stem relative to the run (default: beside the first)")
    ap.add_argument("--reference", default="SFT non-thinking")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    rows = join_rows([[json.loads(x) for x in (args.run / r).read_text().splitlines()] for r in args.recs], args.recs)
    report = value_report(WorldTruth(args.run), rows, args.reference, args.k)
    path = args.run / args.recs[0]
    stem = args.run / args.out if args.out else path.with_name(
        (path.stem.removesuffix("_recommendations").removesuffix("recommendations") or "eval") + "_value")
    write_text(stem.with_name(stem.name + ".json"), json.dumps(report, indent=2))
    plot_value(report, stem.with_name(stem.name + ".png"))
    print("\n".join(value_table(report)))


if __name__ == "__main__":
    main()
