"""OneReason-Bench's R0-R2 measures on a chat model: R0 perception in the SFT chat format, R1 relation
labels against the dataset's lists and the run's judge, R2 the interests named for a user's next window
(with the "most recent" and "most frequent" heuristics beside them). `bench/suite.py` runs them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from onereason import rundir
from onereason.bench.info_points import info_point_f1
from onereason.bench.stage_report import TITLE_TO_SID_BEAMS, token_f1
from onereason.chat import IM_END, answer_turn, numbered, numbered_list
from onereason.corpus.relational_layer import transition_counts
from onereason.corpus.user_layer import EvalPrompts, HistoryText, eval_prompts
from onereason.decoding.choice import option_logprobs
from onereason.decoding.constrained import left_pad, recommend
from onereason.reasoning.chat_client import ChatClient
from onereason.reasoning.interests import Interests
from onereason.reasoning.judge import RELATIONS, GroundedJudge, candidate_pairs
from onereason.reasoning.sft_data import clip_words, describe_user, find_user, r1_user, r2_user, title_user


def by_domain(values: list[float], domains: list[str]) -> dict[str, float]:
    """Mean for 'all' and per domain."""
    out = {"all": float(np.mean(values)) if values else None}
    for d in sorted(set(domains)):
        v = [x for x, e in zip(values, domains) if e == d]
        out[d] = float(np.mean(v))
    return out


@torch.no_grad()
def greedy_answers(model, tok, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 32) -> list[str]:
    """Greedy assistant answers to chat prompts that already hold the empty think block."""
    model.eval()
    ids_all = tok(prompts, add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids(IM_END)
    out = []
    for s in range(0, len(ids_all), batch_size):
        ids, attn = left_pad(ids_all[s:s + batch_size], tok.pad_token_id)
        gen = model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=end, pad_token_id=tok.pad_token_id)
        out += [a.strip() for a in tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)]
    return out


def chat_perception(model, tok, sid, items: pd.DataFrame, batch_size: int, judge: ChatClient | None = None) -> dict:
    """R0 in the chat format of the SFT data: "What is the title of <SID>?", "Describe <SID>." (token F1,
    and information-point F1 when a judge endpoint is given) and "Which item is "<title>"?"."""
    codec = sid.codec
    titles = [clip_words(t, 30) for t in items["title"]]
    domains = items["domain"].tolist()
    said = greedy_answers(model, tok, [answer_turn(title_user(codec.item_text(i))) for i in items["item_id"]], 48,
                          batch_size)
    f1 = [token_f1(a, t) for a, t in zip(said, titles)]
    captions = greedy_answers(model, tok, [answer_turn(describe_user(codec.item_text(i))) for i in items["item_id"]],
                              64, batch_size)
    described = [token_f1(c, clip_words(d, 40)) for c, d in zip(captions, items["description"])]
    caption = {"description_token_f1": by_domain(described, domains)}
    if judge is not None:
        refs = [f"{t}. {clip_words(d, 60)}" for t, d in zip(items["title"], items["description"])]
        caption["info_point"] = info_point_f1(judge, refs, captions)
    prompts = tok([answer_turn(find_user(t)) for t in items["title"]], add_special_tokens=False)["input_ids"]
    prompts = [p + [sid.begin_id[d]] for p, d in zip(prompts, domains)]
    recs = recommend(model, prompts, domains, sid, tok.pad_token_id, k=1, num_beams=TITLE_TO_SID_BEAMS, batch_size=batch_size)
    exact = [float(bool(r.items) and r.items[0] == i) for r, i in zip(recs, items["item_id"])]
    return {"sid_to_title_f1": by_domain(f1, domains), "title_to_sid_acc": by_domain(exact, domains), **caption,
            "n": len(items), "examples": [{"item": i, "title": t, "said": a}
                                           for i, t, a in list(zip(items["item_id"], titles, said))[:5]]}


def parse_relation(answer: str) -> str | None:
    label = answer.split(":", 1)[0].strip().lower()
    return label if label in RELATIONS else None


def sft_relation_pairs(run_dir: Path, sid) -> set[tuple[str, str]]:
    """The (sorted) item pairs of the run's R1 SFT samples: an R1 test must not ask about them."""
    seen: set[tuple[str, str]] = set()
    sft_path = run_dir / rundir.SFT_DATA
    if sft_path.exists():
        df = pd.read_parquet(sft_path, columns=["task", "user"])
        for user in df.loc[df["task"] == "R1", "user"]:
            ab = [x for x in sid.codec.parse(user) if x]
            seen.add(tuple(sorted(ab[:2])))
    return seen


