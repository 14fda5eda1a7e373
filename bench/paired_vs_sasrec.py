"""Ours (a run's eval/recommendations.jsonl, test) minus SASRec, paired per user. SASRec's per-user lists come
from a bench part (report/parts/baseline__SASRec__lr*.json) or from bench/baselines.py's bench/baselines.json.

    python bench/paired_vs_sasrec.py RUN runs/RUN/bench/baselines.json [successors]

With `successors`, against SASRec + the successor memory (`bench/baselines.py --successors`).
"""
import json, sys
from onereason.metrics import paired_bootstrap, per_sample
ours = [json.loads(l) for l in open(f"runs/{sys.argv[1]}/eval/recommendations.jsonl")]
saved = json.load(open(sys.argv[2]))
chosen = saved["sasrec"]["chosen"] if "sasrec" in saved else saved["result"]
sas = chosen["successors"]["lists"] if sys.argv[3:] == ["successors"] else chosen["lists"]
truths = [r["target"] for r in ours]
a, b = [r["items"] for r in ours], [sas[r["user_id"]] for r in ours]
for c in ("ndcg@10", "recall@10"):
    x, y = per_sample(c, a, truths), per_sample(c, b, truths)
    m, lo, hi = paired_bootstrap(x, y)
    print(f"{c}: ours {sum(x)/len(x):.4f} SASRec {sum(y)/len(y):.4f} diff {m:+.4f} [{lo:+.4f}, {hi:+.4f}] n={len(x)}")
