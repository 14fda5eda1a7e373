"""Fast-slow serving quality on the test split, in-process (no HTTP): Recall@10 / NDCG@10 of

- fast without reasoning (non-thinking beam search),
- fast with a cached trace that is one event stale (the slow path reasoned before the user's
  latest interaction; the fast path sees the latest history),
- slow (a trace sampled on the request path from the latest history, then the beam),
- fast+cache race (the two fast variants merged by reciprocal rank, `race_lists`),

and intervention compliance: with "favour interest Y" (Y drawn at random per user among the
domain's interests with at least 2k items), the share of returned items in Y with the trace
edited only (a cached trace, or a grounded one when none is cached), and with the trie enforcing it.

    python bench/serve_quality.py --run-dir runs/sft1 --model rl/think-d/model --users 500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from onereason.bench.lists import favoured_interests, race_lists, sample_prompts
from onereason.metrics import evaluate_lists
from onereason.protocol import Decoding
from onereason.serve.engine import Constraint, Engine, ServeConfig


def batched(fn, n: int, size: int = 32) -> list:
    out = []
    for s in range(0, n, size):
        out += fn(slice(s, min(s + size, n)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    engine = Engine(a.run_dir, ServeConfig(model=a.model, decoding=Decoding(beams=a.k)))
    inter = pd.read_parquet(a.run_dir / "data" / "interactions.parquet")
    p = sample_prompts(inter, "test", engine.max_items, a.users, a.seed)
    keep = [j for j, h in enumerate(p.histories) if len(h) >= 2]  # a stale trace needs an earlier history
    hs, truths = [p.histories[j] for j in keep], [p.truths[j] for j in keep]
    doms = [engine.domain_of(t[0]) for t in truths]
    n, k = len(hs), a.k
    t0 = time.perf_counter()
    fresh = batched(lambda s: engine.think(hs[s], doms[s], a.seed), n)
    t_think = time.perf_counter() - t0
    stale = batched(lambda s: engine.think([h[:-1] for h in hs[s]], doms[s], a.seed), n)

    def rank(traces, constraints=None):
        return [r.items for r in batched(lambda s: engine.rank(hs[s], doms[s], traces[s], k,
                                                               constraints[s] if constraints else None), n)]

    t0 = time.perf_counter()
    lists = {"fast, no reasoning": rank([None] * n)}
    t_fast = time.perf_counter() - t0
    lists["fast + cached trace (1 event stale)"] = rank(stale)
    lists["slow (trace on the request path)"] = rank(fresh)
    lists["fast race: no reasoning + cached trace"] = race_lists(lists["fast, no reasoning"],
                                                                 lists["fast + cached trace (1 event stale)"], k)
    metrics = {m: evaluate_lists(v, truths, [k], doms)["all"] for m, v in lists.items()}

    # intervention: favour one interest of the domain, drawn per user among those with >= 2k items
    fav = favoured_interests(engine.interests, engine.sid.codec.item_ids, doms, k, a.seed)

    def favoured_share(got: list[list[str]]) -> float:
        return float(np.mean([np.mean([engine.interests.of[i] == f for i in g]) if g else 0.0
                              for g, f in zip(got, fav)]))

    share = {"no intervention (base rate)": favoured_share(lists["fast, no reasoning"])}
    for name, trace_src, enforce in (("trace edited (cached trace)", stale, False),
                                     ("trace edited (grounded trace, no cache)", [None] * n, False),
                                     ("trace edited + trie", stale, True)):
        cons = [Constraint(favour=[f], enforce=enforce) for f in fav]
        traces = [engine.edit_trace(t if t is not None else engine.grounded_trace(h, d), d, c)[0]
                  for t, h, d, c in zip(trace_src, hs, doms, cons)]
        share[name] = favoured_share(rank(traces, cons))
    out = {"run": str(a.run_dir), "model": engine.model_name, "users": n, "k": k,
           f"recall@{k}/ndcg@{k}": {m: [round(v[f"recall@{k}"], 4), round(v[f"ndcg@{k}"], 4)] for m, v in metrics.items()},
           "favoured_interest_share": {m: round(v, 3) for m, v in share.items()},
           "seconds": {"think_all": round(t_think, 1), "fast_rank_all": round(t_fast, 1)}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
