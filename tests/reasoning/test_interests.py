"""Interests learned from item embeddings, optionally over groups of items (`sft.data.interest_basis: sid`)."""

import shutil

import numpy as np
import pandas as pd

from onereason import rundir
from onereason.itemic.sid import load_sid_tokens
from onereason.pipeline import RunConfig
from onereason.reasoning.interests import Interests, learn_interests
from onereason.reasoning.sft_data import build


def catalog(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Two domains; items in 12 groups (a first SID code) whose embeddings scatter around 4 themes."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) % 12
    themes = rng.normal(size=(4, 16))
    emb = themes[groups % 4] + 0.3 * rng.normal(size=(n, 16))
    words = ["jars bottles", "printer filament", "gloves masks", "scales weights"]
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n)],
                          "domain": ["lab" if j < n // 2 else "print" for j in range(n)],
                          "title": [f"{words[g % 4]} {j}" for j, g in enumerate(groups)],
                          "categories": [["x"]] * n})
    return items, emb, groups


def test_interests_over_groups_follow_the_group_and_never_mix_domains():
    items, emb, groups = catalog()
    got = learn_interests(items, emb, per_domain=4, groups=groups)
    label = np.array([got.of[i] for i in items["item_id"]])
    dom = items["domain"].to_numpy()
    for d in ("lab", "print"):
        for g in range(12):
            members = label[(groups == g) & (dom == d)]
            assert len(set(members)) == 1  # a group's items share one interest
    assert all(got.domain[i] == d for i, d in zip(label, dom))
    assert sorted(set(label)) == list(range(len(got))) and len(got) <= 8  # none empty, ≤ 4 per domain
    assert len(set(zip(got.names, got.domain))) == len(got)  # names repeat across domains, not within


def test_more_interests_than_groups_takes_one_interest_per_group():
    items, emb, groups = catalog()
    got = learn_interests(items, emb, per_domain=24, groups=groups)
    assert len(got) == 24  # 12 groups in each of the two domains
    label = np.array([got.of[i] for i in items["item_id"]])
    assert len(set(zip(groups, items["domain"], label))) == 24


def test_sid_basis_gives_each_first_code_one_interest(tiny_run, tmp_path):
    """`interest_basis: sid` in the reasoning stage: the interest of every item follows from its first code."""
    run_dir = tmp_path / "sid"
    shutil.copytree(tiny_run[0], run_dir, ignore=shutil.ignore_patterns("sft", "rl", "report", "bench", "eval"))
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text()).sft.data
    build(cfg.replace(interest_basis="sid"), run_dir, progress=False)
    interests = Interests.load(run_dir / rundir.INTERESTS)
    codec = load_sid_tokens(run_dir)[1].codec
    first = {}
    for item, i in interests.of.items():
        assert first.setdefault((codec.item_domain[item], codec.codes[codec.index[item], 0]), i) == i
    assert len(set(interests.of.values())) == len(interests)
