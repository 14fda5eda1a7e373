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
from onereason.decoding.step import KV, decoder
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
    """Per prompt (its token ids, exactly), the keys and values of every layer as one tensor [layers, 2,
    heads, length, dim] and the next token's log-probabilities: a prompt seen before skips its prefill.
    A changed history or trace is a different prompt, so nothing needs invalidating. Least recently used
    entries go past `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, prompt: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
        entry = self.entries.get(prompt)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(prompt)
        return entry

    def put(self, prompt: tuple[int, ...], kv: torch.Tensor, logp: torch.Tensor) -> None:
        size = kv.nbytes + logp.nbytes
        if prompt in self.entries or size > self.max_bytes:
            return
        self.entries[prompt] = (kv, logp)
        self.bytes += size
        while self.bytes > self.max_bytes:
            kv, logp = self.entries.popitem(last=False)[1]
            self.bytes -= kv.nbytes + logp.nbytes


def prefill(model, prompts: list[list[int]], pad_id: int, device, cache: PromptCache | None, room: int
             ) -> tuple[KV, torch.Tensor, torch.Tensor]:
    """The left-padded prompts' keys and values in a buffer with `room` free places after them (for the
    beams' tokens), the next token's log-probabilities and the prompt mask. With a cache, prompts seen
    before are read from it and only the others run."""
    keys = [tuple(p) for p in prompts]
    found = [cache.get(key) for key in keys] if cache is not None else [None] * len(prompts)
    todo = [row for row, f in enumerate(found) if f is None]
    width = max(map(len, prompts))
    if todo:
        ids, attn = left_pad([prompts[r] for r in todo], pad_id)
        ids, attn = ids.to(device), attn.to(device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        logp = torch.log_softmax(res.logits[:, -1].float(), dim=-1)
        layers = res.cache.layers
        if cache is None:  # the batch as it came out
            buf = _buffer(layers[0].keys, len(layers), len(prompts), width + room)
            for i, layer in enumerate(layers):
                buf[i, 0, :, :, :width], buf[i, 1, :, :, :width] = layer.keys, layer.values
            return _per_layer(buf), logp, attn.bool()
        for j, r in enumerate(todo):
            pad = ids.shape[1] - len(prompts[r])
            found[r] = (torch.stack([torch.stack([layer.keys[j, :, pad:], layer.values[j, :, pad:]])
                                     for layer in layers]), logp[j].clone())
            cache.put(keys[r], *found[r])
    first = found[0][0]  # [layers, 2, heads, length, dim]
    buf = _buffer(first[0, 0], first.shape[0], len(prompts), width + room)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool, device=device)
    for r, (kv, _) in enumerate(found):
        pad = width - kv.shape[-2]
        buf[:, :, r, :, :pad] = 0  # attended by no one, but kept finite (0 × NaN would poison the sum)
        buf[:, :, r, :, pad:width] = kv
        mask[r, pad:] = True
    return _per_layer(buf), torch.stack([f[1] for f in found]), mask


def _buffer(like: torch.Tensor, layers: int, batch: int, capacity: int) -> torch.Tensor:
    """An uninitialised key/value buffer [layers, 2, batch, heads, capacity, dim] for tensors like `like`."""
    return like.new_empty(layers, 2, batch, like.shape[-3], capacity, like.shape[-1])


def _per_layer(buf: torch.Tensor) -> KV:
    return [(layer[0], layer[1]) for layer in buf]


def _candidates(scores: torch.Tensor, logp: torch.Tensor, prefixes: list[tuple[int, ...]], tries: list[dict],
                beams: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best `beams` extensions per prompt of the live beams (`scores` [prompts, beams now], `logp`
    [prompts * beams now, vocab], a prefix and trie per beam): their scores, parent beams and tokens.
    Only tokens that extend a beam's prefix in its trie are candidates, so the top-k runs over them
    rather than over beams × vocabulary; a prompt with fewer candidates than `beams` pads with -inf."""
    n, now = scores.shape
    children = [trie.get(prefix, ()) for prefix, trie in zip(prefixes, tries)]
    counts = torch.tensor([len(c) for c in children], device=logp.device)
    rows = torch.repeat_interleave(torch.arange(len(children), device=logp.device), counts)
    cols = torch.tensor(list(chain.from_iterable(children)), dtype=torch.long, device=logp.device)
    value = scores.reshape(-1)[rows] + logp[rows, cols]
    prompt = rows // now
    per_prompt = torch.bincount(prompt, minlength=n)
    if not per_prompt.all():
        raise ValueError(f"prompt {int((per_prompt == 0).nonzero()[0])} of the batch: its trie allows no token after "
                         f"its beams' prefixes (an empty item subset?)")
    start = per_prompt.cumsum(0) - per_prompt
    padded = value.new_full((n, int(per_prompt.max())), float("-inf"))
    padded[prompt, torch.arange(len(rows), device=logp.device) - start[prompt]] = value
    top, slot = padded.topk(min(beams, padded.shape[1]), dim=-1)
    pick = start[:, None] + torch.minimum(slot, per_prompt[:, None] - 1)  # padding: any candidate, at -inf
    return top, rows[pick] - torch.arange(n, device=logp.device)[:, None] * now, cols[pick]


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
    step_fn = decoder(model)
    for start in tqdm(range(0, len(order), batch_size), desc="recommend", disable=not progress):
        idx = order[start:start + batch_size]
        chosen = sid.length - 1 if score_end else sid.length - 2  # tokens chosen by score: codes (, end token)
        kv, logp, prompt_mask = prefill(model, [prompts[i] for i in idx], pad_id, device, prompt_cache,
                                         room=num_beams * (chosen - 1))
        n, length = prompt_mask.shape
        row_tries = [(tries[i] if tries and tries[i] is not None else sid.trie) for i in idx]
        prefixes = [(sid.begin_id[domains[i]],) for i in idx]  # one live beam per prompt at first
        scores = torch.zeros(n, 1, device=device)
        next_pos = prompt_mask.sum(-1, keepdim=True)  # the position of every beam's next token
        seen = torch.zeros(n, 1, 0, dtype=torch.bool, device=device)  # [prompt, beam, earlier beam tokens]
        for step in range(chosen):
            beams_now = scores.shape[1]
            scores, parent, token = _candidates(scores, logp, prefixes, [t for t in row_tries for _ in range(beams_now)],
                                                num_beams)
            rows = (torch.arange(n, device=device)[:, None] * beams_now + parent).reshape(-1)
            prefixes = [prefixes[r] + (t,) for r, t in zip(rows.tolist(), token.reshape(-1).tolist())]
            if step == chosen - 1:
                break
            beams = scores.shape[1]
            # a beam sees its parent's ancestors, then itself among this step's tokens
            seen = torch.cat([seen.gather(1, parent[:, :, None].expand(-1, -1, seen.shape[2])),
                              torch.eye(beams, dtype=torch.bool, device=device).expand(n, -1, -1)], dim=2)
            mask = torch.cat([prompt_mask[:, None, :].expand(-1, beams, -1), seen], dim=2)[:, None]
            logits = step_fn(token, next_pos.expand(-1, beams), kv, length, mask)
            next_pos, length = next_pos + 1, length + beams
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
