"""Where SASRec beats the LM: test hits@10 split by whether the target is rare in train (< 10 occurrences) and
whether train holds the pair (history's last item → target). The diagnosis behind the successor memory.

    python bench/transition_hits.py RUN runs/RUN/bench/baselines.json

RUN's eval/recommendations.jsonl gives the LM's lists ("lm_items", or "items" from an eval before the memory)
and, where the eval mixed in the memory, the mixed lists ("items").
"""
import json, sys
from collections import Counter

import pandas as pd

from onereason.corpus.relational_layer import transition_counts
from onereason.data.histories import user_histories

run, baselines = sys.argv[1], sys.argv[2]
inter = pd.read_parquet(f"runs/{run}/data/interactions.parquet")
pairs = transition_counts(inter)
pop = inter[inter["split"] == "train"]["item_id"].value_counts().to_dict()
last = {u: h[-1].item for u, h in user_histories(inter, ("train", "valid")).items()}
sas = json.load(open(baselines))["sasrec"]["chosen"]["lists"]
rows = [json.loads(line) for line in open(f"runs/{run}/eval/recommendations.jsonl")]
lists = {"LM": [r.get("lm_items", r["items"]) for r in rows], "SASRec": [sas[r["user_id"]] for r in rows]}
if "lm_items" in rows[0]:
    lists["LM + memory"] = [r["items"] for r in rows]
n, hits = Counter(), Counter()
for i, r in enumerate(rows):
    t = r["target"][0]
    paired = pairs.get((last[r["user_id"]], t))
    cell = ("rare" if pop.get(t, 0) < 10 else "popular", "pair in train" if paired else "no pair")
    n[cell] += 1
    for name, ls in lists.items():
        hits[cell, name] += t in ls[i][:10]
print("| target | last item → target | users | " + " | ".join(f"{m} hits@10" for m in lists) + " |")
print("|---|---|---|" + "---|" * len(lists))
for cell in sorted(n):
    print(f"| {cell[0]} | {cell[1]} | {n[cell]} | " + " | ".join(str(hits[cell, m]) for m in lists) + " |")
