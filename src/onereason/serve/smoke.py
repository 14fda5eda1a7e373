"""The pipeline's `serve` stage: start the service on loopback, send it one real request, stop it.

It shows that a finished run serves (the model loads, the trie answers, the slow path writes a
trace into the store) and what one request costs, before anyone runs `onereason serve start`.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import uvicorn

from onereason.serve.app import create_app
from onereason.serve.engine import Engine, ServeConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, timeout: float = 300.0) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port for the block (a thread of this process): its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"serve: the service on 127.0.0.1:{port} did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run(run_dir: Path, config: ServeConfig | None = None, k: int = 5, timeout: float = 300.0) -> dict:
    """POST /recommend (mode "slow": a trace is sampled, then the items) for the run's most active user,
    then GET /explain for the cached trace; returns both answers and the request's wall time."""
    config = config or ServeConfig(worker="off")
    engine = Engine(run_dir, config)
    user = max(sorted(engine.base), key=lambda u: len(engine.base[u]))
    with serving(create_app(run_dir, config, engine), timeout) as url, \
            httpx.Client(base_url=url, timeout=timeout) as client:
        t0 = time.perf_counter()
        answer = client.post("/recommend", json={"user_id": user, "k": k, "mode": "slow"})
        seconds = time.perf_counter() - t0
        answer.raise_for_status()
        explain = client.get(f"/explain/{user}")
        explain.raise_for_status()
    return {"request": {"user_id": user, "k": k, "mode": "slow"}, "seconds": seconds, "answer": answer.json(),
            "explain": explain.json(), "model": engine.model_name}
