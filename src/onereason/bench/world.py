"""What the world benchmarks measure against the synthetic world's truth: how much history a
test user has in the target item's domain (the cold-start split), and the generator's oracle,
which ranks the target domain's items by P(topic | the user's last latent topic) under the
user's true persona × the item's popularity inside its interest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onereason.data.world import conversion_probability, run_truth
from onereason.metrics import evaluate_lists, paired_bootstrap, per_sample
from onereason.rundir import save_figure

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
        self.topic_index = topic_index
        self.economics = truth["economics"].set_index("item_id")
        self.mixes = np.array([p["mix"] for p in params["personas"]])
        self.conversion = tuple(params["conversion"][k] for k in ("alpha", "beta", "gamma"))

    def expected_revenue(self, user: str, items: list[str]) -> float:
        """Σ over the items of P(the user converts) × the item's value (price or bid; 0 where it has none)."""
        if not items:
            return 0.0
        econ = self.economics.loc[items]
        p = conversion_probability(np.repeat(self.mixes[[self.persona[user]]], len(items), axis=0),
                                   self.topic_index[items].to_numpy(), econ["quality"].to_numpy(), self.conversion)
        return float((p * np.nan_to_num(econ["value"].to_numpy())).sum())

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


def value_per_user(world: WorldTruth, users: list[str], lists: list[list[str]], truths: list[list[str]], k: int
                   ) -> dict[str, list[float]]:
    """Per user: expected revenue@k (`WorldTruth.expected_revenue` of the top k), realized revenue of hits (the
    value of every hit item, as if the hit converted), and the sponsored (ad) share of the top k."""
    top = [x[:k] for x in lists]
    value = world.economics["value"]
    return {f"revenue@{k}": [world.expected_revenue(u, t) for u, t in zip(users, top)],
            f"hit_value@{k}": [float(np.nan_to_num(value.loc[[i for i in t if i in g]].to_numpy()).sum())
                               for t, g in zip(top, truths)],
            f"sponsored_share@{k}": [float(np.mean([world.domain_of(i) == "ad" for i in t])) if t else 0.0
                                     for t in top]}


def value_metrics(world: WorldTruth, users: list[str], lists: list[list[str]], truths: list[list[str]], k: int
                  ) -> dict[str, float]:
    """The means over users of `value_per_user`."""
    return {c: float(np.mean(v)) for c, v in value_per_user(world, users, lists, truths, k).items()}


def value_report(world: WorldTruth, rows: list[dict], reference: str, k: int = 10, seed: int = 0) -> dict:
    """Every method of per-user rows ({"user_id", "target", "items": {method: list}}, as sft-eval and rl-eval
    write them): Recall@k and `value_metrics`, overall and per domain of the target, and each method minus
    `reference` per user (mean [95% paired bootstrap interval]) for Recall@k and expected revenue@k: what
    revenue a method buys, what relevance it costs."""
    users, truths = [r["user_id"] for r in rows], [r["target"] for r in rows]
    methods = list(rows[0]["items"])
    if reference not in methods:
        raise ValueError(f"reference {reference!r} is not a method of these rows: {methods}")
    per_user = {}
    for m in methods:
        lists = [r["items"][m] for r in rows]
        per_user[m] = {f"recall@{k}": per_sample(f"recall@{k}", lists, truths),
                       **value_per_user(world, users, lists, truths, k)}
    out: dict = {"k": k, "users": len(rows), "reference": reference,
                 "methods": {m: {c: float(np.mean(v)) for c, v in cols.items()} for m, cols in per_user.items()}}
    domains = np.array([world.domain_of(t[0]) for t in truths])  # per domain: the target's
    for m in methods:
        out["methods"][m]["by_domain"] = {d: {c: float(np.mean(np.asarray(v)[domains == d])) for c, v in per_user[m].items()}
                                          for d in sorted(set(domains))}
    for m in methods:
        if m != reference:
            out["methods"][m]["minus_reference"] = {c: paired_bootstrap(per_user[m][c], per_user[reference][c], seed=seed)
                                                    for c in (f"recall@{k}", f"revenue@{k}")}
    return out


def join_rows(files: list[list[dict]], names: list[str]) -> list[dict]:
    """Per-user rows of several files (`names` for errors) as one: the users every file has, in the first
    file's order, each with every file's methods. A user whose target differs between files is an error."""
    by_user = [{r["user_id"]: r for r in rows} for rows in files]
    out = []
    for row in files[0]:
        user = row["user_id"]
        if all(user in f for f in by_user[1:]):
            joined = {**row, "items": dict(row["items"])}
            for name, f in zip(names[1:], by_user[1:]):
                if f[user]["target"] != row["target"]:
                    raise ValueError(f"{name}: user {user}'s target {f[user]['target']} is not {row['target']} as in "
                                     f"{names[0]}: the files score different splits")
                joined["items"] |= f[user]["items"]
            out.append(joined)
    if not out:
        raise ValueError(f"{', '.join(names)}: no user is in every file")
    return out


def value_table(report: dict) -> list[str]:
    """A `value_report` as markdown lines: each method's measures and its difference to the reference."""
    k = report["k"]
    iv = lambda x: f"{x[0]:+.4f} [{x[1]:+.4f}, {x[2]:+.4f}]"  # noqa: E731
    domains = list(next(iter(report["methods"].values())).get("by_domain", {}))
    lines = [f"| method | Recall@{k} | revenue@{k} | hit value@{k} | sponsored | Δ recall | Δ revenue | "
             + "".join(f"Recall / revenue {d} | " for d in domains), "|---" * (7 + len(domains)) + "|"]
    for m, r in report["methods"].items():
        d = r.get("minus_reference", {})
        lines.append(f"| {m} | {r[f'recall@{k}']:.4f} | {r[f'revenue@{k}']:.3f} | {r[f'hit_value@{k}']:.3f} | "
                     f"{r[f'sponsored_share@{k}']:.3f} | " + " | ".join(iv(d[c]) if c in d else "-"
                                                            for c in (f"recall@{k}", f"revenue@{k}")) + " | "
                     + "".join(f"{x[f'recall@{k}']:.4f} / {x[f'revenue@{k}']:.3f} | "
                               for x in (r["by_domain"][g] for g in domains)))
    return lines


def plot_value(report: dict, path: Path) -> None:
    """Expected revenue@k against Recall@k, one point per method: the trade-off at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors, markers = plt.get_cmap("tab10").colors, "os^Dv<>P*X"
    for j, (m, r) in enumerate(report["methods"].items()):  # a legend: method names collide as labels
        ax.scatter(r[f"recall@{k}"], r[f"revenue@{k}"], color=colors[j % 10], marker=markers[j // 10 % 10], label=m)
    ax.set(xlabel=f"Recall@{k}", ylabel=f"expected revenue@{k}", title=f"revenue vs relevance ({report['users']} users)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, path)


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
