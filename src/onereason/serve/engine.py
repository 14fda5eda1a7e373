"""What the service computes, without HTTP: histories, the slow path (a reasoning trace in thinking
mode), the fast path (trie-constrained beam search, after a cached trace when there is one) and
interventions written into the trace.

A fast request with a cached trace reads exactly like thinking mode at inference, except that the
trace was sampled earlier, possibly from a shorter history: prompt(current history, thinking) +
cached trace + `</think>` + the domain's begin token → beam search. Without a trace it is the
non-thinking prompt. Constraints edit the trace's Interest Expansion (and the transition, when it
points at an excluded interest); `enforce` also restricts the trie to the allowed items.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from pydantic import Field, model_validator
from transformers.generation.streamers import BaseStreamer

from onereason import rundir
from onereason.chat import END_THINK, IM_END, conversation
from onereason.config import Config
from onereason.corpus.user_layer import HistoryText
from onereason.data.histories import Event, user_histories
from onereason.data.schema import item_prices
from onereason.decoding.constrained import PromptCache, Recommendation, recommend
from onereason.decoding.two_stage import generate_traces
from onereason.itemic.sid import build_trie, load_sid_tokens
from onereason.model.backbone import load_model
from onereason.protocol import Decoding
from onereason.reasoning.sft_data import load_teacher, r3_prompts
from onereason.reasoning.traces import drift_to, join_trace, split_trace


class ServeConfig(Config):
    model: str | None = Field(None, description="model directory relative to the run (default: the RL "
                              "model rl/grpo/model when it exists, else sft/model), or an absolute path")
    store: str = Field("sqlite", description="sqlite | sqlite:///<path> | redis://host:port/db")
    hypotheses: int = Field(3, ge=1, le=5, description="interests the slow path asks the model to expand")
    renamed_keys = {"beams": "decoding.beams", "trace_tokens": "decoding.trace_tokens",
                    "temperature": "decoding.temperature"}
    decoding: Decoding = Field(Decoding(beams=10), description="the slow path's trace; beams: the fast path's "
                               "beam width floor (a request's k raises it)")
    max_batch: int = Field(16, ge=1, description="fast requests decoded together")
    max_wait_ms: float = Field(2.0, ge=0, description="fast_path thread, and the slow path: how long the first "
                               "request of a batch waits for others (the ranker process takes what is waiting)")
    fast_path: str = Field("process", pattern="^(process|thread)$", description="where fast batches run: a process "
                           "of their own with its own copy of the model (the HTTP event loop and the model then do "
                           "not take turns at Python's lock), or a thread of the server")
    worker: str = Field("thread", pattern="^(thread|off)$", description="run the slow-path worker in the server")
    worker_batch: int = Field(8, ge=1)
    api_key: str | None = None
    max_body_bytes: int = Field(1_000_000, ge=1024)
    chat_max_tokens: int = Field(512, ge=1)
    threads: int | None = Field(None, ge=1, description="torch threads per model (default for a server: the cores "
                                "shared out among its models, each process's and its ranker's; else torch's)")
    processes: int = Field(1, ge=1, description="server processes behind the one port (uvicorn workers), each with "
                           "its own model; they share the store (the SQLite file or Redis)")
    score_end: bool = Field(False, description="add the end token's log-probability to a fast-path score: one "
                            "more forward per batch for a term near 0 (offline evaluation always adds it)")
    prompt_cache_mb: int = Field(512, ge=0, description="per process: fast-path prompts' keys and values kept "
                                 "between requests (a user's prompt is the same until their history or trace "
                                 "changes); 0: off")
    hold_out_test: bool = Field(False, description="serve each user's history without their test events, as it "
                                "stood before them: a replay of the test split against the service measures it "
                                "(bench/serve_value.py)")

    @model_validator(mode="after")
    def _one_slow_worker(self) -> "ServeConfig":
        if self.processes > 1 and self.worker == "thread":
            raise ValueError(f"processes={self.processes} with worker=thread would run the slow path in every "
                             "process: set worker=off and run `onereason serve worker` beside the servers")
        return self


@dataclass
class Constraint:
    """A request's intervention, resolved against the domain's interests."""
    favour: list[int] = field(default_factory=list)  # interest indices
    exclude: list[int] = field(default_factory=list)
    newer_than: int | None = None  # items first seen at or after this timestamp
    enforce: bool = False
    min_price: float | None = None  # a business rule: favour items whose price / bid is at least this

    @property
    def empty(self) -> bool:
        return not (self.favour or self.exclude or self.newer_than is not None or self.min_price is not None)

    @property
    def trie(self) -> bool:
        """Whether the beam is restricted to allowed items (else only the trace is edited)."""
        return self.enforce or self.newer_than is not None


class UnknownInterest(ValueError):
    pass


class Engine:
    def __init__(self, run_dir: Path, config: ServeConfig | None = None):
        self.run_dir, self.config = Path(run_dir), config or ServeConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.model_dir = self._model_dir()
        self.model_name = (str(self.model_dir.relative_to(self.run_dir)) if self.model_dir.is_relative_to(self.run_dir)
                           else self.model_dir.name)
        self.model = load_model(self.model_dir).eval()
        self.prompt_cache = PromptCache(self.config.prompt_cache_mb << 20) if self.config.prompt_cache_mb else None
        self.tok, self.sid = load_sid_tokens(self.run_dir)
        self.max_items = rundir.prompt_items(self.run_dir)  # the latest items of a history, as in training
        self.text = HistoryText(self.sid, self.tok)
        self.teacher = load_teacher(self.run_dir)
        self.interests = self.teacher.interests
        items = pd.read_parquet(self.run_dir / rundir.ITEMS)
        self.titles = dict(zip(items["item_id"], items["title"].astype(str)))
        self.price = item_prices(items)
        inter = pd.read_parquet(self.run_dir / rundir.INTERACTIONS)
        if self.config.hold_out_test:  # the service as it stood before the test events
            inter = inter[inter["split"] != "test"]
        self.first_seen = inter.groupby("item_id")["timestamp"].min().to_dict()
        self.base = user_histories(inter, ("train", "valid", "test"))
        self.domains = sorted(self.sid.codec.domains)
        self.nl = self.tok.encode("\n\n", add_special_tokens=False)
        self.end_think = self.tok.convert_tokens_to_ids(END_THINK)
        self.im_end = self.tok.convert_tokens_to_ids(IM_END)

    def _model_dir(self) -> Path:
        m = self.config.model
        if m is None:
            m = rundir.RL_MODEL if (self.run_dir / rundir.RL_MODEL / "config.json").exists() else rundir.SFT_MODEL
        path = Path(m) if Path(m).is_absolute() else self.run_dir / m
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no model at {path} (config.json missing): train it first, or pass --model")
        return path

    # ---- inputs -------------------------------------------------------------------------------
    def unknown_items(self, items: list[str]) -> list[str]:
        return [i for i in items if i not in self.sid.codec.index]

    def domain_of(self, item: str) -> str:
        return self.sid.codec.item_domain[item]

    def interest_index(self, name: str, domain: str) -> int:
        """An interest named in full or, where interests are tokens, by its words alone."""
        i = self.interests.find(name, domain)
        if i is None:
            known = [n for n, d in self.interests.index if d == domain]
            raise UnknownInterest(f"unknown interest {name!r} in domain {domain!r}; known: {known}")
        return i

    def interest_of(self, item: str) -> str:
        return self.interests.names[self.interests.of[item]]

    # ---- slow path ----------------------------------------------------------------------------
    def think(self, histories: list[list[Event]], domains: list[str], seed: int = 0) -> list[str]:
        """One sampled reasoning trace per history (text between the think tags)."""
        prompts = self._prompts(histories, domains, True)
        traces = generate_traces(self.model, prompts, [[e.item for e in h[-self.max_items:]] for h in histories],
                                 self.sid, self.tok, self.config.decoding, batch_size=max(len(prompts), 1), seed=seed,
                                 hypotheses=self.config.hypotheses)
        return [self.tok.decode(t[:-1], skip_special_tokens=False).strip() for t in traces]

    # ---- fast path ----------------------------------------------------------------------------
    def rank(self, histories: list[list[Event]], domains: list[str], traces: list[str | None], k: int,
             constraints: list[Constraint] | None = None) -> list[Recommendation]:
        """Top-k items per request, batched: after its trace when it has one, else in non-thinking mode."""
        constraints = constraints or [Constraint()] * len(histories)
        prompts = [_fast_prompt(self, tuple(_key(e) for e in h[-self.max_items:]), d, t)
                   for h, d, t in zip(histories, domains, traces)]
        tries = [self.allowed_trie(d, c) if c.trie else None for d, c in zip(domains, constraints)]
        beams = max(k, self.config.decoding.beams)
        return recommend(self.model, prompts, domains, self.sid, self.tok.pad_token_id, k=k, num_beams=beams,
                         batch_size=len(prompts), tries=tries, prompt_cache=self.prompt_cache,
                         score_end=self.config.score_end)

    def _prompts(self, histories: list[list[Event]], domains: list[str], thinking: bool) -> list[list[int]]:
        """R3 prompts over the latest items."""
        cut = [h[-self.max_items:] for h in histories]
        return r3_prompts(cut, domains, self.config.hypotheses if thinking else None, self.text, self.tok)

    # ---- intervention -------------------------------------------------------------------------
    def allowed_trie(self, domain: str, c: Constraint) -> dict:
        return _allowed_trie(self, domain, tuple(sorted(c.favour)) if c.enforce else (),
                             tuple(sorted(c.exclude)) if c.enforce else (), c.newer_than,
                             c.min_price if c.enforce else None)

    def allowed_items(self, domain: str, favour: tuple[int, ...], exclude: tuple[int, ...],
                      newer_than: int | None, min_price: float | None = None) -> list[str]:
        of = self.interests.of
        return [i for i, d in self.sid.codec.item_domain.items()
                if d == domain and (not favour or of[i] in favour) and of[i] not in exclude
                and (newer_than is None or self.first_seen.get(i, newer_than) >= newer_than)
                and (min_price is None or self.price.get(i, -1.0) >= min_price)]

    def value_interests(self, domain: str, min_price: float) -> list[int]:
        """The domain's interests that hold items priced at least `min_price`, richest share first."""
        return _value_interests(self, domain, min_price)

    def grounded_trace(self, history: list[Event], domain: str) -> str:
        """A trace from the interest statistics alone (no model call), for a constrained request
        that has no cached trace: the persona, the ranked hypotheses, a move to the first of them."""
        return self.teacher.foresight_trace(history, self.config.hypotheses, domain)

    def edit_trace(self, trace: str, domain: str, c: Constraint) -> tuple[str, list[str]]:
        """The trace with its Interest Expansion rewritten for the constraint, and what was applied."""
        names = self.interests.names
        fav, exc = [names[i] for i in c.favour], {names[i] for i in c.exclude}
        head, listed, transition = split_trace(trace)
        applied = []
        if c.min_price is not None and not fav:  # the rule, written as the interests that carry such items
            valued = [names[i] for i in self.value_interests(domain, c.min_price) if names[i] not in exc]
            fav = [n for n in listed if n in valued][:1] or valued[:1]
            applied.append(f"min_price {c.min_price:g}: trace moves to {fav[0]}" if fav else
                           f"min_price {c.min_price:g}: no {domain} item is priced that high")
        if fav:
            listed = fav
        kept = [n for n in listed if n not in exc]
        if not kept:  # everything the model thought of is excluded: the next-ranked allowed interests
            kept = [names[i] for i in range(len(names)) if self.interests.domain[i] == domain and names[i] not in exc][:1]
        if fav or any(n in transition for n in exc):
            transition = drift_to(kept[0])
        applied += [f"favour {names[i]}: trace" for i in c.favour] + [f"exclude {n}: trace" for n in sorted(exc)]
        return join_trace(head, kept, transition), applied


