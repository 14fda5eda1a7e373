"""Two-stage generation in thinking mode: sample a reasoning trace, then beam-search items.

Stage 1 samples the trace after `<think>` until `</think>`. Inside the trace the model may
cite items, but only items of the user's own history: `CitationLogitsProcessor` lets a begin
token open a citation and then only the codes of history items follow, and forbids code tokens
anywhere else, so every cited item exists in the history by construction.
With `exact_n`, `InterestCountLogitsProcessor` keeps the Interests line open until it lists n
hypotheses and closes it then, so a trace asked for n interests lists n. With `interests: chosen` the
Interests line is not sampled at all: after the sampled Persona line, every interest of the target
domain is scored as the line's first entry (`choice.option_logprobs`), the n most probable are written,
and the Transition line is sampled after them.
Stage 2 appends `\\n\\n` and the target domain's begin token to prompt + trace and runs the
trie-constrained beam search (`recommend`), as the reference benchmark does.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from onereason.chat import END_THINK, IM_END, IM_START, PARTS, THINK, numbered_list
from onereason.decoding.choice import option_logprobs
from onereason.decoding.constrained import left_pad
from onereason.itemic.sid import SidTokens, build_trie
from onereason.protocol import Decoding


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


@functools.lru_cache(maxsize=8)
def tokens_containing(tok, text: str) -> torch.Tensor:
    """Ids of the tokens whose text contains `text` (computed once per tokenizer)."""
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    return torch.tensor([i for i, t in enumerate(vocab) if t is not None and text in tok.convert_tokens_to_string([t])])


class InterestCountLogitsProcessor(LogitsProcessor):
    """Inside the trace's Interests line ("Interests: 1. a; 2. b; 3. c."): no line break before the
    n − 1 separators "; " are written, no separator after them, so the line lists exactly n."""

    def __init__(self, tok, prompt_len: int, ns: list[int]):
        self.tok, self.prompt_len, self.ns = tok, prompt_len, ns
        self.semicolon, self.newline = tokens_containing(tok, ";"), tokens_containing(tok, "\n")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        for r, gen in enumerate(input_ids[:, self.prompt_len:].tolist()):
            text = self.tok.decode(gen, skip_special_tokens=False)
            at = text.find(PARTS[1])
            if at < 0 or "\n" in text[at:]:
                continue  # before the Interests line, or past it
            out[r, self.newline if text[at:].count(";") < self.ns[r] - 1 else self.semicolon] = float("-inf")
        return out


def close_trace(seq: list[int], sid: SidTokens, end_think: int) -> list[int]:
    """A trace that ran out of budget: drop an unfinished citation, then close the think block."""
    at = open_citation(seq, sid)
    return (seq if at is None else seq[:at]) + [end_think]


@torch.no_grad()
def generate_traces(model, prompts: list[list[int]], histories: list[list[str]], sid: SidTokens, tok,
                    decoding: Decoding, batch_size: int = 32, seed: int = 0, progress: bool = False,
                    hypotheses: int | list[int] | None = None, interest_names: list[list[str]] | None = None
                    ) -> list[list[int]]:
    """Trace token ids per prompt, each ending with `</think>` (appended if the budget ran out).
    `hypotheses`: the n each prompt asks for (one for all, or one per prompt); with `decoding.exact_n`
    the trace lists exactly that many. `interest_names`: per prompt, the names of its target domain's
    interests, which `decoding.interests == "chosen"` needs."""
    ns = hypotheses if isinstance(hypotheses, list) else [hypotheses] * len(prompts)
    torch.manual_seed(seed)
    if decoding.interests == "chosen":
        if interest_names is None or any(n is None for n in ns):
            raise ValueError("decoding.interests=chosen needs the interests of each prompt's domain and its n")
        return _chosen_interest_traces(model, prompts, histories, sid, tok, decoding, batch_size, progress, ns,
                                       interest_names)
    exact = decoding.exact_n and all(n is not None for n in ns)
    end_think = tok.convert_tokens_to_ids(END_THINK)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(order), batch_size), desc="traces", disable=not progress):
        idx = order[start:start + batch_size]
        procs = [InterestCountLogitsProcessor(tok, max(len(prompts[i]) for i in idx), [ns[i] for i in idx])] if exact else []
        gen = _sample(model, [prompts[i] for i in idx], [histories[i] for i in idx], sid, tok, decoding,
                      decoding.trace_tokens, procs)
        for row, i in enumerate(idx):
            seq = gen[row]
            out[i] = seq[:seq.index(end_think) + 1] if end_think in seq else close_trace(seq, sid, end_think)
    return out


def _sample(model, prompts: list[list[int]], histories: list[list[str]], sid: SidTokens, tok, decoding: Decoding,
            max_new_tokens: int, extra: list[LogitsProcessor] = (), stop: StoppingCriteria | None = None
            ) -> list[list[int]]:
    """Sampled continuations of the prompts (left-padded as one batch) under the citation rule, up to
    `</think>`, `max_new_tokens` or `stop`: the new token ids per prompt."""
    temperature = decoding.temperature
    banned = [tok.convert_tokens_to_ids(t) for t in (IM_END, IM_START, THINK)] + [tok.pad_token_id]
    model.eval()
    device = next(model.parameters()).device
    ids, attn = left_pad(prompts, tok.pad_token_id)
    width = ids.shape[1]
    tries = [build_trie([sid.ids(h) for h in hist]) for hist in histories]
    procs = LogitsProcessorList([CitationLogitsProcessor(sid, width, tries, banned), *extra])
    gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=temperature > 0,
                         temperature=temperature if temperature > 0 else None,
                         top_p=decoding.top_p if temperature > 0 else None, top_k=None, max_new_tokens=max_new_tokens,
                         eos_token_id=tok.convert_tokens_to_ids(END_THINK), pad_token_id=tok.pad_token_id,
                         logits_processor=procs, stopping_criteria=StoppingCriteriaList([stop] if stop else []))
    return [row[width:].tolist() for row in gen]


class LineEnd(StoppingCriteria):
    """Done once a row's new text holds `lines` line breaks (the trace opens with one)."""

    def __init__(self, tok, prompt_len: int, lines: int = 2):
        self.tok, self.prompt_len, self.lines = tok, prompt_len, lines

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tok.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=False)
        return torch.tensor([t.count("\n") >= self.lines for t in texts], device=input_ids.device)


