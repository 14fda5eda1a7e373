"""`onereason bench`: OneReason-Bench on one run, every tier per domain, with baselines trained on
the same split and evaluated on the same users.

- R0 perception: SID → title token-F1 (greedy) and title → SID exact match (trie beam), on items
  whose text pre-training held out and on items it stated;
- R1 derivation: the model's relation label for item pairs against the labels a dataset ships
  (complement / substitute lists; random same-domain pairs on neither list count as "unrelated")
  and against the run's judge, on pairs the SFT data never showed;
- R2 evolution: the interests the model names for a user's next window (the valid and test items)
  against the interests of those items: precision / recall / F1, next to "the most recent
  interests" and "the most frequent interests";
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
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from onereason import rundir
from onereason.bench.baselines import sasrec, tiger
from onereason.bench.baselines.popular import most_popular
from onereason.bench.baselines.sasrec import SASRecConfig
from onereason.bench.baselines.tiger import TigerConfig
from onereason.bench.info_points import info_point_f1
from onereason.bench.lists import chat_lists, merge_race, recommend_next, sample_prompts
from onereason.bench.sft_eval import target_logprob, trace_stats
from onereason.bench.stage_report import TITLE_TO_SID_BEAMS, heldout_perplexity, perception, token_f1
from onereason.chat import IM_END, answer_turn
from onereason.config import Config
from onereason.corpus.relational_layer import transition_counts
from onereason.corpus.user_layer import EvalPrompts, HistoryText, eval_prompts
from onereason.data.histories import user_histories
from onereason.decoding.constrained import left_pad, recommend
from onereason.itemic.sid import load_sid_tokens
from onereason.metrics import evaluate_lists, paired_bootstrap, per_sample
from onereason.model.backbone import load_model
from onereason.protocol import Decoding, EvalSample
from onereason.reasoning.chat_client import ChatClient
from onereason.reasoning.interests import Interests
from onereason.reasoning.judge import RELATIONS, GroundedJudge, candidate_pairs
from onereason.reasoning.sft_data import (JudgeConfig, clip_words, describe_user, find_user, r1_user, r2_user,
                                          title_user)
from onereason.reasoning.traces import numbered
from onereason.rundir import write_text
from onereason.train.pretrain import ReportConfig

BASELINES = ("MostPopular", "SASRec", "TIGER-style", "LC-Rec-style")


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
    max_items: int = Field(50, ge=1, description="history items in a prompt")
    batch_size: int = Field(16, ge=1)
    models: dict[str, str] = Field(
        {"pre-trained": "model", "SFT": "sft/model", "RL": "rl/grpo/model"},
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


def by_domain(values: list[float], domains: list[str]) -> dict[str, float]:
    """Mean for 'all' and per domain."""
    out = {"all": float(np.mean(values)) if values else None}
    for d in sorted(set(domains)):
        v = [x for x, e in zip(values, domains) if e == d]
        out[d] = float(np.mean(v))
    return out


@torch.no_grad()
def greedy_answers(model, tok, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 32) -> list[str]:
    """Greedy assistant answers to chat prompts that already hold the empty think block."""
    model.eval()
    ids_all = tok(prompts, add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids(IM_END)
    out = []
    for s in range(0, len(ids_all), batch_size):
        ids, attn = left_pad(ids_all[s:s + batch_size], tok.pad_token_id)
        gen = model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=end, pad_token_id=tok.pad_token_id)
        out += [a.strip() for a in tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)]
    return out


def chat_perception(model, tok, sid, items: pd.DataFrame, batch_size: int, judge: ChatClient | None = None) -> dict:
    """R0 in the chat format of the SFT data: "What is the title of <SID>?", "Describe <SID>." (token F1,
    and information-point F1 when a judge endpoint is given) and "Which item is "<title>"?"."""
    codec = sid.codec
    titles = [clip_words(t, 30) for t in items["title"]]
    domains = items["domain"].tolist()
    said = greedy_answers(model, tok, [answer_turn(title_user(codec.item_text(i))) for i in items["item_id"]], 48,
                          batch_size)
    f1 = [token_f1(a, t) for a, t in zip(said, titles)]
    captions = greedy_answers(model, tok, [answer_turn(describe_user(codec.item_text(i))) for i in items["item_id"]],
                              64, batch_size)
    described = [token_f1(c, clip_words(d, 40)) for c, d in zip(captions, items["description"])]
    caption = {"description_token_f1": by_domain(described, domains)}
    if judge is not None:
        refs = [f"{t}. {clip_words(d, 60)}" for t, d in zip(items["title"], items["description"])]
        caption["info_point"] = info_point_f1(judge, refs, captions)
    prompts = tok([answer_turn(find_user(t)) for t in items["title"]], add_special_tokens=False)["input_ids"]
    prompts = [p + [sid.begin_id[d]] for p, d in zip(prompts, domains)]
    recs = recommend(model, prompts, domains, sid, tok.pad_token_id, k=1, num_beams=TITLE_TO_SID_BEAMS, batch_size=batch_size)
    exact = [float(bool(r.items) and r.items[0] == i) for r, i in zip(recs, items["item_id"])]
    return {"sid_to_title_f1": by_domain(f1, domains), "title_to_sid_acc": by_domain(exact, domains), **caption,
            "n": len(items), "examples": [{"item": i, "title": t, "said": a}
                                           for i, t, a in list(zip(items["item_id"], titles, said))[:5]]}


def parse_relation(answer: str) -> str | None:
    label = answer.split(":", 1)[0].strip().lower()
    return label if label in RELATIONS else None


def sft_relation_pairs(run_dir: Path, sid) -> set[tuple[str, str]]:
    """The (sorted) item pairs of the run's R1 SFT samples: an R1 test must not ask about them."""
    seen: set[tuple[str, str]] = set()
    sft_path = run_dir / rundir.SFT_DATA
    if sft_path.exists():
        df = pd.read_parquet(sft_path, columns=["task", "user"])
        for user in df.loc[df["task"] == "R1", "user"]:
            ab = [x for x in sid.codec.parse(user) if x]
            seen.add(tuple(sorted(ab[:2])))
    return seen


