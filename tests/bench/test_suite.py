"""OneReason-Bench on the tiny run: every tier, every baseline, the report files, the cache, compare."""

import json
import time

import pandas as pd
import pytest

from onereason.bench import report, suite
from onereason.bench.baselines.lcrec import without_reasoning
from onereason.chat import chat_prompt, chat_response
from onereason.reasoning.sft_data import r3_user
from conftest import TINY_BENCH

@pytest.fixture(scope="module")
def bench(tiny_run):
    """The pipeline's last stage ran the bench (TINY_BENCH); this reads it back from the cached parts."""
    run_dir, summary = tiny_run
    cfg = suite.BenchConfig(**TINY_BENCH)
    computed = []
    results = suite.run(cfg, run_dir, progress=False, log=computed.append)
    assert computed == []  # every part came from the cache
    return run_dir, cfg, results, summary["bench"]["stage_seconds"]


def test_every_tier_and_baseline_is_reported(bench):
    run_dir, _, r, _ = bench
    names = set(r["methods"])
    for mode in ("non-thinking", "thinking", "race", "hypotheses", "hypotheses-turns"):
        assert f"SFT {mode}" in names and f"RL {mode}" in names
    assert {"pre-trained non-thinking", "MostPopular", "Markov chain", "SASRec", "SASRec + successors", "TIGER-style",
            "LC-Rec-style non-thinking"} <= names  # SASRec gets the successor memory our eval offered the model
    assert "LC-Rec-style thinking" not in names  # no reasoning in that baseline
    for m in r["methods"].values():
        x = m["metrics"]["all"]
        assert x["n"] == r["users"] == 12
        assert all(0.0 <= x[f"{k}@{n}"] <= 1.0 for k in ("pass", "recall", "ndcg", "position1_pass") for n in r["ks"])
        assert x["recall@4"] <= x["recall@10"]
    assert r["methods"]["SFT thinking"]["metrics"]["all"]["sid_validity@10"] == 1.0  # trie-constrained
    assert r["reasoning"]["SFT"]["history_citation_rate"] in (None, 1.0)
    assert set(r["r0"]) == {"pre-trained", "SFT", "RL", "LC-Rec-style"}
    assert 0 <= r["r0"]["SFT"]["stated"]["title_to_sid_acc"]["all"] <= 1
    assert "judge" in r["r1"]["SFT"] and r["r1"]["SFT"]["judge"]["pairs"] > 0
    assert {"SFT", "most recent interests", "most frequent interests"} <= set(r["r2"])
    assert all(v is None or v > 1 for v in r["perplexity"].values())
    assert r["baselines"]["SASRec"]["grid"][0]["lr"] == 1e-2
    assert r["ratios"] == report.ratios(r)  # the arithmetic itself is tested on hand-made results below
    best = r["ratios"]["all"]["best"]
    assert r["methods"][best]["kind"] == "ours" and r["selection"]["split"] == "valid"
    assert best == max(r["selection"]["ndcg@10"], key=r["selection"]["ndcg@10"].get)
    assert set(r["selection"]["ndcg@10"]) == {n for n, m in r["methods"].items() if m["kind"] == "ours"}
    assert r["paired"]["best"] == best  # our best minus each baseline, per user
    assert set(r["paired"]["vs"]) == {n for n, m in r["methods"].items() if m["kind"] == "baseline"}
    for b, x in r["paired"]["vs"].items():
        mean, lo, hi = x["ndcg@10"]
        assert lo <= mean <= hi
        assert mean == pytest.approx(r["methods"][best]["metrics"]["all"]["ndcg@10"] - r["methods"][b]["metrics"]["all"]["ndcg@10"])
    assert "minus each baseline, paired per user" in (run_dir / "report" / "report.md").read_text()
    assert r["value"] == {}  # no world truth prices this dataset's lists