def relation_pairs(run_dir: Path, items: pd.DataFrame, inter: pd.DataFrame, sid, per_label: int, seed: int
                   ) -> dict[str, list[tuple[str, str, str]]]:
    """(a, b, label) pairs the SFT data never showed: "listed" (the dataset's own complement /
    substitute lists, plus random same-domain pairs on neither list as `unrelated`; `per_label` of each)
    and "judge" (3 × `per_label` candidate pairs labelled by the run's grounded judge)."""
    rng = np.random.default_rng(seed)
    seen = sft_relation_pairs(run_dir, sid)
    known = set(sid.codec.item_ids)
    listed: dict[tuple[str, str], str] = {}
    for col, label in (("substitutes", "substitute"), ("complements", "complement")):  # complement wins ties
        for a, bs in zip(items["item_id"], items[col] if col in items else []):
            for b in bs:
                if b in known and a != b:
                    listed[tuple(sorted((a, b)))] = label
    out: dict[str, list[tuple[str, str, str]]] = {"listed": [], "judge": []}
    for label in ("complement", "substitute"):
        ps = [p for p, lab in listed.items() if lab == label and p not in seen]
        out["listed"] += [(*ps[i], label) for i in rng.permutation(len(ps))[:per_label]]
    if out["listed"]:
        domains = items.groupby("domain")["item_id"].apply(np.array).to_dict()
        listed_domains = sorted({sid.codec.item_domain[a] for a, _, _ in out["listed"]})
        tries = 0
        while sum(lab == "unrelated" for *_, lab in out["listed"]) < per_label and tries < 100 * per_label:
            tries += 1
            d = listed_domains[rng.integers(len(listed_domains))]
            p = tuple(sorted(rng.choice(domains[d], 2, replace=False)))
            if p not in listed and p not in seen:
                out["listed"].append((*p, "unrelated"))
    transitions = transition_counts(inter)
    emb = np.load(run_dir / rundir.EMBEDDINGS)
    cands = [p for p in candidate_pairs(items, emb, transitions) if p not in seen]
    cands = [cands[i] for i in sorted(rng.permutation(len(cands))[:per_label * 3])]
    if cands and (run_dir / rundir.INTERESTS).exists():
        judge = GroundedJudge(items, emb, transitions, Interests.load(run_dir / rundir.INTERESTS))
        out["judge"] = [(a, b, r.label) for (a, b), r in zip(cands, judge.judge(cands))]
    return out


def relations(model, tok, sid, pairs: dict[str, list[tuple[str, str, str]]], batch_size: int) -> dict:
    """R1 accuracy and per-class recall of the model's label against each label source, per domain."""
    out: dict = {}
    for source, ps in pairs.items():
        if not ps:
            continue
        said = greedy_answers(model, tok, [answer_turn(r1_user(sid.codec.item_text(a), sid.codec.item_text(b)))
                                           for a, b, _ in ps], 24, batch_size)
        pred = [parse_relation(a) for a in said]
        truth = [lab for *_, lab in ps]
        domains = [sid.codec.item_domain[a] for a, _, _ in ps]
        out[source] = {"pairs": len(ps), "accuracy": by_domain([float(p == t) for p, t in zip(pred, truth)], domains),
                       "parsed": float(np.mean([p is not None for p in pred])),
                       "recall_per_class": {c: float(np.mean([p == c for p, t in zip(pred, truth) if t == c]))
                                            for c in sorted(set(truth))},
                       "predicted": dict(Counter(p or "unparsed" for p in pred))}
    return out


def prf(pred: list[str], truth: set[str]) -> tuple[float, float, float]:
    hit = len(set(pred) & truth)
    p = hit / len(set(pred)) if pred else 0.0
    r = hit / len(truth)
    return p, r, (2 * p * r / (p + r) if hit else 0.0)


def r2_cases(inter: pd.DataFrame, users: list[str], max_items: int) -> tuple[EvalPrompts, list[list[str]]]:
    """History up to the valid item, and the next window (valid + test items) of the bench's users."""
    v = eval_prompts(inter, "valid", max_items)
    keep = set(v.users)
    v = v.only([u for u in users if u in keep])
    test = eval_prompts(inter, "test", max_items)
    later = dict(zip(test.users, test.truths))
    return v, [t + later.get(u, []) for u, t in zip(v.users, v.truths)]


def interest_expansion(model, tok, sid, interests: Interests, v: EvalPrompts, window: list[list[str]],
                       n: int, batch_size: int) -> dict:
    """R2: the model's named interests for the next window, scored against the window's interests."""
    text = HistoryText(sid, tok)
    said = greedy_answers(model, tok, [answer_turn(r2_user(text.text(h), n)) for h in v.histories], 64, batch_size)
    index = {name: i for i, name in enumerate(interests.names)}
    pred = [[index[x] for x in numbered(a) if x in index][:n] for a in said]
    return _prf_table(pred, window, interests, sid) | {"parsed": float(np.mean([bool(p) for p in pred])),
                                                       "examples": said[:5]}


