"""R1 judges: the grounded judge's evidence, and a real HTTP round trip of the LLM judge against
an OpenAI-compatible server on loopback (answers, cache, timeouts, garbage)."""

import asyncio
import json
import re
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI

from onereason.corpus.relational_layer import transition_counts
from onereason.reasoning.chat_client import ChatClient, EndpointError
from onereason.reasoning.interests import Interests
from onereason.reasoning.judge import RELATIONS, GroundedJudge, LLMJudge, candidate_pairs, describe, random_pairs
from onereason.reasoning.sft_data import JudgeConfig, SftDataConfig, build
from onereason.serve.smoke import serving
from onereason.train.sft import check_samples
from onereason.itemic.sid import load_sid_tokens


def grounded(run_dir, items=None, use_lists=True):
    items = pd.read_parquet(run_dir / "data" / "items.parquet") if items is None else items
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    return GroundedJudge(items, np.load(run_dir / "itemic" / "embeddings.npy"), transition_counts(inter),
                         Interests.load(run_dir / "reasoning" / "interests.json"), use_lists=use_lists)


def test_grounded_judge_uses_lists_cooccurrence_and_interests(tiny_run):
    run_dir, _ = tiny_run
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    emb = np.load(run_dir / "itemic" / "embeddings.npy")
    counts = transition_counts(inter)
    pairs = candidate_pairs(items, emb, counts)
    assert pairs and all(a < b for a, b in pairs)
    (a, b), n = counts.most_common(1)[0]
    assert tuple(sorted((a, b))) in pairs  # frequent transitions are candidates
    judge = grounded(run_dir)
    rels = judge.judge(pairs[:50])
    assert {r.label for r in rels} <= set(RELATIONS) and all(r.reason for r in rels)
    rel = judge.relate(a, b)
    assert rel.label in ("complement", "substitute") and (str(n + counts.get((b, a), 0)) in rel.reason
                                                           or rel.label == "substitute")
    # a shipped list wins over every other signal, and can be hidden
    listed = items.assign(complements=[[b] if i == a else [] for i in items["item_id"]],
                          substitutes=[[] for _ in range(len(items))])
    assert grounded(run_dir, listed).relate(b, a).reason.startswith("the catalogue lists")
    assert not grounded(run_dir, listed, use_lists=False).relate(b, a).reason.startswith("the catalogue")


def test_random_pairs_are_distinct_same_domain_and_skip_the_excluded(tiny_run):
    """R1's negatives: same-domain pairs, unordered and distinct, never an excluded (candidate) pair;
    in the tiny run's SFT data a quarter of R1 are such pairs, and the judge calls some unrelated."""
    run_dir, _ = tiny_run
    items = pd.DataFrame({"item_id": [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)],
                          "domain": ["x"] * 6 + ["y"] * 6})
    rng = np.random.default_rng(0)
    pairs = random_pairs(items, 20, rng, exclude={("a0", "a1")})
    assert len(pairs) == len(set(pairs)) == 20 and ("a0", "a1") not in pairs
    assert all(a < b and a[0] == b[0] for a, b in pairs)
    assert len(random_pairs(items, 100, rng, exclude=set())) == 30  # every same-domain pair, then it stops
    r1 = pd.read_parquet(run_dir / "reasoning" / "sft.parquet").query("task == 'R1'")
    labels = Counter(a.split("</think>")[-1].strip().split(":")[0] for a in r1["assistant"])
    assert len(r1) == 100 and labels["unrelated"] > 0, labels


