"""Trie-constrained beam search over item tokens.

The batched path is written out here: a prefill of the prompts, then one forward pass per token
over all beams. The beams of a prompt share its key/value cache (tree attention): a step feeds the
prompt's beams as one row of tokens under a mask that lets each beam see the prompt, its own
ancestors and itself, so nothing of the prompt is copied per beam or re-selected between steps.
`PromptCache` keeps prompts' keys and values between calls (a served user's prompt is the same
until their history or trace changes). `reference_beam_search` is a plain, slow beam search, kept
as the oracle for a parity test. A prompt ends with the target domain's begin token; generation
produces L codes and the end token, and only prefixes of real SIDs are ever allowed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain

import torch
from tqdm.auto import tqdm
from onereason.decoding.step import KV, decode_step
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


class PromptCache:
    """Per prompt (its token ids, exactly), the keys and values of every layer and the next token's
    log-probabilities: a prompt seen before skips its prefill. A changed history or trace is a
    different prompt, so nothing needs invalidating. Least recently used entries go past `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[tuple[int, ...], tuple[KV, torch.Tensor]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, prompt: tuple[int, ...]) -> tuple[KV, torch.Tensor] | None:
        entry = self.entries.get(prompt)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(prompt)
        return entry

    def put(self, prompt: tuple[int, ...], kv: KV, logp: torch.Tensor) -> None:
        size = _nbytes(kv, logp)
        if prompt in self.entries or size > self.max_bytes:
            return
        self.entries[prompt] = (kv, logp)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self.bytes -= _nbytes(*self.entries.popitem(last=False)[1])


def _nbytes(kv: KV, logp: torch.Tensor) -> int:
    return sum(k.nbytes + v.nbytes for k, v in kv) + logp.nbytes


def _prefill(model, prompts: list[list[int]], pad_id: int, device, cache: PromptCache | None
             ) -> tuple[KV, torch.Tensor, torch.Tensor]:
    """The left-padded prompts' keys and values, the next token's log-probabilities and the prompt
    mask. With a cache, prompts seen before are read from it and only the others run."""
    keys = [tuple(p) for p in prompts]
    found = [cache.get(key) for key in keys] if cache is not None else [None] * len(prompts)
    todo = [row for row, f in enumerate(found) if f is None]
    if todo:
        ids, attn = left_pad([prompts[r] for r in todo], pad_id)
        ids, attn = ids.to(device), attn.to(device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        logp = torch.log_softmax(res.logits[:, -1].float(), dim=-1)
        if cache is None:  # the batch as it came out
            return [(layer.keys, layer.values) for layer in res.cache.layers], logp, attn.bool()
        width = ids.shape[1]
        for j, r in enumerate(todo):
            n = len(prompts[r])
            found[r] = ([(layer.keys[j, :, width - n:].clone(), layer.values[j, :, width - n:].clone())
                         for layer in res.cache.layers], logp[j].clone())
            cache.put(keys[r], *found[r])
    width = max(map(len, prompts))
    mask = torch.zeros(len(prompts), width, dtype=torch.bool, device=device)
    layers = []
    for layer in range(len(found[0][0])):
        k0 = found[0][0][layer][0]
        k = k0.new_zeros(len(prompts), k0.shape[0], width, k0.shape[-1])
        v = torch.zeros_like(k)
        for r, (kv, _) in enumerate(found):
            n = kv[layer][0].shape[1]
            k[r, :, width - n:], v[r, :, width - n:] = kv[layer]
            mask[r, width - n:] = True
        layers.append((k, v))
    return layers, torch.stack([f[1] for f in found]), mask


def _allowed(logp: torch.Tensor, prefixes: list[tuple[int, ...]], tries: list[dict]) -> torch.Tensor:
    """logp with every token that does not extend its row's prefix in its row's trie set to -inf."""
    children = [trie.get(prefix, ()) for prefix, trie in zip(prefixes, tries)]
    rows = torch.repeat_interleave(torch.arange(len(children), device=logp.device),
                                   torch.tensor([len(c) for c in children], device=logp.device))
    cols = torch.tensor(list(chain.from_iterable(children)), dtype=torch.long, device=logp.device)
    out = torch.full_like(logp, float("-inf"))
    out[rows, cols] = logp[rows, cols]
    return out


@torch.no_grad()
def recommend(model, prompts: list[list[int]], domains: list[str], sid: SidTokens, pad_id: int,
              k: int, num_beams: int | None = None, batch_size: int = 32, progress: bool = False,
              tries: list[dict | None] | None = None, prompt_cache: PromptCache | None = None,
              score_end: bool = True) -> list[Recommendation]:
    """Top-k distinct valid items per prompt by constrained beam search (num_beams ≥ k).

    A prompt ends with the domain's begin token. One forward pass over the left-padded prompts
    gives the first code's distribution; each further token is one forward pass over all beams,
    a prompt's beams side by side in its row of the cache (see the module docstring). A beam's score
    is the sum of its tokens' log-probabilities (end token included), as in `reference_beam_search`.
    `tries` (per prompt, optional) restricts a prompt to a subset of items (`build_trie` over their
    rows); `prompt_cache` skips the prefill of prompts it holds. `score_end=False` appends the end token,
    which the trie forces, without the forward that would score it: scores then leave out its
    log-probability (near 0 for a trained model), and a batch costs one forward less."""
    num_beams = num_beams or k
    if num_beams < k:
        raise ValueError(f"num_beams={num_beams} < k={k}: beam width bounds how many items come back")
    if model.training:
        model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Recommendation | None] = [None] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc="recommend", disable=not progress):
        idx = order[start:start + batch_size]
        kv, logp, prompt_mask = _prefill(model, [prompts[i] for i in idx], pad_id, device, prompt_cache)
        n = prompt_mask.shape[0]
        row_tries = [(tries[i] if tries and tries[i] is not None else sid.trie) for i in idx]
        prefixes = [(sid.begin_id[domains[i]],) for i in idx]  # one live beam per prompt at first
        scores = torch.zeros(n, 1, device=device)
        next_pos = prompt_mask.sum(-1, keepdim=True)  # the position of every beam's next token
        seen = torch.zeros(n, 1, 0, dtype=torch.bool, device=device)  # [prompt, beam, earlier beam tokens]
        chosen = sid.length - 1 if score_end else sid.length - 2  # tokens chosen by score: codes (, end token)
        for step in range(chosen):
            beams_now = scores.shape[1]
            cand = scores.reshape(-1, 1) + _allowed(logp, prefixes, [t for t in row_tries for _ in range(beams_now)])
            cand = cand.view(n, -1)  # [prompts, beams_now * vocab]
            scores, flat = cand.topk(min(num_beams, cand.shape[1]), dim=-1)
            parent, token = flat // logp.shape[-1], flat % logp.shape[-1]
            rows = (torch.arange(n, device=device)[:, None] * beams_now + parent).reshape(-1)
            prefixes = [prefixes[r] + (t,) for r, t in zip(rows.tolist(), token.reshape(-1).tolist())]
            if step == chosen - 1:
                break
            beams = scores.shape[1]
            # a beam sees its parent's ancestors, then itself among this step's tokens
            seen = torch.cat([seen.gather(1, parent[:, :, None].expand(-1, -1, seen.shape[2])),
                              torch.eye(beams, dtype=torch.bool, device=device).expand(n, -1, -1)], dim=2)
            mask = torch.cat([prompt_mask[:, None, :].expand(-1, beams, -1), seen], dim=2)[:, None]
            logits, kv = decode_step(model, token, next_pos.expand(-1, beams), kv, mask)
            next_pos = next_pos + 1
            logp = torch.log_softmax(logits.float(), dim=-1).reshape(n * beams, -1)
        if not score_end:  # the end token, which the trie forces, appended unscored
            prefixes = [p + tuple(row_tries[r // scores.shape[1]].get(p, (-1,))[:1]) for r, p in enumerate(prefixes)]
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
def reference_beam_search(model, prompt: list[int], domain: str, sid: SidTokens, num_beams: int,
                          score_end: bool = True) -> Recommendation:
    """Textbook beam search, one prompt, no cache, no batching: the oracle for `recommend`."""
    model.eval()
    begin = sid.begin_id[domain]
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    for step in range(sid.length - 1):
        candidates = []
        for tokens, score in beams:
            logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            scored = score_end or step < sid.length - 2
            for t in sid.trie.get((begin, *tokens), ()):
                candidates.append((tokens + [t], score + (float(logp[t]) if scored else 0.0)))
        candidates.sort(key=lambda c: -c[1])
        beams = candidates[:num_beams]
    items = [sid.decode([begin, *tokens]) for tokens, _ in beams]
    return Recommendation([i for i in items if i is not None], [s for _, s in beams])
