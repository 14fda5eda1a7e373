"""R2 as a choice on one chat model, without the rest of the bench (issue 24).

    python bench/r2_choice.py RUN --model sft/model --max-users 1000 --n 3

For a seeded sample of valid users (the history before their valid item), every interest of the valid
item's domain is scored by the model as the R2 answer's first entry (`bench.r0_r2.interest_choice`); prints
top-1 accuracy, recall@n and the probability of the true interest against the last item's interest and the
most frequent interest, with the paired bootstrap interval of the model minus each rule; with --against
OTHER_RUN:MODEL also minus another model's choice on the same users (e.g. interest tokens against names);
writes runs/RUN/<out>.json.
"""
import argparse
import json
from pathlib import Path

import pandas as pd

from onereason import rundir
from onereason.bench.lists import sample_prompts
from onereason.bench.r0_r2 import interest_choice
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import paired_bootstrap
from onereason.model.backbone import load_model
from onereason.reasoning.interests import Interests

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("--model", default="sft/model")
ap.add_argument("--max-users", type=int, default=1000)
ap.add_argument("--n", type=int, default=3, help="interests the R2 question asks for (recall@n)")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--against", help="OTHER_RUN:MODEL, another model's scored choice on the same users")
ap.add_argument("--out", default="r2_choice")
a = ap.parse_args()


def choice(run: str, model_dir: str) -> dict:
    run_dir = Path("runs") / run
    tok, sid = load_sid_tokens(run_dir)
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", rundir.prompt_items(run_dir),
                       a.max_users, a.seed)
    return interest_choice(load_model(run_dir / model_dir).eval(), tok, sid, Interests.load(run_dir / rundir.INTERESTS),
                           p, a.n, 16, per_user=True)


res = choice(a.run, a.model)
hits = res.pop("hits")
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
