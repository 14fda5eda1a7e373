"""`onereason bench`: OneReason-Bench on one run, every tier per domain, with baselines trained on
the same split and evaluated on the same users.

- R0 perception: SID → title token-F1 (greedy) and title → SID exact match (trie beam), on items
  whose text pre-training held out and on items it stated;
- R1 derivation: the model's relation label for item pairs against the labels a dataset ships
  (complement / substitute lists; random same-domain pairs on neither list count as "unrelated")
  and against the run's judge, on pairs the SFT data never showed;
- R2 evolution: the interests the model names for a user's next window (the valid and test items)
  against the interests of those items: precision / recall / F1, next to "the most recent
  interests" and "the most frequent interests"; and R2 as a choice (`r0_r2.interest_choice`): the
  domain's interests ranked by the model's probability, top-1 / recall@n against the next item's
  interest, next to the last item's interest and the most frequent one;
- R3 recommendation: pass / recall / ndcg / position1_pass @k and sid_validity, full ranking in
  the target's domain, for every model in every mode (non-thinking, thinking, race = the first
  half of each list merged, thinking first), delta_ll and history-citation rate of the traces;
  baselines MostPopular, SASRec, TIGER-style and LC-Rec-style (our LLM fine-tuned on SIDs without
  reasoning), each tuned on a small lr grid on the valid split;
- language retention: perplexity on held-out general text.

Every part is cached in `runs/<name>/report/parts/` with the settings it was computed with: an
interrupted bench resumes, and a changed setting recomputes only the parts it touches.
"""

from __future__ import annotations

import functools
import json
import random
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from pydantic import Field

from onereason import rundir
from onereason.bench.baselines import sasrec, tiger
from onereason.bench.baselines.markov import markov_lists
from onereason.bench.baselines.popular import most_popular
from onereason.bench.baselines.sasrec import SASRecConfig
from onereason.bench.baselines.tiger import TigerConfig
from onereason.bench.lists import (chat_lists, hypothesis_lists, latent_lists, race_lists, recommend_next,
                                   sample_prompts)
from onereason.bench.sft_eval import target_logprob, trace_stats
from onereason.bench.world import WorldTruth, value_report
from onereason.bench.r0_r2 import (chat_perception, interest_choice, interest_expansion, r2_baselines, r2_cases,
                                   relation_pairs, relations)
from onereason.bench.stage_report import heldout_perplexity, perception
from onereason.config import Config
from onereason.corpus.user_layer import EvalPrompts, eval_prompts
from onereason.data.histories import user_histories
from onereason.decoding.successors import SuccessorMemory, load_memory, saved_choice
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists, paired_bootstrap, per_sample
from onereason.model.backbone import load_model
from onereason.model.latent import latent_ids
from onereason.protocol import Decoding, EvalSample
from onereason.reasoning.interests import Interests
from onereason.reasoning.sft_data import JudgeConfig
from onereason.rundir import write_text
from onereason.train.pretrain import ReportConfig

BASELINES = ("MostPopular", "Markov chain", "SASRec", "TIGER-style", "LC-Rec-style")


class BenchConfig(Config):
    """What the bench measures and how much it spends; every size is per run."""

    sample: EvalSample = EvalSample(max_users=500)  # shared by all methods; its seed also seeds the baselines
    select: EvalSample = Field(EvalSample(split="valid", max_users=200), description="where \"our best\" "
                               "method (model and mode) is chosen by NDCG@10 before its test numbers are read")
    users_per_domain: int | None = Field(None, ge=1, description="instead: a seeded sample of this many users per "
                                         "domain (a mix's small domains get enough users)")
    decoding: Decoding = Decoding(beams=64)  # race merges the first half of two lists
    exclude_history: bool = Field(False, description="drop items of the user's whole history from every method's "
                                  "list before scoring (default: kept, as RecBole does)")
    hypotheses: int = Field(3, ge=1, le=5, description="interest hypotheses asked for in thinking mode")
    per_hypothesis: bool = Field(False, description="also the modes hypotheses / hypotheses-turns: a beam per "
                                 "listed interest, merged by score / by turns (`lists.hypothesis_lists`)")
    batch_size: int = Field(16, ge=1)
    models: dict[str, str] = Field(
        {"pre-trained": str(rundir.MODEL), "SFT": str(rundir.SFT_MODEL), "RL": str(rundir.RL_MODEL)},
        description="our models, name → directory in the run; those missing are skipped; `model` is read "
                    "in the pre-training format, the others in the chat format")
    baselines: list[str] = Field(list(BASELINES))
    sasrec: SASRecConfig = SASRecConfig()
    sasrec_lr: list[float] = Field([1e-3, 3e-3], description="SASRec's grid; valid NDCG@10 picks")
    tiger: TigerConfig = TigerConfig(epochs=12)
    tiger_lr: list[float] = Field([1e-3, 3e-3], description="TIGER-style's grid; valid NDCG@10 picks")
    lcrec_lr: list[float] = Field([1e-3], description="LC-Rec-style SFT learning rates (valid NDCG@10 picks)")
    lcrec_epochs: float = Field(2.0, gt=0)
    r0_items: int = Field(200, ge=1, description="items per R0 group (held-out / stated)")
    r1_pairs: int = Field(200, ge=1, description="pairs per class (R1)")
    r2_interests: int = Field(3, ge=1, le=5, description="interests the R2 question asks for")
    judge: JudgeConfig | None = Field(None, description="an OpenAI-compatible endpoint for R0 information-point F1")
    ppl_context: int = Field(512, ge=16)


