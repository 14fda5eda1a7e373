"""Stage `sft-eval`: the pre-trained model, SFT non-thinking and SFT thinking (n = 1, 3, 5
interest hypotheses) side by side on the same users, with reasoning-quality measures:

- Recall@k / NDCG@k under the same protocol as `eval` (full ranking, beam = candidates);
- delta_ll = log p(target | prompt + CoT) − log p(target | non-thinking prompt), per user, mean;
- the share of items cited in generated traces that are in the user's history (1.0 by the
  citation constraint), traces with all three parts, and mean trace length;
- how often the trace's Transition line names the target's interest, and how often its
  Interests line lists it (the learned interests of `reasoning/interests.json`);
- an oracle row: the grounded teacher's hindsight trace (it knows the target's interest, never
  the item), which bounds what a trace that picks the right interest can give.
Written to `runs/<name>/sft/eval.{json,md}`, `sft/traces.jsonl` (a sample of traces) and
`sft/recommendations.jsonl` (every user's list per method).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field

from onereason import rundir
from onereason.bench.lists import answer_items, recommend_next, sample_prompts
from onereason.chat import END_THINK, PARTS, numbered
from onereason.config import Config
from onereason.corpus.user_layer import HistoryText
from onereason.decoding.two_stage import generate_traces
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists
from onereason.model.backbone import load_model
from onereason.protocol import Decoding, EvalSample
from onereason.reasoning.sft_data import load_teacher, r3_prompts
from onereason.rundir import write_text
from onereason.train.loop import Sample, collate


class SftEvalConfig(Config):
    sample: EvalSample = EvalSample(max_users=3000)
    decoding: Decoding = Decoding(beams=20)
    hypotheses: list[int] = Field([1, 3, 5], description="n for the thinking runs (the ablation)")
    batch_size: int = Field(32, ge=1)
    oracle: bool = Field(True, description="also score the teacher's hindsight traces (an upper bound)")


@torch.no_grad()
def target_logprob(model, prefixes: list[list[int]], targets: list[list[int]], pad_id: int,
                   batch_size: int = 32) -> np.ndarray:
    """Sum of log p(target tokens | prefix) per pair, teacher-forced: the training collate and loss
    with the target tokens as the only labels."""
    out = []
    for s in range(0, len(prefixes), batch_size):
        batch = collate([Sample(p + t, [0] * len(p) + [1] * len(t))
                         for p, t in zip(prefixes[s:s + batch_size], targets[s:s + batch_size])], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = F.pad(batch["labels"], (0, 1), value=-100)[:, 1:]  # position t predicts t+1
        nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        out.append(-nll.sum(1))
    return torch.cat(out).numpy()


def _line(trace: str, part: str) -> str:
    return next((l for l in trace.splitlines() if l.startswith(part)), "")


def trace_stats(traces: list[list[int]], decoded: list[str], histories: list[set[str]], sid) -> dict:
    """Citations of the sampled traces (how many, the share inside the user's history), the share
    with all three parts, and the mean length in tokens."""
    cited = [sid.codec.parse(d) for d in decoded]
    n_cited = sum(len(c) for c in cited)
    return {"cited_items": n_cited,
            "cited_in_history": (sum(sum(x in h for x in c) for c, h in zip(cited, histories)) / n_cited
                                 if n_cited else None),
            "traces_with_all_parts": float(np.mean([all(part in d for part in PARTS) for d in decoded])),
            "trace_tokens_mean": float(np.mean([len(t) for t in traces]))}


def interest_hits(traces: list[str], truth_names: list[str], names: list[str]) -> dict:
    """Share of traces whose Transition line moves to the target's interest (the last interest name
    in it) and whose Interests line lists it, and how many interests the traces list."""
    def last_named(line: str) -> str | None:
        found = [(line.rfind(n), len(n), n) for n in names if n in line]
        return max(found)[2] if found else None

    listed = [numbered(_line(d, "Interests:")[len("Interests: "):]) for d in traces]
    return {"transition_names_target_interest": float(np.mean([last_named(_line(d, "Transition:")) == t
                                                                for d, t in zip(traces, truth_names)])),
            "interests_list_target_interest": float(np.mean([t in x for x, t in zip(listed, truth_names)])),
            "hypotheses_listed_mean": float(np.mean([len(x) for x in listed]))}


def run(config: SftEvalConfig, run_dir: Path, progress: bool = True) -> dict:
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    s = config.sample
    p = sample_prompts(inter, s.split, rundir.prompt_items(run_dir), s.max_users, s.seed)
    tok, sid = load_sid_tokens(run_dir)
    text = HistoryText(sid, tok)
    ks = config.decoding.cutoffs()
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    nl = tok.encode("\n\n", add_special_tokens=False)
    end_think = tok.convert_tokens_to_ids(END_THINK)
    targets = [sid.ids(t[0])[1:] for t in p.truths]  # codes + end, after the begin token

    def answers(model, prefixes: list[list[int]]) -> tuple[list[list[str]], list[list[int]]]:
        return answer_items(model, prefixes, domains, sid, tok, config.decoding.beams, config.batch_size, progress)

    pre = load_model(run_dir / rundir.MODEL)
    lists = {"pre-trained": [r.items for r in recommend_next(pre, tok, sid, p, config.decoding.beams, config.batch_size,
                                                             progress)[0]]}
    del pre
    model = load_model(run_dir / rundir.SFT_MODEL)
    plain = [q + nl + [end_think] for q in r3_prompts(p.histories, domains, None, text, tok)]
    lists["SFT non-thinking"], plain_prompts = answers(model, plain)
    base_ll = target_logprob(model, plain_prompts, targets, tok.pad_token_id, config.batch_size)

    def delta_ll(prompts: list[list[int]]) -> dict:
        ll = target_logprob(model, prompts, targets, tok.pad_token_id, config.batch_size)
        return {"delta_ll": float(np.mean(ll - base_ll)), "delta_ll_positive_share": float(np.mean(ll > base_ll))}

    teacher = load_teacher(run_dir)
    names = teacher.interests.names
    truth_names = [names[teacher.interests.of[t[0]]] for t in p.truths]
    extra, samples = {}, []
    if config.oracle:
        n = max(config.hypotheses)
        prompts = r3_prompts(p.histories, domains, n, text, tok)
        oracle = [teacher.trace(h, t[0], n) for h, t in zip(p.histories, p.truths)]
        traces = tok([f"\n{o}\n" for o in oracle], add_special_tokens=False)["input_ids"]
        name = f"oracle trace n={n} (knows the target's interest)"
        lists[name], think_prompts = answers(model, [q + t + [end_think] for q, t in zip(prompts, traces)])
        extra[name] = {**delta_ll(think_prompts), **interest_hits(oracle, truth_names, names)}
    hist = [{e.item for e in h} for h in p.histories]
    for n in config.hypotheses:
        prompts = r3_prompts(p.histories, domains, n, text, tok)
        traces = generate_traces(model, prompts, [[e.item for e in h] for h in p.histories], sid, tok, config.decoding,
                                 batch_size=config.batch_size, seed=config.sample.seed, progress=progress, hypotheses=n)
        name = f"SFT thinking n={n}"
        lists[name], think_prompts = answers(model, [q + t for q, t in zip(prompts, traces)])
        decoded = [tok.decode(t[:-1], skip_special_tokens=False) for t in traces]
        extra[name] = {**delta_ll(think_prompts), **trace_stats(traces, decoded, hist, sid),
                       **interest_hits(decoded, truth_names, names)}
        samples += [{"n": n, "user_id": u, "target": t[0], "trace": d, "items": i[:5]}
                    for u, t, d, i in list(zip(p.users, p.truths, decoded, lists[name]))[:20]]
    methods = {m: evaluate_lists(v, p.truths, ks, domains) for m, v in lists.items()}
    results = {"split": config.sample.split, "users": len(p.users), "beams": config.decoding.beams, "ks": ks,
               "temperature": config.decoding.temperature, "methods": methods, "reasoning": extra}
    out = run_dir / rundir.SFT
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "eval.json", json.dumps(results, indent=2))
    write_text(out / "eval.md", markdown(results))
    write_text(out / "traces.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    write_text(out / "recommendations.jsonl", "".join(  # per user, for subgroup analyses (e.g. cold start)
        json.dumps({"user_id": u, "target": t, "items": {m: v[j] for m, v in lists.items()}}) + "\n"
        for j, (u, t) in enumerate(zip(p.users, p.truths))))
    return results


def markdown(results: dict) -> str:
    lines = [f"# Reasoning SFT ({results['split']} split, {results['users']} users, beam {results['beams']}, "
             f"trace temperature {results['temperature']})", "",
             "| method | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | delta_ll | cited in history | 3-part traces "
             "| transition = target interest | target interest listed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results["methods"].items():
        a, x = res["all"], results["reasoning"].get(name, {})
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {name} | {fmt(a.get('recall@10'))} | {fmt(a.get('ndcg@10'))} | {fmt(a.get('recall@20'))} "
                     f"| {fmt(a.get('ndcg@20'))} | {fmt(x.get('delta_ll'))} | {fmt(x.get('cited_in_history'))} "
                     f"| {fmt(x.get('traces_with_all_parts'))} | {fmt(x.get('transition_names_target_interest'))} "
                     f"| {fmt(x.get('interests_list_target_interest'))} |")
    return "\n".join(lines) + "\n"
