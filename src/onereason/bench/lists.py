"""How every evaluation stage turns users into ranked candidate lists, written once: the seeded
sample of a split's prompts, non-thinking beam search from a pre-training-format model
(`recommend_next`) or from a chat model (`chat_lists`), thinking mode (trace, then beam) and race
(`merge_race`, `race_lists`). `eval`, `sft-eval`, `rl-eval`, the bench and the scripts in bench/ all call these."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from onereason.chat import END_THINK
from onereason.corpus.user_layer import EvalPrompts, HistoryText, eval_prompts
from onereason.decoding.constrained import Recommendation, recommend
from onereason.decoding.two_stage import generate_traces
from onereason.model.latent import latent_ids, latent_trace
from onereason.protocol import Decoding
from onereason.reasoning.interests import Interests
from onereason.reasoning.sft_data import r3_prompts
from onereason.reasoning.traces import hypothesis_traces


def sample_prompts(inter: pd.DataFrame, split: str, max_items: int, max_users: int | None, seed: int
                   ) -> EvalPrompts:
    """The split's prompts, or a seeded sample of `max_users` of them."""
    p = eval_prompts(inter, split, max_items)
    if max_users and max_users < len(p.users):
        p = p.subset(sorted(pd.Series(range(len(p.users))).sample(max_users, random_state=seed)))
    return p


def recommend_next(model, tok, sid, p: EvalPrompts, beams: int, batch_size: int = 32,
                   progress: bool = False) -> tuple[list[Recommendation], list[str]]:
    """Constrained beam search for every prompt, in the target's domain: (recommendations, domains)."""
    text = HistoryText(sid, tok)
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    prompts = [text.prompt(h, d) for h, d in zip(p.histories, domains)]
    return recommend(model, prompts, domains, sid, tok.pad_token_id, k=beams, num_beams=beams,
                     batch_size=batch_size, progress=progress), domains


def answer_items(model, prefixes: list[list[int]], domains: list[str], sid, tok, beams: int, batch_size: int = 32,
                 progress: bool = False) -> tuple[list[list[str]], list[list[int]]]:
    """Items by beam search after prefix + "\n\n" + the target domain's begin token, and those prompts."""
    nl = tok.encode("\n\n", add_special_tokens=False)
    prompts = [q + nl + [sid.begin_id[d]] for q, d in zip(prefixes, domains)]
    recs = recommend(model, prompts, domains, sid, tok.pad_token_id, k=beams, num_beams=beams,
                     batch_size=batch_size, progress=progress)
    return [r.items for r in recs], prompts


def chat_lists(model, p: EvalPrompts, domains: list[str], sid, tok, thinking: bool, decoding: Decoding,
               hypotheses: int, batch_size: int, seed: int = 0, progress: bool = False,
               interests: Interests | None = None) -> tuple[list[list[str]], list[list[int]], list[list[int]] | None]:
    """R3 in the chat format: (item lists, the answer prompts the beam started from, the sampled traces
    or None). Thinking: a trace with `hypotheses` interests, then the beam; otherwise an empty think block.
    `interests` (the run's) is what `decoding.interests == "chosen"` chooses from."""
    text = HistoryText(sid, tok)
    prompts = r3_prompts(p.histories, domains, hypotheses if thinking else None, text, tok)
    traces = None
    if thinking:
        names = [interests.names_in(d) for d in domains] if interests is not None else None
        traces = generate_traces(model, prompts, [[e.item for e in h] for h in p.histories], sid, tok, decoding,
                                 batch_size, seed, progress, hypotheses, names)
        prefixes = [q + x for q, x in zip(prompts, traces)]
    else:
        nl = tok.encode("\n\n", add_special_tokens=False)
        prefixes = [q + nl + [tok.convert_tokens_to_ids(END_THINK)] for q in prompts]
    items, answer_prompts = answer_items(model, prefixes, domains, sid, tok, decoding.beams, batch_size, progress)
    return items, answer_prompts, traces


def latent_lists(model, p: EvalPrompts, domains: list[str], sid, tok, decoding: Decoding, hypotheses: int,
                 batch_size: int, progress: bool = False) -> tuple[list[list[str]], list[list[int]]]:
    """A latent model's thinking mode (`sft.latent_steps`): the thinking prompt, its k latent steps and
    `</think>` (the tokens its SFT samples held in place of a trace), then the beam: (item lists, prompts)."""
    ids = latent_ids(model)
    if not ids:
        raise ValueError("latent mode: this model was not trained with latent steps (sft.latent_steps)")
    prompts = r3_prompts(p.histories, domains, hypotheses, HistoryText(sid, tok), tok)
    silent = latent_trace(tok, ids)
    return answer_items(model, [q + silent for q in prompts], domains, sid, tok, decoding.beams, batch_size, progress)