def _chosen_interest_traces(model, prompts, histories, sid, tok, decoding: Decoding, batch_size: int, progress: bool,
                            ns: list[int], names: list[list[str]]) -> list[list[int]]:
    """Persona sampled, Interests chosen by score (the n most probable first entries), Transition sampled."""
    end_think = tok.convert_tokens_to_ids(END_THINK)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(order), batch_size), desc="traces", disable=not progress):
        idx = order[start:start + batch_size]
        batch, hist = [prompts[i] for i in idx], [histories[i] for i in idx]
        persona = _sample(model, batch, hist, sid, tok, decoding, decoding.trace_tokens,
                          stop=LineEnd(tok, max(map(len, batch))))
        heads = []
        for seq in persona:
            seq = seq[:seq.index(end_think)] if end_think in seq else seq
            text = tok.decode(seq, skip_special_tokens=False)
            cut = text.find("\n", 1)
            if cut < 0:  # the line ran out of budget: drop an unfinished citation
                text = tok.decode(close_trace(seq, sid, end_think)[:-1], skip_special_tokens=False).rstrip()
            heads.append((text[:cut] if cut >= 0 else text) + f"\n{PARTS[1]}")
        head_ids = [tok(h, add_special_tokens=False)["input_ids"] for h in heads]
        options = [[tok(f" {numbered_list([name])}{end}", add_special_tokens=False)["input_ids"]
                    for name in names[i] for end in ";."] for i in idx]
        scores = option_logprobs(model, [p + h for p, h in zip(batch, head_ids)], options, tok.pad_token_id, len(idx))
        lines = []
        for i, head, s in zip(idx, heads, scores):
            logp = np.logaddexp(s[0::2], s[1::2])
            top = [names[i][j] for j in np.argsort(-logp, kind="stable")[:ns[i]]]
            lines.append(f"{head} {numbered_list(top)}.\n{PARTS[2]}")
        line_ids = [tok(x, add_special_tokens=False)["input_ids"] for x in lines]
        left = max(1, decoding.trace_tokens - max(map(len, line_ids)))
        rest = _sample(model, [p + x for p, x in zip(batch, line_ids)], hist, sid, tok, decoding, left)
        for i, x, seq in zip(idx, line_ids, rest):
            seq = seq[:seq.index(end_think) + 1] if end_think in seq else close_trace(seq, sid, end_think)
            out[i] = x + seq
    return out