def relation_pairs(run_dir: Path, items: pd.DataFrame, inter: pd.DataFrame, sid, cfg: BenchConfig
                   ) -> dict[str, list[tuple[str, str, str]]]:
    """(a, b, label) pairs the SFT data never showed: "listed" (the dataset's own complement /
    substitute lists, plus random same-domain pairs on neither list as `unrelated`) and "judge"
    (candidate pairs labelled by the run's grounded judge)."""
    rng = np.random.default_rng(cfg.sample.seed)
    seen = sft_relation_pairs(run_dir, sid)
    known = set(sid.codec.item_ids)
    listed: dict[tuple[str, str], str] = {}
    for col, label in (("substitutes", "substitute"), ("complements", "complement")):  # complement wins ties
        for a, bs in zip(items["item_id"], items[col] if col in items else []):
            for b in bs:
                if b in known and a != b:
                    listed[tuple(sorted((a, b)))] = label
    out: dict[str, list[tuple[str, str, str]]] = {"listed": [], "judge": []}
    for label in ("complement", "substitute"):
        ps = [p for p, lab in listed.items() if lab == label and p not in seen]
        out["listed"] += [(*ps[i], label) for i in rng.permutation(len(ps))[:cfg.r1_pairs]]
    if out["listed"]:
        domains = items.groupby("domain")["item_id"].apply(np.array).to_dict()
        listed_domains = sorted({sid.codec.item_domain[a] for a, _, _ in out["listed"]})
        tries = 0
        while sum(lab == "unrelated" for *_, lab in out["listed"]) < cfg.r1_pairs and tries < 100 * cfg.r1_pairs:
            tries += 1
            d = listed_domains[rng.integers(len(listed_domains))]
            p = tuple(sorted(rng.choice(domains[d], 2, replace=False)))
            if p not in listed and p not in seen:
                out["listed"].append((*p, "unrelated"))
    transitions = transition_counts(inter)
    emb = np.load(run_dir / rundir.EMBEDDINGS)
    cands = [p for p in candidate_pairs(items, emb, transitions) if p not in seen]
    cands = [cands[i] for i in sorted(rng.permutation(len(cands))[:cfg.r1_pairs * 3])]
    if cands and (run_dir / rundir.INTERESTS).exists():
        judge = GroundedJudge(items, emb, transitions, Interests.load(run_dir / rundir.INTERESTS))
        out["judge"] = [(a, b, r.label) for (a, b), r in zip(cands, judge.judge(cands))]
    return out