@pytest.fixture()
def judge_server(tiny_run):
    """An OpenAI-compatible chat-completions server on loopback. Model 'grounded' answers with the
    grounded judge's relation for the two items in the prompt; 'slow' never answers in time;
    'garbage' answers prose."""
    run_dir, _ = tiny_run
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    judge = grounded(run_dir)
    by_text = {t: i for i, t in describe(items).items()}
    calls: Counter = Counter()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        calls[body["model"]] += 1
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Explain a shopper's next choice"):  # the trace teacher
            truth = re.search(r'The next item falls in the interest "(.*)"', prompt).group(1)
            cited = re.findall(r"^(<\|\w+_begin\|>(?:<s_\w+>)+<\|\w+_end\|>)", prompt, re.M)
            if body["model"] == "bad-teacher":
                cited = ["<|movies_begin|><s_a_0><s_b_0><|movies_end|>"]  # not one of this user's items
            answer = (f"Here you go.\nPersona: endpoint persona (e.g. {cited[-1]}).\nInterests: 1. {truth}.\n"
                      f"Transition: recency: stays with {truth}, as {cited[-1]} shows.")
        elif body["model"] == "slow":
            await asyncio.sleep(3)
            answer = "{}"
        elif body["model"] == "garbage":
            answer = "These two look related to me."
        else:
            a, b = (by_text[re.search(rf"^{k}: (.*)$", prompt, re.M).group(1)] for k in "AB")
            r = judge.relate(a, b)
            answer = "Sure!\n" + json.dumps({"relation": r.label, "reason": r.reason})
        return {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}]}

    with serving(app, timeout=20) as url:
        yield f"{url}/v1", calls, judge, items


def test_llm_judge_round_trip_and_disk_cache(judge_server, tmp_path):
    url, calls, judge, items = judge_server
    texts = describe(items)
    unique = [i for i in items["item_id"] if list(texts.values()).count(texts[i]) == 1]
    pairs = list(zip(unique[:12], unique[12:24]))
    client = ChatClient(url, "grounded", timeout=10, retries=1, concurrency=4, cache_dir=tmp_path / "cache")
    got = LLMJudge(client, items).judge(pairs)
    assert got == judge.judge(pairs)  # the endpoint's answers, parsed, in order
    assert calls["grounded"] == len(pairs)
    assert len(list((tmp_path / "cache").glob("*.json"))) == len(pairs)
    again = LLMJudge(ChatClient(url, "grounded", cache_dir=tmp_path / "cache"), items).judge(pairs)
    assert again == got and calls["grounded"] == len(pairs)  # served from the disk cache


def test_endpoint_that_times_out_or_returns_garbage_fails_clearly(judge_server):
    url, calls, _, items = judge_server
    pair = [(items["item_id"][0], items["item_id"][1])]
    slow = ChatClient(url, "slow", timeout=0.3, retries=1, backoff=0.01)
    with pytest.raises(EndpointError, match=re.escape(url) + ".*2 attempts.*Timeout"):
        LLMJudge(slow, items).judge(pair)
    garbage = ChatClient(url, "garbage", timeout=5, retries=2, backoff=0.01)
    with pytest.raises(EndpointError, match=re.escape(url) + ".*3 attempts.*no JSON object"):
        LLMJudge(garbage, items).judge(pair)
    assert calls["garbage"] == 3  # retried, then gave up


def test_llm_judge_and_teacher_build_sft_data_through_the_endpoint(judge_server, tiny_run, tmp_path):
    url, calls, _, _ = judge_server
    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("sft", "pretrain", "corpus", "eval", "model"))
    cfg = SftDataConfig(r0_samples=10, r1_samples=20, r2_samples=10, r3_cuts_per_user=1,
                        judge=JudgeConfig(kind="llm", base_url=url, model="grounded"), teacher="llm")
    stats = build(cfg, copy, progress=False)
    df = pd.read_parquet(copy / "reasoning" / "sft.parquet")
    thinking = df[(df["task"] == "R3") & df["think"]]
    assert len(thinking) > 0 and all("endpoint persona" in a for a in thinking["assistant"])
    assert sum(stats["relations"].values()) == 20
    check_samples(df, load_sid_tokens(copy)[1].codec)
    before = (copy / "reasoning" / "sft.parquet").read_bytes()
    bad = cfg.model_copy(update={"judge": JudgeConfig(kind="grounded", base_url=url, model="bad-teacher",
                                                      retries=1)})
    with pytest.raises(EndpointError, match=re.escape(url) + r".*TraceError: sample R3-\S+: trace cites an unknown SID"):
        build(bad, copy, progress=False)
    assert (copy / "reasoning" / "sft.parquet").read_bytes() == before  # the earlier data is intact
