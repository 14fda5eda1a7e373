"""Trace sampling: with `exact_n` the Interests line lists exactly the n hypotheses the prompt asks for."""

import numpy as np
import pytest
import torch

from onereason.decoding.two_stage import InterestCountLogitsProcessor
from onereason.itemic.sid import load_sid_tokens


def test_the_interests_line_stays_open_until_n_and_closes_at_n(tiny_run):
    tok, _ = load_sid_tokens(tiny_run[0])
    proc = InterestCountLogitsProcessor(tok, 1, [2, 2, 2])
    rows = ["Persona: x.\n", "Persona: x.\nInterests: 1. a", "Persona: x.\nInterests: 1. a; 2. b"]
    ids = [tok.encode(r, add_special_tokens=False) for r in rows]
    width = max(map(len, ids))
    batch = torch.tensor([[tok.pad_token_id] + [tok.pad_token_id] * (width - len(x)) + x for x in ids])
    out = proc(batch, torch.zeros(3, len(tok)))
    newline, semicolon = tok.encode("\n", add_special_tokens=False)[0], tok.encode(";", add_special_tokens=False)[0]
    assert torch.isfinite(out[0]).all()  # before the line: nothing banned
    assert out[1, newline] == float("-inf") and out[1, semicolon] == 0  # one of two listed: the line goes on
    assert out[2, semicolon] == float("-inf") and out[2, newline] == 0  # two listed: the line may only end


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_any_sampling_under_the_processor_lists_exactly_n(tiny_run, n):
    """Random choices among a separator, a line break and a word, the processor applied at every step:
    the Interests line always ends with n entries."""
    tok, _ = load_sid_tokens(tiny_run[0])
    pick = [tok.encode(x, add_special_tokens=False)[0] for x in (";", "\n", " a")]
    rng = np.random.default_rng(n)
    for _ in range(20):
        seq = tok.encode("Persona: x.\nInterests: 1.", add_special_tokens=False)
        proc = InterestCountLogitsProcessor(tok, 0, [n])
        while seq[-1] != pick[1] and len(seq) < 200:
            scores = torch.full((1, len(tok)), float("-inf"))
            scores[0, pick] = 0.0
            allowed = torch.isfinite(proc(torch.tensor([seq]), scores)[0]).nonzero().flatten().tolist()
            seq.append(int(rng.choice(allowed)))
        line = tok.decode(seq).split("Interests:")[1]
        assert line.endswith("\n") and line.count(";") == n - 1
