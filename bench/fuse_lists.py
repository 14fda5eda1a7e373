"""Two runs' eval lists fused by the sum of log-probabilities (an item missing from one list takes that list's
lowest score - 1), against the first run, paired per user; with a bench part's SASRec lists, each minus SASRec.

    python bench/fuse_lists.py A B valid
    python bench/fuse_lists.py A B test [runs/A/report/parts/baseline__SASRec__lr0.001.json]

(A bench part holds SASRec's test lists, so the SASRec comparison is for the test split only.)
"""
import json, sys
from pathlib import Path
from onereason.metrics import ndcg_at_k, recall_at_k, paired_bootstrap
a_name, b_name, split = sys.argv[1:4]
if len(sys.argv) > 4 and split != "test":
    sys.exit("a bench part holds SASRec's test lists: compare with it on the test split")
def load(name):
    p = Path("runs") / name / "eval" / ("valid/" if split == "valid" else "") / "recommendations.jsonl"
    return {r["user_id"]: r for r in map(json.loads, open(p))}
A, B = load(a_name), load(b_name)
users = sorted(set(A) & set(B))
assert all(A[u]["target"] == B[u]["target"] for u in users)
def fused(u):
    sa, sb = dict(zip(A[u]["items"], A[u]["scores"])), dict(zip(B[u]["items"], B[u]["scores"]))
    fa, fb = min(sa.values()) - 1, min(sb.values()) - 1
    return sorted(set(sa) | set(sb), key=lambda i: -(sa.get(i, fa) + sb.get(i, fb)))
rows = {"A": [A[u]["items"] for u in users], "B": [B[u]["items"] for u in users], "A+B": [fused(u) for u in users]}
truth = [A[u]["target"] for u in users]
print(f"{split}, {len(users)} users")
for m, f in (("NDCG@10", ndcg_at_k), ("Recall@10", recall_at_k)):
    per = {k: [f(c, t, 10) for c, t in zip(v, truth)] for k, v in rows.items()}
    mean = {k: sum(v) / len(v) for k, v in per.items()}
    d, lo, hi = paired_bootstrap(per["A+B"], per["A"])
    d2, lo2, hi2 = paired_bootstrap(per["B"], per["A"])
    print(f"{m}: A {mean['A']:.4f}  B {mean['B']:.4f}  A+B {mean['A+B']:.4f}  A+B-A {d:+.4f} [{lo:+.4f}, {hi:+.4f}]  B-A {d2:+.4f} [{lo2:+.4f}, {hi2:+.4f}]")
if len(sys.argv) > 4:  # a bench part's SASRec lists: each of A and A+B minus SASRec, paired
    sas = json.load(open(sys.argv[4]))["result"]["lists"]
    s_rows = [sas[u] for u in users]
    for m, f in (("NDCG@10", ndcg_at_k), ("Recall@10", recall_at_k)):
        ps = [f(c, t, 10) for c, t in zip(s_rows, truth)]
        for k in ("A", "A+B"):
            pk = [f(c, t, 10) for c, t in zip(rows[k], truth)]
            d, lo, hi = paired_bootstrap(pk, ps)
            print(f"{m}: {k} {sum(pk)/len(pk):.4f} minus SASRec {sum(ps)/len(ps):.4f}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}] ratio {sum(pk)/sum(ps):.2f}x")
