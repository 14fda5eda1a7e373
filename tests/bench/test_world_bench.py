"""The world benchmarks' truth: cold-start groups and the generator's oracle."""

import json
from types import SimpleNamespace

import pytest

from onereason import rundir
from onereason.bench import report, suite
from onereason.bench.baselines.popular import most_popular
from onereason.metrics import evaluate_lists
from onereason.bench.world import COLD, WorldTruth, group_metrics, join_rows, plot_value, recall_table, value_metrics, value_report
from onereason.data.world import WorldConfig, conversion_probability, generate


def test_world_truth_groups_and_oracle(tmp_path):
    """The cold-start group counts the user's history in the target's domain; the generator's
    oracle ranks that domain's items and beats popularity alone on the world's own test targets."""
    cfg = WorldConfig(users=1500, items_per_interest=30, seed=3)
    (tmp_path / "config.json").write_text(json.dumps({"data": {"world": json.loads(cfg.model_dump_json())}}))
    world = WorldTruth(tmp_path)
    inter = generate(cfg)[0].interactions
    test = inter[inter["split"] == "test"]
    history = inter[inter["split"] != "test"]
    u, item, dom = test.iloc[0][["user_id", "item_id", "domain"]]
    n = int(((history["user_id"] == u) & (history["domain"] == dom)).sum())
    assert world.group(u, item) == (COLD if n == 0 else "1-2 events" if n <= 2 else "3+ events")
    groups = [world.group(u, i) for u, i in zip(test["user_id"], test["item_id"])]
    assert COLD in groups and "3+ events" in groups
    oracle = [world.oracle(u, d, 10) for u, d in zip(test["user_id"], test["domain"])]
    assert all(len(o) == 10 and {world.domain_of(i) for i in o} == {d} for o, d in zip(oracle, test["domain"]))
    pop = most_popular(inter, 10)
    truths = [[i] for i in test["item_id"]]
    res = group_metrics({"oracle": oracle, "pop": [pop[d] for d in test["domain"]]}, truths, groups, 10)
    assert res["oracle"]["all"]["recall@10"] > res["pop"]["all"]["recall@10"] + 0.03
    assert res["oracle"]["all"] == evaluate_lists(oracle, truths, [10], groups)["all"]
    assert recall_table(res, 10).count("\n") == 4 and f"{COLD} (" in recall_table(res, 10)


def test_value_metrics_by_hand(tmp_path):
    """Expected revenue@k is Σ P(convert) × value over the top k (video items add nothing), hit value sums
    the values of hit items, and the sponsored share counts ads."""
    cfg = WorldConfig(users=200, items_per_interest=4, seed=3)
    (tmp_path / "config.json").write_text(json.dumps({"data": {"world": json.loads(cfg.model_dump_json())}}))
    world = WorldTruth(tmp_path)
    econ = world.economics
    ad = econ.index[econ.index.str.startswith("ad-")][0]
    prod = econ.index[econ.index.str.startswith("prod-")][0]
    video = econ.index[econ.index.str.startswith("video-")][0]
    user = "u0"
    p = conversion_probability(world.mixes[[world.persona[user]] * 2], world.topic_index[[ad, prod]].to_numpy(),
                               econ.loc[[ad, prod], "quality"].to_numpy(), world.conversion)
    want = float((p * econ.loc[[ad, prod], "value"].to_numpy()).sum())
    assert world.expected_revenue(user, [ad, video, prod]) == pytest.approx(want)
    got = value_metrics(world, [user, user], [[ad, video, prod], [video]], [[prod], [ad]], k=3)
    assert got["revenue@3"] == pytest.approx(want / 2)
    assert got["hit_value@3"] == pytest.approx(econ.at[prod, "value"] / 2)
    assert got["sponsored_share@3"] == pytest.approx((1 / 3 + 0) / 2)


