"""Stage `eval`: the model's constrained-beam recommendations and MostPopular on the test split,
full ranking over all items, written as results.json and results.md (in eval/; a valid-split
eval in eval/valid/, so choosing a model on valid never replaces its test numbers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field

from onereason import rundir
from onereason.bench.baselines.markov import markov_lists
from onereason.bench.baselines.popular import most_popular
from onereason.bench.lists import recommend_next, sample_prompts
from onereason.config import Config
from onereason.decoding.successors import SuccessorMemory, save_weight, saved_weight
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists, paired_bootstrap, per_sample
from onereason.model.backbone import load_model
from onereason.protocol import Decoding, EvalSample
from onereason.rundir import write_text


class EvalConfig(Config):
    """What to evaluate and with which beam."""

    sample: EvalSample = EvalSample()
    decoding: Decoding = Decoding(beams=20)
    batch_size: int = Field(32, ge=1)
    successor_weights: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        [0.0, 0.05, 0.1, 0.2, 0.3, 0.5], min_length=1, description="the successor memory's weight beside the LM "
        "(decoding/successors.py), chosen by NDCG@10 on all valid users before any split is scored and kept in "
        "the model directory; [0] leaves the LM's lists alone")


def choose_successor_weight(model, tok, sid, memory: SuccessorMemory, run_dir: Path, config: EvalConfig,
                            inter: pd.DataFrame, progress: bool = True) -> float:
    """The grid's weight with the best NDCG@10 on all valid users (a tie goes to the smaller), `memory`'s table
    under each weight, saved in the model directory with its curve; a weight saved from the same grid is
    reused; 0 where valid has no user."""
    grid, model_dir = config.successor_weights, run_dir / rundir.MODEL
    if grid == [0.0]:
        return 0.0
    saved = saved_weight(model_dir, grid)
    if saved is not None:
        return saved
    p = sample_prompts(inter, "valid", rundir.prompt_items(run_dir), None, config.sample.seed)
    if not p.users:  # nothing to choose on: the LM alone
        return 0.0
    recs, domains = recommend_next(model, tok, sid, p, config.decoding.beams, config.batch_size, progress)
    curve = {w: evaluate_lists([r.items for r in memory.with_weight(w).fuse_all(recs, p.last_items(), domains)],
                               p.truths, [10])["all"]["ndcg@10"] for w in grid}
    best = max(grid, key=lambda w: (curve[w], -w))
    save_weight(model_dir, best, grid, curve, len(p.users))
    return best


def eval_dir(run_dir: Path, split: str = "test") -> Path:
    """Where a split's eval lives: eval/ for test (what the pipeline and report read), eval/<split>/ otherwise."""
    return run_dir / "eval" if split == "test" else run_dir / "eval" / split


def run(config: EvalConfig, run_dir: Path, progress: bool = True) -> dict:
    model = load_model(run_dir / rundir.MODEL)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    s = config.sample
    p = sample_prompts(inter, s.split, rundir.prompt_items(run_dir), s.max_users, s.seed)
    users, truths = p.users, p.truths
    ks = config.decoding.cutoffs()
    tok, sid = load_sid_tokens(run_dir)
    table = SuccessorMemory.from_interactions(inter, 0.0)
    weight = choose_successor_weight(model, tok, sid, table, run_dir, config, inter, progress)
    lm, domains = recommend_next(model, tok, sid, p, config.decoding.beams, config.batch_size, progress)
    last = p.last_items()
    recs = table.with_weight(weight).fuse_all(lm, last, domains)
    pop = most_popular(inter, max(ks))
    methods = {"onereason": evaluate_lists([r.items for r in recs], truths, ks, domains)}
    if weight:
        methods["onereason, LM only"] = evaluate_lists([r.items for r in lm], truths, ks, domains)
    methods["MostPopular"] = evaluate_lists([pop.get(d, []) for d in domains], truths, ks, domains)
    methods["Markov chain"] = evaluate_lists(markov_lists(inter, last, domains, max(ks)), truths, ks, domains)
    results = {
        "split": config.sample.split, "beams": config.decoding.beams, "users": len(users), "ks": ks,
        "successor_weight": weight,
        "protocol": "full ranking over all items of the target domain; history items not removed; successor "
                    f"memory weight {weight} (chosen on valid)",
        "methods": methods,
    }
    out = eval_dir(run_dir, config.sample.split)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "recommendations.jsonl", "".join(
        json.dumps({"user_id": u, "target": t, "items": r.items, "scores": r.scores, "lm_items": m.items}) + "\n"
        for u, t, r, m in zip(users, truths, recs, lm)))
    write_text(out / "results.md", results_markdown(results))
    write_text(out / "results.json", json.dumps(results, indent=2))
    return results


def compare_evals(run: Path, reference: Path, columns: tuple[str, ...] = ("recall@10", "ndcg@10", "recall@20"),
                  samples: int = 2000, seed: int = 0, split: str = "test") -> dict[str, tuple[float, float, float]]:
    """`run` minus `reference` per user, from both runs' `split` recommendations.jsonl: mean difference and
    paired-bootstrap 95% interval per metric. Two models evaluated on the same users share the users'
    difficulty, so this says whether a gap is larger than the sample's noise (a test-set SE alone cannot)."""
    def load(r: Path) -> dict[str, dict]:
        path = eval_dir(r, split) / "recommendations.jsonl"
        if not path.exists():
            flag = "" if split == "test" else f" --split {split}"
            raise FileNotFoundError(f"{path}: run `onereason eval --name {r.name}{flag}` first")
        rows = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON row ({e.msg}); run the eval again") from None
            rows[row["user_id"]] = row
        return rows

    a, b = load(run), load(reference)
    if a.keys() != b.keys():
        raise ValueError(f"{run.name} and {reference.name} were evaluated on different users "
                         f"({len(a)} vs {len(b)}; {len(a.keys() ^ b.keys())} not shared): same --split and --max-users")
    users = sorted(a)
    if any(a[u]["target"] != b[u]["target"] for u in users):
        raise ValueError(f"{run.name} and {reference.name} have different targets for the same users (other data splits)")

    truths = [a[u]["target"] for u in users]
    lists_a, lists_b = [a[u]["items"] for u in users], [b[u]["items"] for u in users]
    return {c: paired_bootstrap(per_sample(c, lists_a, truths), per_sample(c, lists_b, truths), samples, seed)
            for c in columns}


def results_markdown(results: dict) -> str:
    """One table per domain group: methods × (Recall, NDCG, Pass) @k, plus SID validity."""
    ks = results["ks"]
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks] + [f"sid_validity@{max(ks)}"]
    lines = [f"# Evaluation ({results['split']} split, {results['users']} users, beam {results['beams']})", "",
             results["protocol"], ""]
    groups = list(next(iter(results["methods"].values())))
    for g in groups:
        lines += [f"## {g}", "", "| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, res in results["methods"].items():
            vals = [res[g].get(c) for c in cols]
            lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
        lines.append("")
    return "\n".join(lines)