def relations(model, tok, sid, pairs: dict[str, list[tuple[str, str, str]]], batch_size: int) -> dict:
    """R1 accuracy and per-class recall of the model's label against each label source, per domain."""
    out: dict = {}
    for source, ps in pairs.items():
        if not ps:
            continue
        said = greedy_answers(model, tok, [answer_turn(r1_user(sid.codec.item_text(a), sid.codec.item_text(b)))
                                           for a, b, _ in ps], 24, batch_size)
        pred = [parse_relation(a) for a in said]
        truth = [lab for *_, lab in ps]
        domains = [sid.codec.item_domain[a] for a, _, _ in ps]
        out[source] = {"pairs": len(ps), "accuracy": by_domain([float(p == t) for p, t in zip(pred, truth)], domains),
                       "parsed": float(np.mean([p is not None for p in pred])),
                       "recall_per_class": {c: float(np.mean([p == c for p, t in zip(pred, truth) if t == c]))
                                            for c in sorted(set(truth))},
                       "predicted": dict(Counter(p or "unparsed" for p in pred))}
    return out


def prf(pred: list[str], truth: set[str]) -> tuple[float, float, float]:
    hit = len(set(pred) & truth)
    p = hit / len(set(pred)) if pred else 0.0
    r = hit / len(truth)
    return p, r, (2 * p * r / (p + r) if hit else 0.0)


def r2_cases(inter: pd.DataFrame, users: list[str], max_items: int) -> tuple[EvalPrompts, list[list[str]]]:
    """History up to the valid item, and the next window (valid + test items) of the bench's users."""
    v = eval_prompts(inter, "valid", max_items)
    keep = set(v.users)
    v = v.only([u for u in users if u in keep])
    test = eval_prompts(inter, "test", max_items)
    later = dict(zip(test.users, test.truths))
    return v, [t + later.get(u, []) for u, t in zip(v.users, v.truths)]


def interest_expansion(model, tok, sid, interests: Interests, v: EvalPrompts, window: list[list[str]],
                       n: int, batch_size: int) -> dict:
    """R2: the model's named interests for the next window, scored against the window's interests."""
    text = HistoryText(sid, tok)
    said = greedy_answers(model, tok, [answer_turn(r2_user(text.text(h), n)) for h in v.histories], 64, batch_size)
    index = {name: i for i, name in enumerate(interests.names)}
    pred = [[index[x] for x in numbered(a) if x in index][:n] for a in said]
    return _prf_table(pred, window, interests, sid) | {"parsed": float(np.mean([bool(p) for p in pred])),
                                                       "examples": said[:5]}


def _prf_table(pred: list[list[int]], window: list[list[str]], interests: Interests, sid) -> dict:
    domains = [sid.codec.item_domain[w[0]] for w in window]
    scores = [prf(p, {interests.of[i] for i in w}) for p, w in zip(pred, window)]
    return {m: by_domain([s[j] for s in scores], domains) for j, m in enumerate(("precision", "recall", "f1"))} | {
        "users": len(window)}


def r2_baselines(interests: Interests, v: EvalPrompts, window: list[list[str]], n: int, sid) -> dict:
    recent = [list(dict.fromkeys(interests.of[e.item] for e in reversed(h)))[:n] for h in v.histories]
    frequent = [[i for i, _ in Counter(interests.of[e.item] for e in reversed(h)).most_common(n)] for h in v.histories]
    return {"most recent interests": _prf_table(recent, window, interests, sid),
            "most frequent interests": _prf_table(frequent, window, interests, sid)}


