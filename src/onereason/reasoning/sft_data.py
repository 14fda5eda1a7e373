"""R0–R3 SFT samples in the Qwen3 chat format, thinking and non-thinking mixed per domain.

- R0 item perception: SID → title, SID → description, title → SID, SID → category; with interest
  tokens also SID → its interest and interest → members;
- R1 item-to-item relations, labelled by a judge (grounded or an LLM endpoint);
- R2 interest expansion: the interests a training user's next actions fall into;
- R3 recommendation: history → (three-part trace) → the next item.

Everything is built from the train split only (interactions) and item text: no valid/test
target shapes an interest, a persona, a transition statistic or a sample. Held-out items of the
pre-training corpus stay out of R0 so perception can still be measured on them.
Written to `runs/<name>/reasoning/`: sft.parquet (sample_id, task, domain, think, user,
assistant), interests.json, personas.json, stats.json.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from onereason import rundir
from onereason.chat import chat_prompt, chat_response, numbered_list
from onereason.config import Config
from onereason.corpus.relational_layer import transition_counts
from onereason.corpus.user_layer import HistoryText
from onereason.data.histories import Event, user_histories
from onereason.data.schema import write_parquet
from onereason.itemic.sid import load_sid_tokens
from onereason.reasoning.chat_client import ChatClient
from onereason.reasoning.interests import Interests, learn_interests
from onereason.reasoning.judge import (GroundedJudge, Judge, LLMJudge, candidate_pairs, leaf_category,
                                      random_pairs)
from onereason.reasoning.personas import Personas, learn_personas
from onereason.reasoning.traces import GroundedTeacher, LLMTeacher, check_trace, interest_transitions
from onereason.rundir import write_text

TASKS = ("R0", "R1", "R2", "R3")


class JudgeConfig(Config):
    """Which judge labels R1 pairs: `grounded` (offline, from the data) or `llm` (an endpoint,
    also used by the `llm` trace teacher)."""

    kind: str = Field("grounded", pattern="^(grounded|llm)$")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    model: str = "default"
    timeout: float = Field(60.0, gt=0)
    retries: int = Field(3, ge=0)
    concurrency: int = Field(8, ge=1)

    def client(self, cache_dir: Path) -> ChatClient:
        """The endpoint's client, answers cached under `cache_dir`."""
        return ChatClient(self.base_url, self.model, timeout=self.timeout, retries=self.retries,
                          concurrency=self.concurrency, cache_dir=cache_dir)


def hypothesis_choices(v: int | list[int]) -> list[int]:
    """A config's interest-hypothesis counts, n drawn from them per prompt: a list within 1..5 (one
    number, as RL configs once held, is a list of one)."""
    v = [v] if isinstance(v, int) else v
    if not v or any(not isinstance(n, int) or not 1 <= n <= 5 for n in v):
        raise ValueError(f"interest hypotheses must be 1..5, got {v}")
    return v


