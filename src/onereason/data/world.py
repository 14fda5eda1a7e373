"""A multi-domain world with known causes (`onereason world generate`).

The real datasets have disjoint users per domain and no recorded reasons, so they cannot say
whether a recovered persona or interest is *true*. Here every interaction has a known cause:

- topics (cooking, fitness, travel, ...) exist in all four domains (video, prod, ad, living);
  an interest is a (domain, topic) pair and its items carry titles/descriptions generated from
  the topic's attribute words (a kind noun, an adjective, a brand);
- each user belongs to one of 20 personas: a sparse topic mixture, a domain preference, an
  activity level, a repeat propensity and a drift rate;
- the topic sequence is a Markov chain per persona, M_p = stay·I + complement·C + drift·1π_pᵀ
  (repeat the interest, move to a complementary topic, or drift back to the persona's mixture);
- each event picks a domain from the persona's preference, so one topic couples the domains
  (cooking videos raise cooking products); items are drawn with Zipf popularity inside their
  interest, a share `repeat` re-takes an item of the same interest from the history, and a
  share `noise` is a uniformly random item.

Economics (a random stream of its own, so the events above do not depend on it): a `prod` item has a price
and an `ad` item a bid, long-tailed (lognormal), higher for some topics and for popular items, as in real
auctions; a user converts on an item with P = sigmoid(α + β·log(T·mix_persona[topic]) + γ·quality_item), so
value and relevance are related but not the same; every ad/prod event has a realized revenue (a conversion
draw × the value). The value travels as the optional item column `price`.

Written in the dataset schema (interactions, items, users with split) plus `truth/`:
personas per user, the interest and popularity (within its interest) of every item, the transition matrices, the latent topic of
every event, item-to-item relations and the economics (value, quality, each event's revenue). Deterministic by seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from onereason.config import Config
from onereason.data.schema import Dataset, check_dataset, save_dataset, write_parquet
from onereason.data.split import leave_one_out
from onereason.rundir import write_text

DOMAINS = ("video", "prod", "ad", "living")
# topic → (kind nouns, adjectives); complementary topics are listed in COMPLEMENTS.
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "cooking": (["wok", "knife set", "spice rack", "cast-iron pan", "recipe book"], ["quick", "rustic", "spicy", "vegan"]),
    "fitness": (["yoga mat", "dumbbell", "running shoe", "resistance band", "protein bar"], ["lean", "intense", "daily", "core"]),
    "travel": (["backpack", "suitcase", "neck pillow", "city guide", "adapter"], ["light", "compact", "weekend", "global"]),
    "gaming": (["controller", "headset", "strategy game", "racing game", "gaming chair"], ["retro", "competitive", "co-op", "open-world"]),
    "beauty": (["lipstick", "face serum", "hair dryer", "nail kit", "perfume"], ["matte", "glowing", "natural", "bold"]),
    "pets": (["dog leash", "cat tree", "pet bed", "chew toy", "aquarium"], ["cozy", "durable", "playful", "calm"]),
    "kids": (["puzzle", "picture book", "stroller", "building blocks", "crayon set"], ["colorful", "safe", "learning", "tiny"]),
    "music": (["guitar", "vinyl record", "earbuds", "keyboard", "speaker"], ["acoustic", "live", "jazz", "indie"]),
    "tech": (["laptop stand", "smartwatch", "usb hub", "mechanical keyboard", "webcam"], ["smart", "wireless", "fast", "pro"]),
    "home": (["sofa", "lamp", "rug", "plant pot", "shelf"], ["minimal", "warm", "modern", "vintage"]),
    "fashion": (["sneaker", "denim jacket", "handbag", "sunglasses", "scarf"], ["street", "classic", "summer", "bold"]),
    "outdoors": (["tent", "hiking boot", "fishing rod", "camp stove", "kayak"], ["rugged", "alpine", "waterproof", "wild"]),
}
COMPLEMENTS = {"cooking": ["home"], "fitness": ["outdoors", "fashion"], "travel": ["outdoors", "tech"],
               "gaming": ["tech", "music"], "beauty": ["fashion"], "pets": ["home", "outdoors"],
               "kids": ["home", "cooking"], "music": ["tech"], "tech": ["gaming"], "home": ["cooking"],
               "fashion": ["beauty"], "outdoors": ["travel", "fitness"]}
FORMAT = {"video": "{adj} {noun} video", "prod": "{brand} {adj} {noun}", "ad": "ad: {brand} {noun} {adj} deal",
          "living": "{adj} {noun} workshop nearby"}
BRANDS = ["Acme", "Zenith", "Nova", "Orbit", "Pico", "Lumen", "Terra", "Vela"]


class WorldConfig(Config):
    seed: int = 0
    users: int = Field(8000, ge=20)
    items_per_interest: int = Field(90, ge=2, description="items per (domain, topic); 90 → 4,320 items")
    personas: int = Field(20, ge=1)
    mean_events: float = Field(7.0, gt=2, description="mean events per user (geometric-like, at least 3)")
    topics_per_persona: int = Field(3, ge=1, le=len(TOPICS))
    noise: float = Field(0.05, ge=0, le=1)
    zipf: float = Field(1.1, gt=0, description="popularity exponent inside an interest")
    conversion: tuple[float, float, float] = Field((-3.0, 1.0, 0.5), description="α, β, γ of P(convert)")


def _transition(stay: float, comp: float, mix: np.ndarray, topics: list[str]) -> np.ndarray:
    """M = stay·I + comp·C + (1 − stay − comp)·1 mixᵀ, rows summing to 1."""
    t = len(topics)
    c = np.zeros((t, t))
    for i, name in enumerate(topics):
        for other in COMPLEMENTS[name]:
            c[i, topics.index(other)] = 1 / len(COMPLEMENTS[name])
    return stay * np.eye(t) + comp * c + (1 - stay - comp) * np.outer(np.ones(t), mix)


def generate(cfg: WorldConfig) -> tuple[Dataset, dict[str, pd.DataFrame], dict]:
    """The dataset, its truth tables and the world's parameters (JSON-able)."""
    rng = np.random.default_rng(cfg.seed)
    topics = list(TOPICS)
    # items: one interest = (domain, topic); Zipf popularity inside it
    rows = []
    for d in DOMAINS:
        for t in topics:
            nouns, adjs = TOPICS[t]
            for k in range(cfg.items_per_interest):
                noun, adj, brand = nouns[k % len(nouns)], adjs[rng.integers(len(adjs))], BRANDS[rng.integers(len(BRANDS))]
                title = FORMAT[d].format(adj=adj, noun=noun, brand=brand) + f" #{k}"
                rows.append({"item_id": f"{d}-{t}-{k}", "domain": d, "title": title,
                             "description": f"{title}. A {adj} {noun} for people into {t}.",
                             "categories": [f"{d} / {t}"], "brand": brand, "topic": t, "kind": noun,
                             "rank": k})
    items = pd.DataFrame(rows)
    pop = 1.0 / (items["rank"].to_numpy() + 1) ** cfg.zipf
    by_interest = {key: g.index.to_numpy() for key, g in items.groupby(["domain", "topic"])}
    # personas
    personas = []
    for p in range(cfg.personas):
        mix = np.zeros(len(topics))
        chosen = rng.choice(len(topics), cfg.topics_per_persona, replace=False)
        mix[chosen] = rng.dirichlet(np.ones(cfg.topics_per_persona) * 2)
        mix = 0.95 * mix + 0.05 / len(topics)
        stay, comp = rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.25)
        personas.append({"id": p, "mix": mix, "domains": rng.dirichlet(np.ones(len(DOMAINS))),
                         "activity": rng.uniform(0.6, 1.6), "repeat": rng.uniform(0.0, 0.3),
                         "stay": stay, "complement": comp, "M": _transition(stay, comp, mix, topics),
                         "name": f"P{p:02d} " + " + ".join(topics[i] for i in chosen[np.argsort(-mix[chosen])])})
    # users and their event sequences
    persona_of = rng.integers(cfg.personas, size=cfg.users)
    ids, topic_of, domain_of = (items[c].to_numpy() for c in ("item_id", "topic", "domain"))
    inter, latent = [], []
    for u in range(cfg.users):
        p = personas[persona_of[u]]
        n = 3 + rng.geometric(1 / max(1.0, (cfg.mean_events - 3) * p["activity"] + 1)) - 1
        topic = rng.choice(len(topics), p=p["mix"])
        now = int(1.6e9 + rng.integers(0, 3e7))
        seen: list[int] = []
        for step in range(n):
            if step:
                topic = rng.choice(len(topics), p=p["M"][topic])
            domain = DOMAINS[rng.choice(len(DOMAINS), p=p["domains"])]
            pool = by_interest[(domain, topics[topic])]
            same = [i for i in seen if topic_of[i] == topics[topic] and domain_of[i] == domain]
            is_noise = rng.random() < cfg.noise
            if is_noise:
                item = int(rng.integers(len(items)))
            elif same and rng.random() < p["repeat"]:
                item = int(same[rng.integers(len(same))])
            else:
                w = pop[pool]
                item = int(pool[rng.choice(len(pool), p=w / w.sum())])
            seen.append(item)
            now += int(rng.exponential(3 * 86400)) + 60
            inter.append((f"u{u}", ids[item], now, domain_of[item]))
            latent.append((f"u{u}", step, topics[topic], domain, bool(is_noise)))
    interactions = pd.DataFrame(inter, columns=["user_id", "item_id", "timestamp", "domain"])
    interactions["rating"] = np.nan
    interactions["split"] = leave_one_out(interactions)
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(cfg.users)]})
    econ_rng = np.random.default_rng([cfg.seed, 7])  # its own stream: the events above do not depend on it
    economics = item_economics(items, pop, econ_rng)
    items["price"] = economics["value"].to_numpy()
    mixes = np.array([p["mix"] for p in personas])
    item_at = interactions["item_id"].map({x: i for i, x in enumerate(ids)}).to_numpy()
    p_conv = conversion_probability(mixes[persona_of[interactions["user_id"].str[1:].astype(int).to_numpy()]],
                                    items["topic"].map({t: i for i, t in enumerate(topics)}).to_numpy()[item_at],
                                    economics["quality"].to_numpy()[item_at], cfg.conversion)
    converted = econ_rng.random(len(interactions)) < p_conv
    revenue = np.where(converted, np.nan_to_num(economics["value"].to_numpy()[item_at]), 0.0)
    catalog = items[["item_id", "domain", "title", "description", "categories", "brand", "price"]]
    ds = Dataset("world", interactions, catalog.reset_index(drop=True), users)
    check_dataset(ds, "world")
    truth = {
        "personas": pd.DataFrame({"user_id": users["user_id"], "persona": persona_of}),
        "items": items[["item_id", "domain", "topic", "kind"]].assign(
            interest=lambda x: x["domain"] + "/" + x["topic"],
            popularity=pop / pd.Series(pop).groupby([items["domain"], items["topic"]]).transform("sum").to_numpy()),
        "events": pd.DataFrame(latent, columns=["user_id", "step", "topic", "domain", "noise"]),
        "relations": true_relations(items, rng),
        "economics": economics,
    }
    truth["events"]["revenue"] = revenue  # 0 where the event did not convert or its item has no value
    params = {"config": json.loads(cfg.model_dump_json()), "topics": topics, "domains": list(DOMAINS),
              "conversion": dict(zip(("alpha", "beta", "gamma"), cfg.conversion)),
              "complements": COMPLEMENTS,
              "personas": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
                           for p in personas]}
    return ds, truth, params