def mode_lists(model, tok, sid, p: EvalPrompts, domains: list[str], cfg: BenchConfig, progress: bool,
               thinking: bool = True) -> tuple[dict[str, list[list[str]]], tuple | None]:
    """A chat model's lists per mode (non-thinking; with `thinking` also thinking and race), and the
    (non-thinking prompts, thinking prompts, traces) the reasoning statistics read."""
    args = (cfg.decoding.beams, cfg.hypotheses, cfg.decoding.trace_tokens, cfg.decoding.temperature, cfg.batch_size,
            cfg.sample.seed, progress)
    plain, plain_prompts, _ = chat_lists(model, p, domains, sid, tok, False, *args)
    if not thinking:
        return {"non-thinking": plain}, None
    think, think_prompts, traces = chat_lists(model, p, domains, sid, tok, True, *args)
    half = cfg.decoding.beams // 2
    race = [merge_race(a[:half], b[:half], cfg.decoding.beams) for a, b in zip(think, plain)]
    return {"non-thinking": plain, "thinking": think, "race": race}, (plain_prompts, think_prompts, traces)


def next_item_lists(model, tok, sid, p: EvalPrompts, cfg: BenchConfig, progress: bool) -> list[list[str]]:
    """A pre-training-format model's beam for each prompt."""
    return [r.items for r in recommend_next(model, tok, sid, p, cfg.decoding.beams, cfg.batch_size, progress)[0]]


def r3_chat(model, tok, sid, p: EvalPrompts, domains: list[str], cfg: BenchConfig, progress: bool,
            thinking: bool = True) -> dict:
    """`mode_lists`, and with `thinking` the traces' delta_ll and citations."""
    lists, used = mode_lists(model, tok, sid, p, domains, cfg, progress, thinking)
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


def select_users(inter: pd.DataFrame, sid, config: BenchConfig) -> tuple[EvalPrompts, list[str]]:
    """The users "our best" is chosen on, and their target domains."""
    s = config.select
    p = sample_prompts(inter, s.split, config.max_items, s.max_users, s.seed)
    return p, [sid.codec.item_domain[t[0]] for t in p.truths]


def bench_users(inter: pd.DataFrame, sid, config: BenchConfig) -> tuple[EvalPrompts, list[str]]:
    """The users every method is scored on, and their target domains: `max_users` drawn from the whole
    split, or `users_per_domain` drawn from each domain."""
    if not config.users_per_domain:
        p = sample_prompts(inter, config.sample.split, config.max_items, config.sample.max_users, config.sample.seed)
    else:
        p = eval_prompts(inter, config.sample.split, config.max_items)
        of = pd.Series([sid.codec.item_domain[t[0]] for t in p.truths])
        keep = [i for _, idx in of.groupby(of).groups.items()
                for i in pd.Series(idx).sample(min(config.users_per_domain, len(idx)), random_state=config.sample.seed)]
        p = p.subset(sorted(keep))
    return p, [sid.codec.item_domain[t[0]] for t in p.truths]