class Parts:
    """JSON results under report/parts/, each stored with the settings that produced it."""

    def __init__(self, root: Path, log: Callable[[str], None] = print):
        self.root, self.log = root, log
        root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, settings: dict, compute: Callable[[], dict]) -> dict:
        path = self.root / f"{name.replace('/', '__').replace(' ', '_')}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved["settings"] == json.loads(json.dumps(settings)):
                return saved["result"]
        self.log(f"bench: {name} ...")
        t0 = time.perf_counter()
        result = compute()
        result["seconds"] = time.perf_counter() - t0
        write_text(path, json.dumps({"settings": settings, "result": result}))  # a part is whole or absent
        return result


def mode_lists(model, tok, sid, p: EvalPrompts, domains: list[str], cfg: BenchConfig, progress: bool,
               thinking: bool = True, interests: Interests | None = None) -> tuple[dict[str, list[list[str]]], tuple | None]:
    """A chat model's lists per mode (non-thinking; with `thinking` also thinking and race, or for a latent
    model latent and race), and the (non-thinking prompts, thinking prompts, traces) the reasoning
    statistics read."""
    args = (cfg.decoding, cfg.hypotheses, cfg.batch_size, cfg.sample.seed, progress)
    plain, plain_prompts, _ = chat_lists(model, p, domains, sid, tok, False, *args)
    if not thinking:
        return {"non-thinking": plain}, None
    beams = cfg.decoding.beams
    if latent_ids(model):  # a latent model thinks silently: no trace to read
        latent = latent_lists(model, p, domains, sid, tok, cfg.decoding, cfg.hypotheses, cfg.batch_size, progress)[0]
        return {"non-thinking": plain, "latent": latent, "race": race_lists(plain, latent, beams)}, None
    think, think_prompts, traces = chat_lists(model, p, domains, sid, tok, True, *args, interests)
    lists = {"non-thinking": plain, "thinking": think, "race": race_lists(plain, think, beams)}
    if cfg.per_hypothesis:
        lists |= hypothesis_lists(model, p, domains, sid, tok, traces, cfg.hypotheses, beams,
                                  cfg.batch_size, progress)
    return lists, (plain_prompts, think_prompts, traces)


def next_item_lists(model, tok, sid, p: EvalPrompts, cfg: BenchConfig, progress: bool,
                    memory: SuccessorMemory | None = None) -> list[list[str]]:
    """A pre-training-format model's beam for each prompt, mixed with its successor memory if it has one."""
    recs, domains = recommend_next(model, tok, sid, p, cfg.decoding.beams, cfg.batch_size, progress)
    if memory is not None:
        recs = memory.fuse_all(recs, p.last_items(), domains)
    return [r.items for r in recs]