class SftDataConfig(Config):
    interests_per_domain: int = Field(24, ge=1)
    interest_tokens: bool = Field(True, description="one special token per interest, written before its words "
                                  "(`<|interest_3|> jars bottles`) and added to the run's tokenizer, so R2 and the "
                                  "trace choose an interest as one token; adds `r0_interest_samples` perception "
                                  "samples (docs/design.md §2)")
    interest_basis: str = Field("sid", pattern="^(text|sid)$", description="what interests cluster: `text`, "
                                "the items' text embeddings; `sid`, the first SID codes' mean text embeddings, so an "
                                "item's interest follows from its first code and a trace's interest names the "
                                "codes to generate")
    r0_interest_samples: int = Field(3000, ge=0, description="with interest tokens: SID → its interest and "
                                     "interest → some of its items")
    personas: int = Field(20, ge=1)
    persona_interest_weight: float = Field(10.0, gt=0, description="variance of the theme/domain shares "
                                           "relative to the behaviour scalars in persona clustering")
    hypotheses: list[int] = Field([1, 2, 3, 4, 5], description="n interest hypotheses, drawn per R3 sample")
    think_ratio: dict[str, float] = Field(default_factory=dict, description="CoT share per domain")
    default_think_ratio: float = Field(0.5, ge=0, le=1)
    r0_samples: int = Field(6000, ge=0)
    r1_samples: int = Field(3000, ge=0)
    r1_random_share: float = Field(0.25, ge=0, le=1, description="share of the R1 pairs drawn at random inside "
                                   "a domain (mostly unrelated), so R1 shows every relation, not only the "
                                   "likely-related candidates")
    r2_samples: int = Field(6000, ge=0)
    r3_cuts_per_user: int | None = Field(4, ge=1, description="R3 samples per training user (None: every cut)")
    judge: JudgeConfig = JudgeConfig()
    teacher: str = Field("grounded", pattern="^(grounded|llm)$",
                         description="who writes R3 traces: the grounded synthesizer or the judge's endpoint")
    seed: int = 0

    _hypotheses = field_validator("hypotheses", mode="before")(hypothesis_choices)

    @field_validator("think_ratio")
    @classmethod
    def _ratio(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {d: r for d, r in v.items() if not 0 <= r <= 1}
        if bad:
            raise ValueError(f"think_ratio must be within [0, 1], got {bad}")
        return v


def r3_user(history_text: str, domain: str, n: int | None) -> str:
    ask = f"Recommend the next {domain} item."
    return f"History:{history_text}\n{ask}" + (f" Expand {n} interests." if n else "")


def title_user(sid_text: str) -> str:
    return f"What is the title of {sid_text}?"


def describe_user(sid_text: str) -> str:
    return f"Describe {sid_text}."


def interest_user(sid_text: str) -> str:
    return f"Which interest is {sid_text} in?"


def find_user(title: str) -> str:
    return f"Which item is \"{clip_words(title, 30)}\"?"


def r1_user(a_text: str, b_text: str) -> str:
    return f"How are {a_text} and {b_text} related, and why?"


def r2_user(history_text: str, n: int) -> str:
    return f"History:{history_text}\nWhich interests will this user explore next? Name up to {n}."


def r3_prompts(histories: list[list[Event]], domains: list[str], n: int | None | list[int], text: HistoryText,
               tok) -> list[list[int]]:
    """R3 chat prompts as token ids, up to the opening `<think>`: thinking with n hypotheses (one n for all,
    or one per history), or not (None)."""
    ns = n if isinstance(n, list) else [n] * len(histories)
    users = [r3_user(text.text(h), d, k) for h, d, k in zip(histories, domains, ns)]
    return tok([chat_prompt(u, k is not None) for u, k in zip(users, ns)], add_special_tokens=False)["input_ids"]


def clip_words(text: str, n: int) -> str:
    w = str(text).split()
    return " ".join(w[:n]) + (" ..." if len(w) > n else "")


def load_teacher(run_dir: Path) -> GroundedTeacher:
    """The grounded teacher from a run's saved interests and personas (after `build`)."""
    items = pd.read_parquet(run_dir / rundir.ITEMS)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    interests = Interests.load(run_dir / rundir.INTERESTS)
    personas = Personas.load(run_dir / rundir.PERSONAS)
    hists = list(user_histories(inter, ("train",)).values())
    _, sid = load_sid_tokens(run_dir)
    return GroundedTeacher(sid.codec, interests, personas, dict(zip(items["item_id"], items["brand"])),
                           interest_transitions(hists, interests))


def build(config: SftDataConfig, run_dir: Path, judge: Judge | None = None, progress: bool = True) -> dict:
    """Write the SFT samples and the learned interests/personas; returns the stats."""
    rng = np.random.default_rng(config.seed)
    items = pd.read_parquet(run_dir / rundir.ITEMS)
    inter = pd.read_parquet(run_dir / rundir.INTERACTIONS)
    emb = np.load(run_dir / rundir.EMBEDDINGS)
    tok, sid = load_sid_tokens(run_dir)
    codec, text = sid.codec, HistoryText(sid, tok)
    max_items = rundir.prompt_items(run_dir)
    out = run_dir / "reasoning"
    out.mkdir(parents=True, exist_ok=True)
    heldout_path = run_dir / rundir.HELDOUT_ITEMS
    heldout = set(json.loads(heldout_path.read_text())) if heldout_path.exists() else set()

    unknown = sorted(set(config.think_ratio) - set(items["domain"]))
    if unknown:
        raise ValueError(f"sft.data.think_ratio: unknown domain(s) {unknown}; the run has {sorted(set(items['domain']))}")
    first_code = codec.codes[[codec.index[i] for i in items["item_id"]], 0] if config.interest_basis == "sid" else None
    interests = learn_interests(items, emb, config.interests_per_domain, config.seed, config.interest_tokens,
                                first_code)
    if interests.tokens:  # the run's tokenizer learns them; train/sft gives the model their rows
        tok.add_special_tokens({"additional_special_tokens": interests.token_strings()},
                               replace_extra_special_tokens=False)
        with rundir.atomic_dir(run_dir / "tokenizer") as tmp:
            tok.save_pretrained(str(tmp))
    hists = user_histories(inter, ("train",))
    brand = dict(zip(items["item_id"], items["brand"]))
    users = [u for u, h in hists.items() if h]
    personas, _ = learn_personas([hists[u] for u in users], interests, brand, config.personas, config.seed,
                                 config.persona_interest_weight)
    teacher = GroundedTeacher(codec, interests, personas, brand, interest_transitions(list(hists.values()), interests))
    interests.save(run_dir / rundir.INTERESTS)
    personas.save(run_dir / rundir.PERSONAS)
    rows: list[dict] = []

    def add(task: str, domain: str, sid_: str, user: str, answer: str, trace: str | None = None,
            think: bool = False) -> None:
        rows.append({"sample_id": f"{task}-{sid_}", "task": task, "domain": domain, "think": think,
                     "user": chat_prompt(user, think), "assistant": chat_response(answer, trace)})

    # R0: perception, on items whose text the pre-training corpus paired with their tokens.
    known = items[~items["item_id"].isin(heldout)].reset_index(drop=True)
    for j, (r, kind) in enumerate(zip(rng.integers(0, len(known), config.r0_samples),
                                      rng.integers(0, 4, config.r0_samples))):
        it = known.iloc[int(r)]
        s = codec.item_text(it["item_id"])
        if kind == 0:
            add("R0", it["domain"], f"{j}", title_user(s), clip_words(it["title"], 30))
        elif kind == 1:
            add("R0", it["domain"], f"{j}", describe_user(s), clip_words(it["description"], 40))
        elif kind == 2:
            add("R0", it["domain"], f"{j}", find_user(it["title"]), s)
        elif leaf_category(it["categories"]):
            add("R0", it["domain"], f"{j}", f"Which category is {s} in?", leaf_category(it["categories"]))

    # R0 with interest tokens: which interest an item is in, and what an interest holds.
    known_ids = set(known["item_id"])
    members = [[m for m in ms if m in known_ids] for ms in interests.members()] if interests.tokens else []
    own = np.random.default_rng([config.seed, 2])  # own stream: the other samples stay those of a run without tokens
    tokens = interests.token_strings()
    for j in range(config.r0_interest_samples if interests.tokens else 0):
        it = known.iloc[int(own.integers(0, len(known)))]
        i = interests.of[it["item_id"]]
        if j % 2:
            add("R0", it["domain"], f"i{j}", interest_user(codec.item_text(it["item_id"])),
                interests.names[i])
        else:
            shown = own.choice(members[i], min(3, len(members[i])), replace=False)
            add("R0", it["domain"], f"i{j}", f"Name items of {tokens[i]}.",
                f"{interests.names[i]}: {' '.join(codec.item_text(m) for m in shown)}")

    # R1: relations between candidate pairs, labelled by the judge.
    transitions = transition_counts(inter)
    j = config.judge
    client = None
    if "llm" in (j.kind, config.teacher):
        if not j.base_url:
            raise ValueError("sft.data.judge.base_url: an `llm` judge or teacher needs an endpoint URL")
        client = j.client(out / "llm_cache")
    if judge is None:
        judge = GroundedJudge(items, emb, transitions, interests) if j.kind == "grounded" else LLMJudge(client, items)
    pairs = candidate_pairs(items, emb, transitions)
    n_random = round(config.r1_samples * config.r1_random_share)
    pairs = [pairs[i] for i in sorted(rng.permutation(len(pairs))[:config.r1_samples - n_random])]
    pairs += random_pairs(items, n_random, np.random.default_rng([config.seed, 1]), exclude=set(pairs))  # own stream
    relations = judge.judge(pairs)
    for j, ((a, b), rel) in enumerate(zip(pairs, relations)):
        add("R1", codec.item_domain[a], f"{j}", r1_user(codec.item_text(a), codec.item_text(b)),
            f"{rel.label}: {rel.reason}.")

    # R2 and R3: cut points of training users' sequences.
    cuts = [(u, t) for u in users for t in range(1, len(hists[u]))]
    r2 = rng.permutation(len(cuts))[:config.r2_samples]
    for j in r2:
        u, t = cuts[j]
        events, future = hists[u][:t][-max_items:], hists[u][t:t + 5]
        n = int(rng.choice(config.hypotheses))
        nxt = list(dict.fromkeys(interests.of[e.item] for e in future))[:n]
        add("R2", codec.item_domain[future[0].item], f"{u}-{t}",
            r2_user(text.text(events), n),
            numbered_list([interests.names[i] for i in nxt]) + ".")
    by_user: dict[str, list[int]] = {}
    for u, t in cuts:
        by_user.setdefault(u, []).append(t)
    cases = []  # (user, cut, events, target, think, n)
    for u in users:
        ts = by_user.get(u, [])
        if config.r3_cuts_per_user and len(ts) > config.r3_cuts_per_user:  # the last cut, then random ones
            ts = sorted([ts[-1], *rng.choice(ts[:-1], config.r3_cuts_per_user - 1, replace=False)])
        for t in ts:
            target = hists[u][t]
            think = bool(rng.random() < config.think_ratio.get(codec.item_domain[target.item], config.default_think_ratio))
            cases.append((u, t, hists[u][:t][-max_items:], target, think, int(rng.choice(config.hypotheses))))
    thinking = [c for c in cases if c[4]]
    if config.teacher == "llm":
        llm = LLMTeacher(client, teacher, dict(zip(items["item_id"], items["title"])))
        written = llm.traces([(e, tg.item, n) for _, _, e, tg, _, n in thinking], [f"R3-{u}-{t}" for u, t, *_ in thinking])
    else:
        written = [teacher.trace(e, tg.item, n) for _, _, e, tg, _, n in tqdm(thinking, desc="R3 traces",
                                                                               disable=not progress)]
    traces = {(c[0], c[1]): w for c, w in zip(thinking, written)}
    for u, t, events, target, think, n in cases:
        trace = traces.get((u, t))
        if trace is not None:
            check_trace(trace, [e.item for e in events], codec, target.item, f"R3-{u}-{t}")
        domain = codec.item_domain[target.item]
        add("R3", domain, f"{u}-{t}", r3_user(text.text(events), domain, n if think else None),
            codec.item_text(target.item), trace, think)

    df = pd.DataFrame(rows)
    write_parquet(df, run_dir / rundir.SFT_DATA)
    stats = {"samples": {t: int((df["task"] == t).sum()) for t in TASKS},
             "r3_thinking_share": float(df.loc[df["task"] == "R3", "think"].mean()),
             "relations": dict(Counter(r.label for r in relations)),
             "interests": len(interests), "personas": personas.names,
             "persona_users": [s["users"] for s in personas.stats]}
    write_text(out / "stats.json", json.dumps(stats, indent=2))
    return stats