def run(config: BenchConfig, run_dir: Path, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Every part (cached), then results.json, report.md, report.html and the plots in runs/<name>/report/."""
    from onereason.bench import report
    from onereason.bench.baselines import lcrec

    if not (run_dir / rundir.INTERACTIONS).exists():
        raise FileNotFoundError(f"bench: {run_dir} has no data/ (run `onereason run` or the stages first)")
    unknown = sorted(set(config.baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"bench.baselines: unknown {unknown}; choose from {list(BASELINES)}")
    out = run_dir / "report"
    parts = Parts(out / "parts", log)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    items = pd.read_parquet(run_dir / rundir.ITEMS)
    tok, sid = load_sid_tokens(run_dir)
    p, domains = bench_users(inter, sid, config)
    sel, sel_domains = select_users(inter, sid, config)
    ks = config.decoding.cutoffs()
    seen = seen_items(inter, config.sample.split, p.users) if config.exclude_history else None
    scored: dict[str, list[list[str]]] = {}  # each method's lists as scored: what the paired intervals resample

    def score(method: str, lists: list[list[str]]) -> dict:
        scored[method] = [[x for x in c if x not in s] for c, s in zip(lists, seen)] if seen else lists
        return evaluate_lists(scored[method], p.truths, ks, domains)
    sampling = {**config.sample.model_dump(), **config.decoding.model_dump(exclude={"ks"}),  # the parts' cache keys
                **config.model_dump(include={"hypotheses", "max_items"})}
    if config.users_per_domain:  # only when set, so parts cached before this option existed stay valid
        sampling["users_per_domain"] = config.users_per_domain
    models = {n: d for n, d in config.models.items() if (run_dir / d / "config.json").exists()}
    if "LC-Rec-style" in config.baselines:
        lc = parts.get("train/LC-Rec-style", {"lr": config.lcrec_lr, "epochs": config.lcrec_epochs, "seed": config.sample.seed},
                       lambda: lcrec.train(run_dir, config.lcrec_lr, config.lcrec_epochs, progress))
        models["LC-Rec-style"] = lcrec.model_dir(lc["chosen_lr"])
    else:
        lc = None
    heldout_path = run_dir / rundir.HELDOUT_ITEMS
    heldout = set(json.loads(heldout_path.read_text())) if heldout_path.exists() else set()
    rng = random.Random(config.sample.seed)
    r0_sets = {"held-out": sorted(heldout), "stated": sorted(set(sid.codec.item_ids) - heldout)}
    r0_sets = {k: sorted(rng.sample(v, min(config.r0_items, len(v)))) for k, v in r0_sets.items() if v}
    interests_path = run_dir / rundir.INTERESTS
    interests = Interests.load(interests_path) if interests_path.exists() else None
    r2_v, r2_window = r2_cases(inter, p.users, config.max_items)
    results: dict = {"run": run_dir.name, "split": config.sample.split, "users": len(p.users), "beams": config.decoding.beams,
                     "ks": ks, "domains": sorted(set(domains)), "config": config.model_dump(),
                     "protocol": "full ranking over all items of the target's domain; history items "
                                 + ("removed from every list" if config.exclude_history else "not removed"),
                     "methods": {}, "selection": {"split": config.select.split, "users": len(sel.users), "ndcg@10": {}},
                     "reasoning": {}, "r0": {}, "r1": {}, "r2": {}, "perplexity": {},
                     "baselines": {}, "traces": {}}
    relation_pairs_once = functools.cache(lambda: relation_pairs(run_dir, items, inter, sid, config))
    j = config.judge
    judge = j.client(out / "llm_cache") if j and j.base_url else None

    for name, model_dir in models.items():
        # loaded only if a part of it is not cached
        model = functools.cache(lambda d=model_dir: load_model(run_dir / d).eval())
        chat, ours = model_dir != "model", name != "LC-Rec-style"  # LC-Rec-style: no reasoning, a baseline
        key = {"model": model_dir, **sampling}
        if ours:  # the same lists on the selection sample: "our best" is chosen there
            sel_key = {**key, **{f"select_{k}": v for k, v in config.select.model_dump().items()}}
            chosen = parts.get(f"select/{name}", sel_key, lambda: {"lists": mode_lists(
                model(), tok, sid, sel, sel_domains, config, progress)[0] if chat else {
                    "non-thinking": next_item_lists(model(), tok, sid, sel, config, progress)}})
            for mode, lists in chosen["lists"].items():
                results["selection"]["ndcg@10"][f"{name} {mode}"] = evaluate_lists(lists, sel.truths, [10])["all"]["ndcg@10"]
        if chat:
            r3 = parts.get(f"r3/{name}", key, lambda: r3_chat(model(), tok, sid, p, domains, config, progress, ours))
            for mode, lists in r3["lists"].items():
                if ours or mode == "non-thinking":
                    results["methods"][f"{name} {mode}"] = {"model": name, "mode": mode, "kind": "ours" if ours else "baseline",
                                                            "metrics": score(f"{name} {mode}", lists)}
            if ours:
                results["reasoning"][name] = r3["reasoning"]
                results["traces"][name] = r3["traces"]
        else:
            r3 = parts.get(f"r3/{name}", key, lambda: {"lists": next_item_lists(model(), tok, sid, p, config, progress)})
            results["methods"][f"{name} non-thinking"] = {"model": name, "mode": "non-thinking", "kind": "ours",
                                                          "metrics": score(f"{name} non-thinking", r3["lists"])}
        r0_key = {"model": model_dir, "items": r0_sets, "seed": config.sample.seed, "captions": 1,
                  "judge": config.judge.model_dump() if config.judge else None}
        if chat:
            results["r0"][name] = parts.get(f"r0/{name}", r0_key, lambda: {
                g: chat_perception(model(), tok, sid, items.set_index("item_id").loc[its].reset_index(), config.batch_size,
                                   judge) for g, its in r0_sets.items()})
        else:
            title_of = dict(zip(items["item_id"], items["title"]))
            rc = ReportConfig(batch_size=config.batch_size)
            results["r0"][name] = parts.get(f"r0/{name}", r0_key, lambda: {
                g: _flat_perception(perception(model(), tok, sid, title_of, its, rc)) for g, its in r0_sets.items()})
        results["perplexity"][name] = parts.get(f"ppl/{name}", {"model": model_dir, "context": config.ppl_context},
                                                lambda: {"perplexity": heldout_perplexity(model(), tok, run_dir,
                                                                                         config.ppl_context)}
                                                )["perplexity"]
        if chat and ours:
            results["r1"][name] = parts.get(f"r1/{name}", {"model": model_dir, "pairs": config.r1_pairs,
                                                           "seed": config.sample.seed},
                                            lambda: relations(model(), tok, sid, relation_pairs_once(), config.batch_size))
            if interests is not None and r2_window:
                results["r2"][name] = parts.get(f"r2/{name}", {"model": model_dir, "n": config.r2_interests, **sampling},
                                                lambda: interest_expansion(model(), tok, sid, interests, r2_v, r2_window,
                                                                           config.r2_interests, config.batch_size))
    if interests is not None and r2_window:
        results["r2"].update(r2_baselines(interests, r2_v, r2_window, config.r2_interests, sid))

    if lc is not None:
        results["baselines"]["LC-Rec-style"] = {k: v for k, v in lc.items() if k != "lists"}
    if "MostPopular" in config.baselines:
        pop = most_popular(inter, max(ks))
        results["methods"]["MostPopular"] = {"model": "MostPopular", "mode": "-", "kind": "baseline",
                                             "metrics": score("MostPopular", [pop.get(d, []) for d in domains])}
        results["baselines"]["MostPopular"] = {"grid": []}  # nothing to tune
    trained = {"SASRec": (config.sasrec, config.sasrec_lr,
                          lambda c: sasrec.train_and_evaluate(inter, c, ks, progress, p.users)),
               "TIGER-style": (config.tiger, config.tiger_lr,
                               lambda c: tiger.train_and_evaluate(inter, sid, c, ks, progress, p.users))}
    for name, (base, lrs, train) in trained.items():
        if name not in config.baselines:
            continue
        grid = []
        for lr in lrs:
            c = base.replace(lr=lr, seed=config.sample.seed)
            grid.append(parts.get(f"baseline/{name}/lr{lr:g}", {**c.model_dump(), **sampling}, lambda c=c: train(c)))
        best = max(grid, key=lambda r: r["valid_ndcg@10"])
        lists = [best["lists"][u] for u in p.users]
        results["methods"][name] = {"model": name, "mode": "-", "kind": "baseline", "metrics": score(name, lists)}
        results["baselines"][name] = {"chosen_lr": best["config"]["lr"], "best_epoch": best["best_epoch"],
                                      "grid": [{"lr": g["config"]["lr"], "valid_ndcg@10": g["valid_ndcg@10"],
                                                "best_epoch": g["best_epoch"], "seconds": g["seconds"]} for g in grid],
                                      "epoch_budget": base.epochs}
    results["ratios"] = report.ratios(results)
    results["paired"] = paired_over_baselines(results, scored, p.truths, config.sample.seed)
    report.write(results, out)
    return results


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


def _flat_perception(r: dict) -> dict:
    """The pre-training-format R0 result shaped like the chat one (no per-domain split)."""
    return {"sid_to_title_f1": {"all": r["sid_to_title_f1"]}, "title_to_sid_acc": {"all": r["title_to_sid_acc"]},
            "n": r["n"]}
