"""Load, hostile-input and crash test of the service on loopback (bounded: about 3 minutes).

1. warm: the slow path (in-process, as the worker runs it) writes traces for the most active
   users: traces/s.
2. fast: the server (`onereason serve start`, worker off) under N concurrent clients for S seconds,
   mode fast, half the requests for warmed users (fast + cached trace), half for any user:
   p50/p90/p99 latency, throughput, errors, mean batch size.
3. slow: the same clients with mode slow (reasoning on the request path): traces/s, latency.
4. hostile: malformed and oversized requests; each must get a 4xx, and the server keeps serving.
5. crash: the server with its worker thread, clients posting events and asking for
   recommendations; kill -9 mid-load; the store is checked (integrity, every acknowledged event
   present, no trace row broken, the warmed traces still there), the server restarts and serves.

    python bench/serve_load.py --name sft1 --model rl/think-d/model [--clients 8 --seconds 60 --warm 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from onereason.serve.engine import Engine, ServeConfig
from onereason.serve.store import SqliteStore
from onereason.serve.worker import refresh, register_users

RUNS = Path("runs")


def start_server(name: str, port: int, store: Path, model: str | None, worker: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "onereason.cli", "serve", "start", "--name", name, "--port", str(port),
           "--store", f"sqlite:///{store}", "--worker", worker] + (["--model", model] if model else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read()[-2000:]}")


async def clients(url: str, n: int, seconds: float, make_request) -> list[tuple[float, int, dict | None]]:
    """n concurrent clients, each sending make_request(rng) back to back: (latency, status, body)."""
    out: list[tuple[float, int, dict | None]] = []
    stop = time.perf_counter() + seconds

    async def one(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            while time.perf_counter() < stop:
                path, body = make_request(rng)
                t0 = time.perf_counter()
                try:
                    r = await c.post(path, json=body)
                    out.append((time.perf_counter() - t0, r.status_code, r.json() if r.status_code == 200 else None))
                except httpx.HTTPError as e:
                    out.append((time.perf_counter() - t0, 0, None))
                    if isinstance(e, httpx.ConnectError):  # the server is gone: this client stops
                        return

    await asyncio.gather(*(one(s) for s in range(n)))
    return out


def summary(results: list, seconds: float) -> dict:
    lat = np.array([r[0] for r in results]) * 1000
    ok = [r for r in results if r[1] == 200]
    modes: dict[str, int] = {}
    for r in ok:
        modes[r[2].get("mode", "?")] = modes.get(r[2].get("mode", "?"), 0) + 1
    return {"requests": len(results), "errors": len(results) - len(ok), "per_s": round(len(ok) / seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p90_ms": round(float(np.percentile(lat, 90)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "max_ms": round(float(lat.max()), 1), "modes": modes}


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="demo")
    ap.add_argument("--model", default=None)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--port", type=int, default=8765)
    a = ap.parse_args()
    run_dir = RUNS / a.name
    store_path = run_dir / "serve" / "bench.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    report: dict = {"run": a.name, "clients": a.clients, "seconds": a.seconds, "cores": os.cpu_count()}

    # 1. warm the cache with the slow path, as the worker does it
    engine = Engine(run_dir, ServeConfig(model=a.model))
    store = SqliteStore(store_path)
    register_users(engine, store)
    t0, written = time.perf_counter(), 0
    while written < a.warm:
        written += refresh(engine, store, min(8, a.warm - written), seed=written)
    report["warm"] = {"traces": written, "traces_per_s": round(written / (time.perf_counter() - t0), 2)}
    warmed_keys = [(u, d) for u, d, _, _ in store.cached()]
    warmed = [u for u, _ in warmed_keys]
    users = sorted(engine.base)
    items = list(engine.sid.codec.item_ids)
    del engine
    url = f"http://127.0.0.1:{a.port}"

    # 2-4. fast, slow, hostile
    server = start_server(a.name, a.port, store_path, a.model, "off")
    try:
        def fast(rng):
            return "/recommend", {"user_id": rng.choice(warmed if rng.random() < 0.5 else users), "k": 10,
                                  "mode": "fast"}

        def slow(rng):
            return "/recommend", {"user_id": rng.choice(users), "k": 10, "mode": "slow"}

        asyncio.run(clients(url, a.clients, 3, fast))  # warm-up, not counted
        m0 = httpx.get(url + "/metrics").text
        report["fast"] = summary(asyncio.run(clients(url, a.clients, a.seconds, fast)), a.seconds)
        m1 = httpx.get(url + "/metrics").text
        n_batches = metric(m1, "onereason_fast_batch_size_count") - metric(m0, "onereason_fast_batch_size_count")
        report["fast"]["mean_batch"] = round((metric(m1, "onereason_fast_batch_size_sum")
                                              - metric(m0, "onereason_fast_batch_size_sum")) / max(n_batches, 1), 2)
        report["slow"] = summary(asyncio.run(clients(url, a.clients, a.seconds, slow)), a.seconds)
        report["slow"]["traces_per_s"] = report["slow"]["per_s"]
        hostile = {
            "bad JSON": dict(content=b'{"user_id": ', headers={"Content-Type": "application/json"}),
            "100k-item history": dict(json={"history": [items[0]] * 100_000}),
            "unknown user": dict(json={"user_id": "no-such-user"}),
            "unknown items": dict(json={"history": ["no-such-item", items[0]]}),
            "k = 10^6": dict(json={"user_id": users[0], "k": 10**6}),
            "wrong types": dict(json={"user_id": ["a"], "k": "ten", "mode": 3}),
            "events with an unknown item": dict(json={"user_id": users[0], "events": [{"item_id": "x"}]}),
        }
        report["hostile"] = {}
        for what, kw in hostile.items():
            path = "/events" if what.startswith("events") else "/recommend"
            r = httpx.post(url + path, timeout=30, **kw)
            report["hostile"][what] = [r.status_code, r.text[:100]]
        report["hostile"]["health after"] = httpx.get(url + "/health").status_code
    finally:
        server.terminate()
        server.wait(30)

    # 5. crash under load: kill -9, check the store, restart
    server = start_server(a.name, a.port, store_path, a.model, "thread")
    acked: dict[str, int] = {}

    def mixed(rng):
        if rng.random() < 0.5:
            return "/events", {"user_id": rng.choice(users[:50]), "events": [{"item_id": rng.choice(items)}]}
        return "/recommend", {"user_id": rng.choice(users), "k": 10, "mode": "auto"}

    async def load_then_kill() -> list:
        task = asyncio.create_task(clients(url, a.clients, 30, mixed))
        await asyncio.sleep(10)
        os.kill(server.pid, signal.SIGKILL)
        return await task

    results = asyncio.run(load_then_kill())
    server.wait()
    for _, status, body in results:
        if status == 200 and body and "events" in body and "items" not in body:
            acked[body["user_id"]] = max(acked.get(body["user_id"], 0), body["events"])
    check = SqliteStore(store_path)
    rows = check.cached()
    report["crash"] = {
        "answered_before_kill": sum(r[1] == 200 for r in results), "failed_at_kill": sum(r[1] == 0 for r in results),
        "integrity_check": check.integrity(),
        "acknowledged_event_users": len(acked),
        "acknowledged_events_missing": sum(max(0, n - (check.activity(u) or 0)) for u, n in acked.items()),
        "trace_rows": len(rows), "broken_trace_rows": sum(not t or e < 0 or e > (check.activity(u) or 0) for u, _, t, e in rows),
        "warmed_traces_kept": sum(check.get_trace(u, d) is not None for u, d in warmed_keys),
    }
    check.close()
    t0 = time.perf_counter()
    server = start_server(a.name, a.port, store_path, a.model, "off")
    try:
        report["crash"]["restart_s"] = round(time.perf_counter() - t0, 1)
        r = httpx.post(url + "/recommend", json={"user_id": warmed[0], "k": 10, "mode": "fast"}, timeout=30)
        report["crash"]["after_restart"] = [r.status_code, r.json().get("mode")]
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(report, indent=1))
    (run_dir / "serve" / "load.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
