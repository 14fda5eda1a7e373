"""How evaluation stages make lists: the seeded user samples, the merges, a beam per hypothesis."""

import pandas as pd

from onereason.bench.lists import by_score, chat_lists, hypothesis_lists, interleave, merge_race, race_lists, sample_prompts
from onereason.decoding.constrained import Recommendation
from onereason.itemic.sid import load_sid_tokens
from onereason.model.backbone import load_model
from onereason.protocol import Decoding


def test_samples_of_one_seed_nest_so_stages_of_different_sizes_score_the_same_users(tiny_run):
    """eval, sft-eval, rl-eval and the bench default to different sizes (cost); with one seed the smaller
    sample is a subset of the larger, so their numbers are on the same users as far as the smaller goes."""
    run_dir, _ = tiny_run
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    everyone = sample_prompts(inter, "test", 20, None, seed=0).users
    sizes = [5, 12, 30, len(everyone)]
    samples = [sample_prompts(inter, "test", 20, n, seed=0).users for n in sizes]
    assert [len(s) for s in samples] == sizes and samples[-1] == everyone
    for small, large in zip(samples, samples[1:]):
        assert set(small) < set(large)
    assert sample_prompts(inter, "test", 20, 12, seed=0).users == samples[1]  # the same seed, the same users
    assert set(sample_prompts(inter, "test", 20, 12, seed=1).users) != set(samples[1])


def test_interleave_takes_turns_and_by_score_keeps_each_items_best():
    assert interleave([["a", "b", "c"], ["b", "d"], ["e"]], 10) == ["a", "b", "e", "d", "c"]
    assert interleave([["a", "b"], ["c", "d"]], 3) == ["a", "c", "b"]
    recs = [Recommendation(["a", "b"], [-1.0, -3.0]), Recommendation(["b", "c"], [-0.5, -2.0])]
    assert by_score(recs, 3) == ["b", "a", "c"] and by_score(recs, 1) == ["b"]


def test_race_fuses_by_reciprocal_rank():
    """What both modes hold outranks either mode's first item alone; ties keep the first list's order;
    with no overlap it takes turns, first list first."""
    assert merge_race(["a", "b", "c"], ["c", "d", "e"], 3) == ["c", "a", "b"]  # c: 1/4 + 1/2 > a: 1/2
    assert merge_race(["a", "b"], ["c", "d"], 3) == ["a", "c", "b"]
    assert merge_race(["a", "b"], ["b", "a"], 5) == ["a", "b"]  # a repeat counts once per list, order by a
    assert merge_race([], ["x"], 2) == ["x"]
    assert merge_race(["a", "b", "c"], ["b", "d"], 4) == ["b", "a", "d", "c"]  # b: 1/3 + 1/2
    assert race_lists([["a", "b"], ["c"]], [["b"], ["d", "c"]], 2) == [["b", "a"], ["c", "d"]]


def test_a_beam_per_hypothesis_starts_from_the_models_own_trace(tiny_run):
    """The turns list opens with the thinking list's first item (the model's own trace comes first), and
    both merges return distinct valid items of the target domain, at most `beams`."""
    run_dir, _ = tiny_run
    tok, sid = load_sid_tokens(run_dir)
    model = load_model(run_dir / "sft" / "model").eval()
    p = sample_prompts(pd.read_parquet(run_dir / "data" / "interactions.parquet"), "valid", 20, 6, seed=0)
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    think, _, traces = chat_lists(model, p, domains, sid, tok, True, Decoding(beams=5, trace_tokens=48), 3, 8)
    got = hypothesis_lists(model, p, domains, sid, tok, traces, 3, 5, 8)
    assert set(got) == {"hypotheses", "hypotheses-turns"}
    assert [x[0] for x in got["hypotheses-turns"]] == [x[0] for x in think]
    for lists in got.values():
        for xs, d in zip(lists, domains):
            assert 0 < len(xs) <= 5 and len(set(xs)) == len(xs)
            assert all(sid.codec.item_domain[x] == d for x in xs)
