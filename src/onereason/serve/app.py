"""The HTTP service: `create_app(run_dir, config)` → a FastAPI app (run it with uvicorn, or
`onereason serve`).

    POST /recommend            items for a user id or an explicit history (fast | slow | auto; race)
    POST /events               append a user's interactions; their trace becomes stale
    GET  /explain/{user_id}    the cached trace, split into persona, interests, transition
    POST /v1/chat/completions  the model, OpenAI-compatible (`stream: true` sends server-sent events)
    GET  /v1/models            the served model, as OpenAI clients list it
    GET  /health, GET /metrics (Prometheus text)

Fast requests that arrive together are decoded as one batch, by default in a process of its own that
takes whatever is waiting whenever it is free (`fast_path`, `serve/ranker.py`). Slow and chat requests
run on one executor thread.
The slow-path worker is a separate thread (or process) writing traces to the store. Several server
processes (`processes` > 1: uvicorn workers behind one port) each hold a model and share the store;
each has its own /metrics.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import os
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette import types as asgi

from onereason.bench.lists import merge_race
from onereason.chat import PARTS
from onereason.data.histories import Event
from onereason.reasoning.traces import split_trace
from onereason.serve.engine import Constraint, Engine, ServeConfig, UnknownInterest, chat_completion
from onereason.serve.ranker import Ranker, rank_jobs
from onereason.serve.store import NewEvent, Store, open_store
from onereason.serve.worker import Worker, history, register_users

MAX_HISTORY, MAX_K, MAX_EVENTS = 1000, 100, 1000
SERVE_ENV = "ONEREASON_SERVE"  # the run and settings of each process of a multi-process server
Id = Field(min_length=1, max_length=200)


class HistoryEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Id
    timestamp: int = Field(0, ge=0)
    rating: float | None = None


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    favour_interests: list[str] = Field([], max_length=10, description="interests the reasoning turns to")
    exclude_interests: list[str] = Field([], max_length=50)
    newer_than: int | None = Field(None, description="only items first seen at or after this unix time (trie)")
    min_price: float | None = Field(None, ge=0, description="a business rule: favour items priced (or bid) at least "
                                    "this; the trace moves to an interest that holds them")
    enforce: bool = Field(False, description="also restrict the trie to the favoured / not excluded interests "
                          "(and to items at min_price or more)")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(None, min_length=1, max_length=200)
    history: list[str | HistoryEvent] | None = Field(None, min_length=1, max_length=MAX_HISTORY,
                                                     description="explicit history (oldest first); wins over user_id")
    domain: str | None = Field(None, max_length=100, description="default: the domain of the latest item")
    k: int = Field(10, ge=1, le=MAX_K)
    mode: Literal["fast", "slow", "auto"] = "auto"
    race: bool = Field(False, description="with a trace: its list and the non-thinking list merged by reciprocal "
                       "rank, the bench's race mode; costs a second beam")
    constraints: Constraints = Constraints()


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Id
    events: list[HistoryEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


def sse(obj: dict | str) -> str:
    """One server-sent event in the OpenAI stream format."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


class Metrics:
    """Prometheus series in a registry of the app's own (several apps in one process stay apart)."""

    def __init__(self, queue_length: Callable[[], int]):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("onereason_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("onereason_request_seconds", "request latency", ["endpoint"], registry=r,
                                 buckets=(.005, .01, .02, .03, .05, .075, .1, .25, .5, 1, 2.5, 5, 10))
        self.trace_cache = Counter("onereason_trace_cache", "trace lookups on the request path", ["result"],
                                   registry=r)
        self.traces = Counter("onereason_traces_written", "reasoning traces written", ["by"], registry=r)
        self.batch = Histogram("onereason_batch_size", "requests run together", ["path"], registry=r,
                               buckets=(1, 2, 4, 8, 16, 32))
        self.queue = Gauge("onereason_slow_queue_length", "users whose trace is missing or stale", registry=r)
        self.queue.set_function(queue_length)