def r3_chat(model, tok, sid, p: EvalPrompts, domains: list[str], cfg: BenchConfig, progress: bool,
            thinking: bool = True, interests: Interests | None = None) -> dict:
    """`mode_lists`, and with `thinking` the traces' delta_ll and citations."""
    lists, used = mode_lists(model, tok, sid, p, domains, cfg, progress, thinking, interests)
    if used is None:
        return {"lists": lists}
    (plain_prompts, think_prompts, traces), think = used, lists["thinking"]
    targets = [sid.ids(t[0])[1:] for t in p.truths]
    ll = [target_logprob(model, q, targets, tok.pad_token_id, cfg.batch_size) for q in (think_prompts, plain_prompts)]
    decoded = [tok.decode(t[:-1], skip_special_tokens=False) for t in traces]
    stats = trace_stats(traces, decoded, [{e.item for e in h} for h in p.histories], sid)
    return {"lists": lists,
            "reasoning": {"delta_ll": float(np.mean(ll[0] - ll[1])), "delta_ll_positive_share": float(np.mean(ll[0] > ll[1])),
                          "cited_items_per_trace": stats["cited_items"] / len(traces),
                          "history_citation_rate": stats["cited_in_history"],
                          "traces_with_all_parts": stats["traces_with_all_parts"],
                          "trace_tokens_mean": stats["trace_tokens_mean"]},
            "traces": [{"user_id": u, "target": t[0], "trace": d, "items": i[:5]}
                       for u, t, d, i in list(zip(p.users, p.truths, decoded, think))[:10]]}


def select_users(inter: pd.DataFrame, sid, config: BenchConfig, max_items: int) -> tuple[EvalPrompts, list[str]]:
    """The users "our best" is chosen on, and their target domains."""
    s = config.select
    p = sample_prompts(inter, s.split, max_items, s.max_users, s.seed)
    return p, [sid.codec.item_domain[t[0]] for t in p.truths]


def bench_users(inter: pd.DataFrame, sid, config: BenchConfig, max_items: int) -> tuple[EvalPrompts, list[str]]:
    """The users every method is scored on, and their target domains: `max_users` drawn from the whole
    split, or `users_per_domain` drawn from each domain."""
    if not config.users_per_domain:
        p = sample_prompts(inter, config.sample.split, max_items, config.sample.max_users, config.sample.seed)
    else:
        p = eval_prompts(inter, config.sample.split, max_items)
        of = pd.Series([sid.codec.item_domain[t[0]] for t in p.truths])
        keep = [i for _, idx in of.groupby(of).groups.items()
                for i in pd.Series(idx).sample(min(config.users_per_domain, len(idx)), random_state=config.sample.seed)]
        p = p.subset(sorted(keep))
    return p, [sid.codec.item_domain[t[0]] for t in p.truths]


@dataclass
class Bench:
    """What every part of one bench run reads: the run, the config, the part cache, the scored users and
    the selection users, and the results being filled."""

    run_dir: Path
    config: BenchConfig
    parts: Parts
    inter: pd.DataFrame
    items: pd.DataFrame
    tok: Any
    sid: Any
    p: EvalPrompts  # the users every method is scored on
    domains: list[str]
    sel: EvalPrompts  # the users "our best" is chosen on
    sel_domains: list[str]
    results: dict
    max_items: int  # history items per prompt: the run's corpus.max_items
    progress: bool
    seen: list[set[str]] | None = None  # each user's history items, when they are removed from every list
    scored: dict[str, list[list[str]]] = field(default_factory=dict)  # lists as scored: what the intervals resample

    @cached_property
    def sampling(self) -> dict:
        """The settings the R3 parts (and the baselines' grid) are cached under."""
        return cache_settings(self.config, self.max_items)

    def score(self, method: str, lists: list[list[str]]) -> dict:
        """A method's metrics on the scored users (its history items removed if asked), its lists kept."""
        self.scored[method] = [[x for x in c if x not in s] for c, s in zip(lists, self.seen)] if self.seen else lists
        return evaluate_lists(self.scored[method], self.p.truths, self.config.decoding.cutoffs(), self.domains)


def cache_settings(config: BenchConfig, max_items: int) -> dict:
    """The settings the R3 parts are cached under. Keys added later join only when set, so parts cached
    before they existed stay valid."""
    out = {**config.sample.model_dump(), **config.decoding.model_dump(exclude={"ks", "top_p", "exact_n"}),
           "hypotheses": config.hypotheses, "max_items": max_items}
    if config.users_per_domain:
        out["users_per_domain"] = config.users_per_domain
    if config.decoding.top_p != Decoding().top_p:
        out["top_p"] = config.decoding.top_p
    if config.per_hypothesis:
        out["per_hypothesis"] = True
    if config.decoding.exact_n:
        out["exact_n"] = True
    return out


def r0_item_sets(run_dir: Path, sid, config: BenchConfig) -> dict[str, list[str]]:
    """A seeded sample of the items whose text pre-training held out, and of those it stated."""
    path = run_dir / rundir.HELDOUT_ITEMS
    heldout = set(json.loads(path.read_text())) if path.exists() else set()
    rng = random.Random(config.sample.seed)
    sets = {"held-out": sorted(heldout), "stated": sorted(set(sid.codec.item_ids) - heldout)}
    return {k: sorted(rng.sample(v, min(config.r0_items, len(v)))) for k, v in sets.items() if v}