def _key(e: Event) -> Event:
    """An event as a cache key: a missing rating as the one `math.nan` object (NaN is never equal to
    itself, but tuples compare identical objects as equal)."""
    return e if e.rating == e.rating else e._replace(rating=math.nan)


@lru_cache(maxsize=4096)
def _fast_prompt(engine: Engine, history: tuple[Event, ...], domain: str, trace: str | None) -> list[int]:
    """A fast request's prompt ids: the thinking prompt, the trace and `</think>` (or the non-thinking prompt),
    then the domain's begin token. Kept per input, as a user asks again before their history changes."""
    q = engine._prompts([list(history)], [domain], trace is not None)[0]
    body = q + engine.tok.encode(f"\n{trace}\n", add_special_tokens=False) if trace is not None else q + engine.nl
    return body + [engine.end_think] + engine.nl + [engine.sid.begin_id[domain]]


@lru_cache(maxsize=256)
def _allowed_trie(engine: Engine, domain: str, favour: tuple[int, ...], exclude: tuple[int, ...],
                  newer_than: int | None, min_price: float | None) -> dict:
    items = engine.allowed_items(domain, favour, exclude, newer_than, min_price)
    if not items:
        raise UnknownInterest(f"no {domain} item satisfies the constraints")
    return build_trie([engine.sid.ids(i) for i in items])


