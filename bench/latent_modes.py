"""A latent model's modes against non-thinking, and against a text-reasoning model's modes (issue 24).

    python bench/latent_modes.py RUN --model sft/model --split valid --max-users 1000 \
        [--text-lists runs/TEXT_RUN/hypothesis_beams_lists.jsonl] [--before runs/RUN/latent_modes_lists.jsonl]

RUN's model was trained with `sft.latent_steps` (k thinking steps in hidden space, the same SFT samples as the
text model). Prints R@10 / NDCG@10 / pass@4 of non-thinking, latent and race (latent and non-thinking merged by
reciprocal rank), each minus non-thinking paired per user; with --text-lists (written by bench/hypothesis_beams.py on
the same split, sample and seed) also latent minus the text model's thinking and non-thinking modes; with
--before (this script's lists of another model of RUN, e.g. the SFT model before RL) each mode minus the
same mode of that model. pass@64 is reported when --beams is at least 64. delta_ll: the target's log-probability
after the latent steps minus after an empty think block, per user (> 0: the latent steps raise it).
Writes runs/RUN/<out>.json and the per-user lists to runs/RUN/<out>_lists.jsonl.
"""
import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from onereason import rundir
from onereason.bench.lists import chat_lists, latent_lists, race_lists, sample_prompts
from onereason.bench.sft_eval import target_logprob
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists, paired_bootstrap, per_sample
from onereason.model.backbone import load_model
from onereason.model.latent import latent_ids
from onereason.protocol import Decoding

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("--model", default="sft/model")
ap.add_argument("--split", default="valid", choices=["valid", "test"])
ap.add_argument("--max-users", type=int, default=1000)
ap.add_argument("--beams", type=int, default=20)
ap.add_argument("--hypotheses", type=int, default=3)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--text-lists", type=Path, help="a text model's per-user lists (bench/hypothesis_beams.py)")
ap.add_argument("--before", type=Path, help="this script's per-user lists of another model on the same users")
ap.add_argument("--out", default="latent_modes")
a = ap.parse_args()
ks = [4, 10] + ([64] if a.beams >= 64 else [])
METRICS = ("recall@10", "ndcg@10") + tuple(f"pass@{k}" for k in ks if k != 10)

run_dir = Path("runs") / a.run
tok, sid = load_sid_tokens(run_dir)
model = load_model(run_dir / a.model).eval()
p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), a.split, rundir.prompt_items(run_dir), a.max_users,
                   a.seed)
domains = [sid.codec.item_domain[t[0]] for t in p.truths]
dec = Decoding(beams=a.beams)
plain, plain_prompts, _ = chat_lists(model, p, domains, sid, tok, False, dec, a.hypotheses, 16, a.seed, True)
latent, latent_prompts = latent_lists(model, p, domains, sid, tok, dec, a.hypotheses, 16, True)
targets = [sid.ids(t[0])[1:] for t in p.truths]  # codes + end token; the begin token ends each prompt
with torch.no_grad():
    ll = {m: target_logprob(model, q, targets, tok.pad_token_id, 16) for m, q in
          (("non-thinking", plain_prompts), ("latent", latent_prompts))}
delta_ll = paired_bootstrap(ll["latent"], ll["non-thinking"], seed=a.seed)
lists = {"non-thinking": plain, "latent": latent, "race": race_lists(plain, latent, a.beams)}
refs = {"non-thinking": plain}


def saved_lists(path: Path) -> dict[str, dict]:
    rows = {r["user_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    missing = [u for u in p.users if u not in rows]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} of these users are not in it (same split, sample, seed?)")
    return rows


if a.text_lists:
    rows = saved_lists(a.text_lists)
    for mode in ("non-thinking", "thinking"):
        refs[f"text model {mode}"] = [rows[u]["items"][mode] for u in p.users]
before = saved_lists(a.before) if a.before else None
report = {"run": a.run, "model": a.model, "split": a.split, "users": len(p.users), "beams": a.beams,
          "latent_steps": len(latent_ids(model)), "modes": {},
          "delta_ll": {"latent_minus_non_thinking": delta_ll, "non_thinking_mean": float(ll["non-thinking"].mean())}}
print(f"delta_ll (log P(target) after the latent steps minus after an empty think block): {delta_ll[0]:+.4f} "
      f"[{delta_ll[1]:+.4f}, {delta_ll[2]:+.4f}]; non-thinking mean log P(target) {ll['non-thinking'].mean():.3f}")
for mode, got in lists.items():
    m = evaluate_lists(got, p.truths, ks, domains)["all"]
    row = {k: m[k] for k in METRICS}
    against = {name: ref for name, ref in refs.items() if ref is not got}
    if before is not None:
        against[f"before {mode}"] = [before[u]["items"][mode] for u in p.users]
    row["minus"] = {name: {c: paired_bootstrap(per_sample(c, got, p.truths), per_sample(c, ref, p.truths), seed=a.seed)
                           for c in METRICS} for name, ref in against.items()}
    report["modes"][mode] = row
    print(f"{mode:14s} " + " ".join(f"{c} {row[c]:.4f}" for c in METRICS))
    for name, d in row["minus"].items():
        print(f"    minus {name}: " + "  ".join(f"{c} {v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]" for c, v in d.items()))
rundir.write_text(run_dir / f"{a.out}.json", json.dumps(report, indent=2))
rundir.write_text(run_dir / f"{a.out}_lists.jsonl", "".join(
    json.dumps({"user_id": u, "target": t, "items": {m: v[j] for m, v in lists.items()}}) + "\n"
    for j, (u, t) in enumerate(zip(p.users, p.truths))))