def test_excluded_history_is_the_whole_history_before_the_target():
    inter = pd.DataFrame({"user_id": ["u"] * 4 + ["v"] * 2, "item_id": list("abcdxy"), "timestamp": [1, 2, 3, 4, 1, 2],
                          "split": ["train", "train", "valid", "test", "train", "test"], "rating": float("nan")})
    assert suite.seen_items(inter, "test", ["u", "v"]) == [{"a", "b", "c"}, {"x"}]
    assert suite.seen_items(inter, "valid", ["u"]) == [{"a", "b"}]


def _results(ours: dict[str, float], baselines: dict[str, float | None], valid: dict[str, float] | None = None) -> dict:
    """A results dict in the bench's shape: NDCG@10 per method, one domain; `valid`: the selection's NDCG@10."""
    methods = {n: {"kind": "ours", "metrics": {"all": {"ndcg@10": v}, "d": {"ndcg@10": v / 2}}} for n, v in ours.items()}
    methods |= {n: {"kind": "baseline", "metrics": {"all": {"ndcg@10": v}, "d": {"ndcg@10": v / 2}}}
                for n, v in baselines.items() if v is not None}
    return {"methods": methods, "domains": ["d"], "selection": {"ndcg@10": ours if valid is None else valid}}


def test_our_best_is_chosen_on_the_selection_sample_not_on_test():
    r = _results({"SFT non-thinking": 0.06, "RL thinking": 0.09}, {"SASRec": 0.03},
                 valid={"SFT non-thinking": 0.08, "RL thinking": 0.07})
    got = report.ratios(r)
    assert got["all"]["best"] == got["d"]["best"] == "SFT non-thinking"  # best on valid, though worse on test
    assert got["all"]["ndcg@10"] == 0.06 and got["all"]["SASRec"] == pytest.approx(2.0)


def test_ratios_are_our_best_over_each_baseline_and_absent_for_a_zero_baseline():
    r = _results({"SFT non-thinking": 0.06, "RL thinking": 0.09},
                 {"SASRec": 0.03, "TIGER-style": 0.0, "MostPopular": 0.045, "LC-Rec-style non-thinking": None})
    got = report.ratios(r)
    assert set(got) == {"all", "d"}
    assert got["all"] == {"best": "RL thinking", "ndcg@10": 0.09, "SASRec": pytest.approx(3.0),
                          "MostPopular": pytest.approx(2.0)}  # no ratio to a zero or missing baseline
    assert got["d"]["best"] == "RL thinking" and got["d"]["SASRec"] == pytest.approx(0.045 / 0.015)
    assert report.ratios(_results({}, {"SASRec": 0.03})) == {}  # nothing of ours: no row
    md = report._ratio_table("group", got.items())
    assert "| all | RL thinking | 0.0900 | 3.0000 | - | - | - | 2.0000 | - |" in md  # no SASRec + successors, Markov chain


def test_report_files_are_self_contained(bench):
    run_dir, _, r, _ = bench
    out = run_dir / "report"
    for f in ("results.json", "report.md", "report.html", "r3_bars.png", "recall_curves.png", "thinking.png",
              "stages.png"):
        assert (out / f).stat().st_size > 0, f
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and 'src="r3_bars.png"' not in html
    assert json.loads((out / "results.json").read_text())["methods"].keys() == r["methods"].keys()
    assert "## R1 relations" in (out / "report.md").read_text()


def test_a_second_run_reuses_the_cached_parts_and_a_new_setting_recomputes(bench):
    run_dir, cfg, r, first = bench
    t0 = time.perf_counter()
    again = suite.run(cfg, run_dir, progress=False, log=lambda *_: None)
    assert time.perf_counter() - t0 < first / 3
    assert again["methods"] == r["methods"]
    computed = []
    suite.run(cfg.model_copy(update={"baselines": ["MostPopular"], "r1_pairs": 4}), run_dir, progress=False,
              log=computed.append)
    assert computed == ["bench: r1/SFT ...", "bench: r1/RL ..."]


