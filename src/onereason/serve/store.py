"""The serving state that must survive a crash: events users sent after the run's data, and the
reasoning traces the slow path wrote, with what they were computed from.

Two stores with one interface: `SqliteStore` (embedded, WAL mode: readers never block the
writer, and a killed process loses at most the transaction in flight) for one server, and
`RedisStore` for several replicas sharing one cache. A trace is keyed by (user, domain), since
the Interest Expansion is about the requested domain. It is *stale* when the user has more
events than when it was written; the slow path's queue is every user whose trace for their
latest domain is missing or stale, most active first.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass
class CachedTrace:
    trace: str
    created: float  # unix seconds
    events: int  # the user's event count when it was written
    stale: bool


@dataclass
class NewEvent:
    item: str
    timestamp: int
    rating: float | None = None


class Store(Protocol):
    def seed(self, users: dict[str, tuple[int, str]]) -> None:
        """Register the run's users: user → (events in the run's data, domain of the latest)."""

    def add_events(self, user: str, events: list[NewEvent], domain: str) -> int:
        """Append events (all or none); the user's event count after them."""

    def events(self, user: str) -> list[NewEvent]: ...

    def activity(self, user: str) -> int | None:
        """Events known for the user (run data + added); None for a user the store never saw."""

    def get_trace(self, user: str, domain: str) -> CachedTrace | None: ...

    def put_trace(self, user: str, domain: str, trace: str, events: int) -> None: ...

    def queue(self, n: int) -> list[tuple[str, str]]:
        """Up to n (user, domain) whose latest-domain trace is missing or stale, most active first."""

    def queue_length(self) -> int: ...

    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, base INTEGER NOT NULL, added INTEGER NOT NULL DEFAULT 0,
                                  domain TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
                                   ts INTEGER NOT NULL, rating REAL);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE TABLE IF NOT EXISTS traces (user_id TEXT NOT NULL, domain TEXT NOT NULL, trace TEXT NOT NULL,
                                   created REAL NOT NULL, events INTEGER NOT NULL, PRIMARY KEY (user_id, domain));
"""
QUEUE = """FROM users u LEFT JOIN traces t ON t.user_id = u.user_id AND t.domain = u.domain
           WHERE t.events IS NULL OR t.events < u.base + u.added"""


class SqliteStore:
    """One connection per thread (sqlite3 objects are not shared across threads); every write is
    one transaction."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process; fsync at checkpoints
            self._local.conn = c
        return c

    def seed(self, users: dict[str, tuple[int, str]]) -> None:
        c = self._conn()
        with c:
            c.execute("BEGIN")
            c.executemany("INSERT OR IGNORE INTO users (user_id, base, domain) VALUES (?, ?, ?)",
                          [(u, n, d) for u, (n, d) in users.items()])

    def add_events(self, user: str, events: list[NewEvent], domain: str) -> int:
        c = self._conn()
        with c:
            c.execute("BEGIN IMMEDIATE")
            c.executemany("INSERT INTO events (user_id, item_id, ts, rating) VALUES (?, ?, ?, ?)",
                          [(user, e.item, e.timestamp, e.rating) for e in events])
            c.execute("INSERT INTO users (user_id, base, added, domain) VALUES (?, 0, ?, ?) ON CONFLICT(user_id) "
                      "DO UPDATE SET added = added + excluded.added, domain = excluded.domain",
                      (user, len(events), domain))
            return c.execute("SELECT base + added FROM users WHERE user_id = ?", (user,)).fetchone()[0]

    def events(self, user: str) -> list[NewEvent]:
        rows = self._conn().execute("SELECT item_id, ts, rating FROM events WHERE user_id = ? ORDER BY seq", (user,))
        return [NewEvent(i, t, r) for i, t, r in rows]

    def activity(self, user: str) -> int | None:
        row = self._conn().execute("SELECT base + added FROM users WHERE user_id = ?", (user,)).fetchone()
        return None if row is None else row[0]

    def get_trace(self, user: str, domain: str) -> CachedTrace | None:
        row = self._conn().execute(
            "SELECT t.trace, t.created, t.events, COALESCE(u.base + u.added, 0) FROM traces t "
            "LEFT JOIN users u ON u.user_id = t.user_id WHERE t.user_id = ? AND t.domain = ?", (user, domain)).fetchone()
        return None if row is None else CachedTrace(row[0], row[1], row[2], row[3] > row[2])

    def put_trace(self, user: str, domain: str, trace: str, events: int) -> None:
        c = self._conn()
        with c:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT OR REPLACE INTO traces VALUES (?, ?, ?, ?, ?)", (user, domain, trace, time.time(), events))

    def queue(self, n: int) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._conn().execute(
            f"SELECT u.user_id, u.domain {QUEUE} ORDER BY u.base + u.added DESC, u.user_id LIMIT ?", (n,))]

    def queue_length(self) -> int:
        return self._conn().execute(f"SELECT COUNT(*) {QUEUE}").fetchone()[0]

    def cached(self) -> list[tuple[str, str, str, int]]:
        """Every trace row: (user, domain, trace, events)."""
        return self._conn().execute("SELECT user_id, domain, trace, events FROM traces").fetchall()

    def integrity(self) -> str:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


