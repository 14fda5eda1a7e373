"""`onereason rl eval`: SFT and RL models side by side on the same test users, with the seeds'
candidate budget (64 beams): Recall@10, NDCG@10, pass@4, pass@64, per domain.

A method is a model directory and a mode: `non-thinking` (empty think block, then the item beam),
`thinking` (a sampled trace, then the beam), or `race` (both modes' beams, merged by reciprocal rank:
`merge_race`). Written to runs/<name>/<out>.{json,md,png}
and <out>_recommendations.jsonl (every user's list per method; default out rl/eval).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pydantic import Field

from onereason import rundir
from onereason.bench.lists import chat_lists, hypothesis_lists, race_lists, sample_prompts
from onereason.config import Config
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists, paired_bootstrap, per_sample
from onereason.model.backbone import load_model
from onereason.protocol import Decoding, EvalSample
from onereason.rundir import save_figure, write_text


class Method(Config):
    name: str
    model: str | dict[str, str] = Field(description="model directory relative to the run directory, or "
                                        "domain → directory (each domain's users go to its expert)")
    mode: str = Field(pattern="^(thinking|non-thinking|race|hypotheses|hypotheses-turns)$",
                      description="hypotheses(-turns): thinking with a beam per listed interest, merged by score "
                      "(by turns)")

    def dirs(self) -> list[str]:
        return list(self.model.values()) if isinstance(self.model, dict) else [self.model]


class RlEvalConfig(Config):
    sample: EvalSample = EvalSample(max_users=500)
    decoding: Decoding = Decoding(beams=64, ks=[4, 10, 64])
    hypotheses: int = Field(3, ge=1, le=5)
    batch_size: int = Field(16, ge=1)
    methods: list[Method] = Field(default_factory=lambda: [
        Method(name="SFT non-thinking", model=str(rundir.SFT_MODEL), mode="non-thinking"),
        Method(name="SFT thinking", model=str(rundir.SFT_MODEL), mode="thinking"),
        Method(name="RL thinking", model=str(rundir.RL_MODEL), mode="thinking"),
        Method(name="RL race", model="rl/grpo/model", mode="race")])
    out: str = Field("rl/eval", description="report path stem relative to the run directory (.json, .md, .png)")


def parse_method(spec: str) -> Method:
    """`NAME=MODEL_DIR:MODE`, e.g. `RL thinking=rl/think/model:thinking`, or with one expert per domain
    `experts=office@rl/ex-office/model,movies@rl/ex-movies/model:thinking`."""
    try:
        name, rest = spec.split("=", 1)
        model, mode = rest.rsplit(":", 1)
        if "@" in model:
            routed = dict(part.split("@", 1) for part in model.split(","))
            return Method(name=name.strip(), model={d.strip(): m.strip() for d, m in routed.items()}, mode=mode.strip())
        return Method(name=name.strip(), model=model.strip(), mode=mode.strip())
    except ValueError as e:
        raise ValueError(f"--method {spec!r}: expected NAME=MODEL_DIR:MODE (or NAME=DOMAIN@DIR,DOMAIN@DIR:MODE) "
                         "with MODE thinking, non-thinking, race, hypotheses or hypotheses-turns") from e


def run(config: RlEvalConfig, run_dir: Path, progress: bool = True) -> dict:
    missing = [d for m in config.methods for d in m.dirs() if not (run_dir / d / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"rl eval: no model at {', '.join(str(run_dir / x) for x in missing)}")
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    s = config.sample
    p = sample_prompts(inter, s.split, rundir.prompt_items(run_dir), s.max_users, s.seed)
    tok, sid = load_sid_tokens(run_dir)
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]

    memo: dict[tuple, list[list[str]]] = {}  # race reuses the lists its two modes' methods decoded

    def lists(model_dir: str, model, users: list[int], thinking: bool) -> list[list[str]]:
        key = (model_dir, tuple(users), thinking)
        if key not in memo:
            memo[key] = chat_lists(model, p.subset(users), [domains[i] for i in users], sid, tok, thinking,
                                   config.decoding, config.hypotheses, config.batch_size, config.sample.seed,
                                   progress)[0]
        return memo[key]

    def method_lists(model_dir: str, model, users: list[int], mode: str) -> list[list[str]]:
        if mode.startswith("hypotheses"):
            sub, doms = p.subset(users), [domains[i] for i in users]
            traces = chat_lists(model, sub, doms, sid, tok, True, config.decoding, config.hypotheses, config.batch_size,
                                config.sample.seed, progress)[2]
            return hypothesis_lists(model, sub, doms, sid, tok, traces, config.hypotheses, config.decoding.beams,
                                    config.batch_size, progress)[mode]
        if mode != "race":
            return lists(model_dir, model, users, mode == "thinking")
        return race_lists(lists(model_dir, model, users, False), lists(model_dir, model, users, True),
                          config.decoding.beams)

    results: dict = {}
    per_user: dict[str, list[list[str]]] = {}
    for m in config.methods:
        routes = m.model if isinstance(m.model, dict) else {None: m.model}
        uncovered = sorted(set(domains) - set(routes)) if isinstance(m.model, dict) else []
        if uncovered:
            raise ValueError(f"rl eval: method {m.name!r} has no model for domain(s) {uncovered}")
        got: list[list[str]] = [[] for _ in p.users]
        for domain, model_dir in routes.items():
            users = [i for i, d in enumerate(domains) if domain is None or d == domain]
            if users:
                model = load_model(run_dir / model_dir)
                for i, items in zip(users, method_lists(model_dir, model, users, m.mode)):
                    got[i] = items
        per_user[m.name] = got
        results[m.name] = {"model": m.model, "mode": m.mode,
                           "metrics": evaluate_lists(got, p.truths, config.decoding.cutoffs(), domains)}
    report = {"split": config.sample.split, "users": len(p.users), "beams": config.decoding.beams, "temperature": config.decoding.temperature,
              "hypotheses": config.hypotheses, "methods": results}
    stem = run_dir / config.out
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_text(stem.with_suffix(".json"), json.dumps(report, indent=2))
    write_text(stem.with_suffix(".md"), markdown(report))
    plot(report, stem.with_suffix(".png"))
    write_text(stem.with_name(stem.name + "_recommendations.jsonl"), "".join(  # per user: paired comparisons
        json.dumps({"user_id": u, "target": t, "items": {m: v[j] for m, v in per_user.items()}}) + "\n"
        for j, (u, t) in enumerate(zip(p.users, p.truths))))
    return report


COLUMNS = ("recall@10", "ndcg@10", "pass@4", "pass@64")


def markdown(report: dict) -> str:
    groups = sorted({g for r in report["methods"].values() for g in r["metrics"]} - {"all"})
    head = [f"{c} {g}" for g in ["all", *groups] if len(groups) > 1 or g == "all" for c in COLUMNS]
    lines = [f"# RL evaluation ({report['split']} split, {report['users']} users, {report['beams']} beams, "
             f"trace temperature {report['temperature']}, n = {report['hypotheses']})", "",
             "| method | mode | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for name, r in report["methods"].items():
        vals = [r["metrics"].get(g, {}).get(c) for g in ["all", *groups] if len(groups) > 1 or g == "all" for c in COLUMNS]
        lines.append(f"| {name} | {r['mode']} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def compare(recommendations: Path, reference: str, columns: tuple[str, ...] = COLUMNS, samples: int = 2000,
            seed: int = 0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Every method of an eval's <out>_recommendations.jsonl minus `reference`, per user: mean difference
    and paired-bootstrap 95% interval of each metric (e.g. `recall@10`), so a table of means says which
    gaps are larger than the user sample's noise."""
    rows = [json.loads(line) for line in recommendations.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{recommendations}: no users")
    if reference not in rows[0]["items"]:
        raise ValueError(f"{recommendations}: no method {reference!r}; it has {sorted(rows[0]['items'])}")

    truths = [r["target"] for r in rows]

    def per_user(method: str, column: str) -> list[float]:
        return per_sample(column, [r["items"][method] for r in rows], truths)

    ref = {c: per_user(reference, c) for c in columns}
    return {m: {c: paired_bootstrap(per_user(m, c), ref[c], samples, seed) for c in columns}
            for m in rows[0]["items"] if m != reference}


def compare_markdown(diffs: dict, reference: str) -> str:
    cols = list(next(iter(diffs.values()))) if diffs else list(COLUMNS)
    lines = [f"Difference to {reference!r} per user, mean [paired bootstrap 95% interval]", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for m, d in diffs.items():
        lines.append(f"| {m} | " + " | ".join(f"{d[c][0]:+.4f} [{d[c][1]:+.4f}, {d[c][2]:+.4f}]" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["methods"])
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(3.6 * len(COLUMNS), 0.5 * len(names) + 1.5), sharey=True)
    for ax, c in zip(axes, COLUMNS):
        ax.barh(names, [report["methods"][n]["metrics"]["all"].get(c, 0.0) for n in names])
        ax.set_title(c)
        ax.invert_yaxis()
    save_figure(fig, png, dpi=100)
