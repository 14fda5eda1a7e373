"""The GRPO pieces against hand-computed cases: the loss with split clipping and down-weighting,
group advantages, the set-wise reward table, RFT filtering, the MOPD advantage sign."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from onereason.itemic.sid import SidCodec
from onereason.reasoning.interests import Interests
from onereason.rl.grpo import GrpoConfig, group_advantages, grpo_targets, item_values, score
from onereason.rl.prompts import RlPrompt
from onereason.rl.reward import RewardConfig, item_hits, set_reward, shared_prefix
from onereason.rl.rollout import Trajectory
from onereason.rl.trainer import PolicyConfig, policy_loss, token_kinds
from onereason.rl.unify import MopdConfig, mopd_advantages, rft_samples

RATIOS = [1.5, 0.7, 1.15, 0.85]  # two reasoning tokens, then two item tokens
ADV = [1.0, -1.0, 1.0, -1.0]
WEIGHT = [1.0, 1.0, 0.5, 0.5]  # the item tokens belong to a down-weighted (non-hit) trajectory


def _loss(split: bool, ref=None):
    logp = torch.tensor(np.log(RATIOS), dtype=torch.float32, requires_grad=True)
    cfg = PolicyConfig(clip_reasoning=0.2, clip_item=0.1, split_clip=split, kl_beta=0.1 if ref is not None else 0.0)
    loss, stats = policy_loss(logp, torch.zeros(4), torch.tensor(ADV), torch.tensor([False, False, True, True]),
                              torch.tensor(WEIGHT), cfg, n_tokens=4, ref_logp=ref)
    loss.backward()
    return loss.item(), stats, logp.grad


def test_policy_loss_split_clip_by_hand():
    # reasoning ε=.2: 1.5 → 1.2 (A=+1: −1.2), 0.7 → 0.8 (A=−1: +0.8); item ε=.1, w=.5: 1.15 → 1.1 (−.55), .85 → .9 (+.45)
    loss, stats, grad = _loss(split=True)
    assert loss == pytest.approx((-1.2 + 0.8 - 0.55 + 0.45) / 4)
    assert stats["clipped_reasoning"] == 2 and stats["clipped_item"] == 2
    assert torch.allclose(grad, torch.zeros(4))  # every token on its clipped branch: no gradient


def test_policy_loss_single_clip_by_hand():
    # items now use ε=.2: 1.15 and .85 are inside the range, so they keep their gradient −w·A·ratio/n
    loss, stats, grad = _loss(split=False)
    assert loss == pytest.approx((-1.2 + 0.8 - 0.575 + 0.425) / 4)
    assert stats["clipped_item"] == 0
    assert grad[2].item() == pytest.approx(-0.5 * 1.15 / 4) and grad[3].item() == pytest.approx(0.5 * 0.85 / 4)


def test_policy_loss_kl_term_is_k3():
    ref = torch.tensor(np.log(RATIOS), dtype=torch.float32) + 0.3  # d = ref − logp = 0.3 everywhere
    loss, stats, _ = _loss(split=True, ref=ref)
    k3 = math.exp(0.3) - 0.3 - 1
    assert loss == pytest.approx((-1.2 + 0.8 - 0.55 + 0.45) / 4 + 0.1 * (k3 * 1 + k3 * 1 + k3 * .5 + k3 * .5) / 4)
    assert stats["kl_sum"] == pytest.approx(4 * k3, rel=1e-5)


def test_group_advantages_by_hand():
    adv = group_advantages(np.array([1.0, 0, 0, 1, 2, 2]), np.array([0, 0, 0, 0, 1, 1]))
    assert np.allclose(adv, [1, -1, -1, 1, 0, 0])  # a group with one value teaches nothing
    adv = group_advantages(np.array([1.0, 0, 0, 1, 2, 2]), np.array([0, 0, 0, 0, 1, 1]), scale_by_std=False)
    assert np.allclose(adv, [.5, -.5, -.5, .5, 0, 0])


def _traj(prompt, trace_len, items, reward, hit, item_rewards):
    t = Trajectory(prompt, [], 0, trace_len, items, [[7, 8]] * len(items))
    t.reward, t.components, t.item_rewards = reward, {"hit": hit}, item_rewards
    return t


def test_grpo_targets_trace_and_item_advantages_and_nonhit_weight():
    a = _traj(0, 2, ["x", "y"], 1.0, 1.0, [1.0, 0.0])
    b = _traj(0, 1, ["z"], 0.0, 0.0, [0.0])
    adv, weight = grpo_targets([a, b], item_advantage=True, nonhit_weight=0.5, scale_by_std=True)
    s = math.sqrt(2)  # item hits [1, 0, 0]: mean 1/3, std √2/3 → (√2, −1/√2, −1/√2)
    assert np.allclose(adv.numpy(), [1, 1, s, s, -1 / s, -1 / s, -1, -1 / s, -1 / s], atol=1e-5)
    assert np.allclose(weight.numpy(), [1] * 6 + [0.5] * 3)
    assert token_kinds([a, b]).tolist() == [False, False, True, True, True, True, False, True, True]
    adv, _ = grpo_targets([a, b], item_advantage=False, nonhit_weight=1.0)
    assert np.allclose(adv.numpy(), [.5] * 6 + [-.5] * 3)  # items take their trace's advantage (not scaled)


@pytest.mark.parametrize("cands, window, fmt, expect", [
    (["a", "b", "c", "d"], ["a"], True, (1.0, 1.0, 0.5, 1 + 0.5 * 1 + 0.1 * 0.5)),
    (["a", "b", "c", "d"], ["a", "e"], True, (1.0, 0.5, 0.5, 1 + 0.25 + 0.05)),
    (["b", "c"], ["a"], True, (0.0, 0.0, 1.0, 0.1)),
    (["a", "b"], ["a"], False, (1.0, 1.0, 0.5, -0.5)),  # a malformed trace loses format_penalty
])
def test_set_reward_table(cands, window, fmt, expect):
    group_of = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2}
    r = set_reward(cands, window, group_of, RewardConfig(), fmt)
    assert (r.hit, r.coverage, r.diversity, r.total) == pytest.approx(expect)


def test_set_reward_of_nothing_is_nan_and_item_hits():
    assert math.isnan(set_reward([], ["a"], {}, RewardConfig()).total)
    assert math.isnan(set_reward(["a"], [], {}, RewardConfig()).total)
    assert item_hits(["a", "b", "c"], ["c", "a"]) == [1.0, 0.0, 1.0]


class _Sid:
    def ids(self, item):
        return {"x": [1, 2, 3], "y": [1, 4, 3]}[item]


def test_rft_keeps_only_well_formed_hits():
    prompts = [RlPrompt("u-1", "d", [], ["y"]), RlPrompt("u-2", "d", [], ["q"])]
    hit = Trajectory(0, [50, 51, 60, 61, 9, 1], 2, 2, ["x", "y"], [[2, 3], [4, 3]])
    miss = Trajectory(1, [52, 60, 9, 1], 1, 1, ["x"], [[2, 3]])
    bad = Trajectory(0, [50, 51, 62, 9, 1], 2, 1, ["y"], [[4, 3]], format_ok=False)
    plain = Trajectory(0, [50, 51, 9, 70, 9, 1], 2, 0, ["y"], [[4, 3]])  # non-thinking: "\n\n</think>\n\n" <begin>
    out = rft_samples([hit, miss, bad, plain], prompts, _Sid(), end_turn=99)
    assert len(out) == 2
    assert list(out[0].ids) == [50, 51, 60, 61, 9, 1, 4, 3, 99]  # prompt, trace, "\n\n", the hit item y, end of turn
    assert list(out[0].mask) == [0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert list(out[1].ids) == [50, 51, 9, 70, 9, 1, 4, 3, 99]  # the empty think block is answered, as in SFT
    assert list(out[1].mask) == [0, 0, 1, 1, 1, 1, 1, 1, 1]


def test_mopd_advantage_sign():
    student = torch.tensor([-1.0, -3.0, -0.5, -20.0])
    teacher = torch.tensor([-2.0, -1.0, -0.5, 0.0])
    adv = mopd_advantages(student, teacher, clip=5.0)
    # student likes token 0 more than the teacher: push down; token 1 less: push up; equal: 0; clipped at c
    assert adv.tolist() == [-1.0, 2.0, 0.0, 5.0]


@pytest.mark.parametrize("cls, extra", [(GrpoConfig, {}), (MopdConfig, {"experts": {"a": "m"}})])
def test_rollout_configs_refuse_greedy_traces_and_the_old_keys(cls, extra):
    """A group of greedy traces is one trace repeated; the beam is `decoding.beams` (`candidates` before)."""
    with pytest.raises(ValidationError, match="temperature"):
        cls.model_validate({**extra, "decoding": {"temperature": 0}})
    assert cls.model_validate({**extra, "candidates": 8}).decoding.beams == 8  # the old name is still read
    with pytest.raises(ValidationError, match="candidate"):
        cls.model_validate({**extra, "candidate": 8})
    assert cls.model_validate({**extra, "decoding": {"beams": 8}}).decoding.temperature == 1.0  # the declared default


def test_interest_and_prefix_credit_are_switches_that_default_off():
    """interest: a listed hypothesis is a window item's interest; prefix: the longest SID prefix shared with
    a window item over the levels (1 for a hit). Both 0 in the default reward, and the format gate wins."""
    group_of = {"a": 0, "b": 0, "c": 1, "d": 2}
    codes = {"a": (1, 2, 3), "b": (1, 2, 4), "c": (1, 5, 6), "d": (7, 0, 0)}.__getitem__
    on = RewardConfig(interest=0.3, prefix=0.6)
    r = set_reward(["b", "d"], ["a"], group_of, on, True, listed={0, 2}, codes=codes)
    assert (r.hit, r.interest, r.prefix) == (0.0, 1.0, pytest.approx(2 / 3))
    assert r.total == pytest.approx(0.1 * 1.0 + 0.3 + 0.6 * 2 / 3)  # diversity 2 interests / 2 candidates
    assert set_reward(["c"], ["a"], group_of, on, True, listed={1}, codes=codes).interest == 0.0
    assert set_reward(["a"], ["a"], group_of, on, True, codes=codes).prefix == 1.0
    assert set_reward(["b"], ["a"], group_of, RewardConfig(), True, {0}, codes).total == pytest.approx(0.1)
    assert set_reward(["b"], ["a"], group_of, on, False, {0}, codes).total == -0.5
    assert shared_prefix((1, 2, 3), (2, 2, 3)) == 0.0


def test_score_reads_the_listed_interests_from_the_trace_in_the_prompts_domain():
    codec = SidCodec(pd.DataFrame({"item_id": ["a", "b", "c"], "domain": ["d", "d", "d"],
                                   "code_0": [0, 0, 1], "code_1": [0, 1, 0]}))
    interests = Interests({"a": 0, "b": 0, "c": 1}, ["jars", "glass"], ["d", "d"], [0, 1])
    trace = "Persona: x.\nInterests: 1. glass; 2. tins.\nTransition: drift: moves to a new interest, glass."
    t = Trajectory(0, [1], 1, 1, ["b"], [[2]], trace=trace)
    [t] = score([t], [RlPrompt("u-1", "d", [], ["c"])], interests, codec, RewardConfig(interest=1.0, prefix=1.0))
    assert t.components["interest"] == 1.0 and t.components["prefix"] == 0.0  # c is "glass"; b shares no code
    assert t.reward == pytest.approx(0.1 + 1.0)


def test_set_to_items_carries_the_list_reward_to_items_and_baselines_lone_trajectories():
    """Two non-thinking prompts (one trajectory each, no trace tokens): without the switch their items learn
    from hits alone; with it each item also gets R − mean R over the step's lone trajectories."""
    a = _traj(0, 0, ["x", "y"], 1.0, 1.0, [1.0, 0.0])
    b = _traj(1, 0, ["z", "w"], 0.2, 0.0, [0.0, 0.0])
    c = _traj(2, 2, ["v"], 0.5, 0.0, [0.0])  # a thinking group of two: its own baseline
    d = _traj(2, 2, ["u"], 0.1, 0.0, [0.0])
    off, _ = grpo_targets([a, b, c, d], item_advantage=True, nonhit_weight=1.0)
    on, _ = grpo_targets([a, b, c, d], item_advantage=True, nonhit_weight=1.0, set_to_items=True)
    # item hits within a prompt: a's [1, 0] → ±.5 (two tokens each); the thinking group's traces ±.2
    assert np.allclose(off.numpy(), [.5, .5, -.5, -.5, 0, 0, 0, 0, .2, .2, 0, 0, -.2, -.2, 0, 0])
    # lone trajectories a, b: R − mean R = ±.4 on their items; c, d's items take their trace's ±.2
    assert np.allclose(on.numpy(), [.9, .9, -.1, -.1, -.4, -.4, -.4, -.4, .2, .2, .2, .2, -.2, -.2, -.2, -.2])


def test_revenue_credit_is_the_scaled_value_of_the_hit_items(tmp_path):
    value = {"a": 1.0, "b": 0.25, "c": 0.5}
    cfg = RewardConfig(revenue=2.0)
    r = set_reward(["a", "b", "d"], ["b", "c", "d"], {}, cfg, True, value=value)
    assert r.revenue == pytest.approx(0.25) and r.total == pytest.approx(1 + 0.5 * 2 / 3 + 0.1 * 1 / 3 + 2 * 0.25)
    assert set_reward(["a"], ["b"], {}, cfg, True, value=value).revenue == 0.0
    (tmp_path / "data").mkdir()
    pd.DataFrame({"item_id": ["a", "b", "c"], "price": [20.0, None, 5.0]}).to_parquet(tmp_path / "data/items.parquet")
    assert item_values(tmp_path) == {"a": 1.0, "c": 0.25}
    pd.DataFrame({"item_id": ["a"]}).to_parquet(tmp_path / "data/items.parquet")
    with pytest.raises(ValueError, match="rl.reward.revenue: .*items.parquet has no price"):
        item_values(tmp_path)
