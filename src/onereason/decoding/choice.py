"""A choice among known answers, scored rather than sampled: log P(option | prompt) for every option.

Interest Expansion asks which of a domain's known interests comes next; spelling one out by sampling
mixes the choice with sampling noise and cannot say how sure the model is. Scoring each option gives a
distribution that can be read, ranked and checked. The prompts are prefilled once; a prompt's options
then run side by side in its row, in one forward step, each option seeing the prompt and its own earlier
tokens only (the tree attention of `constrained.recommend`).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from onereason.decoding.constrained import prefill
from onereason.decoding.step import decoder


@torch.no_grad()
def option_logprobs(model, prompts: list[list[int]], options: list[list[list[int]]], pad_id: int,
                    batch_size: int = 16, progress: bool = False) -> list[list[float]]:
    """For every prompt, the summed log-probability of each of its options (token-id lists) continuing it."""
    if any(not o for opts in options for o in opts):
        raise ValueError("option_logprobs: an option has no tokens")
    if model.training:
        model.eval()
    device = next(model.parameters()).device
    step = decoder(model)
    out: list[list[float]] = []
    for s in tqdm(range(0, len(prompts), batch_size), desc="choice", disable=not progress):
        opts = options[s:s + batch_size]
        width = max(1, max(sum(map(len, o)) for o in opts))
        kv, first, prompt_mask = prefill(model, prompts[s:s + batch_size], pad_id, device, None, room=width)
        n, length = prompt_mask.shape
        tokens = torch.full((n, width), pad_id, dtype=torch.long)
        positions = torch.zeros((n, width), dtype=torch.long)
        own = torch.eye(width, dtype=torch.bool).repeat(n, 1, 1)  # padding sees itself, so no row is all -inf
        starts = []
        for r, row in enumerate(opts):
            at, nxt, begins = 0, int(prompt_mask[r].sum()), []
            for o in row:
                tokens[r, at:at + len(o)] = torch.tensor(o)
                positions[r, at:at + len(o)] = torch.arange(nxt, nxt + len(o))
                own[r, at:at + len(o), at:at + len(o)] = torch.ones(len(o), len(o), dtype=torch.bool).tril()
                begins.append(at)
                at += len(o)
            starts.append(begins)
        mask = torch.cat([prompt_mask[:, None, :].expand(-1, width, -1), own.to(device)], dim=2)[:, None]
        logp = torch.log_softmax(step(tokens.to(device), positions.to(device), kv, length, mask).float(), dim=-1)
        for r, (row, begins) in enumerate(zip(opts, starts)):
            scores = []
            for o, at in zip(row, begins):
                later = logp[r, at:at + len(o) - 1].gather(-1, torch.tensor(o[1:], device=device)[:, None]).sum()
                scores.append(float(first[r, o[0]] + later))
            out.append(scores)
    return out