def test_compare_puts_runs_side_by_side(bench, tmp_path):
    run_dir, _, r, _ = bench
    other = tmp_path / "other" / "report"
    other.mkdir(parents=True)
    changed = json.loads((run_dir / "report" / "results.json").read_text())
    changed["run"] = "other"
    (other / "results.json").write_text(json.dumps(changed))
    md = report.compare([run_dir / "report" / "results.json", other / "results.json"], tmp_path / "cmp")
    assert "| method | tiny | other |" in md and (tmp_path / "cmp" / "compare.html").exists()
    with pytest.raises(FileNotFoundError, match="no bench results"):
        report.compare([tmp_path / "missing.json"], tmp_path / "cmp")


def test_unknown_baseline_is_a_clear_error(tiny_run):
    with pytest.raises(ValueError, match="unknown \\['BPR'\\]"):
        suite.run(suite.BenchConfig(baselines=["BPR"]), tiny_run[0], progress=False)


def test_lcrec_data_drops_every_trace():
    think_user = chat_prompt(r3_user(" <a><b>", "movies", 3), True)
    rows = pd.DataFrame([
        {"sample_id": "R3-u-1", "task": "R3", "think": True, "user": think_user,
         "assistant": chat_response("<x><y>", "Persona: p\nInterests: 1. i.\nTransition: t")},
        {"sample_id": "R3-u-2", "task": "R3", "think": False, "user": chat_prompt(r3_user(" <a>", "movies", None), False),
         "assistant": chat_response("<z>")},
        {"sample_id": "R1-0", "task": "R1", "think": False, "user": "u", "assistant": "complement: x."},
        {"sample_id": "R0-0", "task": "R0", "think": False, "user": chat_prompt("What is the title of <a>?", False),
         "assistant": chat_response("A")}])
    out = without_reasoning(rows)
    assert list(out["sample_id"]) == ["R3-u-1", "R3-u-2", "R0-0"]
    assert out.iloc[0]["user"] == chat_prompt(r3_user(" <a><b>", "movies", None), False)
    assert out.iloc[0]["assistant"] == chat_response("<x><y>") and not out["think"].any()


@pytest.fixture()
def fact_server():
    """A loopback endpoint whose 'judge' treats every word of a text as one fact."""
    import re

    from fastapi import FastAPI

    from onereason.serve.smoke import serving

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("List the key facts"):
            answer = json.dumps(sorted(set(re.findall(r"\w+", prompt.split("Text: ", 1)[1].lower()))))
        else:
            facts = json.loads(re.search(r"Reference facts \(JSON\): (\[.*\])", prompt).group(1))
            said = set(re.findall(r"\w+", re.search(r"Caption: (.*)", prompt).group(1).lower()))
            answer = json.dumps({"stated": [f in said for f in facts], "caption_facts": len(said),
                                 "caption_facts_correct": len(said & set(facts))})
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}

    with serving(app) as url:
        yield f"{url}/v1"


def test_information_point_f1_through_an_endpoint(fact_server, tiny_run, tmp_path):
    from onereason.bench.info_points import info_point_f1
    from onereason.reasoning.chat_client import ChatClient

    client = ChatClient(fact_server, "judge", timeout=10, retries=0)
    refs = ["red steel clamp", "blue jar with lid", "..."]
    got = info_point_f1(client, refs, ["red steel clamp", "a green jar", "anything"])
    # item 1 perfect; item 2: recall 1/4 (jar), precision 1/3; item 3 has no facts and is skipped
    assert got["n"] == 2 and got["skipped_no_facts"] == 1
    assert got["recall"] == pytest.approx((1 + 1 / 4) / 2) and got["precision"] == pytest.approx((1 + 1 / 3) / 2)
    assert got["f1"] == pytest.approx((1 + 2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4)) / 2)
    # inside the bench, R0 gets an info-point F1 per model when a judge is configured
    run_dir = tmp_path / "run"
    import shutil
    shutil.copytree(tiny_run[0], run_dir, ignore=shutil.ignore_patterns("report", "checkpoints"))
    cfg = suite.BenchConfig(**{**TINY_BENCH, "baselines": [], "models": {"SFT": "sft/model"},
                               "judge": {"kind": "llm", "base_url": fact_server, "model": "judge"}})
    r = suite.run(cfg, run_dir, progress=False, log=lambda *_: None)
    ip = r["r0"]["SFT"]["stated"]["info_point"]
    assert ip["n"] > 0 and 0 <= ip["f1"] <= 1
    assert "info-point F1" in (run_dir / "report" / "report.md").read_text()


