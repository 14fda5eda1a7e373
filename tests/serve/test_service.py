"""The service on the tiny run: every endpoint, the fast/slow/auto paths, the worker, constraints
written into the trace and the trie, hostile inputs, and our own chat client over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from onereason import rundir
from onereason.bench.lists import merge_race
from onereason.corpus.user_layer import eval_prompts
from onereason.reasoning.chat_client import ChatClient
from onereason.serve.app import create_app
from onereason.serve.engine import Constraint, Engine, ServeConfig, _allowed_trie
from onereason.serve.smoke import serving
from onereason.serve.store import SqliteStore
from onereason.serve.worker import refresh, register_users


@pytest.fixture(scope="module")
def engine(tiny_run) -> Engine:
    return Engine(tiny_run[0], ServeConfig(decoding={"trace_tokens": 48, "beams": 8}))


@pytest.fixture(scope="module")
def client(engine, tiny_run, tmp_path_factory):
    cfg = ServeConfig(worker="off", api_key="secret", decoding={"trace_tokens": 48, "beams": 8}, fast_path="thread")
    store = SqliteStore(tmp_path_factory.mktemp("serve") / "cache.sqlite")
    with TestClient(create_app(tiny_run[0], cfg, engine, store), headers={"X-API-Key": "secret"}) as c:
        yield c


def domain_interests(engine: Engine, domain: str) -> list[str]:
    return [n for n, d in zip(engine.interests.names, engine.interests.domain) if d == domain]


def test_fast_slow_auto_explain_and_events(client, engine):
    user = sorted(engine.base)[0]
    r = client.post("/recommend", json={"user_id": user, "k": 5, "mode": "fast"}).json()
    assert r["mode"] == "fast" and r["trace_age_s"] is None and len(r["items"]) == 5
    assert len({i["id"] for i in r["items"]}) == 5 and all(i["id"] in engine.sid.codec.index for i in r["items"])
    assert client.get(f"/explain/{user}").status_code == 404  # nothing cached yet
    slow = client.post("/recommend", json={"user_id": user, "k": 5, "mode": "slow"}).json()
    assert slow["mode"] == "slow" and slow["trace_stale"] is False
    ex = client.get(f"/explain/{user}").json()
    assert ex["trace"] and ex["stale"] is False
    auto = client.post("/recommend", json={"user_id": user, "k": 5}).json()
    assert auto["mode"] == "fast+trace" and auto["items"] == slow["items"]  # same trace, same beam
    item = r["items"][0]["id"]
    assert client.post("/events", json={"user_id": user, "events": [{"item_id": item}]}).json()["trace_stale"]
    assert client.post("/recommend", json={"user_id": user, "k": 5}).json()["trace_stale"] is True
    assert client.get(f"/explain/{user}").json()["stale"] is True
    # explicit histories need no user; a new user's events make them known
    h = client.post("/recommend", json={"history": [item, {"item_id": item, "timestamp": 5}], "k": 3}).json()
    assert h["user_id"] is None and len(h["items"]) == 3
    assert client.post("/events", json={"user_id": "brand-new", "events": [{"item_id": item}]}).status_code == 200
    assert client.post("/recommend", json={"user_id": "brand-new", "k": 3, "mode": "fast"}).status_code == 200


def test_worker_refreshes_most_active_first(engine, tmp_path):
    store = SqliteStore(tmp_path / "c.sqlite")
    register_users(engine, store)
    before = store.queue_length()
    top = store.queue(3)
    assert refresh(engine, store, 3) == 3
    assert store.queue_length() == before - 3
    assert all(store.get_trace(u, d) is not None for u, d in top)
    assert max(len(engine.base[u]) for u, _ in store.queue(before)) <= min(len(engine.base[u]) for u, _ in top)


def test_edit_trace_rewrites_interest_expansion(engine):
    d = engine.domains[0]
    names = domain_interests(engine, d)
    trace = (f"Persona: p (3 items).\nInterests: 1. {names[0]}; 2. {names[1]}; 3. {names[2]}.\n"
             f"Transition: recency: stays with {names[0]}, the interest of the last item.")
    out, applied = engine.edit_trace(trace, d, Constraint(exclude=[engine.interest_index(names[0], d)]))
    assert f"Interests: 1. {names[1]}; 2. {names[2]}." in out and applied == [f"exclude {names[0]}: trace"]
    assert out.endswith(f"Transition: drift: moves to a new interest, {names[1]}.")  # pointed at the excluded one
    out, _ = engine.edit_trace(trace, d, Constraint(favour=[engine.interest_index(names[3], d)]))
    assert f"Interests: 1. {names[3]}." in out and out.startswith("Persona: p (3 items).")


def test_constraints_in_trace_and_trie(client, engine):
    user = sorted(engine.base)[1]
    d = engine.domain_of(engine.base[user][-1].item)
    fav = domain_interests(engine, d)[-1]
    soft = client.post("/recommend", json={"user_id": user, "k": 8, "mode": "fast",
                                           "constraints": {"favour_interests": [fav]}}).json()
    assert f"favour {fav}: trace" in soft["constraints_applied"] and soft["mode"] == "fast+trace"
    hard = client.post("/recommend", json={"user_id": user, "k": 8, "mode": "fast",
                                           "constraints": {"favour_interests": [fav], "enforce": True}}).json()
    assert hard["items"] and all(i["interest"] == fav for i in hard["items"])
    assert "favour/exclude interests: trie" in hard["constraints_applied"]
    cut = sorted(engine.first_seen.values())[len(engine.first_seen) // 2]
    recent = client.post("/recommend", json={"user_id": user, "k": 5, "mode": "fast",
                                             "constraints": {"newer_than": cut}}).json()
    assert recent["items"] and all(engine.first_seen[i["id"]] >= cut for i in recent["items"])
    assert f"newer_than {cut}: trie" in recent["constraints_applied"]
    new = client.post("/recommend", json={"user_id": user, "k": 5, "constraints": {"newer_than": 2**62}})
    assert new.status_code == 422 and "satisfies" in new.json()["detail"]


@pytest.mark.parametrize("body, status, words", [
    ('{"user_id": ', 422, "JSON"),
    ({"user_id": "nobody-at-all"}, 404, "unknown user"),
    ({"history": ["not-an-item", "nor-this"]}, 422, "not-an-item"),
    ({"user_id": "x", "k": 10**6}, 422, "less than or equal to 100"),
    ({"user_id": 5, "k": "many"}, 422, "valid"),
    ({"user_id": "x", "mode": "warp"}, 422, "fast"),
    ({"user_id": "x", "surprise": 1}, 422, "Extra inputs"),
    ({}, 422, "user_id or history"),
    ({"history": ["B00EXAMPLE"] * 100_000}, 413, "bytes"),
    ({"history": ["x"] * 5000}, 422, "at most 1000"),
])
def test_hostile_requests_get_clear_4xx(client, body, status, words):
    kw = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else {"json": body}
    r = client.post("/recommend", **kw)
    assert r.status_code == status and words in r.text
    assert client.get("/health").json()["status"] == "ok"  # still serving


def test_bad_domain_interest_events_and_key(client, engine):
    user = sorted(engine.base)[0]
    assert "unknown domain" in client.post("/recommend", json={"user_id": user, "domain": "nowhere"}).text
    r = client.post("/recommend", json={"user_id": user, "constraints": {"favour_interests": ["no such thing"]}})
    assert r.status_code == 422 and "unknown interest" in r.text
    r = client.post("/events", json={"user_id": user, "events": [{"item_id": "ghost"}]})
    assert r.status_code == 422 and "ghost" in r.text and "nothing was written" in r.text
    assert client.post("/recommend", json={"user_id": user}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/health", headers={"X-API-Key": ""}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'onereason_requests_total{endpoint="/recommend",status="422"}' in metrics
    assert "onereason_slow_queue_length" in metrics and 'onereason_batch_size_bucket{le="1.0",path="fast"}' in metrics


def test_openai_endpoint_over_http_with_our_client(engine, tiny_run, tmp_path):
    cfg = ServeConfig(worker="off", chat_max_tokens=16, store=f"sqlite:///{tmp_path / 'c.sqlite'}", fast_path="thread")
    with serving(create_app(tiny_run[0], cfg, engine)) as url:
        client = ChatClient(f"{url}/v1", model="served", retries=0, max_tokens=8)
        text = client.complete([{"role": "user", "content": "Describe the item."}], parse=str)
        assert isinstance(text, str)
        assert len(engine.tok.encode(text, add_special_tokens=False)) <= 8


def test_official_openai_client_lists_the_model_and_streams_the_same_answer(engine, tiny_run, tmp_path):
    """The `openai` package against a live server: /v1/models, a plain completion, and `stream=True`
    whose pieces join to the same answer (greedy, same prompt) with a finish reason, usage and [DONE]."""
    from openai import OpenAI

    cfg = ServeConfig(worker="off", chat_max_tokens=24, store=f"sqlite:///{tmp_path / 'o.sqlite'}", fast_path="thread")
    with serving(create_app(tiny_run[0], cfg, engine)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == [engine.model_name]
        ask = dict(model=engine.model_name, messages=[{"role": "user", "content": "Describe the item. /no_think"}],
                   max_tokens=24, temperature=0)
        whole = client.chat.completions.create(**ask)
        chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(pieces) == whole.choices[0].message.content
        if whole.usage.completion_tokens > 3:  # streamed as it was generated, not as one piece at the end
            assert sum(1 for p in pieces if p) > 1
        assert chunks[0].choices[0].delta.role == "assistant"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == [whole.choices[0].finish_reason]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_race_fuses_the_non_thinking_list_and_the_trace_list_by_rank(client, engine):
    user = sorted(engine.base)[1]
    client.post("/recommend", json={"user_id": user, "k": 6, "mode": "slow"})  # caches a trace
    think = client.post("/recommend", json={"user_id": user, "k": 6}).json()
    race = client.post("/recommend", json={"user_id": user, "k": 6, "race": True}).json()
    [plain] = engine.rank([engine.base[user]], [think["domain"]], [None], 6)  # the non-thinking list
    assert think["mode"] == "fast+trace" and race["mode"] == "fast+trace+race"
    ids = [i["id"] for i in think["items"]]
    assert [i["id"] for i in race["items"]] == merge_race(plain.items, ids, 6)
    score_of = dict(zip(plain.items, plain.scores)) | {i["id"]: i["score"] for i in think["items"]}
    assert all(i["score"] == pytest.approx(score_of[i["id"]]) for i in race["items"])
    no_trace = client.post("/recommend", json={"history": ids[:2], "k": 3, "mode": "fast", "race": True}).json()
    assert no_trace["mode"] == "fast"  # nothing to race without a trace


def test_min_price_is_written_into_the_trace_and_with_enforce_into_the_trie(client, engine, monkeypatch):
    """The rule "favour items priced at least X": without prices a clear 422; with them the trace moves to
    an interest holding such items, and `enforce` returns only such items."""
    user = sorted(engine.base)[2]
    body = {"user_id": user, "k": 5, "mode": "fast", "constraints": {"min_price": 50}}
    r = client.post("/recommend", json=body)
    assert r.status_code == 422 and "no price" in r.json()["detail"]
    items = sorted(engine.sid.codec.item_ids)
    monkeypatch.setattr(engine, "price", {x: float(10 * (j % 10)) for j, x in enumerate(items)})  # 0 .. 90
    _allowed_trie.cache_clear()
    soft = client.post("/recommend", json=body).json()
    [rule] = [a for a in soft["constraints_applied"] if a.startswith("min_price 50: trace moves to ")]
    moved_to = rule.rsplit(" to ", 1)[1]
    assert moved_to in {engine.interests.names[i] for i in engine.value_interests(soft["domain"], 50)}
    hard = client.post("/recommend", json={**body, "constraints": {"min_price": 50, "enforce": True}}).json()
    assert hard["items"] and all(engine.price[i["id"]] >= 50 for i in hard["items"])
    assert "min_price 50: trie" in hard["constraints_applied"]
    none = client.post("/recommend", json={**body, "constraints": {"min_price": 1000, "enforce": True}})
    assert none.status_code == 422 and "satisfies" in none.json()["detail"]


def test_fast_path_in_its_own_process_answers_as_the_thread_does(engine, tiny_run, tmp_path):
    """The default fast path runs in a process of its own that batches whatever is waiting: same items and
    scores as the in-server thread, for users with and without a trace, asked one by one and all at once."""
    users = sorted(engine.base)[:6]
    cached = {u: engine.grounded_trace(engine.base[u], engine.domain_of(engine.base[u][-1].item)) for u in users[:3]}
    answers, together = {}, {}
    for mode in ("thread", "process"):
        store = SqliteStore(tmp_path / f"{mode}.sqlite")
        register_users(engine, store)
        for u, t in cached.items():
            store.put_trace(u, engine.domain_of(engine.base[u][-1].item), t, len(engine.base[u]))
        cfg = ServeConfig(worker="off", decoding={"trace_tokens": 48, "beams": 8}, fast_path=mode)
        with TestClient(create_app(tiny_run[0], cfg, engine, store)) as c:
            ask = partial(c.post, "/recommend")
            answers[mode] = [ask(json={"user_id": u, "k": 5, "mode": "fast"}).json() for u in users]
            with ThreadPoolExecutor(6) as pool:
                together[mode] = [r.json() for r in pool.map(lambda u: ask(json={"user_id": u, "k": 5, "mode": "fast"}),
                                                             users * 3)]
    assert [a["mode"] for a in answers["process"]] == ["fast+trace"] * 3 + ["fast"] * 3
    for t, p in zip(answers["thread"] + together["thread"], answers["process"] + together["process"]):
        assert [i["id"] for i in t["items"]] == [i["id"] for i in p["items"]]
        assert [i["score"] for i in t["items"]] == pytest.approx([i["score"] for i in p["items"]], abs=1e-4)


def test_a_ranker_that_dies_fails_requests_instead_of_hanging_them(engine, tiny_run, tmp_path):
    cfg = ServeConfig(worker="off", decoding={"beams": 8}, store=f"sqlite:///{tmp_path / 'd.sqlite'}")
    app = create_app(tiny_run[0], cfg, engine)
    user = sorted(engine.base)[0]
    with TestClient(app) as c:
        assert c.post("/recommend", json={"user_id": user, "k": 5, "mode": "fast"}).status_code == 200
        app.state.fast.process.kill()
        app.state.fast.process.join(10)
        for _ in range(2):  # the request in flight when it is noticed, and any after
            with pytest.raises(RuntimeError, match="ranker process exited"):
                c.post("/recommend", json={"user_id": user, "k": 5, "mode": "fast"})


def test_a_ranker_whose_model_fails_to_load_fails_the_server_start(engine, tiny_run, tmp_path):
    cfg = ServeConfig(worker="off", model=str(tmp_path), store=f"sqlite:///{tmp_path / 'e.sqlite'}")
    with pytest.raises(RuntimeError, match="(?s)ranker process failed to start.*no model at"):
        with TestClient(create_app(tiny_run[0], cfg, engine)):
            pass


def test_several_processes_need_the_worker_outside_them():
    with pytest.raises(ValueError, match="processes=2 with worker=thread"):
        ServeConfig(processes=2)
    assert ServeConfig(processes=2, worker="off").processes == 2


def test_hold_out_test_serves_histories_as_they_stood_before_the_test_events(engine, tiny_run):
    """A replay of the test split against the service (bench/serve_value.py) sees what the offline eval's
    prompts see: no test event in any history."""
    held = Engine(tiny_run[0], ServeConfig(hold_out_test=True))
    inter = pd.read_parquet(tiny_run[0] / rundir.INTERACTIONS)
    p = eval_prompts(inter, "test", held.max_items)
    assert p.users and all(held.base[u][-held.max_items:] == h for u, h in zip(p.users, p.histories))
    test = inter[inter["split"] == "test"].groupby("user_id").size()
    assert all(len(engine.base[u]) - len(held.base.get(u, [])) == test.get(u, 0) for u in engine.base)
