"""The seeded user samples every evaluation stage draws (`bench/lists.sample_prompts`)."""

import pandas as pd

from onereason.bench.lists import sample_prompts


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