def test_users_per_domain_draws_from_each_domain(tiny_run):
    from onereason.itemic.sid import load_sid_tokens

    run_dir, _ = tiny_run
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    _, sid = load_sid_tokens(run_dir)
    inter = inter.assign(domain="movies")
    p, domains = suite.bench_users(inter, sid, suite.BenchConfig(users_per_domain=7), 20)
    assert len(p.users) == 7 == len(set(p.users)) and set(domains) == {"movies"}
    again, _ = suite.bench_users(inter, sid, suite.BenchConfig(users_per_domain=7), 20)
    assert again.users == p.users  # seeded
    whole, _ = suite.bench_users(inter, sid, suite.BenchConfig(users_per_domain=10_000), 20)
    assert len(whole.users) == len(suite.eval_prompts(inter, "test", 50).users)


def test_r2_choice_ranks_every_interest_of_the_domain_beside_the_two_rules(bench):
    _, cfg, r, _ = bench
    n = cfg.r2_interests
    for name in ("SFT", "RL"):
        c = r["r2_choice"][name]
        assert c["n"] == n and c["users"] > 0
        for x in c["methods"].values():
            assert 0 <= x["top1"]["all"] <= x[f"recall@{n}"]["all"] <= 1
        assert 0 < c["methods"]["model (scored choice)"]["p_truth"]["all"] <= 1
        assert all(len(e["ranked"]) == min(n, sum(c["options"].values())) for e in c["examples"])
    assert "R2 as a choice" in report.markdown_text(r)


def test_the_r2_rules_by_hand():
    from onereason.bench.r0_r2 import rule_interests
    from onereason.data.histories import Event
    from onereason.reasoning.interests import Interests

    interests = Interests({"a": 0, "b": 1, "c": 2, "x": 3}, ["A", "B", "C", "X"], ["d", "d", "d", "e"], [0, 1, 2, 3])
    history = [Event(i, 0, 5.0) for i in ["a", "b", "a", "x", "c", "b"]]
    assert rule_interests(history, "d", interests) == [1, 2, 0]  # latest first; x is another domain's
    assert rule_interests(history, "d", interests, frequent=True) == [1, 0, 2]  # a and b twice, b later
    assert rule_interests(history, "e", interests) == [3]


def test_interest_choice_ranks_every_interest_of_the_target_domain_per_user(tiny_run):
    from onereason import rundir
    from onereason.bench.lists import sample_prompts
    from onereason.bench.r0_r2 import interest_choice
    from onereason.itemic.sid import load_sid_tokens
    from onereason.model.backbone import load_model
    from onereason.reasoning.interests import Interests

    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    interests = Interests.load(run_dir / rundir.INTERESTS)
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", 20, 10, 0)
    res = interest_choice(load_model(run_dir / rundir.SFT_MODEL).eval(), tok, sid, interests, p, 2, 8, per_user=True)
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    assert len(res["ranked"]) == len(p.users) == res["users"]
    assert all(sorted(r) == [i for i, d in enumerate(interests.domain) if d == dom]
               for r, dom in zip(res["ranked"], domains))
    truth = [interests.of[t[0]] for t in p.truths]
    assert res["hits"]["model (scored choice)"]["top1"] == [float(r[0] == t) for r, t in zip(res["ranked"], truth)]
