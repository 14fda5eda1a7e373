"""What the slow path earns, from a serving run on a synthetic world (issue 27): the service replays the
test split (`hold_out_test`: each user's history as it stood before the test event) on loopback, and
the world's truth prices what it returns.

1. fast only: the server with an empty trace cache (worker off), `mode: fast`, one request per user for
   the test target's domain: non-thinking beam search.
2. the slow path: traces for the same users written into the server's store the way the worker writes
   them (`Engine.think`, then `put_trace`), timed: the slow path's compute seconds.
3. fast + cached trace, the same with `race: true`, and the value rule: `constraints.min_price` set per
   domain to the `--quantile` of that domain's prices / bids (the trace moves to an interest that holds
   such items), without and with `enforce` (the trie keeps only them); the rule is also asked in step 1, where
   the server writes a grounded trace (no model call). Domains without prices get no rule.

ROI of the slow path = (expected revenue@k summed over the users with cached traces − the same without them:
fast only, or the value rule on a grounded trace) / the slow path's seconds: revenue units (the world's price
and bid currency) per compute second of one slow-path process on this machine. Writes
serve/value_recommendations.jsonl (per-user lists, the format bench/world_value.py joins with rl-eval's),
serve/value.json (the bench report shows it) and serve/value.png.

    python bench/serve_value.py --name world27 --model rl/grpo/model --users 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Callable

import httpx
import pandas as pd
from serve_load import start_server
from tqdm import tqdm

from onereason import rundir
from onereason.bench.lists import sample_prompts
from onereason.bench.world import WorldTruth, plot_value, value_report, value_table
from onereason.serve.engine import Engine, ServeConfig
from onereason.serve.store import open_store
from onereason.serve.worker import register_users

FAST = "fast only (no trace)"
RULE, RULE_TRIE = "fast only + value rule (grounded trace)", "fast only + value rule, trie (grounded trace)"
ROI_OVER = {"fast + cached trace": FAST, "fast race: trace + no trace": FAST,  # what each served list with a
            "fast + trace + value rule": RULE, "fast + trace + value rule, trie": RULE_TRIE}  # cached trace replaces


async def ask(url: str, bodies: list[dict], clients: int) -> list[list[str]]:
    """POST /recommend for every body, `clients` at a time; the item ids of each answer, in order."""
    out: list[list[str]] = [[] for _ in bodies]
    todo = iter(range(len(bodies)))
    bar = tqdm(total=len(bodies), desc="requests", leave=False)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            for j in todo:
                r = await c.post("/recommend", json=bodies[j])
                r.raise_for_status()
                out[j] = [x["id"] for x in r.json()["items"]]
                bar.update()

    await asyncio.gather(*(client() for _ in range(clients)))
    bar.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--model", default=None, help="served model, relative to the run (default: the service's)")
    ap.add_argument("--users", type=int, default=2000, help="a seeded sample of test users (rl-eval's, same seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--quantile", type=float, default=0.75, help="min_price per domain: this quantile of its values")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="users per slow-path batch (the worker's worker_batch)")
    ap.add_argument("--port", type=int, default=8771)
    a = ap.parse_args()
    run_dir = Path("runs") / a.name
    out = run_dir / "serve"
    store_path = out / "value.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    store_url = f"sqlite:///{store_path}"
    sets = ["hold_out_test=true"]
    engine = Engine(run_dir, ServeConfig(model=a.model, hold_out_test=True))
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "test", engine.max_items, a.users, a.seed)
    users, truths = p.users, p.truths
    domains = [engine.domain_of(t[0]) for t in truths]
    histories = [engine.base[u] for u in users]
    price = pd.Series(engine.price)
    min_price = price.groupby(price.index.map(engine.domain_of)).quantile(a.quantile).to_dict()  # priced domains
    store = open_store(store_url, run_dir)
    register_users(engine, store)

    def bodies(extra: Callable[[str], dict] = lambda domain: {}) -> list[dict]:
        return [{"user_id": u, "domain": d, "k": a.k, "mode": "fast", **extra(d)} for u, d in zip(users, domains)]

    def rule(enforce: bool) -> Callable[[str], dict]:
        return lambda d: {"constraints": {"min_price": min_price[d], "enforce": enforce}} if d in min_price else {}

    url = f"http://127.0.0.1:{a.port}"
    lists: dict[str, list[list[str]]] = {}
    server = start_server(a.name, a.port, store_url, a.model, "off", sets)
    try:
        t0 = time.perf_counter()
        lists[FAST] = asyncio.run(ask(url, bodies(), a.clients))
        fast_s = time.perf_counter() - t0
        lists[RULE] = asyncio.run(ask(url, bodies(rule(False)), a.clients))
        lists[RULE_TRIE] = asyncio.run(ask(url, bodies(rule(True)), a.clients))

        t0 = time.perf_counter()  # 2. the slow path, as the worker runs it, into the server's store
        for s in tqdm(range(0, len(users), a.batch), desc="slow path", leave=False):
            part = slice(s, s + a.batch)
            for u, d, trace in zip(users[part], domains[part], engine.think(histories[part], domains[part], seed=s)):
                store.put_trace(u, d, trace, store.activity(u) or 0)
        slow_s = time.perf_counter() - t0

        lists["fast + cached trace"] = asyncio.run(ask(url, bodies(), a.clients))
        lists["fast race: trace + no trace"] = asyncio.run(ask(url, bodies(lambda d: {"race": True}), a.clients))
        lists["fast + trace + value rule"] = asyncio.run(ask(url, bodies(rule(False)), a.clients))
        lists["fast + trace + value rule, trie"] = asyncio.run(ask(url, bodies(rule(True)), a.clients))
    finally:
        server.terminate()
        server.wait(30)

    rows = [{"user_id": u, "target": t, "domain": d, "items": {m: v[j] for m, v in lists.items()}}
            for j, (u, t, d) in enumerate(zip(users, truths, domains))]
    rundir.write_text(out / "value_recommendations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    report = value_report(WorldTruth(run_dir), rows, FAST, a.k, a.seed)
    rev = {m: r[f"revenue@{a.k}"] * len(users) for m, r in report["methods"].items()}
    report["slow_path"] = {
        "users": len(users), "seconds": round(slow_s, 1), "traces_per_s": round(len(users) / slow_s, 2),
        "fast_only_seconds": round(fast_s, 1), "min_price": min_price, "quantile": a.quantile, "model": engine.model_name,
        "cost_unit": "seconds of one slow-path process (Engine.think, batches of "
                     f"{a.batch}) on this machine's {os.cpu_count()} cores",
        "roi": {m: round((rev[m] - rev[base]) / slow_s, 4) for m, base in ROI_OVER.items()},
        "roi_over": ROI_OVER}
    rundir.write_text(run_dir / rundir.SERVE_VALUE, json.dumps(report, indent=1))
    plot_value(report, out / "value.png")
    print("\n".join(value_table(report)))
    print(json.dumps(report["slow_path"], indent=1))


if __name__ == "__main__":
    main()
