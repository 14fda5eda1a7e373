"""R2 as a choice on one chat model, without the rest of the bench (issue 24).

    python bench/r2_choice.py RUN --model sft/model --max-users 1000 --n 3 [--lists runs/RUN/hyp_sampled_lists.jsonl]

For a seeded sample of valid users (the history before their valid item), every interest of the valid
item's domain is scored by the model as the R2 answer's first entry (`bench.r0_r2.interest_choice`); prints
top-1 accuracy, recall@n and the probability of the true interest against the last item's interest and the
most frequent interest, with the paired bootstrap interval of the model minus each rule; with --against
OTHER_RUN:MODEL also minus another model's choice on the same users (e.g. interest tokens against names).
Two more predictors that need no R2 answer are scored beside them: the grounded teacher's ranking
(recency-weighted history counts plus the last interest's transition row), and with --lists LISTS.jsonl
(`bench/hypothesis_beams.py`'s per-user lists of the same users) the recommender's own list read as an R2
answer, interests ranked by the summed 1/rank of their items in its top 20: does anything the project has
predict the next interest better than the rules? Writes runs/RUN/<out>.json.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from onereason import rundir
from onereason.bench.lists import sample_prompts
from onereason.bench.r0_r2 import interest_choice
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import paired_bootstrap
from onereason.model.backbone import load_model
from onereason.reasoning.interests import Interests
from onereason.reasoning.sft_data import load_teacher

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("--model", default="sft/model")
ap.add_argument("--max-users", type=int, default=1000)
ap.add_argument("--n", type=int, default=3, help="interests the R2 question asks for (recall@n)")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--against", help="OTHER_RUN:MODEL, another model's scored choice on the same users")
ap.add_argument("--lists", type=Path, help="per-user lists (user_id, items: {mode: [...]}) of the same users")
ap.add_argument("--list-mode", default="non-thinking")
ap.add_argument("--out", default="r2_choice")
a = ap.parse_args()


def choice(run: str, model_dir: str) -> dict:
    run_dir = Path("runs") / run
    tok, sid = load_sid_tokens(run_dir)
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", rundir.prompt_items(run_dir),
                       a.max_users, a.seed)
    return interest_choice(load_model(run_dir / model_dir).eval(), tok, sid, Interests.load(run_dir / rundir.INTERESTS),
                           p, a.n, 16, per_user=True) | {"prompts": p, "sid": sid}


def other_predictors(p, sid, teacher) -> dict[str, list[list[int]]]:
    """Interest rankings per user that need no R2 answer: the teacher's, and the recommender list's."""
    of = teacher.interests
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    out = {"teacher's ranking": [[i for i in teacher.ranked_interests(h) if of.domain[i] == d]
                                 for h, d in zip(p.histories, domains)]}
    if a.lists:
        lists = {r["user_id"]: r["items"][a.list_mode] for r in map(json.loads, a.lists.read_text().splitlines())}
        missing = [u for u in p.users if u not in lists]
        if missing:
            raise SystemExit(f"--lists {a.lists}: no list for {len(missing)} of the sampled users, e.g. {missing[0]}")
        ranked = []
        for u in p.users:
            score: Counter = Counter()
            for rank, item in enumerate(lists[u][:20]):
                score[of.of[item]] += 1 / (rank + 1)
            ranked.append([i for i, _ in score.most_common()])
        out[f"{a.list_mode} list's interests"] = ranked
    return out


res = choice(a.run, a.model)
hits = res.pop("hits")
prompts, sid = res.pop("prompts"), res.pop("sid")
teacher = load_teacher(Path("runs") / a.run)
truth = [teacher.interests.of[t[0]] for t in prompts.truths]
for name, ranked in other_predictors(prompts, sid, teacher).items():
    hits[name] = {"top1": [float(bool(r) and r[0] == x) for r, x in zip(ranked, truth)],
                  f"recall@{a.n}": [float(x in r[:a.n]) for r, x in zip(ranked, truth)]}
    res["methods"][name] = {k: {"all": sum(v) / len(v)} for k, v in hits[name].items()}
if a.against:
    other = a.against.split(":", 1)
    hits[f"{a.against} (scored choice)"] = choice(*other)["hits"]["model (scored choice)"]
res["minus"] = {rule: {k: paired_bootstrap(hits["model (scored choice)"][k], x, seed=a.seed) for k, x in h.items()}
                for rule, h in hits.items() if rule != "model (scored choice)"}
print(f"{res['users']} valid users, options per domain {res['options']}")
for m, x in res["methods"].items():
    print(f"{m:24s} top-1 {x['top1']['all']:.4f}  recall@{a.n} {x[f'recall@{a.n}']['all']:.4f}"
          + (f"  P(true interest) {x['p_truth']['all']:.4f}" if "p_truth" in x else ""))
for rule, d in res["minus"].items():
    print(f"model minus {rule}: " + "  ".join(f"{k} {v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]" for k, v in d.items()))
rundir.write_text(Path("runs") / a.run / f"{a.out}.json", json.dumps({"run": a.run, "model": a.model, **res}, indent=2))
