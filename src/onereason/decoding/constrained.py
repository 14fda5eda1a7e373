"""Trie-constrained beam search over item tokens.

The batched path is transformers' `generate` with `TrieLogitsProcessor`; `reference_beam_search`
is a plain, slow beam search written out step by step, kept as the oracle for a parity test.
A prompt ends with the target domain's begin token; generation produces L codes and the end
token, and only prefixes of real SIDs are ever allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from onereason.itemic.sid import SidTokens


class TrieLogitsProcessor(LogitsProcessor):
    """Sets every token that does not extend a valid SID prefix to -inf, for all rows at once."""

    def __init__(self, sid: SidTokens, prompt_len: int, begin_ids: list[int], num_beams: int,
                 tries: list[dict | None] | None = None):
        self.sid, self.prompt_len, self.num_beams = sid, prompt_len, num_beams
        self.begin_ids = begin_ids  # per batch row (before beam expansion)
        self.tries = tries or [None] * len(begin_ids)  # a row's own trie (a subset of items), else all items

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        gen = input_ids[:, self.prompt_len:].tolist()  # [B*beams, t]
        rows, cols = [], []
        for r, prefix in enumerate(gen):
            trie = self.tries[r // self.num_beams] or self.sid.trie
            allowed = trie.get((self.begin_ids[r // self.num_beams], *prefix), ())
            rows.extend([r] * len(allowed))
            cols.extend(allowed)
        mask = torch.full_like(scores, float("-inf"))
        mask[rows, cols] = 0.0
        return scores + mask


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


@torch.no_grad()
def recommend(model, prompts: list[list[int]], domains: list[str], sid: SidTokens, pad_id: int,
              k: int, num_beams: int | None = None, batch_size: int = 32, progress: bool = False,
              tries: list[dict | None] | None = None) -> list[Recommendation]:
    """Top-k distinct valid items per prompt by constrained beam search (num_beams ≥ k).

    Prompts are sorted by length and left-padded in batches, so padding stays small. `tries`
    (per prompt, optional) restricts a prompt to a subset of items (`build_trie` over their rows)."""
    num_beams = num_beams or k
    if num_beams < k:
        raise ValueError(f"num_beams={num_beams} < k={k}: beam width bounds how many items come back")
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Recommendation | None] = [None] * len(prompts)
    n_new = sid.length - 1  # codes + end token
    for start in tqdm(range(0, len(order), batch_size), desc="recommend", disable=not progress):
        idx = order[start:start + batch_size]
        ids, attn = left_pad([prompts[i] for i in idx], pad_id)
        width = ids.shape[1]
        ids, attn = ids.to(device), attn.to(device)
        # Prefill the prompt once per user, then give every beam a copy of its cache: generate
        # would otherwise run the whole prompt once per beam.
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = model(input_ids=ids[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1],
                      use_cache=True).cache
        cache.batch_repeat_interleave(num_beams)
        proc = TrieLogitsProcessor(sid, width, [sid.begin_id[domains[i]] for i in idx], num_beams,
                                   [tries[i] for i in idx] if tries else None)
        gen = model.generate(input_ids=ids, attention_mask=attn, cache=cache, do_sample=False,
                             num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=n_new,
                             min_new_tokens=n_new, logits_processor=LogitsProcessorList([proc]),
                             pad_token_id=pad_id, eos_token_id=None, early_stopping=True,
                             length_penalty=0.0, return_dict_in_generate=True, output_scores=True)
        seqs = gen.sequences[:, width:].tolist()
        scores = gen.sequences_scores.tolist()
        for row, i in enumerate(idx):
            items, item_scores, seen = [], [], set()
            for j in range(row * num_beams, (row + 1) * num_beams):
                item = sid.decode([sid.begin_id[domains[i]], *seqs[j]])
                if item is not None and item not in seen and scores[j] > float("-inf"):
                    seen.add(item)
                    items.append(item)
                    item_scores.append(scores[j])
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
