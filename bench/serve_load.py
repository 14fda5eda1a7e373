"""Load, hostile-input and crash test of the service on loopback (bounded: about 3 minutes).

1. warm: the slow path (in-process, as the worker runs it) writes traces for the most active
   users: traces/s.
2. fast: the server (`onereason serve start`, worker off) under N concurrent clients for S seconds,
   mode fast, `--warmed-share` of the requests (half by default) for warmed users (fast + cached
   trace), the others for any user: p50/p90/p99 latency, throughput, errors, mean batch size
   (`--sweep 1,2,4`: other client counts).
3. slow: the same clients with mode slow (reasoning on the request path): traces/s, latency.
4. hostile: malformed and oversized requests; each must get a 4xx, and the server keeps serving.
5. crash: the server with its worker thread, clients posting events and asking for
   recommendations; kill -9 mid-load; the store is checked (integrity, every acknowledged event
   present, no trace row broken, the warmed traces still there), the server restarts and serves.

    python bench/serve_load.py --name sft1 --model rl/think-d/model [--clients 8 --seconds 60 --warm 200]
        [--sweep 1,2,4] [--phases fast,slow,hostile,crash] [--redis redis://127.0.0.1:6390/0]
        [--warmed-share 1] [--set processes=2 --set worker=off]
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

import aiohttp
import httpx
import numpy as np

from onereason.serve.engine import Engine, ServeConfig
from onereason.serve.store import SqliteStore, open_store
from onereason.serve.worker import refresh, register_users

RUNS = Path("runs")
FAST_COUNT, FAST_SUM = 'onereason_batch_size_count{path="fast"}', 'onereason_batch_size_sum{path="fast"}'


def start_server(name: str, port: int, store: str, model: str | None, worker: str, sets: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "onereason.cli", "serve", "start", "--name", name, "--port", str(port),
           "--store", store, "--worker", worker] + (["--model", model] if model else [])
    cmd += [x for s in sets for x in ("--set", s)]
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
    """n concurrent clients, each sending make_request(rng) back to back: (latency, status, body). aiohttp:
    the clients share the cores with the server, and httpx spends 4x its CPU per request."""
    out: list[tuple[float, int, dict | None]] = []
    stop = time.perf_counter() + seconds

    async def one(seed: int) -> None:
        rng = random.Random(seed)
        async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as c:
            while time.perf_counter() < stop:
                path, body = make_request(rng)
                t0 = time.perf_counter()
                try:
                    async with c.post(path, json=body) as r:
                        got = await r.json() if r.status == 200 else None
                    out.append((time.perf_counter() - t0, r.status, got))
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    out.append((time.perf_counter() - t0, 0, None))
                    if isinstance(e, aiohttp.ClientConnectorError):  # the server is gone: this client stops
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
    ap.add_argument("--sweep", default="", help="also run the fast phase at these client counts, e.g. 1,2,4")
    ap.add_argument("--phases", default="fast,slow,hostile,crash")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="server config, e.g. threads=1")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--warmed-share", type=float, default=0.5, help="share of fast requests for users with a cached trace")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--redis", default=None, help="a redis:// URL: the fast/slow phases use it (crash phase: SQLite)")
    a = ap.parse_args()
    phases = set(a.phases.split(","))
    run_dir = RUNS / a.name
    store_path = run_dir / "serve" / "bench.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    sqlite_url = f"sqlite:///{store_path}"
    url_under_load = a.redis or sqlite_url
    report: dict = {"run": a.name, "clients": a.clients, "seconds": a.seconds, "cores": os.cpu_count(),
                    "store": "redis" if a.redis else "sqlite"}

    # 1. warm the cache with the slow path, as the worker does it
    engine = Engine(run_dir, ServeConfig(model=a.model))
    store = open_store(url_under_load, run_dir)
    register_users(engine, store)
    t0, warmed_keys = time.perf_counter(), []
    while len(warmed_keys) < a.warm:
        keys = store.queue(min(8, a.warm - len(warmed_keys)))  # what refresh() takes next
        refresh(engine, store, len(keys), seed=len(warmed_keys))
        warmed_keys += keys
    report["warm"] = {"traces": len(warmed_keys),
                      "traces_per_s": round(len(warmed_keys) / (time.perf_counter() - t0), 2)}
    warmed_rows = [(u, d, store.get_trace(u, d)) for u, d in warmed_keys]
    warmed = [u for u, _ in warmed_keys]
    users = sorted(engine.base)
    items = list(engine.sid.codec.item_ids)
    url = f"http://127.0.0.1:{a.port}"

    # 2-4. fast, slow, hostile
    if a.redis:  # the crash phase runs on SQLite: warm it as well
        sq = SqliteStore(store_path)
        register_users(engine, sq)
        for u, d, t in warmed_rows:
            sq.put_trace(u, d, t.trace, t.events)
    del engine
    server = start_server(a.name, a.port, url_under_load, a.model, "off", a.sets)
    try:
        def fast(rng):
            return "/recommend", {"user_id": rng.choice(warmed if rng.random() < a.warmed_share else users), "k": 10,
                                  "mode": "fast"}

        def slow(rng):
            return "/recommend", {"user_id": rng.choice(users), "k": 10, "mode": "slow"}

        asyncio.run(clients(url, a.clients, 3, fast))  # warm-up, not counted
        for n in sorted({int(x) for x in a.sweep.split(",") if x} | {a.clients}) if "fast" in phases else []:
            m0 = httpx.get(url + "/metrics").text
            res = summary(asyncio.run(clients(url, n, a.seconds, fast)), a.seconds)
            m1 = httpx.get(url + "/metrics").text
            res["mean_batch"] = round((metric(m1, FAST_SUM) - metric(m0, FAST_SUM))
                                      / max(metric(m1, FAST_COUNT) - metric(m0, FAST_COUNT), 1), 2)
            report["fast" if n == a.clients else f"fast, {n} clients"] = res
        if "slow" in phases:
            report["slow"] = summary(asyncio.run(clients(url, a.clients, a.seconds, slow)), a.seconds)
            report["slow"]["traces_per_s"] = report["slow"]["per_s"]
        hostile = {} if "hostile" not in phases else {
            "bad JSON": dict(content=b'{"user_id": ', headers={"Content-Type": "application/json"}),
            "100k-item history": dict(json={"history": [items[0]] * 100_000}),
            "unknown user": dict(json={"user_id": "no-such-user"}),
            "unknown items": dict(json={"history": ["no-such-item", items[0]]}),
            "k = 10^6": dict(json={"user_id": users[0], "k": 10**6}),
            "wrong types": dict(json={"user_id": ["a"], "k": "ten", "mode": 3}),
            "events with an unknown item": dict(json={"user_id": users[0], "events": [{"item_id": "x"}]}),
        }
        for what, kw in hostile.items():
            path = "/events" if what.startswith("events") else "/recommend"
            r = httpx.post(url + path, timeout=30, **kw)
            report.setdefault("hostile", {})[what] = [r.status_code, r.text[:100]]
        if hostile:
            report["hostile"]["health after"] = httpx.get(url + "/health").status_code
    finally:
        server.terminate()
        server.wait(30)

    if "crash" in phases:
        crash(a, report, users, items, warmed_keys)
    print(json.dumps(report, indent=1))
    (run_dir / "serve" / "load.json").write_text(json.dumps(report, indent=1))


def crash(a: argparse.Namespace, report: dict, users: list[str], items: list[str], warmed_keys: list) -> None:
    """Clients post events and ask for recommendations; kill -9; check the store; restart."""
    store_path = RUNS / a.name / "serve" / "bench.sqlite"
    sqlite_url, url = f"sqlite:///{store_path}", f"http://127.0.0.1:{a.port}"
    server = start_server(a.name, a.port, sqlite_url, a.model, "thread", a.sets)
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
    server = start_server(a.name, a.port, sqlite_url, a.model, "off", a.sets)
    try:
        report["crash"]["restart_s"] = round(time.perf_counter() - t0, 1)
        r = httpx.post(url + "/recommend", json={"user_id": warmed_keys[0][0], "k": 10, "mode": "fast"}, timeout=30)
        report["crash"]["after_restart"] = [r.status_code, r.json().get("mode")]
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