def favoured_interests(interests: Interests, item_ids: list[str], domains: list[str], k: int, seed: int) -> list[int]:
    """Per user, an interest of their target's domain to favour (a business rule), drawn among those with at
    least 2k items so that a list of k can be filled from it."""
    size = pd.Series([interests.of[i] for i in item_ids]).value_counts()
    cands = {d: [i for i, dd in enumerate(interests.domain) if dd == d and size.get(i, 0) >= 2 * k] for d in set(domains)}
    rng = np.random.default_rng(seed)
    return [int(rng.choice(cands[d])) for d in domains]


RACE_RANK_OFFSET = 1
"""c in race's 1/(c + rank): chosen on valid lists of scientific and the world (bench/LOG.md, session 42)."""


def merge_race(plain: list[str], reasoned: list[str], k: int) -> list[str]:
    """Reciprocal-rank fusion of the non-thinking list and a reasoned (thinking, latent) one, up to k items: an
    item scores the sum of 1/(c + rank) over the lists that hold it, so what both modes rank high comes first;
    the non-thinking order breaks ties (better on valid than the reasoned order). Alternating the lists instead
    lets the weaker mode's first items displace the stronger's."""
    score: dict[str, float] = {}
    for xs in (plain, reasoned):
        for rank, x in enumerate(xs, 1):
            score[x] = score.get(x, 0.0) + 1 / (RACE_RANK_OFFSET + rank)
    return sorted(score, key=lambda x: -score[x])[:k]


def race_lists(plain: list[list[str]], reasoned: list[list[str]], k: int) -> list[list[str]]:
    """`merge_race` for every user."""
    return [merge_race(a, b, k) for a, b in zip(plain, reasoned, strict=True)]


def interleave(lists: list[list[str]], k: int) -> list[str]:
    """Take turns over the lists (rank 1 of each, in order, then rank 2, ...), dropping repeats, up to k."""
    out: list[str] = []
    for rank in range(max(map(len, lists), default=0)):
        for xs in lists:
            if rank < len(xs) and xs[rank] not in out:
                out.append(xs[rank])
    return out[:k]


def by_score(recs: list[Recommendation], k: int) -> list[str]:
    """Candidates from several beams ranked by their score (an item's best), up to k."""
    best: dict[str, float] = {}
    for r in recs:
        for x, s in zip(r.items, r.scores):
            best[x] = max(s, best.get(x, -math.inf))
    return sorted(best, key=lambda x: -best[x])[:k]


def hypothesis_lists(model, p: EvalPrompts, domains: list[str], sid, tok, traces: list[list[int]], hypotheses: int,
                     beams: int, batch_size: int, progress: bool = False) -> dict[str, list[list[str]]]:
    """Thinking mode with a beam per hypothesis, so Interest Expansion widens the list instead of blending
    into one: each sampled trace, and the trace moved to each other interest it lists
    (`hypothesis_traces`), gets a beam of `beams`. Merged two ways: "hypotheses" by score, "hypotheses-turns"
    taking turns (the model's own trace first)."""
    prompts = r3_prompts(p.histories, domains, hypotheses, HistoryText(sid, tok), tok)
    end_think = tok.convert_tokens_to_ids(END_THINK)
    prefixes, owner = [], []
    for i, (q, t) in enumerate(zip(prompts, traces)):
        variants = hypothesis_traces(tok.decode(t[:-1], skip_special_tokens=False).strip())
        prefixes += [q + t] + [q + tok.encode(f"\n{v}\n", add_special_tokens=False) + [end_think] for v in variants[1:]]
        owner += [i] * len(variants)
    nl = tok.encode("\n\n", add_special_tokens=False)
    recs = recommend(model, [q + nl + [sid.begin_id[domains[i]]] for q, i in zip(prefixes, owner)],
                     [domains[i] for i in owner], sid, tok.pad_token_id, k=beams, num_beams=beams,
                     batch_size=batch_size, progress=progress)
    per_user: list[list[Recommendation]] = [[] for _ in prompts]
    for i, r in zip(owner, recs):
        per_user[i].append(r)
    return {"hypotheses": [by_score(rs, beams) for rs in per_user],
            "hypotheses-turns": [interleave([r.items for r in rs], beams) for rs in per_user]}