class Batcher:
    """Collects requests for up to `max_wait` after the first arrived and hands them to the pool as one batch,
    one batch at a time: the slow path's, and the fast path's when it runs in a thread of the server."""

    def __init__(self, fn: Callable[[list], list], pool: Executor, max_batch: int, max_wait: float,
                 on_batch: Callable[[int], None]):
        self.fn, self.pool, self.max_batch, self.max_wait, self.on_batch = fn, pool, max_batch, max_wait, on_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.slots = asyncio.Semaphore(1)

    async def submit(self, job):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        await self.queue.put((job, fut, loop.time()))
        return await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.slots.acquire()
            batch = [await self.queue.get()]
            deadline = batch[0][2] + self.max_wait  # from the first request's arrival: one queued while the
            while len(batch) < self.max_batch:  # model was busy has waited already
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            self.on_batch(len(batch))
            loop.run_in_executor(self.pool, self.fn, [job for job, _, _ in batch]).add_done_callback(
                partial(self._answer, batch))

    def _answer(self, batch: list, done: asyncio.Future) -> None:
        self.slots.release()
        error = done.exception()  # every waiter gets the error, the loop goes on
        for i, (_, fut, _) in enumerate(batch):
            if fut.done():
                continue
            if error:
                fut.set_exception(error)
            else:
                fut.set_result(done.result()[i])


