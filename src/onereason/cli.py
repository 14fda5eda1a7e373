"""The `onereason` command line: `run` chains every stage; each stage also has its own command."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from onereason import rundir
from onereason.config import ConfigError, build, field_paths, parse_sets
from onereason.data.schema import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Load datasets and show statistics.")
app.add_typer(data_app, name="data")
# Wide enough for the tables even when output goes to a pipe or a log file (rich assumes 80 there).
console = Console(width=max(120, shutil.get_terminal_size((120, 40)).columns))

RUNS = Path("runs")


SET = typer.Option(None, "--set", help="override any key of this command's config, e.g. loop.lr=1e-3 (VALUE "
                   "as JSON when it parses); repeat")


def _config(config_file: Optional[Path], name: Optional[str] = None, section: Optional[str] = None,
            sets: Optional[list[str]] = None, **flags):
    """The one way a command's config is made: the defaults ← --config (else the run's saved config.json) ←
    the command's flags ← `--set` (keys relative to `section`), validated once: a misspelled key or an
    out-of-range value is an error naming it. Returns the RunConfig, or its `section`."""
    from onereason.pipeline import RunConfig

    if config_file is None and name and (RUNS / name / "config.json").exists():
        config_file = RUNS / name / "config.json"
    data = {}
    if config_file is not None:
        try:
            data = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            _fail(f"{config_file}: {e}")
    cfg = _built(RunConfig, data, sets, f"{section}." if section else "", str(config_file or "config"), **flags)
    return getattr(cfg, section) if section else cfg


def _built(cls, data: dict, sets: Optional[list[str]], prefix: str = "", source: Optional[str] = None, **flags):
    """`data` with the flags (None: not given), then `--set`, applied under `prefix` and validated once; a
    config outside RunConfig (serving, RFT/MOPD, the world) is made the same way."""
    try:
        overrides = {k: v for k, v in flags.items() if v is not None} | parse_sets(sets)
        return build(cls, data, {prefix + k: v for k, v in overrides.items()}, source=source or cls.__name__)
    except ConfigError as e:
        _fail(e)


def _fail(e: Exception | str) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(2)


def print_stats(stats: list[dict]) -> None:
    t = Table(title="dataset statistics")
    cols = ["domain", "users", "items", "interactions", "train", "valid", "test", "seq_min", "seq_p50",
            "seq_mean", "seq_p90", "seq_max"]
    for c in cols:
        t.add_column(c, justify="right")
    for row in stats:
        t.add_row(*[f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in cols])
    console.print(t)


def print_results(results: dict) -> None:
    ks = [k for k in (10, 20) if k in results["ks"]] or results["ks"][-1:]
    groups = list(next(iter(results["methods"].values())))
    for group in groups if len(groups) > 2 else ["all"]:  # one domain: its table equals 'all'
        t = Table(title=f"{results['split']} split · {group} · {results['methods']['onereason'][group]['n']} users"
                        f" · beam {results['beams']} · full ranking")
        t.add_column("method")
        cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")] + [f"sid_validity@{max(results['ks'])}"]
        for c in cols:
            t.add_column(c, justify="right")
        for name, res in results["methods"].items():
            t.add_row(name, *[f"{res[group][c]:.4f}" for c in cols])
        console.print(t)


@app.command()
def run(
    datasets: Optional[list[str]] = typer.Option(None, "--dataset", "-d", help="shipped dataset name; repeat for a multi-domain run (default: the config's, else amazon-scientific)"),
    name: str = typer.Option("demo", help="run name: outputs go to runs/<name>/"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="RunConfig JSON (flags below override it)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding the datasets (default: the shipped copies)"),
    model: Optional[str] = typer.Option(None, help="tiny|small|medium|base or a local HF causal LM directory"),
    budget: Optional[float] = typer.Option(None, help="scale every stage's training budget: pre-training tokens, "
                                           "SFT epochs, GRPO steps, the bench baselines' epochs"),
    pretrain_budget: Optional[float] = typer.Option(None, help="scale the pre-training tokens by this instead of "
                                                    "--budget"),
    beams: Optional[int] = typer.Option(None, help="beam width = candidates per user"),
    max_users: Optional[int] = typer.Option(None, help="evaluate a sample of users (eval, sft-eval, rl-eval, bench)"),
    seed: Optional[int] = typer.Option(None, help="every stage's seed (SIDs, corpus, model init, data order, user "
                                       "samples, rollouts, baselines): a whole-pipeline replicate"),
    overwrite: bool = typer.Option(False, help="delete runs/<name> first"),
    until: str = typer.Option("serve", help="stop after this stage: data, itemic, corpus, pretrain, eval, sft, "
                              "sft-eval, rl, rl-eval, bench or serve"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override any RunConfig key, e.g. "
                                             "sft.loop.lr=1e-3 (VALUE as JSON when it parses); repeat"),
) -> None:
    """Run the whole pipeline: data → itemic tokens → corpus → pre-training → eval → SFT → RL → bench report."""
    from onereason import pipeline

    users = {f"{s}.sample.max_users": max_users for s in ("eval", "sft_eval", "rl_eval", "bench")}
    seeds = {p: seed for p in field_paths(pipeline.RunConfig(), "seed")}
    cfg = _config(config_file, sets=set_, **{"data.datasets": datasets or None, "data.data_dir": data_dir,
                                             "pretrain.model": model, "eval.decoding.beams": beams, **users, **seeds})
    try:
        if budget is not None or pretrain_budget is not None:
            cfg = pipeline.scale_budget(cfg, 1.0 if budget is None else budget, pretrain_budget)
        summary = pipeline.run(cfg, RUNS / name, overwrite=overwrite, log=console.print, until=until)
    except (DataError, ValueError, FileNotFoundError) as e:
        _fail(e)
    if "data" in summary:  # absent when skipped (a run resumed past it)
        print_stats(summary["data"]["stats"])
    if it := summary.get("itemic"):
        console.print(f"itemic: {it['items']} items, {it['levels']} levels x {it['codebook_size']} codes, "
                      f"collisions before resolution {it['collision_rate_before']:.1%}, "
                      f"after {it['collision_rate_after']:.1%}")
    reports = {"pretrain": "pretrain/report.md", "sft-eval": "sft/eval.md", "rl-eval": "rl/eval.md"}
    done = {k.split()[0] for k in summary}
    for stage in pipeline.STAGE_NAMES:
        if stage == "eval" and stage in done:
            print_results(summary["eval"])
        elif stage in reports and stage in done:
            console.print((RUNS / name / reports[stage]).read_text().split("## Thinking")[0])
    if "serve" in summary:
        print_smoke(summary["serve"])
    if "bench" in summary:
        print_headline(json.loads((RUNS / name / rundir.REPORT / "results.json").read_text()))
    console.print(f"artifacts: {RUNS / name}/ (the layout is in the README)")
    if "bench" in summary:
        console.print(f"report:    {RUNS / name / 'report' / 'report.html'} (one file, plots inlined; report.md "
                      "beside it)")
    console.print("next:\n"
                  f"  onereason serve start --name {name}        # the fast-slow service on http://127.0.0.1:8000\n"
                  f"  onereason eval --name {name} --beams 64    # the pre-trained model, all test users\n"
                  f"  onereason bench compare --run {name} --run <other>   # two runs' reports side by side\n"
                  "  make reproduce                              # the full budget (README: wall time)")


HEADLINE = ("pre-trained non-thinking", "SFT non-thinking", "SFT thinking", "SFT race", "RL non-thinking",
            "RL thinking", "RL race", "SASRec", "SASRec + successors", "TIGER-style", "LC-Rec-style non-thinking",
            "Markov chain", "MostPopular")


def print_headline(results: dict) -> None:
    """The bench's R3 numbers for our models in each mode and the baselines, one seeded user sample."""
    from onereason.bench.report import BASELINES

    t = Table(title=f"OneReason-Bench · {results['split']} split · {results['users']} users · "
                    f"{results['beams']} candidates · full ranking")
    cols = [c for c in ("recall@10", "ndcg@10", "recall@20", "ndcg@20") if int(c.split("@")[1]) in results["ks"]]
    for c in ("method", *cols):
        t.add_column(c, justify="left" if c == "method" else "right")
    for m in HEADLINE:
        if m in results["methods"]:
            x = results["methods"][m]["metrics"]["all"]
            t.add_row(m, *[f"{x[c]:.4f}" for c in cols])
    console.print(t)
    if r := results["ratios"].get("all"):
        console.print(f"our best: {r['best']} (NDCG@10 {r['ndcg@10']:.4f}); over the baselines: " + ", ".join(
            f"{b} {r[b]:.2f}x" for b in BASELINES if b in r))


