"""Both trace stores against the real thing: staleness, the slow-path queue, and a SQLite writer
killed with SIGKILL losing nothing it acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from onereason.serve.store import NewEvent, RedisStore, SqliteStore, open_store


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "cache.sqlite")
    else:
        s = RedisStore(request.getfixturevalue("redis_url"), prefix=f"t{time.time_ns()}:")
    yield s
    s.close()


def test_staleness_and_queue_order(store):
    store.seed({"a": (3, "books"), "b": (10, "books"), "c": (5, "movies")})
    assert store.queue_length() == 3
    assert [u for u, _ in store.queue(2)] == ["b", "c"]  # most active first
    assert store.queue(3)[1] == ("c", "movies")
    store.put_trace("b", "books", "Persona: x.", 10)
    t = store.get_trace("b", "books")
    assert t.trace == "Persona: x." and not t.stale and t.events == 10
    assert store.queue_length() == 2
    assert store.add_events("b", [NewEvent("i1", 100), NewEvent("i2", 101, 4.0)], "movies") == 12
    assert store.get_trace("b", "books").stale
    assert store.events("b") == [NewEvent("i1", 100, None), NewEvent("i2", 101, 4.0)]
    assert ("b", "movies") in store.queue(3)  # the latest domain moved: a trace for movies is due
    store.put_trace("b", "movies", "t", 12)
    assert store.queue_length() == 2 and store.activity("b") == 12
    assert store.add_events("new", [NewEvent("i3", 5)], "books") == 1  # a user the run never saw
    assert store.activity("nobody") is None and store.get_trace("nobody", "books") is None
    store.seed({"b": (99, "books")})  # seeding again never resets a known user
    assert store.activity("b") == 12


def test_open_store_rejects_unknown_urls(tmp_path):
    with pytest.raises(ValueError, match="store must be"):
        open_store("postgres://x", tmp_path)


WRITER = textwrap.dedent("""
    import sys
    from onereason.serve.store import NewEvent, SqliteStore
    s = SqliteStore(sys.argv[1])
    s.seed({"u": (0, "d")})
    n = 0
    while True:
        n = s.add_events("u", [NewEvent(f"i{n}", n)], "d")
        s.put_trace("u", "d", f"trace after {n} events", n)
        print(n, flush=True)
""")


def test_sqlite_survives_sigkill(tmp_path):
    path = tmp_path / "cache.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acked = 0
    while acked < 200:
        acked = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    s = SqliteStore(path)
    assert s.integrity() == "ok"
    n = s.activity("u")
    assert n >= acked  # everything acknowledged is there (one more may have committed unprinted)
    assert [e.item for e in s.events("u")] == [f"i{j}" for j in range(n)]
    t = s.get_trace("u", "d")
    assert t.trace == f"trace after {t.events} events" and t.events in (n - 1, n)