def rule_interests(history: list, domain: str, interests: Interests, frequent: bool = False) -> list[int]:
    """The interests of the history's items in `domain`, latest first (the first is the last item's interest),
    or most frequent first with ties to the latest: the two rules R2 has to beat."""
    seq = [interests.of[e.item] for e in history if interests.domain[interests.of[e.item]] == domain]
    last = {i: k for k, i in enumerate(seq)}
    return sorted(last, key=lambda i: (-seq.count(i), -last[i]) if frequent else -last[i])


def interest_choice(model, tok, sid, interests: Interests, v: EvalPrompts, n: int, batch_size: int,
                    per_user: bool = False) -> dict:
    """R2 as a choice over known interests: every interest of the next item's domain scored as the answer's
    first entry ("1. <name>;" or "1. <name>.", their probabilities summed; with interest tokens "1. <token>",
    the token's own probability), ranked. Top-1 accuracy, recall@n and the probability given to the next
    item's interest, beside two rules restricted to that domain too: the interest of the last history item
    there, and the most frequent one (ties: the most recent)."""
    text = HistoryText(sid, tok)
    domains = [sid.codec.item_domain[t[0]] for t in v.truths]
    of_domain = {d: [i for i, x in enumerate(interests.domain) if x == d] for d in set(domains)}
    asked = [answer_turn(r2_user(text.text(h), n)) for h in v.histories]
    ends = ("",) if interests.tokens else (";", ".")  # a token decides alone; a name's entry ends one of two ways
    written = [f"{numbered_list([name])}{end}" for name in (interests.token_strings() or interests.names) for end in ends]
    ids = tok(written, add_special_tokens=False)["input_ids"]
    per = len(ends)
    if asked and tok(asked[0] + written[0], add_special_tokens=False)["input_ids"] != (
            tok(asked[0], add_special_tokens=False)["input_ids"] + ids[0]):
        raise ValueError("interest_choice: the tokenizer merges the answer's first tokens into the prompt's last")
    prompts = tok(asked, add_special_tokens=False)["input_ids"]
    scores = option_logprobs(model, prompts, [[ids[per * i + e] for i in of_domain[d] for e in range(per)]
                                              for d in domains], tok.pad_token_id, batch_size)
    truth = [interests.of[t[0]] for t in v.truths]
    ranked, p_truth = [], []
    for d, s, t in zip(domains, scores, truth):
        logp = np.asarray(s) if per == 1 else np.logaddexp(s[0::2], s[1::2])
        prob = np.exp(logp - logp.max())
        prob /= prob.sum()
        ranked.append([of_domain[d][j] for j in np.argsort(-logp, kind="stable")])
        p_truth.append(float(prob[of_domain[d].index(t)]))

    lists = {"model (scored choice)": ranked,
             "last item's interest": [rule_interests(h, d, interests) for h, d in zip(v.histories, domains)],
             "most frequent interest": [rule_interests(h, d, interests, frequent=True)
                                        for h, d in zip(v.histories, domains)]}
    hits = {m: {"top1": [float(bool(r) and r[0] == t) for r, t in zip(rs, truth)],
                f"recall@{n}": [float(t in r[:n]) for r, t in zip(rs, truth)]} for m, rs in lists.items()}
    methods = {m: {k: by_domain(x, domains) for k, x in h.items()} for m, h in hits.items()}
    methods["model (scored choice)"]["p_truth"] = by_domain(p_truth, domains)
    return {"users": len(truth), "n": n, "options": {d: len(c) for d, c in sorted(of_domain.items())},
            "methods": methods,
            "examples": [{"truth": interests.names[t], "ranked": [interests.names[i] for i in r[:n]]}
                         for r, t in list(zip(ranked, truth))[:5]]} | ({"hits": hits, "ranked": ranked} if per_user else {})


def _prf_table(pred: list[list[int]], window: list[list[str]], interests: Interests, sid) -> dict:
    domains = [sid.codec.item_domain[w[0]] for w in window]
    scores = [prf(p, {interests.of[i] for i in w}) for p, w in zip(pred, window)]
    return {m: by_domain([s[j] for s in scores], domains) for j, m in enumerate(("precision", "recall", "f1"))} | {
        "users": len(window)}


def r2_baselines(interests: Interests, v: EvalPrompts, window: list[list[str]], n: int, sid) -> dict:
    recent = [list(dict.fromkeys(interests.of[e.item] for e in reversed(h)))[:n] for h in v.histories]
    frequent = [[i for i, _ in Counter(interests.of[e.item] for e in reversed(h)).most_common(n)] for h in v.histories]
    return {"most recent interests": _prf_table(recent, window, interests, sid),
            "most frequent interests": _prf_table(frequent, window, interests, sid)}