def test_value_report_pairs_each_method_with_the_reference_and_plots(tmp_path):
    """The priciest items buy more expected revenue than the popular ones at a cost in recall, and the
    report says so per user with intervals; a reference that is not a method is refused."""
    cfg = WorldConfig(users=300, items_per_interest=6, seed=5)
    (tmp_path / "config.json").write_text(json.dumps({"data": {"world": json.loads(cfg.model_dump_json())}}))
    world = WorldTruth(tmp_path)
    inter = generate(cfg)[0].interactions
    test = inter[inter["split"] == "test"]
    pop = most_popular(inter, 10)
    pricey = list(world.economics["value"].sort_values(ascending=False).index[:10])
    rows = [{"user_id": u, "target": [i], "items": {"pop": pop[d], "pricey": pricey, "oracle": world.oracle(u, d, 10)}}
            for u, i, d in zip(test["user_id"], test["item_id"], test["domain"])]
    report = value_report(world, rows, "pop", k=10)
    m = report["methods"]
    assert m["pricey"]["revenue@10"] > m["pop"]["revenue@10"] and m["pricey"]["recall@10"] < m["oracle"]["recall@10"]
    mean, lo, hi = m["pricey"]["minus_reference"]["revenue@10"]
    assert lo <= mean <= hi and mean == pytest.approx(m["pricey"]["revenue@10"] - m["pop"]["revenue@10"])
    assert "minus_reference" not in m["pop"]
    by_domain, domains = m["pricey"]["by_domain"], test["domain"].to_numpy()
    assert set(by_domain) == set(domains)  # the means per target domain weight back to the overall mean
    assert sum(by_domain[d]["revenue@10"] * (domains == d).sum() for d in by_domain) / len(domains) == \
        pytest.approx(m["pricey"]["revenue@10"])
    plot_value(report, tmp_path / "value.png")
    assert (tmp_path / "value.png").stat().st_size > 0
    with pytest.raises(ValueError, match="reference 'SFT' is not a method"):
        value_report(world, rows, "SFT")


def test_join_rows_pairs_files_by_user_and_refuses_disagreeing_targets():
    a = [{"user_id": "u1", "target": ["i1"], "items": {"x": ["i1"]}},
         {"user_id": "u2", "target": ["i2"], "items": {"x": ["i3"]}}]
    b = [{"user_id": "u2", "target": ["i2"], "items": {"y": ["i2"]}}]
    assert join_rows([a, b], ["a", "b"]) == [{"user_id": "u2", "target": ["i2"], "items": {"x": ["i3"], "y": ["i2"]}}]
    assert a[1]["items"] == {"x": ["i3"]}  # the inputs stay as they were
    with pytest.raises(ValueError, match="b: user u2's target"):
        join_rows([a, [{**b[0], "target": ["i9"]}]], ["a", "b"])
    with pytest.raises(ValueError, match="no user is in every file"):
        join_rows([a, [{**b[0], "user_id": "u9"}]], ["a", "b"])


def test_the_bench_report_prices_every_method_on_a_world_and_shows_the_served_roi(tmp_path):
    cfg = WorldConfig(users=200, items_per_interest=6, seed=3)
    (tmp_path / "config.json").write_text(json.dumps({"data": {"world": json.loads(cfg.model_dump_json())}}))
    inter = generate(cfg)[0].interactions
    test = inter[inter["split"] == "test"]
    pop = most_popular(inter, 10)
    users, truths = list(test["user_id"]), [[i] for i in test["item_id"]]
    scored = {"ours": [pop[d] for d in test["domain"]], "MostPopular": [pop["ad"]] * len(users)}
    b = SimpleNamespace(run_dir=tmp_path, p=SimpleNamespace(users=users, truths=truths), scored=scored,
                        config=SimpleNamespace(sample=SimpleNamespace(seed=0)))
    assert suite.business_value(b, None) == {}  # no best method chosen: nothing to pair with
    served = {"methods": {"fast only (no trace)": {"recall@10": 0.1, "revenue@10": 2.0}},
              "slow_path": {"users": 5, "seconds": 1.5, "model": "m", "cost_unit": "s", "roi": {}}, "k": 10}
    (tmp_path / rundir.SERVE_VALUE).parent.mkdir()
    (tmp_path / rundir.SERVE_VALUE).write_text(json.dumps(served))
    v = suite.business_value(b, "ours")
    assert v["reference"] == "ours" and v["serving"] == {k: served[k] for k in ("methods", "slow_path")}
    assert v["methods"]["MostPopular"]["sponsored_share@10"] == 1.0  # every item of its list is an ad
    text = "\n".join(report.value_lines(v))
    assert "## Business value" in text and "value.png" in text and "from a replay of 5 test users" in text
    (tmp_path / "config.json").write_text(json.dumps({"data": {"world": None}}))
    assert suite.business_value(b, "ours") == {}
