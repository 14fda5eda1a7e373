"""A world run's reasoning against the world's truth: persona recovery, R1 and R2.

- Persona recovery: the run's 20 learned prototypes (reasoning/personas.json) assigned to test
  users from their history, ARI / NMI against their true personas.
- R1: the SFT model's relation label (complement / substitute / same-interest / unrelated) for
  pairs drawn from the world's true relations, `--pairs` per class, none of them an R1 SFT pair;
  accuracy and recall per class (the suite's R1 scorer).
- R2: the SFT model answers "Which interests will this user explore next? Name up to 1." for test
  users; its answer is a learned interest, mapped to the true (domain, topic) interest that most of
  its items have; accuracy = that equals the true interest of the user's test item. Baselines: the
  interest of the last history item, the most frequent one. The same for R2 as a scored choice
  (`bench.r0_r2.interest_choice`: the learned interest the model scores highest, mapped the same way), with
  its paired interval against each rule.

    python bench/world_reasoning.py --run runs/world --users 500
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from transformers import AutoModelForCausalLM

from onereason.bench.lists import sample_prompts
from onereason.bench.r0_r2 import greedy_answers, interest_choice, relations, sft_relation_pairs
from onereason.chat import answer_turn, numbered
from onereason.corpus.user_layer import HistoryText
from onereason.data.world import run_truth
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import paired_bootstrap
from onereason.reasoning.interests import Interests
from onereason.reasoning.personas import Personas, user_features
from onereason.reasoning.sft_data import r2_user


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--pairs", type=int, default=200, help="R1 pairs per true relation class")
    args = ap.parse_args()
    _, _, truth, _ = run_truth(args.run)
    true_of = truth["items"].set_index("item_id")["interest"]
    interests = Interests.load(args.run / "reasoning" / "interests.json")
    learned_to_true = {i: Counter(true_of[it] for it, j in interests.of.items() if j == i).most_common(1)[0][0]
                       for i in range(len(interests))}
    inter = pd.read_parquet(args.run / "data" / "interactions.parquet")
    p = sample_prompts(inter, "test", 50, args.users, 0)
    tok, sid = load_sid_tokens(args.run)
    text = HistoryText(sid, tok)
    model = AutoModelForCausalLM.from_pretrained(str(args.run / "sft" / "model")).eval()
    answers = greedy_answers(model, tok, [answer_turn(r2_user(text.text(h), 1)) for h in p.histories], 16)
    names = {n: i for i, n in enumerate(interests.names)}
    truth_int = [true_of[t[0]] for t in p.truths]

    def parsed(a: str) -> str | None:
        listed = numbered(a)
        return learned_to_true.get(names.get(listed[0], -1)) if listed else None
    model_acc = np.mean([parsed(a) == t for a, t in zip(answers, truth_int)])
    chosen = interest_choice(model, tok, sid, interests, p, 1, 32, per_user=True)["ranked"]
    hit = {"scored choice": [float(learned_to_true[r[0]] == t) for r, t in zip(chosen, truth_int)],
           "last": [float(true_of[h[-1].item] == t) for h, t in zip(p.histories, truth_int)],
           "frequent": [float(Counter(true_of[e.item] for e in h).most_common(1)[0][0] == t)
                        for h, t in zip(p.histories, truth_int)]}
    dom = sid.codec.item_domain  # the rules again, over the history in the target's domain (as the choice is)
    there = [[true_of[e.item] for e in h if dom[e.item] == dom[t[0]]] for h, t in zip(p.histories, p.truths)]
    hit["last in domain"] = [float(bool(x) and x[-1] == t) for x, t in zip(there, truth_int)]
    hit["frequent in domain"] = [float(bool(x) and Counter(reversed(x)).most_common(1)[0][0] == t)
                                 for x, t in zip(there, truth_int)]
    last, freq = np.mean(hit["last"]), np.mean(hit["frequent"])
    personas = Personas.load(args.run / "reasoning" / "personas.json")
    brand = dict(zip(*(pd.read_parquet(args.run / "data" / "items.parquet")[c] for c in ("item_id", "brand"))))
    assigned = personas.assign(np.stack([user_features(h, interests, brand) for h in p.histories]))
    true_persona = truth["personas"].set_index("user_id").loc[p.users, "persona"].to_numpy()
    seen = sft_relation_pairs(args.run, sid)
    rel = truth["relations"]
    rel = rel[[tuple(sorted(ab)) not in seen for ab in zip(rel["a"], rel["b"])]]
    rel = rel.groupby("relation").sample(frac=1, random_state=0).groupby("relation").head(args.pairs)
    r1 = relations(model, tok, sid, {"true": list(rel.itertuples(index=False, name=None))}, 32)["true"]
    print(json.dumps({"r1_true_relations": r1, "persona_ari": adjusted_rand_score(true_persona, assigned),
                      "persona_nmi": normalized_mutual_info_score(true_persona, assigned),
                      "users": len(answers), "answers_parsed": float(np.mean([parsed(a) is not None for a in answers])),
                      "r2_accuracy_sft": float(model_acc), "last_item_interest": float(last),
                      "most_frequent_interest": float(freq), "example_answers": answers[:3],
                      "r2_accuracy_scored_choice": float(np.mean(hit["scored choice"])),
                      "rules_in_domain": {k: float(np.mean(hit[k])) for k in ("last in domain", "frequent in domain")},
                      "scored_choice_minus": {k: paired_bootstrap(hit["scored choice"], v) for k, v in hit.items()
                                              if k != "scored choice"}},
                     indent=2))


if __name__ == "__main__":
    main()
