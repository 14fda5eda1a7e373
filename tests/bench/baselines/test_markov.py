"""The Markov chain baseline: the last item's train successors in the target domain, then MostPopular."""

import pandas as pd

from onereason.bench.baselines.markov import markov_lists


def test_successors_first_then_the_most_popular():
    rows = [("u1", "a", 0, "train"), ("u1", "b", 1, "train"), ("u2", "a", 0, "train"), ("u2", "c", 1, "train"),
            ("u3", "a", 0, "train"), ("u3", "c", 1, "train"), ("u3", "d", 2, "train"), ("u4", "e", 0, "train"),
            ("u4", "a", 1, "train"), ("u4", "x", 2, "valid")]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    inter = inter.assign(domain=inter["item_id"].map(lambda i: "o" if i == "e" else "d"), rating=float("nan"))
    # a → c twice, a → b once, e → a once, d → nothing; popularity in d: a 4, c 2, then b and d (ties by id)
    assert markov_lists(inter, ["a", "d", "e"], ["d", "d", "d"], 3) == [["c", "b", "a"], ["a", "c", "b"], ["a", "c", "b"]]
