"""The fast path in a process of its own, batching continuously.

A thread beside the HTTP event loop would wait on Python's lock for each of the model's many small
steps while the loop parses requests, so fast requests are ranked by a process with its own copy of
the model. Requests travel to it one by one; whenever it is free it takes every request waiting (up to
`max_batch`) as one batch. Batches therefore grow with the load, the model never idles while requests
wait, and no request waits for a batch to fill. A server-side window (the `Batcher`) instead either
idles the model while a batch travels back or, pipelined, hands it batches formed before it was free.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import multiprocessing
import os
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from onereason.serve.engine import Engine, ServeConfig


def rank_jobs(engine: Engine, jobs: list[dict]) -> list[tuple[list[str], list[float]]]:
    """One fast batch: each job's top k items and scores."""
    k = max(j["k"] for j in jobs)
    ranked = engine.rank([j["history"] for j in jobs], [j["domain"] for j in jobs], [j["trace"] for j in jobs],
                         k, [j["constraint"] for j in jobs])
    return [(r.items[:j["k"]], r.scores[:j["k"]]) for j, r in zip(jobs, ranked)]


class Ranker:
    """The ranker process and the server's end of it: `submit(job)` from the event loop, answered when
    the batch it joined is ranked. `on_batch(size)` is called on the loop for every batch."""

    def __init__(self, run_dir: Path, config: ServeConfig, on_batch: Callable[[int], None]):
        ctx = multiprocessing.get_context("spawn")
        self.jobs = ctx.Queue()
        self.answers, answers_in = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_serve, args=(run_dir, config, self.jobs, answers_in, os.getpid()),
                                   name="onereason-ranker", daemon=True)
        self.process.start()
        answers_in.close()
        self.on_batch = on_batch
        self.waiting: dict[int, asyncio.Future] = {}
        self.ids = itertools.count()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dead: Exception | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the model is loaded (a model that fails to load fails here), then read answers."""
        try:
            kind, detail = self.answers.recv()
        except EOFError:
            kind, detail = "error", f"it exited with code {self.process.exitcode} before loading the model"
        if kind != "ready":
            raise RuntimeError(f"the ranker process failed to start:\n{detail}")
        self.loop = loop
        threading.Thread(target=self._read, name="ranker-answers", daemon=True).start()

    async def submit(self, job: dict):
        if self.dead:
            raise self.dead
        fut = self.loop.create_future()
        key = next(self.ids)
        self.waiting[key] = fut
        self.jobs.put((key, job))
        return await fut

    def close(self) -> None:
        self.jobs.put(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()

    def _read(self) -> None:
        """Answers back onto the loop; a ranker that died fails every waiting request instead of hanging it."""
        while True:
            try:
                if not self.answers.poll(1.0):
                    if self.process.is_alive():
                        continue
                    raise EOFError
                handle, args = self._answer, self.answers.recv()
            except (EOFError, OSError):
                handle, args = self._fail_all, (RuntimeError(f"the ranker process exited (code {self.process.exitcode})"),)
            try:
                self.loop.call_soon_threadsafe(handle, *args)
            except RuntimeError:  # the server's loop has closed: nobody is waiting
                return
            if handle == self._fail_all:
                return

    def _answer(self, keys: list[int], results: list | None, error: str | None) -> None:
        self.on_batch(len(keys))
        for i, key in enumerate(keys):
            fut = self.waiting.pop(key, None)
            if fut is None or fut.done():
                continue
            if error is not None:
                fut.set_exception(RuntimeError(f"fast path failed: {error}"))
            else:
                fut.set_result(results[i])

    def _fail_all(self, error: Exception) -> None:
        self.dead = error
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(error)
        self.waiting.clear()


def _serve(run_dir: Path, config: ServeConfig, jobs: multiprocessing.Queue, answers, server: int) -> None:
    """The ranker process: load the engine, then rank whatever is waiting, batch after batch."""
    threading.Thread(target=_exit_with_server, args=(server,), daemon=True).start()
    try:
        engine = Engine(run_dir, config)
    except Exception:
        answers.send(("error", traceback.format_exc()))
        return
    gc.freeze()  # the run's histories and tables stay: collections need not walk them
    answers.send(("ready", None))
    while True:
        first = jobs.get()
        if first is None:
            return
        batch = [first]
        while len(batch) < config.max_batch:
            try:
                nxt = jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                jobs.put(None)  # stop after this batch
                break
            batch.append(nxt)
        keys = [key for key, _ in batch]
        try:
            answers.send((keys, rank_jobs(engine, [job for _, job in batch]), None))
        except Exception as e:  # every request of the batch gets the error; the ranker goes on
            answers.send((keys, None, f"{type(e).__name__}: {e}"))


def _exit_with_server(server: int) -> None:
    """A server killed outright (kill -9) cannot stop its ranker: the ranker leaves when it is orphaned."""
    while os.getppid() == server:
        time.sleep(1)
    os._exit(0)