@lru_cache(maxsize=256)
def _value_interests(engine: Engine, domain: str, min_price: float) -> list[int]:
    total, rich = Counter(), Counter()
    for item, d in engine.sid.codec.item_domain.items():
        if d == domain:
            total[engine.interests.of[item]] += 1
            rich[engine.interests.of[item]] += engine.price.get(item, -1.0) >= min_price
    return sorted((i for i in rich if rich[i]), key=lambda i: (-rich[i] / total[i], i))


class TextDeltas(BaseStreamer):
    """Hands `emit` each new piece of the answer's text while `generate` runs: whole characters only, the
    closing <|im_end|> left out, so the pieces join to exactly the non-streamed answer."""

    def __init__(self, tok, im_end: int, emit: Callable[[str], None]):
        self.tok, self.im_end, self.emit = tok, im_end, emit
        self.ids: list[int] = []
        self.sent, self.prompt_seen = "", False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first call hands over the prompt
            self.prompt_seen = True
            return
        self.ids += [t for t in value.reshape(-1).tolist() if t != self.im_end]
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.tok.decode(self.ids, skip_special_tokens=False)
        if (final or not text.endswith("\ufffd")) and text.startswith(self.sent) and len(text) > len(self.sent):
            self.emit(text[len(self.sent):])
            self.sent = text


def chat_completion(engine: Engine, messages: list[dict], max_tokens: int, temperature: float,
                    seed: int | None = None, emit: Callable[[str], None] | None = None) -> dict:
    """An OpenAI chat.completion from the served model, in the chat format it was trained on; with `emit`,
    each new piece of the answer's text is also handed to it as it is generated (streaming)."""
    text = conversation(messages)
    ids = engine.tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if seed is not None:
        torch.manual_seed(seed)
    streamer = TextDeltas(engine.tok, engine.im_end, emit) if emit else None
    with torch.no_grad():
        out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                    do_sample=temperature > 0, temperature=temperature or None, top_k=None,
                                    top_p=None, eos_token_id=engine.im_end, pad_token_id=engine.tok.pad_token_id,
                                    streamer=streamer)
    new = out[0, ids.shape[1]:].tolist()
    finished = engine.im_end in new
    new = new[:new.index(engine.im_end)] if finished else new
    return {"id": f"chatcmpl-{time.time_ns():x}", "object": "chat.completion", "created": int(time.time()),
            "model": engine.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": engine.tok.decode(new, skip_special_tokens=False)},
                         "finish_reason": "stop" if finished else "length"}],
            "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new),
                      "total_tokens": ids.shape[1] + len(new)}}

