"""Stage `eval`: the model's constrained-beam recommendations and MostPopular on the test split,
full ranking over all items, written as results.json and results.md."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, Field, field_validator
from transformers import AutoModelForCausalLM

from onereason.bench.baselines import most_popular
from onereason.bench.metrics import KS, evaluate_lists
from onereason.corpus.user_layer import encode_history, eval_prompts
from onereason.decoding.constrained import prompt_ids, recommend
from onereason.train.next_item import load_sid_tokens


class EvalConfig(BaseModel):
    """What to evaluate and with which beam."""

    split: str = Field("test", description="valid or test")
    ks: list[int] = Field(list(KS), description="cut-offs; those above `beams` are skipped")
    beams: int = Field(20, ge=1, description="beam width = candidates per user (k=64 needs 64)")
    max_users: int | None = Field(None, ge=1, description="evaluate a seeded sample of users (None: all)")
    max_items: int = Field(50, ge=1, description="history items in a prompt")
    batch_size: int = Field(32, ge=1)
    seed: int = 0

    @field_validator("split")
    @classmethod
    def _split(cls, v: str) -> str:
        if v not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', not {v!r}")
        return v


def run(config: EvalConfig, run_dir: Path, progress: bool = True) -> dict:
    tok, sid = load_sid_tokens(run_dir)
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "model"))
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    users, hists, truths = eval_prompts(inter, config.split, config.max_items)
    if config.max_users and config.max_users < len(users):
        keep = sorted(pd.Series(range(len(users))).sample(config.max_users, random_state=config.seed))
        users, hists, truths = [users[i] for i in keep], [hists[i] for i in keep], [truths[i] for i in keep]
    domains = [sid.codec.item_domain[t[0]] for t in truths]
    ks = [k for k in config.ks if k <= config.beams]
    prompts = [prompt_ids(encode_history(h, sid, tok.bos_token_id), sid, d) for h, d in zip(hists, domains)]
    recs = recommend(model, prompts, domains, sid, tok.pad_token_id, k=config.beams, num_beams=config.beams,
                     batch_size=config.batch_size, progress=progress)
    pop = most_popular(inter, max(ks))
    results = {
        "split": config.split, "beams": config.beams, "users": len(users), "ks": ks,
        "protocol": "full ranking over all items of the target domain; history items not removed",
        "methods": {
            "onereason": evaluate_lists([r.items for r in recs], truths, ks, domains),
            "MostPopular": evaluate_lists([pop.get(d, []) for d in domains], truths, ks, domains),
        },
    }
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))
    with open(out / "recommendations.jsonl", "w") as f:
        for u, h, t, r in zip(users, hists, truths, recs):
            f.write(json.dumps({"user_id": u, "target": t, "items": r.items, "scores": r.scores}) + "\n")
    return results


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