def run(config: BenchConfig, run_dir: Path, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Every part (cached), then results.json, report.md, report.html and the plots in runs/<name>/report/."""
    from onereason.bench import report
    from onereason.bench.baselines import lcrec

    if not (run_dir / rundir.INTERACTIONS).exists():
        raise FileNotFoundError(f"bench: {run_dir} has no data/ (run `onereason run` or the stages first)")
    unknown = sorted(set(config.baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"bench.baselines: unknown {unknown}; choose from {list(BASELINES)}")
    out = run_dir / rundir.REPORT
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    tok, sid = load_sid_tokens(run_dir)
    max_items = rundir.prompt_items(run_dir)
    p, domains = bench_users(inter, sid, config, max_items)
    sel, sel_domains = select_users(inter, sid, config, max_items)
    results: dict = {"run": run_dir.name, "split": config.sample.split, "users": len(p.users), "beams": config.decoding.beams,
                     "ks": config.decoding.cutoffs(), "domains": sorted(set(domains)), "config": config.model_dump(),
                     "protocol": "full ranking over all items of the target's domain; history items "
                                 + ("removed from every list" if config.exclude_history else "not removed"),
                     "methods": {}, "selection": {"split": config.select.split, "users": len(sel.users), "ndcg@10": {}},
                     "reasoning": {}, "r0": {}, "r1": {}, "r2": {}, "r2_choice": {}, "perplexity": {},
                     "baselines": {}, "traces": {}}
    b = Bench(run_dir, config, Parts(out / "parts", log), inter, pd.read_parquet(run_dir / rundir.ITEMS), tok, sid,
              p, domains, sel, sel_domains, results, max_items, progress,
              seen_items(inter, config.sample.split, p.users) if config.exclude_history else None)
    models = {n: d for n, d in config.models.items() if (run_dir / d / "config.json").exists()}
    lc = None
    if "LC-Rec-style" in config.baselines:
        lc = b.parts.get("train/LC-Rec-style", {"lr": config.lcrec_lr, "epochs": config.lcrec_epochs, "seed": config.sample.seed},
                         lambda: lcrec.train(run_dir, config.lcrec_lr, config.lcrec_epochs, progress))
        models["LC-Rec-style"] = lcrec.model_dir(lc["chosen_lr"])
        results["baselines"]["LC-Rec-style"] = {k: v for k, v in lc.items() if k != "lists"}
    bench_models(b, models, out)
    bench_baselines(b)
    results["ratios"] = report.ratios(results)
    results["paired"] = paired_over_baselines(results, b.scored, p.truths, config.sample.seed)
    results["value"] = business_value(b, results["ratios"].get("all", {}).get("best"))
    report.write(results, out)
    return results


def bench_models(b: Bench, models: dict[str, str], out: Path) -> None:
    """Every tier for each model (ours, and LC-Rec-style's R3/R0/perplexity), each part cached."""
    config, run_dir, tok, sid, results = b.config, b.run_dir, b.tok, b.sid, b.results
    sampling = b.sampling
    r0_sets = r0_item_sets(run_dir, sid, config)
    interests = Interests.load(run_dir / rundir.INTERESTS) if (run_dir / rundir.INTERESTS).exists() else None
    r2_v, r2_window = r2_cases(b.inter, b.p.users, b.max_items)
    relation_pairs_once = functools.cache(lambda: relation_pairs(run_dir, b.items, b.inter, sid, config.r1_pairs,
                                                                 config.sample.seed))
    j = config.judge
    judge = j.client(out / "llm_cache") if j and j.base_url else None
    for name, model_dir in models.items():
        # loaded only if a part of it is not cached
        model = functools.cache(lambda d=model_dir: load_model(run_dir / d).eval())
        chat, ours = model_dir != "model", name != "LC-Rec-style"  # LC-Rec-style: no reasoning, a baseline
        memory = None if chat else load_memory(b.inter, run_dir / model_dir)  # the weight its eval chose on valid
        key = {"model": model_dir, **sampling, **({"successor_weight": memory.weight} if memory else {})}
        if ours:  # the same lists on the selection sample: "our best" is chosen there
            sel_key = {**key, **{f"select_{k}": v for k, v in config.select.model_dump().items()}}
            chosen = b.parts.get(f"select/{name}", sel_key, lambda: {"lists": mode_lists(
                model(), tok, sid, b.sel, b.sel_domains, config, b.progress, interests=interests)[0] if chat else {
                    "non-thinking": next_item_lists(model(), tok, sid, b.sel, config, b.progress, memory)}})
            for mode, lists in chosen["lists"].items():
                results["selection"]["ndcg@10"][f"{name} {mode}"] = evaluate_lists(lists, b.sel.truths, [10])["all"]["ndcg@10"]
        if chat:
            r3 = b.parts.get(f"r3/{name}", key, lambda: r3_chat(model(), tok, sid, b.p, b.domains, config, b.progress, ours,
                                                                  interests))
            for mode, lists in r3["lists"].items():
                if ours or mode == "non-thinking":
                    results["methods"][f"{name} {mode}"] = {"model": name, "mode": mode, "kind": "ours" if ours else "baseline",
                                                            "metrics": b.score(f"{name} {mode}", lists)}
            if ours:
                results["reasoning"][name] = r3["reasoning"]
                results["traces"][name] = r3["traces"]
        else:
            r3 = b.parts.get(f"r3/{name}", key, lambda: {"lists": next_item_lists(model(), tok, sid, b.p, config, b.progress,
                                                                                  memory)})
            results["methods"][f"{name} non-thinking"] = {"model": name, "mode": "non-thinking", "kind": "ours",
                                                          "metrics": b.score(f"{name} non-thinking", r3["lists"])}
        r0_key = {"model": model_dir, "items": r0_sets, "seed": config.sample.seed, "captions": 1,
                  "judge": config.judge.model_dump() if config.judge else None}
        if chat:
            results["r0"][name] = b.parts.get(f"r0/{name}", r0_key, lambda: {
                g: chat_perception(model(), tok, sid, b.items.set_index("item_id").loc[its].reset_index(), config.batch_size,
                                   judge) for g, its in r0_sets.items()})
        else:
            title_of = dict(zip(b.items["item_id"], b.items["title"]))
            rc = ReportConfig(batch_size=config.batch_size)
            results["r0"][name] = b.parts.get(f"r0/{name}", r0_key, lambda: {
                g: _flat_perception(perception(model(), tok, sid, title_of, its, rc)) for g, its in r0_sets.items()})
        results["perplexity"][name] = b.parts.get(f"ppl/{name}", {"model": model_dir, "context": config.ppl_context},
                                                  lambda: {"perplexity": heldout_perplexity(model(), tok, run_dir,
                                                                                           config.ppl_context)}
                                                  )["perplexity"]
        if chat and ours:
            results["r1"][name] = b.parts.get(f"r1/{name}", {"model": model_dir, "pairs": config.r1_pairs,
                                                             "seed": config.sample.seed},
                                              lambda: relations(model(), tok, sid, relation_pairs_once(), config.batch_size))
            if interests is not None and r2_window:
                results["r2"][name] = b.parts.get(f"r2/{name}", {"model": model_dir, "n": config.r2_interests, **sampling},
                                                  lambda: interest_expansion(model(), tok, sid, interests, r2_v, r2_window,
                                                                             config.r2_interests, config.batch_size))
                results["r2_choice"][name] = b.parts.get(
                    f"r2-choice/{name}", {"model": model_dir, "n": config.r2_interests, **sampling},
                    lambda: interest_choice(model(), tok, sid, interests, r2_v, config.r2_interests, config.batch_size))
    if interests is not None and r2_window:
        results["r2"].update(r2_baselines(interests, r2_v, r2_window, config.r2_interests, sid))


def bench_baselines(b: Bench) -> None:
    """MostPopular, the Markov chain, and SASRec / TIGER-style trained on each lr of their grid, the one best on valid scored;
    where our pre-trained model was given the successor memory, SASRec + the same memory (its weight chosen on
    valid from the same grid) as a baseline of its own."""
    config, results, ks = b.config, b.results, b.config.decoding.cutoffs()
    choice = saved_choice(b.run_dir / rundir.MODEL)
    successor_grid = choice["grid"] if choice else None
    if "MostPopular" in config.baselines:
        pop = most_popular(b.inter, max(ks))
        results["methods"]["MostPopular"] = {"model": "MostPopular", "mode": "-", "kind": "baseline",
                                             "metrics": b.score("MostPopular", [pop.get(d, []) for d in b.domains])}
        results["baselines"]["MostPopular"] = {"grid": []}  # nothing to tune
    if "Markov chain" in config.baselines:
        lists = markov_lists(b.inter, b.p.last_items(), b.domains, max(ks))
        results["methods"]["Markov chain"] = {"model": "Markov chain", "mode": "-", "kind": "baseline",
                                              "metrics": b.score("Markov chain", lists)}
        results["baselines"]["Markov chain"] = {"grid": []}
    trained = {"SASRec": (config.sasrec, config.sasrec_lr,
                          lambda c: sasrec.train_and_evaluate(b.inter, c, ks, b.progress, b.p.users,
                                                              successor_weights=successor_grid)),
               "TIGER-style": (config.tiger, config.tiger_lr,
                               lambda c: tiger.train_and_evaluate(b.inter, b.sid, c, ks, b.progress, b.p.users))}
    for name, (base, lrs, train) in trained.items():
        if name not in config.baselines:
            continue
        grid = []
        for lr in lrs:
            c = base.replace(lr=lr, seed=config.sample.seed)
            key = {**c.model_dump(), **b.sampling, **({"successor_weights": successor_grid} if name == "SASRec" else {})}
            grid.append(b.parts.get(f"baseline/{name}/lr{lr:g}", key, lambda c=c: train(c)))
        best = max(grid, key=lambda r: r["valid_ndcg@10"])
        lists = [best["lists"][u] for u in b.p.users]
        results["methods"][name] = {"model": name, "mode": "-", "kind": "baseline", "metrics": b.score(name, lists)}
        if "successors" in best:
            fused, label = best["successors"], f"{name} + successors"
            results["methods"][label] = {"model": label, "mode": "-", "kind": "baseline",
                                         "metrics": b.score(label, [fused["lists"][u] for u in b.p.users])}
        results["baselines"][name] = {"chosen_lr": best["config"]["lr"], "best_epoch": best["best_epoch"],
                                      "grid": [{"lr": g["config"]["lr"], "valid_ndcg@10": g["valid_ndcg@10"],
                                                "best_epoch": g["best_epoch"], "seconds": g["seconds"]} for g in grid],
                                      "epoch_budget": base.epochs}


def seen_items(inter: pd.DataFrame, split: str, users: list[str]) -> list[set[str]]:
    """Each user's whole history before the split's target (train, plus valid for test)."""
    hist = user_histories(inter, ("train",) if split == "valid" else ("train", "valid"))
    return [{e.item for e in hist.get(u, [])} for u in users]


def paired_over_baselines(results: dict, scored: dict[str, list[list[str]]], truths: list[list[str]], seed: int
                          ) -> dict:
    """Our best (chosen on the selection sample) minus each baseline, per user on the same users:
    mean and 95% paired bootstrap interval of NDCG@10 and Recall@10."""
    best = results["ratios"].get("all", {}).get("best")
    if best is None:
        return {}
    return {"best": best, "vs": {b: {c: paired_bootstrap(per_sample(c, scored[best], truths), per_sample(c, lists, truths),
                                                          seed=seed) for c in ("ndcg@10", "recall@10")}
                                 for b, lists in scored.items() if results["methods"][b]["kind"] == "baseline"}}


def business_value(b: Bench, reference: str | None) -> dict:
    """On a synthetic world (its truth prices every list): each method's expected revenue@10, hit value and
    sponsored share beside Recall@10, each minus `reference` (our best) per user; with the slow path's ROI
    when bench/serve_value.py has measured it (serve/value.json). Empty elsewhere."""
    if not reference or not json.loads((b.run_dir / rundir.RUN_CONFIG).read_text())["data"].get("world"):
        return {}
    rows = [{"user_id": u, "target": t, "items": {m: lists[j] for m, lists in b.scored.items()}}
            for j, (u, t) in enumerate(zip(b.p.users, b.p.truths))]
    out = value_report(WorldTruth(b.run_dir), rows, reference, 10, b.config.sample.seed)
    served = b.run_dir / rundir.SERVE_VALUE
    if served.exists():
        out["serving"] = {k: v for k, v in json.loads(served.read_text()).items() if k in ("methods", "slow_path")}
    return out


def _flat_perception(r: dict) -> dict:
    """The pre-training-format R0 result shaped like the chat one (no per-domain split)."""
    return {"sid_to_title_f1": {"all": r["sid_to_title_f1"]}, "title_to_sid_acc": {"all": r["title_to_sid_acc"]},
            "n": r["n"]}
