"""Two-stage generation in thinking mode: sample a reasoning trace, then beam-search items.

Stage 1 samples the trace after `<think>` until `</think>`. Inside the trace the model may
cite items, but only items of the user's own history: `CitationLogitsProcessor` lets a begin
token open a citation and then only the codes of history items follow, and forbids code tokens
anywhere else, so every cited item exists in the history by construction.
Stage 2 appends `\\n\\n` and the target domain's begin token to prompt + trace and runs the
trie-constrained beam search (`recommend`), as the reference benchmark does.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from onereason.chat import END_THINK, IM_END, IM_START, THINK
from onereason.decoding.constrained import left_pad
from onereason.itemic.sid import SidTokens, build_trie


def open_citation(seq: list[int], sid: SidTokens) -> int | None:
    """Where the citation still open at the end of `seq` starts (its begin token), else None."""
    begins, ends = set(sid.begin_id.values()), set(sid.end_id.values())
    at = max((j for j, t in enumerate(seq) if t in begins), default=-1)
    return None if at < 0 or any(t in ends for t in seq[at:]) else at


class CitationLogitsProcessor(LogitsProcessor):
    """Outside a citation: no code or end tokens, and only begin tokens of domains in the history.
    Inside one (after a begin token): only continuations of history items."""

    def __init__(self, sid: SidTokens, prompt_len: int, tries: list[dict], banned: list[int]):
        self.sid, self.prompt_len, self.tries = sid, prompt_len, tries
        self.banned = torch.tensor(sorted(set(banned) | set(sid.begin_id.values()) | set(sid.end_id.values())
                                          | set(np.concatenate(sid.code_ids).tolist())))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        for r, gen in enumerate(input_ids[:, self.prompt_len:].tolist()):
            trie = self.tries[r]
            open_at = open_citation(gen, self.sid)
            if open_at is None:  # free text, or a begin token of a domain the history has
                allowed_begin = trie.get((), [])
                out[r, self.banned] = float("-inf")
                if allowed_begin:
                    idx = torch.tensor(allowed_begin)
                    out[r, idx] = scores[r, idx]
            else:
                allowed = torch.tensor(trie.get(tuple(gen[open_at:]), []))
                keep = scores[r, allowed]
                out[r] = float("-inf")
                out[r, allowed] = keep
        return out


def close_trace(seq: list[int], sid: SidTokens, end_think: int) -> list[int]:
    """A trace that ran out of budget: drop an unfinished citation, then close the think block."""
    at = open_citation(seq, sid)
    return (seq if at is None else seq[:at]) + [end_think]


@torch.no_grad()
def generate_traces(model, prompts: list[list[int]], histories: list[list[str]], sid: SidTokens, tok,
                    max_new_tokens: int = 160, temperature: float = 0.6, top_p: float = 0.95,
                    batch_size: int = 32, seed: int = 0, progress: bool = False) -> list[list[int]]:
    """Trace token ids per prompt, each ending with `</think>` (appended if the budget ran out)."""
    end_think = tok.convert_tokens_to_ids(END_THINK)
    banned = [tok.convert_tokens_to_ids(t) for t in (IM_END, IM_START, THINK)] + [tok.pad_token_id]
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(order), batch_size), desc="traces", disable=not progress):
        idx = order[start:start + batch_size]
        ids, attn = left_pad([prompts[i] for i in idx], tok.pad_token_id)
        width = ids.shape[1]
        tries = [build_trie([sid.ids(h) for h in histories[i]]) for i in idx]
        proc = CitationLogitsProcessor(sid, width, tries, banned)
        gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=temperature > 0,
                             temperature=temperature if temperature > 0 else None, top_p=top_p if temperature > 0 else None,
                             top_k=None, max_new_tokens=max_new_tokens, eos_token_id=end_think,
                             pad_token_id=tok.pad_token_id, logits_processor=LogitsProcessorList([proc]))
        for row, i in enumerate(idx):
            seq = gen[row, width:].tolist()
            out[i] = seq[:seq.index(end_think) + 1] if end_think in seq else close_trace(seq, sid, end_think)
    return out
