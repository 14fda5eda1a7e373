"""Trie-constrained beam search over item tokens.

The batched path is written out here (a prefill, then one forward pass per token over all beams);
`reference_beam_search` is a plain, slow beam search, kept as the oracle for a parity test.
A prompt ends with the target domain's begin token; generation produces L codes and the end
token, and only prefixes of real SIDs are ever allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from onereason.itemic.sid import SidTokens


@dataclass
class Recommendation:
    items: list[str]
    scores: list[float]


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: generation continues every row from the last column."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        attn[row, width - len(p):] = 1
    return ids, attn


def _allowed(logp: torch.Tensor, prefixes: list[tuple[int, ...]], tries: list[dict]) -> torch.Tensor:
    """logp with every token that does not extend its row's prefix in its row's trie set to -inf."""
    rows, cols = [], []
    for r, (prefix, trie) in enumerate(zip(prefixes, tries)):
        allowed = trie.get(prefix, ())
        rows.extend([r] * len(allowed))
        cols.extend(allowed)
    mask = torch.full_like(logp, float("-inf"))
    mask[rows, cols] = 0.0
    return logp + mask


@torch.no_grad()
def recommend(model, prompts: list[list[int]], domains: list[str], sid: SidTokens, pad_id: int,
              k: int, num_beams: int | None = None, batch_size: int = 32, progress: bool = False,
              tries: list[dict | None] | None = None) -> list[Recommendation]:
    """Top-k distinct valid items per prompt by constrained beam search (num_beams ≥ k).

    A prompt ends with the domain's begin token. One forward pass over the left-padded prompts
    gives the first code's distribution; each further token is one forward pass over all beams,
    whose caches are re-selected by parent after every step. A beam's score is the sum of its
    tokens' log-probabilities (end token included), as in `reference_beam_search`. `tries`
    (per prompt, optional) restricts a prompt to a subset of items (`build_trie` over their rows)."""
    num_beams = num_beams or k
    if num_beams < k:
        raise ValueError(f"num_beams={num_beams} < k={k}: beam width bounds how many items come back")
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Recommendation | None] = [None] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc="recommend", disable=not progress):
        idx = order[start:start + batch_size]
        ids, attn = left_pad([prompts[i] for i in idx], pad_id)
        ids, attn = ids.to(device), attn.to(device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache, logp = res.cache, torch.log_softmax(res.logits[:, -1].float(), dim=-1)
        row_tries = [(tries[i] if tries and tries[i] is not None else sid.trie) for i in idx]
        prefixes = [(sid.begin_id[domains[i]],) for i in idx]  # one live beam per prompt at first
        scores = torch.zeros(len(idx), 1, device=device)
        last_pos = pos[:, -1]
        for step in range(sid.length - 1):  # codes, then the end token
            beams_now = scores.shape[1]
            cand = scores.reshape(-1, 1) + _allowed(logp, prefixes, [t for t in row_tries for _ in range(beams_now)])
            cand = cand.view(len(idx), -1)  # [prompts, beams_now * vocab]
            scores, flat = cand.topk(min(num_beams, cand.shape[1]), dim=-1)
            parent, token = flat // logp.shape[-1], flat % logp.shape[-1]
            rows = (torch.arange(len(idx), device=device)[:, None] * beams_now + parent).reshape(-1)
            prefixes = [prefixes[r] + (t,) for r, t in zip(rows.tolist(), token.reshape(-1).tolist())]
            if step == sid.length - 2:
                break
            cache.batch_select_indices(rows)
            attn = torch.cat([attn[rows], torch.ones(len(rows), 1, dtype=attn.dtype, device=device)], dim=1)
            last_pos = last_pos[rows] + 1
            res = model(input_ids=token.reshape(-1, 1), attention_mask=attn, position_ids=last_pos[:, None],
                        cache=cache, use_cache=True)
            cache, logp = res.cache, torch.log_softmax(res.logits[:, -1].float(), dim=-1)
        final = scores.tolist()
        for row, i in enumerate(idx):
            items, item_scores = [], []
            for j in range(scores.shape[1]):
                item = sid.decode(list(prefixes[row * scores.shape[1] + j]))
                if item is not None and final[row][j] > float("-inf"):
                    items.append(item)
                    item_scores.append(final[row][j])
            out[i] = Recommendation(items[:k], item_scores[:k])
    return out  # type: ignore[return-value]


@torch.no_grad()
def reference_beam_search(model, prompt: list[int], domain: str, sid: SidTokens, num_beams: int
                          ) -> Recommendation:
    """Textbook beam search, one prompt, no cache, no batching: the oracle for `recommend`."""
    model.eval()
    begin = sid.begin_id[domain]
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    for _ in range(sid.length - 1):
        candidates = []
        for tokens, score in beams:
            logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            for t in sid.trie.get((begin, *tokens), ()):
                candidates.append((tokens + [t], score + float(logp[t])))
        candidates.sort(key=lambda c: -c[1])
        beams = candidates[:num_beams]
    items = [sid.decode([begin, *tokens]) for tokens, _ in beams]
    return Recommendation([i for i in items if i is not None], [s for _, s in beams])