def item_economics(items: pd.DataFrame, popularity: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Per item: `value` (a prod item's price, an ad's bid; none for video and living) and `quality`.
    Values are lognormal around a per-domain base, shifted per topic and up with the item's popularity."""
    level = dict(zip(TOPICS, rng.normal(0.0, 0.5, len(TOPICS))))
    quality = rng.normal(0.0, 1.0, len(items))
    noise = rng.normal(0.0, 0.6, len(items))
    rel_pop = np.log(popularity / popularity.mean())
    value = np.full(len(items), np.nan)
    for domain, base in (("prod", 25.0), ("ad", 0.8)):
        m = (items["domain"] == domain).to_numpy()
        value[m] = np.round(base * np.exp(items["topic"][m].map(level).to_numpy() + 0.3 * rel_pop[m] + noise[m]), 2)
    return pd.DataFrame({"item_id": items["item_id"].to_numpy(), "value": value, "quality": quality})


def conversion_probability(mix: np.ndarray, topic: np.ndarray, quality: np.ndarray,
                           coef: tuple[float, float, float]) -> np.ndarray:
    """P(convert) per (user, item) pair: the user's persona topic mixture (rows of `mix`), the item's topic
    index and quality: sigmoid(α + β·log(T·mix[topic]) + γ·quality)."""
    alpha, beta, gamma = coef
    affinity = mix[np.arange(len(topic)), topic] * mix.shape[1]
    return 1.0 / (1.0 + np.exp(-(alpha + beta * np.log(affinity) + gamma * quality)))


def true_relations(items: pd.DataFrame, rng: np.random.Generator, per_item: int = 1) -> pd.DataFrame:
    """Sampled labelled pairs: substitute (same domain, topic and kind), complement (complementary
    topics), same-interest (same domain and topic, another kind), unrelated (anything else)."""
    groups = {
        "substitute": items.groupby(["domain", "topic", "kind"]).indices,
        "same-interest": items.groupby(["domain", "topic"]).indices,
        "topic": items.groupby("topic").indices,
    }
    out = []
    for i, row in items.iterrows():
        for _ in range(per_item):
            sub = groups["substitute"][(row["domain"], row["topic"], row["kind"])]
            same = [j for j in groups["same-interest"][(row["domain"], row["topic"])] if items.at[j, "kind"] != row["kind"]]
            comp = groups["topic"][COMPLEMENTS[row["topic"]][0]]
            j_un = int(rng.integers(len(items)))
            related = {row["topic"], *COMPLEMENTS[row["topic"]]}
            for label, pool in (("substitute", [j for j in sub if j != i]), ("same-interest", same),
                                ("complement", list(comp))):
                if len(pool):
                    out.append((row["item_id"], items.at[int(pool[rng.integers(len(pool))]), "item_id"], label))
            if items.at[j_un, "topic"] not in related and row["topic"] not in COMPLEMENTS[items.at[j_un, "topic"]]:
                out.append((row["item_id"], items.at[j_un, "item_id"], "unrelated"))
    return pd.DataFrame(out, columns=["a", "b", "relation"])


def run_truth(run_dir: Path) -> tuple[WorldConfig, Dataset, dict[str, pd.DataFrame], dict]:
    """The world of a run made with `data.world`, regenerated from its saved config (same seed, same world)."""
    data = json.loads((run_dir / "config.json").read_text())["data"]
    if not data.get("world"):
        raise ValueError(f"{run_dir}/config.json: data.world is not set; this run is not on a synthetic world")
    cfg = WorldConfig.model_validate(data["world"])
    return (cfg, *generate(cfg))


def write(cfg: WorldConfig, out: Path) -> dict:
    """Dataset files into `out` (the layout a run's data/ has) and the truth into `out/truth/`."""
    ds, truth, params = generate(cfg)
    save_dataset(ds, out)
    for name, df in truth.items():
        write_parquet(df, out / "truth" / f"{name}.parquet")
    write_text(out / "truth" / "world.json", json.dumps(params, indent=1))
    return {"users": len(ds.users), "items": len(ds.items), "interactions": len(ds.interactions),
            "personas": cfg.personas, "domains": list(DOMAINS)}
