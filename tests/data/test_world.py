"""The synthetic world: deterministic by seed, valid schema, and its ground truth agrees with
the interactions it generated."""

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from onereason.data.schema import SPLITS, read_dataset
from onereason.data.world import COMPLEMENTS, DOMAINS, WorldConfig, conversion_probability, generate, write

SMALL = WorldConfig(users=1500, items_per_interest=4, seed=3)


@pytest.fixture(scope="module")
def world():
    return generate(SMALL)


def test_deterministic_by_seed(world):
    ds, truth, _ = world
    again, truth2, _ = generate(SMALL)
    pd.testing.assert_frame_equal(ds.interactions, again.interactions)
    pd.testing.assert_frame_equal(truth["relations"], truth2["relations"])
    other, _, _ = generate(SMALL.model_copy(update={"seed": 4}))
    assert not ds.interactions["item_id"].equals(other.interactions["item_id"])


def test_schema_and_shared_users(world, tmp_path):
    ds, truth, _ = world
    stats = write(SMALL, tmp_path / "w")
    back = read_dataset(tmp_path / "w")
    assert stats["interactions"] == len(back.interactions) and set(back.interactions["split"]) == set(SPLITS)
    assert set(back.items["domain"]) == set(DOMAINS) and len(back.items) == 4 * 12 * 4
    per_user = back.interactions.groupby("user_id")["domain"].nunique()
    assert (per_user >= 2).mean() > 0.5  # users are shared across domains
    assert (back.interactions.groupby("user_id").size() >= 3).all()
    params = json.loads((tmp_path / "w" / "truth" / "world.json").read_text())
    assert len(params["personas"]) == 20 and set(truth["personas"]["persona"]) <= set(range(20))
    with pytest.raises(ValidationError, match="users"):
        WorldConfig(users=5)


def test_truth_is_consistent_with_the_interactions(world):
    ds, truth, params = world
    ev = truth["events"]
    assert len(ev) == len(ds.interactions)
    topic_of = truth["items"].set_index("item_id")["topic"]
    observed = ds.interactions["item_id"].map(topic_of).to_numpy()
    clean = ~ev["noise"].to_numpy()
    assert (observed[clean] == ev["topic"].to_numpy()[clean]).all()  # every non-noise item is of its latent topic
    assert abs(ev["noise"].mean() - SMALL.noise) < 0.02
    # empirical topic transitions per persona within tolerance of that persona's matrix
    topics = params["topics"]
    persona = truth["personas"].set_index("user_id")["persona"]
    idx = ev["topic"].map({t: i for i, t in enumerate(topics)}).to_numpy()
    same_user = ev["user_id"].to_numpy()[1:] == ev["user_id"].to_numpy()[:-1]
    p_of = ev["user_id"].map(persona).to_numpy()[1:][same_user]
    a, b = idx[:-1][same_user], idx[1:][same_user]
    checked = 0
    for p, spec in enumerate(params["personas"]):
        m = np.array(spec["M"])
        counts = np.zeros_like(m)
        np.add.at(counts, (a[p_of == p], b[p_of == p]), 1)
        for row in np.flatnonzero(counts.sum(1) >= 150):
            emp = counts[row] / counts[row].sum()
            assert np.abs(emp - m[row]).max() < 0.12, (p, topics[row])
            checked += 1
    assert checked >= 10
    # true relations follow the taxonomy
    rel = truth["relations"].merge(truth["items"].add_prefix("a_"), left_on="a", right_on="a_item_id") \
                            .merge(truth["items"].add_prefix("b_"), left_on="b", right_on="b_item_id")
    sub = rel[rel["relation"] == "substitute"]
    assert ((sub["a_kind"] == sub["b_kind"]) & (sub["a_interest"] == sub["b_interest"])).all()
    comp = rel[rel["relation"] == "complement"]
    assert all(bt in COMPLEMENTS[at] for at, bt in zip(comp["a_topic"], comp["b_topic"]))


def test_cli_writes_a_world(tmp_path):
    from typer.testing import CliRunner

    from onereason.cli import app

    res = CliRunner().invoke(app, ["world", "generate", "--out", str(tmp_path / "w"), "--users", "60",
                                   "--items-per-interest", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "w" / "truth" / "events.parquet").exists()
    assert len(pd.read_parquet(tmp_path / "w" / "users.parquet")) == 60


def test_economics_follow_the_seed_leave_the_events_alone_and_follow_the_persona(world):
    """Values: prod prices and ad bids (long-tailed, none elsewhere); conversion rises with the persona's
    interest in the item's topic; each ad/prod event's revenue is a conversion draw × the value; the
    events are those the world had before it had economics (their own random stream)."""
    ds, truth, params = world
    econ = truth["economics"].set_index("item_id")
    domain = truth["items"].set_index("item_id")["domain"]
    valued = econ["value"].notna()
    assert set(domain[valued]) == {"prod", "ad"} and (econ.loc[valued, "value"] > 0).all()
    prod = econ.loc[domain == "prod", "value"]
    assert prod.mean() > prod.median()  # long-tailed
    assert ds.items.set_index("item_id")["price"].equals(econ["value"])  # travels as the item column `price`
    again = generate(SMALL)[1]["economics"]
    pd.testing.assert_frame_equal(truth["economics"], again)
    ev = truth["events"].assign(item_id=ds.interactions["item_id"].to_numpy())
    paid = ev["revenue"] > 0
    assert paid.any() and set(domain[ev.loc[paid, "item_id"]]) <= {"prod", "ad"}
    assert np.allclose(ev.loc[paid, "revenue"], econ.loc[ev.loc[paid, "item_id"], "value"])
    mix = np.array([[0.9, 0.1], [0.1, 0.9]])
    p = conversion_probability(mix, np.array([0, 0]), np.zeros(2), tuple(params["conversion"].values()))
    assert p[0] > p[1]  # the same item converts more for the persona that likes its topic
    # the events do not depend on the economics' stream: another conversion setting, the same interactions
    other, _, _ = generate(SMALL.model_copy(update={"conversion": (0.0, 2.0, 1.0)}))
    pd.testing.assert_frame_equal(ds.interactions, other.interactions)
