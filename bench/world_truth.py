"""The synthetic world's ground truth against what the reasoning stage learns from its data:

- persona recovery: ARI / NMI of the 20 learned prototypes against the 20 true personas;
- interests: NMI of the learned interests (and cross-domain themes) against the true ones;
- R1: accuracy of the grounded judge on the world's true item-to-item relations.

Generates a world, embeds item text (MiniLM), learns interests and personas exactly as
`onereason sft` does (train-split histories only).

    python bench/world_truth.py --users 8000 --items-per-interest 90
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from onereason.data.histories import user_histories
from onereason.data.world import WorldConfig, generate
from onereason.itemic.embed import embed_texts
from onereason.corpus.relational_layer import transition_counts
from onereason.reasoning.interests import learn_interests
from onereason.reasoning.judge import RELATIONS, GroundedJudge
from onereason.reasoning.personas import learn_personas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=8000)
    ap.add_argument("--items-per-interest", type=int, default=90)
    ap.add_argument("--interests-per-domain", type=int, default=24, help="as the sft default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ds, truth, _ = generate(WorldConfig(users=args.users, items_per_interest=args.items_per_interest, seed=args.seed))
    items = ds.items
    texts = [f"{t}. {d}" for t, d in zip(items["title"], items["description"])]
    emb = embed_texts(texts)
    true_interest = truth["items"].set_index("item_id")["interest"]
    out = {"users": args.users, "items": len(items)}
    for k in sorted({12, args.interests_per_domain}):
        interests = learn_interests(items, emb, per_domain=k, seed=args.seed)
        learned = [interests.of[i] for i in items["item_id"]]
        out[f"interests_{k}_per_domain_nmi_vs_true"] = normalized_mutual_info_score(
            true_interest.loc[items["item_id"]].to_numpy(), learned)
        hists = user_histories(ds.interactions, ("train",))
        users = [u for u, h in hists.items() if h]
        brand = dict(zip(items["item_id"], items["brand"]))
        _, assign = learn_personas([hists[u] for u in users], interests, brand, k=20, seed=args.seed)
        true = truth["personas"].set_index("user_id").loc[users, "persona"].to_numpy()
        out[f"personas_ari_{k}"] = adjusted_rand_score(true, assign)
        out[f"personas_nmi_{k}"] = normalized_mutual_info_score(true, assign)
    out["themes_nmi_vs_true_topic"] = normalized_mutual_info_score(
        truth["items"].set_index("item_id").loc[items["item_id"], "topic"].to_numpy(),
        [interests.theme[interests.of[i]] for i in items["item_id"]])
    rel = truth["relations"]
    judged = GroundedJudge(items, emb, transition_counts(ds.interactions), interests).judge(list(zip(rel["a"], rel["b"])))
    pred = np.array([r.label for r in judged])
    out["r1_accuracy"] = float((pred == rel["relation"].to_numpy()).mean())
    out["r1_per_label"] = {lab: {"recall": float((pred[rel["relation"] == lab] == lab).mean()),
                                 "precision": float((rel["relation"].to_numpy()[pred == lab] == lab).mean())
                                 if (pred == lab).any() else None}
                           for lab in RELATIONS}
    rng = np.random.default_rng(args.seed)
    out["personas_ari_random_assignment"] = adjusted_rand_score(true, rng.integers(20, size=len(true)))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