class Guard:
    """Turns requests away before routing (`reject`) and counts and times every answer. Plain ASGI: Starlette's
    `@app.middleware("http")` runs each request through a task group and memory streams, which doubled the
    server's CPU per small request (0.31 → 0.62 ms measured)."""

    def __init__(self, app: asgi.ASGIApp, reject: Callable[[Request, str], JSONResponse | None], metrics: Metrics):
        self.app, self.reject, self.metrics = app, reject, metrics

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500
        route = "/explain" if scope["path"].startswith("/explain/") else scope["path"]

        async def sent(message: asgi.Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await (self.reject(Request(scope), route) or self.app)(scope, receive, sent)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def create_app(run_dir: Path, config: ServeConfig | None = None, engine: Engine | None = None,
               store: Store | None = None) -> FastAPI:
    """The service for a run. An `engine` passed in answers slow and chat requests, and fast ones only with
    `fast_path: thread` (the ranker process loads its own from the run and config)."""
    config = config or ServeConfig()
    if config.threads is None:  # the cores shared out among the models the server runs
        models = config.processes * (2 if config.fast_path == "process" else 1)
        config = config.replace(threads=max(1, torch.get_num_threads() // models))
    torch.set_num_threads(config.threads)
    engine = engine or Engine(run_dir, config)
    store = store or open_store(config.store, Path(run_dir))
    register_users(engine, store)
    metrics = Metrics(store.queue_length)
    pool = ThreadPoolExecutor(1, thread_name_prefix="model")

    def slow_batch(jobs: list[dict]) -> list[str]:
        return engine.think([j["history"] for j in jobs], [j["domain"] for j in jobs])

    wait = config.max_wait_ms / 1000
    fast: Ranker | Batcher = (  # the engine of its own process answers fast batches, or the server's thread
        Ranker(Path(run_dir), config, metrics.batch.labels("fast").observe) if config.fast_path == "process" else
        Batcher(partial(rank_jobs, engine), pool, config.max_batch, wait, metrics.batch.labels("fast").observe))
    thinker = Batcher(slow_batch, pool, config.max_batch, wait, metrics.batch.labels("slow").observe)
    worker = (Worker(engine, store, config.worker_batch, on_written=lambda n, s: metrics.traces.labels("worker").inc(n))
              if config.worker == "thread" else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(thinker.run())]
        if isinstance(fast, Ranker):  # serve once the ranker is up; a model that fails to load fails here
            await asyncio.to_thread(fast.start, asyncio.get_running_loop())
        else:
            tasks.append(asyncio.create_task(fast.run()))
        gc.freeze()  # everything loaded so far stays: a collection under load need not walk the run's histories
        if worker:
            worker.start()
        yield
        for task in tasks:
            task.cancel()
        if worker:
            worker.stop()
        pool.shutdown(wait=True)
        if isinstance(fast, Ranker):
            fast.close()
        store.close()

    app = FastAPI(title="onereason", lifespan=lifespan)
    app.state.fast = fast

    def rejection(request: Request, route: str) -> JSONResponse | None:
        """A request turned away before routing: body size unknown or too large, wrong API key."""
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "Content-Length required"}, 411)
            if not length.isdigit() or int(length) > config.max_body_bytes:
                return JSONResponse({"detail": f"request body over {config.max_body_bytes} bytes"}, 413)
        if config.api_key and route != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                return JSONResponse({"detail": "missing or wrong API key"}, 401)
        return None

    app.add_middleware(Guard, reject=rejection, metrics=metrics)

    def resolve(req: RecommendRequest) -> tuple[list[Event], str | None]:
        if req.history is not None:
            events = [HistoryEvent(item_id=x) if isinstance(x, str) else x for x in req.history]
            unknown = engine.unknown_items([e.item_id for e in events])
            if unknown:
                raise HTTPException(422, f"unknown items in history ({len(unknown)}): {unknown[:10]}")
            return [Event(e.item_id, e.timestamp, float("nan") if e.rating is None else e.rating)
                    for e in events], req.user_id
        if req.user_id is None:
            raise HTTPException(422, "give user_id or history")
        h = history(engine, store, req.user_id)
        if not h:
            raise HTTPException(404, f"unknown user {req.user_id!r}: no interactions in the run and no events; "
                                     "send a history instead")
        return h, req.user_id

    @app.post("/recommend")
    async def recommend(req: RecommendRequest) -> dict:
        events, user = resolve(req)
        domain = req.domain or engine.domain_of(events[-1].item)
        if domain not in engine.domains:
            raise HTTPException(422, f"unknown domain {domain!r}; known: {engine.domains}")
        c = req.constraints
        if c.min_price is not None and not engine.price:
            raise HTTPException(422, "constraints.min_price: this run's items have no price (an optional item column)")
        try:
            constraint = Constraint([engine.interest_index(n, domain) for n in c.favour_interests],
                                    [engine.interest_index(n, domain) for n in c.exclude_interests],
                                    c.newer_than, c.enforce, c.min_price)
            if constraint.trie:
                engine.allowed_trie(domain, constraint)  # fails early when nothing is allowed
        except UnknownInterest as e:
            raise HTTPException(422, str(e)) from None
        cache_user = user if req.history is None else None  # explicit histories are neither read nor cached
        cached = store.get_trace(cache_user, domain) if cache_user else None
        mode = req.mode if req.mode != "auto" else ("fast" if cached else "slow")
        trace, age, stale = None, None, None
        if mode == "slow":
            seen = store.activity(cache_user) if cache_user else None
            trace = await thinker.submit({"history": events, "domain": domain})
            metrics.traces.labels("request").inc()
            if seen is not None:
                store.put_trace(cache_user, domain, trace, seen)
            age, stale = 0.0, False
        elif cached:
            trace, age, stale = cached.trace, time.time() - cached.created, cached.stale
        metrics.trace_cache.labels("slow" if mode == "slow" else "stale" if stale else "hit" if cached else "miss").inc()
        applied = []
        if not constraint.empty:
            if trace is None and (constraint.favour or constraint.exclude or constraint.min_price is not None):
                trace = engine.grounded_trace(events, domain)
                applied.append("no cached trace: a grounded trace was written for the constraint")
            if trace is not None:
                trace, edits = engine.edit_trace(trace, domain, constraint)
                applied += edits
            if constraint.enforce and (constraint.favour or constraint.exclude):
                applied.append("favour/exclude interests: trie")
            if constraint.newer_than is not None:
                applied.append(f"newer_than {constraint.newer_than}: trie")
            if constraint.enforce and constraint.min_price is not None:
                applied.append(f"min_price {constraint.min_price:g}: trie")
        job = {"history": events[-engine.max_items:], "domain": domain, "trace": trace, "k": req.k,
               "constraint": constraint}  # the prompt's items only: the job travels to the ranker process
        raced = req.race and trace is not None
        jobs = [job, {**job, "trace": None}] if raced else [job]  # submitted together: one batch
        (items, scores), *others = await asyncio.gather(*(fast.submit(j) for j in jobs))
        if raced:
            plain, plain_scores = others[0]
            score_of = dict(zip(plain, plain_scores)) | dict(zip(items, scores))
            items = merge_race(plain, items, req.k)
            scores = [score_of[i] for i in items]
        path = mode if mode == "slow" else "fast+trace" if trace else "fast"
        return {"user_id": user, "domain": domain, "mode": path + ("+race" if raced else ""),
                "trace_age_s": age, "trace_stale": stale, "constraints_applied": applied,
                "items": [{"id": i, "title": engine.titles.get(i, ""), "domain": engine.domain_of(i),
                           "interest": engine.interest_of(i), "score": s} for i, s in zip(items, scores)]}

    @app.post("/events")
    def events(req: EventsRequest) -> dict:
        unknown = engine.unknown_items([e.item_id for e in req.events])
        if unknown:
            raise HTTPException(422, f"unknown items ({len(unknown)}): {unknown[:10]}; nothing was written")
        now = int(time.time())
        new = [NewEvent(e.item_id, e.timestamp or now, e.rating) for e in req.events]
        n = store.add_events(req.user_id, new, engine.domain_of(new[-1].item))
        return {"user_id": req.user_id, "events": n, "trace_stale": True}

    @app.get("/explain/{user_id}")
    def explain(user_id: str, domain: str | None = None) -> dict:
        if len(user_id) > 200:
            raise HTTPException(422, "user_id longer than 200 characters")
        if domain is None:
            h = history(engine, store, user_id)
            if not h:
                raise HTTPException(404, f"unknown user {user_id!r}")
            domain = engine.domain_of(h[-1].item)
        cached = store.get_trace(user_id, domain)
        if cached is None:
            raise HTTPException(404, f"no reasoning cached for user {user_id!r} in {domain!r} yet "
                                     f"(the slow path has {store.queue_length()} users queued)")
        head, listed, transition = split_trace(cached.trace)
        return {"user_id": user_id, "domain": domain, "trace": cached.trace,
                "persona": head.removeprefix(PARTS[0]).strip().rstrip("."), "interests": listed,
                "transition": transition, "age_s": time.time() - cached.created, "stale": cached.stale}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(req: ChatRequest) -> dict | StreamingResponse:
        max_tokens = min(req.max_tokens or config.chat_max_tokens, config.chat_max_tokens)
        msgs = [m.model_dump() for m in req.messages]
        loop = asyncio.get_running_loop()
        if not req.stream:
            return await loop.run_in_executor(pool, lambda: chat_completion(engine, msgs, max_tokens,
                                                                            req.temperature, req.seed))
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def emit(text: str) -> None:  # called on the model thread
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        done = loop.run_in_executor(pool, lambda: chat_completion(engine, msgs, max_tokens, req.temperature,
                                                                  req.seed, emit))
        done.add_done_callback(lambda _: pieces.put_nowait(None))
        head = {"id": f"chatcmpl-{time.time_ns():x}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": engine.model_name}

        def chunk(delta: dict, finish: str | None = None) -> str:
            return sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            while (text := await pieces.get()) is not None:
                yield chunk({"content": text})
            result = await done
            yield chunk({}, result["choices"][0]["finish_reason"])
            if req.stream_options and req.stream_options.include_usage:
                yield sse({**head, "choices": [], "usage": result["usage"]})
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "owned_by": "onereason",
                                            "created": int(engine.model_dir.stat().st_mtime)}]}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": engine.model_name, "domains": engine.domains,
                "worker": "alive" if worker and worker.is_alive() else "off" if worker is None else "dead"}

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    return app


def app_from_env() -> FastAPI:
    """The app of each process of a multi-process server: uvicorn starts a process from an import string,
    so the run and its settings travel in the environment (`onereason serve start` puts them there)."""
    spec = json.loads(os.environ[SERVE_ENV])
    return create_app(Path(spec["run_dir"]), ServeConfig(**spec["config"]))
