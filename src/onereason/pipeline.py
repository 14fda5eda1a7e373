"""`onereason run`: every stage in order, in one readable function.

    data ─► itemic ─► corpus ─► pretrain text ─► warmup ─► full ─► long ─► eval ─► sft ─► sft-eval
         ─► rl (GRPO, thinking) ─► rl-eval ─► bench ─► serve (one request to the service on loopback)

(`onereason next-item` keeps the User-layer-only model as a baseline; it is not in this chain.)

Each stage reads its inputs from runs/<name>/ and writes its outputs there atomically, so a
stage can be re-run alone; training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import Field, ValidationError, model_validator

from onereason import rundir
from onereason.bench import evaluate
from onereason.bench import rl_eval, sft_eval, stage_report, suite
from onereason.bench.evaluate import EvalConfig
from onereason.bench.rl_eval import RlEvalConfig
from onereason.bench.sft_eval import SftEvalConfig
from onereason.bench.suite import BenchConfig
from onereason.config import Config
from onereason.corpus import build as corpus
from onereason.corpus.build import CorpusConfig
from onereason.data import world
from onereason.data.general_text import load_general_text
from onereason.data.loaders import load_generic
from onereason.data.registry import combine, load_dataset
from onereason.data.schema import DataError, save_dataset, write_parquet
from onereason.data.stats import dataset_stats
from onereason.data.world import WorldConfig
from onereason.itemic import build as itemic
from onereason.itemic.build import ItemicConfig
from onereason.rl import grpo
from onereason.rl.grpo import GrpoConfig
from onereason.rundir import write_text
from onereason.serve import smoke
from onereason.train import pretrain, sft
from onereason.train.next_item import NextItemConfig
from onereason.train.pretrain import PretrainConfig
from onereason.train.sft import SftConfig


class GenericSource(Config):
    """A dataset in your own files (CSV/TSV/Parquet/JSONL), mapped onto the schema."""

    interactions: Path
    items: Path
    domain: str
    columns: dict[str, str] = Field(default_factory=dict, description="schema name → your column name")
    drop_unknown_items: bool = False


class DataConfig(Config):
    """Which datasets: shipped names and/or your own files. Several form one multi-domain corpus."""

    datasets: list[str] = Field(default_factory=lambda: ["amazon-scientific"])
    data_dir: Path | None = Field(None, description="folder holding the named datasets (default: shipped copies)")
    generic: list[GenericSource] = Field(default_factory=list)
    world: WorldConfig | None = Field(None, description="add a generated multi-domain world (data/world.py)")
    domains: list[str] | None = Field(None, description="keep only these domains, each event's split as "
                                      "it was (a single-domain model of a multi-domain dataset)")
    general_text: str | None = Field("sotu", description="Token-layer English text: shipped 'sotu', a "
                                     ".jsonl/.txt path, or None for item text only")


# where a stage declared its own prompt length before `corpus.max_items` became the only place
RETIRED_PROMPT_ITEMS = ("pretrain.report.max_items", "next_item.max_items", "eval.max_items", "sft.data.max_items",
                        "sft_eval.max_items", "rl.max_items", "rl_eval.max_items", "bench.max_items")


class RunConfig(Config):
    """The whole pipeline; saved as runs/<name>/config.json."""

    data: DataConfig = DataConfig()
    itemic: ItemicConfig = ItemicConfig()
    corpus: CorpusConfig = CorpusConfig()
    pretrain: PretrainConfig = PretrainConfig()
    next_item: NextItemConfig = NextItemConfig()
    eval: EvalConfig = EvalConfig()
    sft: SftConfig = SftConfig()
    sft_eval: SftEvalConfig = SftEvalConfig()
    rl: GrpoConfig = GrpoConfig()
    rl_eval: RlEvalConfig = RlEvalConfig()
    bench: BenchConfig = BenchConfig()
    skip: list[str] = Field(default_factory=list, description="stages `run` leaves out, e.g. sft-eval and rl-eval "
                            "(the bench scores the same models); their commands still run them")

    @model_validator(mode="before")
    @classmethod
    def _prompt_items_declared_once(cls, data: Any) -> Any:
        """Prompts hold `corpus.max_items` items, declared there only. The stages' own `max_items` (before
        that) are still read from saved runs when they equal it, and refused by name when they differ."""
        if not isinstance(data, dict):
            return data
        corpus = data.get("corpus")
        window = corpus.get("max_items", CorpusConfig().max_items) if isinstance(corpus, dict) else \
            getattr(corpus, "max_items", CorpusConfig().max_items)
        out = dict(data)
        for path in RETIRED_PROMPT_ITEMS:
            *parents, leaf = path.split(".")
            node = out
            for part in parents:  # copied on the way down: the caller's dicts stay as they were
                if not isinstance(node.get(part), dict):
                    break
                node[part] = dict(node[part])
                node = node[part]
            else:
                if leaf in node:
                    if node[leaf] != window:
                        raise ValueError(f"{path}={node[leaf]}: prompts hold corpus.max_items={window} history "
                                         "items (set it there; a stage's own max_items is gone)")
                    del node[leaf]
        return out


def scale_budget(config: RunConfig, factor: float, pretrain_factor: float | None = None) -> RunConfig:
    """Every stage's training spend × `factor`: pre-training tokens (× `pretrain_factor` when given), the
    User-layer baseline's and SFT's epochs, GRPO steps, and the bench baselines' epochs (SASRec,
    TIGER-style, LC-Rec-style). What is measured (users, beams) stays: `--max-users` sets that."""
    pretrain_factor = factor if pretrain_factor is None else pretrain_factor
    for key, f in (("budget", factor), ("pretrain budget", pretrain_factor)):
        if f <= 0:
            raise ValueError(f"{key}: {f} is not a positive factor")
    c = config.model_copy(deep=True)
    for s in pretrain.STAGES:
        stage = getattr(c.pretrain, s)
        stage.tokens = max(1, round(stage.tokens * pretrain_factor))
        if stage.user_epochs is not None:
            stage.user_epochs *= pretrain_factor
    c.next_item.loop.epochs *= factor
    c.sft.loop.epochs *= factor
    c.rl.steps = max(1, round(c.rl.steps * factor))
    c.bench.sasrec.epochs = max(1, round(c.bench.sasrec.epochs * factor))
    c.bench.tiger.epochs = max(1, round(c.bench.tiger.epochs * factor))
    c.bench.lcrec_epochs *= factor
    return c  # every assignment above was validated (validate_assignment)


def run_itemic(config: ItemicConfig, run_dir: Path, log: Callable[[str], None]) -> dict:
    """The itemic stage, saying which SID layout it chose (the identity code can turn on by itself)."""
    stats = itemic.run(config, run_dir)
    log(itemic.describe(stats, config))
    return stats


def run_data(config: DataConfig, run_dir: Path) -> dict:
    """Load, validate and write interactions/items parquet plus dataset statistics."""
    parts = [load_dataset(n, config.data_dir) for n in config.datasets]
    parts += [load_generic(g.interactions, g.items, g.domain, g.domain, g.columns, g.drop_unknown_items)
              for g in config.generic]
    if config.world is not None:
        parts.append(world.generate(config.world)[0])
    if not parts:
        raise DataError("config", "no dataset named", field="data.datasets")
    ds = combine(parts)
    if config.domains is not None:
        ds = ds.only_domains(config.domains)
    text = load_general_text(config.general_text) if config.general_text else None
    save_dataset(ds, run_dir / "data")
    if text is not None:
        write_parquet(text, run_dir / rundir.GENERAL_TEXT)
    stats = dataset_stats(ds)
    write_text(run_dir / "data" / "stats.json", stats.to_json(orient="records", indent=2))
    return {"stats": stats.to_dict(orient="records")}


def prepare_run_dir(config: RunConfig, run_dir: Path, overwrite: bool = False) -> None:
    """A run directory belongs to one config: refuse to mix, unless told to start over."""
    saved = run_dir / rundir.RUN_CONFIG
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    if saved.exists():
        old = json.loads(saved.read_text())
        try:  # read as this code reads it: a key added since, at its default, is no change
            old = json.loads(type(config).model_validate(old).model_dump_json())
        except ValidationError:
            pass  # a key since removed or renamed: compared as written, so it shows as changed
        new = json.loads(config.model_dump_json())
        changed = [k for k in ("data", "itemic", "corpus", "pretrain", "next_item", "sft") if old.get(k) != new.get(k)]
        if changed:
            raise ValueError(f"{run_dir} holds a run with a different {', '.join(changed)} config; "
                             "choose another --name or pass --overwrite")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(saved, config.model_dump_json(indent=2))


STAGE_NAMES = ("data", "itemic", "corpus", "pretrain", "eval", "sft", "sft-eval", "rl", "rl-eval", "bench", "serve")


def run(config: RunConfig, run_dir: Path, overwrite: bool = False, progress: bool = True, log=print,
        until: str = "serve") -> dict:
    """data → itemic → corpus → pretrain stages → eval → sft → sft-eval → rl → rl-eval → bench → serve, stopping
    after `until` (one of STAGE_NAMES; "pretrain" = all its stages); returns each stage's summary."""
    for key, names in (("until", [until]), ("skip", config.skip)):
        unknown = [n for n in names if n not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"{key}: unknown stage {unknown[0]!r}; one of {', '.join(STAGE_NAMES)}")
    prepare_run_dir(config, run_dir, overwrite)
    summary: dict = {}
    last = STAGE_NAMES.index(until)
    for name, stage in [
        ("data", lambda: run_data(config.data, run_dir)),
        ("itemic", lambda: run_itemic(config.itemic, run_dir, log)),
        ("corpus", lambda: corpus.run(config.corpus, run_dir)),
        *[(f"pretrain {s}", lambda s=s: stage_report.train_and_report(config.pretrain, run_dir, s, progress=progress))
          for s in pretrain.stages_to_run(config.pretrain)],
        ("eval", lambda: evaluate.run(config.eval, run_dir, progress=progress)),
        ("sft", lambda: sft.run(config.sft, run_dir, progress=progress)),
        ("sft-eval", lambda: sft_eval.run(config.sft_eval, run_dir, progress=progress)),
        ("rl", lambda: grpo.run(config.rl, run_dir, progress=progress)),
        ("rl-eval", lambda: rl_eval.run(config.rl_eval, run_dir, progress=progress)),
        ("bench", lambda: {"ratios": suite.run(config.bench, run_dir, progress=progress, log=log)["ratios"]}),
        ("serve", lambda: smoke.run(run_dir)),
    ]:
        if STAGE_NAMES.index(name.split()[0]) > last:
            break
        if name.split()[0] in config.skip:
            continue
        t0 = time.perf_counter()
        log(f"stage {name} ...")
        summary[name] = stage()
        summary[name]["stage_seconds"] = time.perf_counter() - t0
        log(f"stage {name} done in {summary[name]['stage_seconds']:.1f}s")
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
