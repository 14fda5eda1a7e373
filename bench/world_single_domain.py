"""Cross-domain vs single-domain on the synthetic world, by how much history a user has in the domain.

On the test users whose target lies in one domain D: the multi-domain run's models (pre-trained,
SFT non-thinking, SFT thinking) read the user's whole cross-domain history; a single-domain
model (a run on the same world with `"data": {"domains": [D]}`, trained on exactly D's share of
the same training events, at the same token budget) reads only the user's D events, so for a
cold-start user it has only its history-free prompt. MostPopular in D and the generator's oracle
(onereason.bench.world) bracket them. Recall@k / NDCG@k per group, full ranking over D's items.

    python bench/world_single_domain.py --run runs/world1 --single runs/world1-video [--users 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from transformers import AutoModelForCausalLM

from onereason.bench.baselines.popular import most_popular
from onereason.bench.lists import chat_lists, recommend_next
from onereason.bench.world import WorldTruth, group_metrics, recall_table
from onereason.corpus.user_layer import EvalPrompts, eval_prompts
from onereason.itemic.sid import load_sid_tokens
from onereason.protocol import Decoding


def model_lists(run_dir: Path, p: EvalPrompts, domain: str, args, think: bool) -> dict[str, list[list[str]]]:
    """The run's pre-trained model, SFT non-thinking and (if `think`) SFT thinking on the prompts."""
    tok, sid = load_sid_tokens(run_dir)
    pre = AutoModelForCausalLM.from_pretrained(str(run_dir / "model"))
    out = {"pre-trained": [r.items for r in recommend_next(pre, tok, sid, p, args.beams, progress=True)[0]]}
    if not (run_dir / "sft" / "model").exists():
        return out
    sft = AutoModelForCausalLM.from_pretrained(str(run_dir / "sft" / "model"))
    for thinking in (False, True) if think else (False,):
        name = f"SFT thinking n={args.n}" if thinking else "SFT non-thinking"
        out[name] = chat_lists(sft, p, [domain] * len(p.users), sid, tok, thinking,
                               Decoding(beams=args.beams, temperature=args.temperature), args.n, 32, progress=True)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="the multi-domain world run")
    ap.add_argument("--single", type=Path, required=True, help="a run of the same world with data.domains = [D]")
    ap.add_argument("--users", type=int, default=None, help="a seeded sample of D's test users (default: all)")
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n", type=int, default=1, help="interest hypotheses of the thinking run")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--max-items", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None, help="write the per-group metrics as JSON")
    args = ap.parse_args()
    main_data, single_data = (json.loads((r / "config.json").read_text())["data"] for r in (args.run, args.single))
    if main_data.get("world") != single_data.get("world") or len(single_data.get("domains") or []) != 1:
        raise SystemExit(f"{args.single}/config.json: needs the same data.world as {args.run} and data.domains "
                         "naming one domain")
    domain = single_data["domains"][0]
    world = WorldTruth(args.run)
    inter = pd.read_parquet(args.run / "data" / "interactions.parquet")
    p = eval_prompts(inter, "test", args.max_items)
    p = p.subset([i for i, t in enumerate(p.truths) if world.domain_of(t[0]) == domain])
    if args.users and args.users < len(p.users):
        p = p.subset(sorted(pd.Series(range(len(p.users))).sample(args.users, random_state=0)))
    groups = [world.group(u, t[0]) for u, t in zip(p.users, p.truths)]
    t0 = time.perf_counter()
    methods = {f"multi-domain {m}": v for m, v in model_lists(args.run, p, domain, args, think=True).items()}
    in_domain = [[e for e in h if world.domain_of(e.item) == domain] for h in p.histories]
    single = EvalPrompts(p.users, in_domain, p.truths)
    methods |= {f"single-domain {m}": v for m, v in model_lists(args.single, single, domain, args, False).items()}
    methods[f"MostPopular ({domain})"] = [most_popular(inter, args.k)[domain]] * len(p.users)
    methods["oracle (true persona, topic chain, popularity)"] = [world.oracle(u, domain, args.k) for u in p.users]
    print(f"\nRecall@{args.k} / NDCG@{args.k} on {len(p.users)} test users of {args.run} with a target in "
          f"{domain!r}, beam {args.beams}, {time.perf_counter() - t0:.0f} s\n")
    results = group_metrics(methods, p.truths, groups, args.k)
    print(recall_table(results, args.k))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
