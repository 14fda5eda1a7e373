"""Thinking with a beam per interest hypothesis against the other modes, on one chat model (issue 24).

    python bench/hypothesis_beams.py RUN --model rl/grpo/model --split valid --max-users 500

One set of sampled traces serves every thinking mode: thinking (one beam after the trace), race (merged with
non-thinking's by reciprocal rank), hypotheses (a beam per listed interest, merged by score) and
hypotheses-turns (merged by taking turns), race-hypotheses (hypotheses merged with non-thinking's the same way);
and the grounded teacher's trace without hindsight (no model call) from the prompt's window or from the whole
history (`teacher-window`, `teacher-whole`, each also with a beam per hypothesis); with --ablate the model's
traces with the Persona, Interests or Transition line left out; with --chosen the traces' Interests line is
chosen by score (`Decoding.interests`); with --before each mode is also paired with another model's same mode.
Prints R@10 / NDCG@10 / pass@4 per mode and each mode minus
non-thinking, paired per user (mean [95% bootstrap interval]); writes runs/RUN/<out>.json and the per-user
lists to runs/RUN/<out>_lists.jsonl.
"""
import argparse
import json
from pathlib import Path

import pandas as pd

from onereason import rundir
from onereason.bench.lists import answer_items, chat_lists, hypothesis_lists, race_lists, sample_prompts
from onereason.chat import END_THINK, PARTS
from onereason.corpus.user_layer import HistoryText
from onereason.data.histories import user_histories
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists, paired_bootstrap, per_sample
from onereason.model.backbone import load_model
from onereason.protocol import Decoding
from onereason.reasoning.sft_data import load_teacher, r3_prompts
from onereason.reasoning.traces import split_trace

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("--model", default="rl/grpo/model")
ap.add_argument("--split", default="valid", choices=["valid", "test"])
ap.add_argument("--max-users", type=int, default=500)
ap.add_argument("--beams", type=int, default=20)
ap.add_argument("--hypotheses", type=int, default=3)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--exact-n", action="store_true", help="traces list exactly --hypotheses interests (Decoding.exact_n)")
ap.add_argument("--chosen", action="store_true", help="the trace's Interests line chosen by score, not sampled "
                "(Decoding.interests=chosen): its thinking modes are then the chosen-interest traces'")
ap.add_argument("--ablate", action="store_true", help="also the model's traces with one line removed (Persona, "
                "Interests or Transition): what each part adds")
ap.add_argument("--no-teacher", action="store_true", help="leave out the teacher's traces (four fewer beams)")
ap.add_argument("--before", type=Path, help="another model's lists from this script on the same users: each mode "
                "minus that model's same mode, paired (e.g. interest tokens against names)")
ap.add_argument("--out", default="hypothesis_beams")
a = ap.parse_args()

run_dir = Path("runs") / a.run
tok, sid = load_sid_tokens(run_dir)
model = load_model(run_dir / a.model).eval()
inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
p = sample_prompts(inter, a.split, rundir.prompt_items(run_dir), a.max_users, a.seed)
domains = [sid.codec.item_domain[t[0]] for t in p.truths]
dec = Decoding(beams=a.beams, exact_n=a.exact_n, interests="chosen" if a.chosen else "sampled")
teacher = load_teacher(run_dir)
plain = chat_lists(model, p, domains, sid, tok, False, dec, a.hypotheses, 16, a.seed, True)[0]
think, _, traces = chat_lists(model, p, domains, sid, tok, True, dec, a.hypotheses, 16, a.seed, True, teacher.interests)
lists = {"non-thinking": plain, "thinking": think,
         "race": race_lists(plain, think, a.beams),
         **hypothesis_lists(model, p, domains, sid, tok, traces, a.hypotheses, a.beams, 16, True)}
lists["race-hypotheses"] = race_lists(plain, lists["hypotheses"], a.beams)
# the teacher's trace without hindsight (no model call), from the prompt's window or from the whole history
whole = user_histories(inter, ("train",) if a.split == "valid" else ("train", "valid"))
prompts = r3_prompts(p.histories, domains, a.hypotheses, HistoryText(sid, tok), tok)
end_think = tok.convert_tokens_to_ids(END_THINK)
for name, hists in () if a.no_teacher else (("teacher-window", p.histories), ("teacher-whole", [whole[u] for u in p.users])):
    written = [tok.encode(f"\n{teacher.foresight_trace(h, a.hypotheses, d)}\n", add_special_tokens=False) + [end_think]
               for h, d in zip(hists, domains)]
    lists[name] = answer_items(model, [q + t for q, t in zip(prompts, written)], domains, sid, tok, a.beams, 16, True)[0]
    lists[name + "-hypotheses"] = hypothesis_lists(model, p, domains, sid, tok, written, a.hypotheses, a.beams, 16,
                                                   True)["hypotheses"]
if a.ablate:  # the model's own traces with one part left out, then the same beam
    decoded = [tok.decode(t[:-1], skip_special_tokens=False) for t in traces]
    for part in PARTS:
        kept = ["\n".join(x for x in d.split("\n") if not x.startswith(part)) for d in decoded]
        written = [tok.encode(f"{k.rstrip()}\n", add_special_tokens=False) + [end_think] for k in kept]
        lists[f"thinking without {part.rstrip(':')}"] = answer_items(model, [q + t for q, t in zip(prompts, written)],
                                                                     domains, sid, tok, a.beams, 16, True)[0]
listed = [len(split_trace(tok.decode(t[:-1], skip_special_tokens=False))[1]) for t in traces]
report = {"run": a.run, "model": a.model, "split": a.split, "users": len(p.users), "beams": a.beams,
          "hypotheses": a.hypotheses, "exact_n": a.exact_n, "listed_mean": sum(listed) / len(listed), "modes": {}}
print(f"interests listed per trace: {report['listed_mean']:.2f} (asked {a.hypotheses})")
before = {r["user_id"]: r["items"] for r in map(json.loads, a.before.read_text().splitlines())} if a.before else {}
if before and any(u not in before for u in p.users):
    raise SystemExit(f"{a.before}: not every user of this sample is in it (same split, sample, seed?)")
METRICS = ("recall@10", "ndcg@10", "pass@4")
for mode, got in lists.items():
    m = evaluate_lists(got, p.truths, [4, 10], domains)["all"]
    row = {k: m[k] for k in METRICS}
    refs = {"non-thinking": plain} if mode != "non-thinking" else {}
    if before and mode in before[p.users[0]]:
        refs["before"] = [before[u][mode] for u in p.users]
    for name, ref in refs.items():
        row[f"minus {name}"] = {c: paired_bootstrap(per_sample(c, got, p.truths), per_sample(c, ref, p.truths),
                                                    seed=a.seed) for c in METRICS}
    report["modes"][mode] = row
    print(f"{mode:18s} R@10 {row['recall@10']:.4f} NDCG@10 {row['ndcg@10']:.4f} pass@4 {row['pass@4']:.4f}")
    for name in refs:
        print(f"    minus {name}: " + "  ".join(f"{c} {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"
                                          for c, d in row[f"minus {name}"].items()))
rundir.write_text(run_dir / f"{a.out}.json", json.dumps(report, indent=2))
rundir.write_text(run_dir / f"{a.out}_lists.jsonl", "".join(  # per user: runs on nested samples can be paired
    json.dumps({"user_id": u, "target": t, "items": {m: v[j] for m, v in lists.items()}}) + "\n"
    for j, (u, t) in enumerate(zip(p.users, p.truths))))