def print_smoke(s: dict) -> None:
    a = s["answer"]
    console.print(f"serve: POST /recommend {json.dumps(s['request'])} → {len(a['items'])} items in {s['seconds']:.2f}s "
                  f"(model {s['model']}, mode {a['mode']})")
    for i in a["items"]:
        console.print(f"  {i['id']:>12}  {i['title'][:60]}  [{i['interest']}]")
    trace = s["explain"]["trace"].strip().replace("\n", " | ")
    console.print("  trace: " + (trace[:300] or "(empty: the model closed its think block at once)"))


@data_app.command("stats")
def data_stats(
    datasets: list[str] = typer.Option(["amazon-scientific"], "--dataset", "-d"),
    data_dir: Optional[Path] = typer.Option(None),
) -> None:
    """Users, items, interactions and sequence lengths per domain."""
    from onereason.data.registry import load_datasets
    from onereason.data.stats import dataset_stats

    try:
        ds = load_datasets(datasets, data_dir)
    except DataError as e:
        _fail(e)
    print_stats(dataset_stats(ds).to_dict(orient="records"))


@data_app.command("load")
def data_load(
    name: str = typer.Option(..., help="run name"),
    datasets: list[str] = typer.Option([], "--dataset", "-d"),
    data_dir: Optional[Path] = typer.Option(None),
    interactions: Optional[Path] = typer.Option(None, help="your interactions file (csv/tsv/parquet/jsonl)"),
    items: Optional[Path] = typer.Option(None, help="your items file"),
    domain: str = typer.Option("custom", help="domain name for your files"),
    columns: str = typer.Option("", help="schema=column pairs, e.g. user_id=userId,item_id=movieId"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Write runs/<name>/data/*.parquet from shipped datasets and/or your own files."""
    from onereason.pipeline import DataConfig, run_data

    generic = []
    if interactions or items:
        if not (interactions and items):
            raise typer.BadParameter("--interactions and --items go together")
        mapping = dict(pair.split("=", 1) for pair in columns.split(",") if pair)
        generic.append(dict(interactions=interactions, items=items, domain=domain, columns=mapping))
    cfg = _built(DataConfig, {"datasets": datasets, "generic": generic}, set_, data_dir=data_dir)
    try:
        out = run_data(cfg, RUNS / name)
    except DataError as e:
        _fail(e)
    print_stats(out["stats"])


@app.command()
def itemic(name: str = typer.Option(...), config_file: Optional[Path] = typer.Option(None, "--config"),
           set_: Optional[list[str]] = SET) -> None:
    """Semantic IDs, trie and tokenizer for runs/<name>/data."""
    from onereason.itemic import build

    stats = build.run(_config(config_file, name, "itemic", set_), RUNS / name)
    console.print_json(json.dumps(stats))


@app.command()
def corpus(name: str = typer.Option(...), config_file: Optional[Path] = typer.Option(None, "--config"),
           set_: Optional[list[str]] = SET) -> None:
    """Write the four pre-training layers (token, item, relational, user) for runs/<name>."""
    from onereason.corpus import build

    stats = build.run(_config(config_file, name, "corpus", set_), RUNS / name)
    t = Table(title="pre-training layers")
    for c in ("layer", "documents", "tokens", "per domain (tokens)"):
        t.add_column(c, justify="left" if c == "layer" else "right")
    for layer, s in stats["layers"].items():
        t.add_row(layer, f"{s['documents']:,}", f"{s['tokens']:,}",
                  ", ".join(f"{d} {v['tokens']:,}" for d, v in s["per_domain"].items()))
    console.print(t)


@app.command("pretrain")
def pretrain_(
    name: str = typer.Option(...),
    stage: str = typer.Option(..., help="text | warmup | full | long | all"),
    config_file: Optional[Path] = typer.Option(None, "--config"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Train pre-training stage(s) from the previous stage's model (resumes from the last
    checkpoint); works the same under `accelerate launch`. Updates pretrain/report.md."""
    from onereason.bench.stage_report import train_and_report
    from onereason.train import pretrain

    cfg = _config(config_file, name, "pretrain", set_)
    stages = pretrain.stages_to_run(cfg) if stage == "all" else [stage]
    try:
        for s in stages:
            train_and_report(cfg, RUNS / name, s)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    report = RUNS / name / "pretrain" / "report.md"
    if report.exists():
        console.print(report.read_text())


@app.command("next-item")
def next_item_(name: str = typer.Option(...), config_file: Optional[Path] = typer.Option(None, "--config"),
              set_: Optional[list[str]] = SET) -> None:
    """Train the User-layer-only next-item model (the baseline without pre-training)."""
    from onereason.train import next_item

    try:
        stats = next_item.run(_config(config_file, name, "next_item", set_), RUNS / name)
    except ValueError as e:
        _fail(e)
    console.print_json(json.dumps(stats, default=str))


@app.command("eval")
def eval_(
    name: str = typer.Option(...),
    config_file: Optional[Path] = typer.Option(None, "--config"),
    beams: Optional[int] = typer.Option(None),
    split: Optional[str] = typer.Option(None),
    max_users: Optional[int] = typer.Option(None),
    set_: Optional[list[str]] = SET,
) -> None:
    """Evaluate runs/<name>/model with full ranking; writes eval/results.{json,md} (valid: eval/valid/)."""
    from onereason.bench import evaluate

    cfg = _config(config_file, name, "eval", set_, **{"decoding.beams": beams, "sample.split": split,
                                                      "sample.max_users": max_users})
    print_results(evaluate.run(cfg, RUNS / name))


@app.command("eval-compare")
def eval_compare(
    name: str = typer.Option(..., help="run whose eval is compared"),
    reference: str = typer.Option(..., help="run it is compared with (evaluated on the same users)"),
    split: str = typer.Option("test", help="which eval: test (eval/) or valid (eval/valid/)"),
) -> None:
    """Paired bootstrap of two runs' `eval` on the same users: per-user difference with 95% intervals."""
    from onereason.bench import evaluate, rl_eval

    try:
        diffs = evaluate.compare_evals(RUNS / name, RUNS / reference, split=split)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    console.print(rl_eval.compare_markdown({name: diffs}, reference), markup=False, soft_wrap=True)


world_app = typer.Typer(no_args_is_help=True, help="A synthetic multi-domain world with known causes.")
app.add_typer(world_app, name="world")


@world_app.command("generate")
def world_generate(
    out: Path = typer.Option(..., help="folder for interactions/items/users.parquet and truth/"),
    users: int = typer.Option(8000),
    items_per_interest: int = typer.Option(90, help="items per (domain, topic): 48 interests"),
    seed: int = typer.Option(0),
    set_: Optional[list[str]] = SET,
) -> None:
    """Write a world (4 domains, shared users, 20 latent personas) and its ground truth."""
    from onereason.data.world import WorldConfig, write

    cfg = _built(WorldConfig, {}, set_, users=users, items_per_interest=items_per_interest, seed=seed)
    try:
        stats = write(cfg, out)
    except ValueError as e:
        _fail(e)
    console.print_json(json.dumps(stats))


@app.command("sft")
def sft_(
    name: str = typer.Option(...),
    config_file: Optional[Path] = typer.Option(None, "--config"),
    rebuild_data: bool = typer.Option(False, help="rebuild reasoning/sft.parquet (interests, personas, judge, traces)"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Reasoning SFT (R0-R3, thinking + non-thinking) from runs/<name>/model into runs/<name>/sft/model."""
    from onereason.reasoning.chat_client import EndpointError
    from onereason.reasoning.traces import TraceError
    from onereason.train import sft

    cfg = _config(config_file, name, "sft", set_)
    try:
        stats = sft.run(cfg, RUNS / name, rebuild_data=rebuild_data)
    except (ValueError, FileNotFoundError, TraceError, EndpointError) as e:
        _fail(e)
    console.print_json(json.dumps(stats, default=str))


@app.command("sft-eval")
def sft_eval_(
    name: str = typer.Option(...),
    config_file: Optional[Path] = typer.Option(None, "--config"),
    split: Optional[str] = typer.Option(None),
    max_users: Optional[int] = typer.Option(None),
    hypotheses: Optional[list[int]] = typer.Option(None, "--n", help="interest hypotheses for thinking runs; repeat"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Pre-trained vs SFT non-thinking vs SFT thinking (n = 1, 3, 5); writes sft/eval.{json,md}."""
    from onereason.bench import sft_eval

    cfg = _config(config_file, name, "sft_eval", set_, **{"sample.split": split, "sample.max_users": max_users,
                                                          "hypotheses": hypotheses or None})
    console.print(sft_eval.markdown(sft_eval.run(cfg, RUNS / name)))


rl_app = typer.Typer(no_args_is_help=True, help="RL: GRPO per domain or mixed, unify by RFT or MOPD, evaluate.")
app.add_typer(rl_app, name="rl")


def _experts(specs: list[str]) -> dict[str, str]:
    bad = [s for s in specs if "=" not in s]
    if bad or not specs:
        raise typer.BadParameter(f"--expert {bad[0] if bad else ''!r}: expected DOMAIN=MODEL_DIR")
    return dict(s.split("=", 1) for s in specs)


@rl_app.command("grpo")
def rl_grpo(
    name: str = typer.Option(...),
    config_file: Optional[Path] = typer.Option(None, "--config"),
    mode: Optional[str] = typer.Option(None, help="thinking | non-thinking | both"),
    domain: Optional[list[str]] = typer.Option(None, help="train a domain expert on these domains' prompts; repeat"),
    out: Optional[str] = typer.Option(None, help="output folder under the run (default rl/grpo)"),
    steps: Optional[int] = typer.Option(None),
    set_: Optional[list[str]] = SET,
) -> None:
    """GRPO with two-stage rollouts and the set-wise reward, from runs/<name>/sft/model."""
    from onereason.rl import grpo

    cfg = _config(config_file, name, "rl", set_, mode=mode, domains=domain or None, out=out, steps=steps)
    try:
        summary = grpo.run(cfg, RUNS / name)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    console.print_json(json.dumps(summary))


@rl_app.command("rft")
def rl_rft(
    name: str = typer.Option(...),
    expert: list[str] = typer.Option(..., help="DOMAIN=MODEL_DIR under the run; repeat per domain"),
    out: str = typer.Option("rl/rft"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Unify domain experts by rejection-sampling fine-tuning (hits with well-formed traces)."""
    from onereason.rl.unify import RftConfig, run_rft

    try:
        cfg = _built(RftConfig, {"experts": _experts(expert), "out": out}, set_)
        console.print_json(json.dumps(run_rft(cfg, RUNS / name)))
    except (ValueError, FileNotFoundError) as e:
        _fail(e)


@rl_app.command("mopd")
def rl_mopd(
    name: str = typer.Option(...),
    expert: list[str] = typer.Option(..., help="DOMAIN=MODEL_DIR under the run; repeat per domain"),
    out: str = typer.Option("rl/mopd"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Unify domain experts by multi-teacher on-policy distillation (token-level reverse KL)."""
    from onereason.rl.unify import MopdConfig, run_mopd

    try:
        cfg = _built(MopdConfig, {"experts": _experts(expert), "out": out}, set_)
        console.print_json(json.dumps(run_mopd(cfg, RUNS / name)))
    except (ValueError, FileNotFoundError) as e:
        _fail(e)


@rl_app.command("eval")
def rl_eval_(
    name: str = typer.Option(...),
    config_file: Optional[Path] = typer.Option(None, "--config"),
    method: Optional[list[str]] = typer.Option(None, help="NAME=MODEL_DIR:MODE (or NAME=D@DIR,D@DIR:MODE); repeat"),
    max_users: Optional[int] = typer.Option(None),
    beams: Optional[int] = typer.Option(None),
    out: Optional[str] = typer.Option(None, help="report stem under the run (default rl/eval)"),
    set_: Optional[list[str]] = SET,
) -> None:
    """SFT vs RL models, thinking / non-thinking / race, 64 beams: Recall@10, NDCG@10, pass@4, pass@64."""
    from onereason.bench import rl_eval

    try:
        methods = [rl_eval.parse_method(m).model_dump() for m in method] if method else None
        cfg = _config(config_file, name, "rl_eval", set_, **{"methods": methods, "sample.max_users": max_users,
                                                             "decoding.beams": beams, "out": out})
        console.print(rl_eval.markdown(rl_eval.run(cfg, RUNS / name)))
    except (ValueError, FileNotFoundError) as e:
        _fail(e)


@rl_app.command("compare")
def rl_compare(
    name: str = typer.Option(...),
    reference: str = typer.Option(..., help="the method every other one is compared with"),
    eval_: str = typer.Option("rl/eval", "--eval", help="report stem of an `rl eval` under the run"),
) -> None:
    """Paired bootstrap: each method of an `rl eval` minus the reference, per user, with 95% intervals."""
    from onereason.bench import rl_eval

    try:
        diffs = rl_eval.compare(RUNS / name / f"{eval_}_recommendations.jsonl", reference)
        console.print(rl_eval.compare_markdown(diffs, reference), markup=False, soft_wrap=True)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)


serve_app = typer.Typer(no_args_is_help=True, help="Fast-slow serving: the HTTP service and the slow-path worker.")
app.add_typer(serve_app, name="serve")


def _serve_config(sets: Optional[list[str]], **options):
    from onereason.serve.engine import ServeConfig

    return _built(ServeConfig, {}, sets, **options)


@serve_app.command("start")
def serve_start(
    name: str = typer.Option(..., help="run name (runs/<name>)"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    model: Optional[str] = typer.Option(None, help="model dir under the run (default rl/grpo/model, else sft/model)"),
    store: Optional[str] = typer.Option(None, help="sqlite | sqlite:///path | redis://host:port/db"),
    worker: Optional[str] = typer.Option(None, help="thread (slow path inside the server) | off"),
    api_key: Optional[str] = typer.Option(None, envvar="ONEREASON_API_KEY", help="require this key (Bearer or X-API-Key)"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Serve runs/<name>: /recommend, /events, /explain, /v1/chat/completions, /health, /metrics."""
    import uvicorn

    from onereason.serve.app import SERVE_ENV, create_app

    cfg = _serve_config(set_, model=model, store=store, worker=worker, api_key=api_key)
    if cfg.processes > 1:  # uvicorn starts each process from an import string
        os.environ[SERVE_ENV] = json.dumps({"run_dir": str((RUNS / name).resolve()), "config": cfg.model_dump()})
        uvicorn.run("onereason.serve.app:app_from_env", factory=True, workers=cfg.processes, host=host, port=port,
                    log_level="warning")
        return
    try:
        application = create_app(RUNS / name, cfg)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    uvicorn.run(application, host=host, port=port, log_level="warning")


@serve_app.command("worker")
def serve_worker(
    name: str = typer.Option(...),
    store: Optional[str] = typer.Option(None, help="the store the servers use"),
    model: Optional[str] = typer.Option(None),
    limit: Optional[int] = typer.Option(None, help="stop after this many traces (e.g. to warm the cache)"),
    set_: Optional[list[str]] = SET,
) -> None:
    """The slow path as its own process: refresh missing or stale traces, most active users first,
    until the queue is empty (or --limit traces are written)."""
    from tqdm.auto import tqdm

    from onereason.serve.engine import Engine
    from onereason.serve.store import open_store
    from onereason.serve.worker import refresh, register_users

    cfg = _serve_config(set_, model=model, store=store)
    try:
        engine = Engine(RUNS / name, cfg)
        st = open_store(cfg.store, RUNS / name)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    register_users(engine, st)
    total = min(st.queue_length(), limit or 10**12)
    done = 0
    with tqdm(total=total, desc="traces") as bar:
        while done < total:
            n = refresh(engine, st, min(cfg.worker_batch, total - done), seed=done)
            if not n:
                break
            done += n
            bar.update(n)
    console.print(f"{done} traces written; {st.queue_length()} users still queued")
    st.close()


bench_app = typer.Typer(no_args_is_help=True, help="OneReason-Bench: R0-R3 per domain, baselines, report, compare.")
app.add_typer(bench_app, name="bench")


@bench_app.command("run")
def bench_run(
    name: str = typer.Option(...),
    config_file: Optional[Path] = typer.Option(None, "--config"),
    set_: Optional[list[str]] = SET,
) -> None:
    """Every tier and baseline on runs/<name> (cached parts resume); report in runs/<name>/report/."""
    from onereason.bench import report, suite

    cfg = _config(config_file, name, "bench", set_)
    try:
        results = suite.run(cfg, RUNS / name)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    console.print(report.markdown_text(results).split("## Thinking")[0])
    console.print(f"report: {RUNS / name / 'report' / 'report.html'}")


@bench_app.command("compare")
def bench_compare(
    run: list[str] = typer.Option(..., help="run name (runs/<name>) or a results.json path; repeat"),
    out: Path = typer.Option(RUNS / "compare", help="folder for compare.md / compare.html / compare.png"),
) -> None:
    """Two or more bench reports side by side."""
    from onereason.bench import report

    files = [Path(r) if r.endswith(".json") else RUNS / r / rundir.REPORT / "results.json" for r in run]
    try:
        console.print(report.compare(files, out))
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    console.print(f"report: {out / 'compare.html'}")


if __name__ == "__main__":  # `accelerate launch -m onereason.cli ...`
    app()
