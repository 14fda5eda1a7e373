"""What the world benchmarks measure against the synthetic world's truth: how much history a
test user has in the target item's domain (the cold-start split), and the generator's oracle,
which ranks the target domain's items by P(topic | the user's last latent topic) under the
user's true persona × the item's popularity inside its interest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onereason.data.world import run_truth
from onereason.metrics import evaluate_lists

COLD = "cold: 0 events in the target domain"


class WorldTruth:
    """A world run's truth, regenerated from its config (deterministic by seed), with the
    training-time view of every user: their test-time history (train + valid events)."""

    def __init__(self, run_dir: Path):
        _, ds, truth, params = run_truth(run_dir)
        inter = ds.interactions.reset_index(drop=True)
        inter["topic"] = truth["events"]["topic"].reset_index(drop=True)
        history = inter[inter["split"] != "test"].sort_values(["user_id", "timestamp"], kind="stable")
        self.last_topic = history.groupby("user_id")["topic"].last()
        self.per_domain = history.groupby(["user_id", "domain"]).size()
        self.items = truth["items"].set_index("item_id")
        self.persona = truth["personas"].set_index("user_id")["persona"]
        self.topics: list[str] = params["topics"]
        self.matrices = [np.array(p["M"]) for p in params["personas"]]
        topic_index = self.items["topic"].map({t: i for i, t in enumerate(self.topics)})
        self._candidates = {d: (g.index, topic_index[g.index].to_numpy(), g["popularity"].to_numpy())
                            for d, g in self.items.groupby("domain")}  # per domain: ids, topic, popularity

    def domain_of(self, item: str) -> str:
        return self.items.at[item, "domain"]

    def group(self, user: str, target: str) -> str:
        """The user's cold-start group for this target: history events in the target's domain."""
        n = int(self.per_domain.get((user, self.domain_of(target)), 0))
        return COLD if n == 0 else "1-2 events" if n <= 2 else "3+ events"

    def oracle(self, user: str, domain: str, k: int) -> list[str]:
        """The generator's top-k items of `domain` for this user (the ceiling of the world)."""
        row = self.matrices[self.persona[user]][self.topics.index(self.last_topic[user])]
        ids, topic, popularity = self._candidates[domain]
        return list(ids[np.argsort(-(row[topic] * popularity), kind="stable")[:k]])


def group_metrics(methods: dict[str, list[list[str]]], truths: list[list[str]], groups: list[str], k: int
                  ) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics@k per method for all users and each group."""
    return {m: evaluate_lists(lists, truths, [k], groups) for m, lists in methods.items()}


def recall_table(results: dict[str, dict[str, dict[str, float]]], k: int) -> str:
    """Markdown of `group_metrics`: Recall@k / NDCG@k per method, all users and each group."""
    first = next(iter(results.values()))
    names = ["all", *sorted(g for g in first if g != "all")]
    lines = ["| method | " + " | ".join(f"{g} ({first[g]['n']})" for g in names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for m, res in results.items():
        lines.append(f"| {m} | " + " | ".join(f"{res[g][f'recall@{k}']:.4f} / {res[g][f'ndcg@{k}']:.4f}"
                                              for g in names) + " |")
    return "\n".join(lines) + "\n"
