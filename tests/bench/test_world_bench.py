"""The world benchmarks' truth: cold-start groups and the generator's oracle."""

import json

from onereason.bench.baselines.popular import most_popular
from onereason.metrics import evaluate_lists
from onereason.bench.world import COLD, WorldTruth, group_metrics, recall_table
from onereason.data.world import WorldConfig, generate


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
