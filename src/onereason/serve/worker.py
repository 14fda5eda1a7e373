"""The slow path: refresh reasoning traces for users whose trace is missing or stale, most active
first, outside the request path. Runs as a thread inside the server or as its own process
(`onereason serve worker`) against the same store, so replicas can share one worker."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from onereason.data.histories import Event
from onereason.serve.engine import Engine
from onereason.serve.store import Store

log = logging.getLogger("onereason.serve.worker")


def history(engine: Engine, store: Store, user: str) -> list[Event]:
    """The run's events for the user, then the ones the service received, in order."""
    extra = [Event(e.item, e.timestamp, float("nan") if e.rating is None else e.rating) for e in store.events(user)]
    return engine.base.get(user, []) + extra


def register_users(engine: Engine, store: Store) -> None:
    """Tell the store every user of the run (event count, latest domain): they queue for a trace."""
    store.seed({u: (len(h), engine.domain_of(h[-1].item)) for u, h in engine.base.items() if h})


def refresh(engine: Engine, store: Store, n: int, seed: int = 0) -> int:
    """One pass: up to n queued users get a fresh trace; how many were written."""
    queued = store.queue(n)
    jobs = []
    for user, domain in queued:
        seen = store.activity(user) or 0  # read before the events: later events leave the trace stale
        h = history(engine, store, user)
        if h:
            jobs.append((user, domain, seen, h))
    if not jobs:
        return 0
    traces = engine.think([h for *_, h in jobs], [d for _, d, _, _ in jobs], seed=seed)
    for (user, domain, seen, _), trace in zip(jobs, traces):
        store.put_trace(user, domain, trace, seen)
    return len(jobs)


class Worker(threading.Thread):
    """Loops `refresh` until stopped; sleeps while the queue is empty. `on_written(n, seconds)`
    feeds the server's metrics."""

    def __init__(self, engine: Engine, store: Store, batch: int = 8, idle_s: float = 0.5,
                 on_written: Callable[[int, float], None] | None = None):
        super().__init__(daemon=True, name="slow-path")
        self.engine, self.store, self.batch, self.idle_s = engine, store, batch, idle_s
        self.on_written = on_written
        self.stopping = threading.Event()
        self.errors = 0

    def run(self) -> None:
        step = 0
        while not self.stopping.is_set():
            t0 = time.perf_counter()
            try:
                n = refresh(self.engine, self.store, self.batch, seed=step)
            except Exception:  # a bad row must not kill the worker; it is counted, logged and retried later
                log.exception("slow-path refresh failed")
                self.errors += 1
                n = 0
            step += 1
            if n and self.on_written:
                self.on_written(n, time.perf_counter() - t0)
            if not n:
                self.stopping.wait(self.idle_s)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