class RedisStore:
    """The same state in Redis, for replicas behind one load balancer. Keys under `prefix`:
    `users` hash user → {"base", "added", "domain"} as JSON, `ev:<user>` list of events,
    `tr:<user>:<domain>` hash, and `queue`, a sorted set of users needing a trace scored by
    activity (kept in step with every write inside MULTI/EXEC)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "onereason:"):
        import redis

        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.p = prefix
        self.r.ping()

    def _user(self, user: str) -> dict | None:
        raw = self.r.hget(self.p + "users", user)
        return None if raw is None else json.loads(raw)

    def seed(self, users: dict[str, tuple[int, str]]) -> None:
        known = set(self.r.hkeys(self.p + "users"))
        fresh = [(u, v) for u, v in users.items() if u not in known]
        for start in range(0, len(fresh), 5000):
            chunk = fresh[start:start + 5000]
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.p + "users", mapping={u: json.dumps({"base": n, "added": 0, "domain": d})
                                                 for u, (n, d) in chunk})
            pipe.zadd(self.p + "queue", {u: n for u, (n, _) in chunk})
            pipe.execute()

    def add_events(self, user: str, events: list[NewEvent], domain: str) -> int:
        import redis

        key = self.p + "users"
        while True:  # optimistic transaction on the user's row
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, user)
                    u = json.loads(raw) if raw else {"base": 0, "added": 0}
                    u["added"] += len(events)
                    u["domain"] = domain
                    pipe.multi()
                    pipe.rpush(self.p + f"ev:{user}", *[json.dumps([e.item, e.timestamp, e.rating]) for e in events])
                    pipe.hset(key, user, json.dumps(u))
                    pipe.zadd(self.p + "queue", {user: u["base"] + u["added"]})
                    pipe.execute()
                    return u["base"] + u["added"]
                except redis.WatchError:
                    continue

    def events(self, user: str) -> list[NewEvent]:
        return [NewEvent(*json.loads(x)) for x in self.r.lrange(self.p + f"ev:{user}", 0, -1)]

    def activity(self, user: str) -> int | None:
        u = self._user(user)
        return None if u is None else u["base"] + u["added"]

    def get_trace(self, user: str, domain: str) -> CachedTrace | None:
        t = self.r.hgetall(self.p + f"tr:{user}:{domain}")
        if not t:
            return None
        events = int(t["events"])
        return CachedTrace(t["trace"], float(t["created"]), events, (self.activity(user) or 0) > events)

    def put_trace(self, user: str, domain: str, trace: str, events: int) -> None:
        u = self._user(user) or {"base": 0, "added": 0, "domain": domain}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.p + f"tr:{user}:{domain}", mapping={"trace": trace, "created": time.time(), "events": events})
        if u.get("domain") == domain and events >= u["base"] + u["added"]:
            pipe.zrem(self.p + "queue", user)
        pipe.execute()

    def queue(self, n: int) -> list[tuple[str, str]]:
        users = self.r.zrevrange(self.p + "queue", 0, n - 1)
        rows = self.r.hmget(self.p + "users", users) if users else []
        return [(u, json.loads(raw)["domain"]) for u, raw in zip(users, rows) if raw]

    def queue_length(self) -> int:
        return int(self.r.zcard(self.p + "queue"))

    def close(self) -> None:
        self.r.close()


def open_store(url: str, run_dir: Path) -> Store:
    """`sqlite` (runs/<name>/serve/cache.sqlite), `sqlite:///path`, or a `redis://` URL."""
    if url == "sqlite":
        return SqliteStore(run_dir / "serve" / "cache.sqlite")
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url[len("sqlite:///"):]))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise ValueError(f"store must be 'sqlite', 'sqlite:///<path>' or a redis:// URL, not {url!r}")
