"""Which way of writing a "favour interest Y" edit into the trace moves the list most (issue 24)?

    python bench/trace_edit_variants.py --run-dir runs/sci-tok --model sft/model --users 300

For a seeded sample of test users (as `bench/serve_quality.py`: Y drawn per user among the domain's interests
with at least 2k items; the grounded trace of the latest history, no model sampling), each variant edits the
trace, the served model ranks k items after it with no trie enforcement, and the share of items in Y is
printed overall and per rank:

- drift: the service's edit (`Engine.edit_trace`: Interests = [Y], Transition "drift: moves to a new interest, Y");
- teacher's transition: the Transition the grounded teacher writes for Y (recency / repeat citing a history item
  of Y / complement / drift), as in the SFT traces;
- either of them with the Persona's cited example item dropped (it cites the user's main interest).

With interest tokens it also measures the model's own map from an item to its interest: for `--perception-items`
catalog items, "Which interest is <SID> in?" (the R0 question SFT trains), every interest token of the item's
domain scored as the answer's first token; top-1 accuracy. A trace edit cannot move more of the list into Y than
the model can tell which items are in Y.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from onereason.bench.lists import favoured_interests, sample_prompts
from onereason.chat import answer_turn
from onereason.decoding.choice import option_logprobs
from onereason.protocol import Decoding
from onereason.reasoning.sft_data import interest_user
from onereason.reasoning.traces import drift_to, join_trace, split_trace
from onereason.serve.engine import Constraint, Engine, ServeConfig

ap = argparse.ArgumentParser()
ap.add_argument("--run-dir", type=Path, required=True)
ap.add_argument("--model", default=None)
ap.add_argument("--users", type=int, default=300)
ap.add_argument("--k", type=int, default=10)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--perception-items", type=int, default=1000)
a = ap.parse_args()

engine = Engine(a.run_dir, ServeConfig(model=a.model, decoding=Decoding(beams=a.k)))
p = sample_prompts(pd.read_parquet(a.run_dir / "data" / "interactions.parquet"), "test", engine.max_items, a.users,
                   a.seed)
hs = p.histories
doms = [engine.domain_of(t[0]) for t in p.truths]
of, names = engine.interests.of, engine.interests.names
fav = favoured_interests(engine.interests, engine.sid.codec.item_ids, doms, a.k, a.seed)
grounded = [engine.grounded_trace(h, d) for h, d in zip(hs, doms)]


def no_example(head: str) -> str:
    return re.sub(r", e\.g\. .*\)\.$", ").", head)


def teacher_edit(trace: str, history: list, f: int, strip: bool) -> str:
    head = split_trace(trace)[0]
    return join_trace(no_example(head) if strip else head, [names[f]], engine.teacher.transition(history, f, ""))


variants = {
    "drift (the service's edit)": [engine.edit_trace(t, d, Constraint(favour=[f]))[0]
                                   for t, d, f in zip(grounded, doms, fav)],
    "teacher's transition": [teacher_edit(t, h, f, False) for t, h, f in zip(grounded, hs, fav)],
    "teacher's transition, no persona example": [teacher_edit(t, h, f, True) for t, h, f in zip(grounded, hs, fav)],
    "drift, no persona example": [join_trace(no_example(split_trace(t)[0]), [names[f]], drift_to(names[f]))
                                  for t, f in zip(grounded, fav)],
}
out = {"run": str(a.run_dir), "model": engine.model_name, "users": len(hs), "k": a.k, "favoured_share": {}}
for name, traces in variants.items():
    got = []
    for s in range(0, len(hs), 32):
        got += [r.items for r in engine.rank(hs[s:s + 32], doms[s:s + 32], traces[s:s + 32], a.k, None)]
    per = np.array([[of[i] == f for i in g] + [False] * (a.k - len(g)) for g, f in zip(got, fav)], dtype=float)
    out["favoured_share"][name] = {"all": round(float(per.mean()), 3), "per_rank": [round(x, 2) for x in per.mean(0)]}
    print(f"{name:42s} {per.mean():.3f}  per rank {' '.join(f'{x:.2f}' for x in per.mean(0))}", flush=True)
if engine.interests.tokens:
    ids = engine.sid.codec.item_ids
    items = [ids[i] for i in np.random.default_rng(a.seed).permutation(len(ids))[:a.perception_items]]
    doms_i = [engine.sid.codec.item_domain[i] for i in items]
    token_ids = engine.tok.convert_tokens_to_ids(engine.interests.token_strings())
    of_domain = {d: [j for j, x in enumerate(engine.interests.domain) if x == d] for d in set(doms_i)}
    prompts = engine.tok([answer_turn(interest_user(engine.sid.codec.item_text(i))) for i in items],
                         add_special_tokens=False)["input_ids"]
    scores = option_logprobs(engine.model, prompts, [[[token_ids[j]] for j in of_domain[d]] for d in doms_i],
                             engine.tok.pad_token_id, 32)
    right = [of_domain[d][int(np.argmax(sc))] == of[i] for i, d, sc in zip(items, doms_i, scores)]
    out["item_to_interest_top1"] = round(float(np.mean(right)), 3)
    print(f"item -> interest, top-1 over {len(items)} catalog items: {np.mean(right):.3f}")
print(json.dumps(out, indent=1))
