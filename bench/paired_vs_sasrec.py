"""Ours (a run's eval/recommendations.jsonl, test) minus SASRec (a bench part's per-user lists), paired per user."""
import json, sys
from onereason.metrics import paired_bootstrap, per_sample
ours = [json.loads(l) for l in open(f"runs/{sys.argv[1]}/eval/recommendations.jsonl")]
sas = json.load(open(sys.argv[2]))["result"]["lists"]
truths = [r["target"] for r in ours]
a, b = [r["items"] for r in ours], [sas[r["user_id"]] for r in ours]
for c in ("ndcg@10", "recall@10"):
    x, y = per_sample(c, a, truths), per_sample(c, b, truths)
    m, lo, hi = paired_bootstrap(x, y)
    print(f"{c}: ours {sum(x)/len(x):.4f} SASRec {sum(y)/len(y):.4f} diff {m:+.4f} [{lo:+.4f}, {hi:+.4f}] n={len(x)}")
