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


def test_chosen_interests_are_the_n_most_probable_first_entries(tiny_run):
    """`interests: chosen`: the Interests line lists exactly n of the target domain's interests, the n the
    model scores highest as the line's first entry after its own Persona line; citations stay in the history."""
    import pandas as pd

    from onereason import rundir
    from onereason.bench.lists import sample_prompts
    from onereason.corpus.user_layer import HistoryText
    from onereason.decoding.choice import option_logprobs
    from onereason.decoding.two_stage import generate_traces
    from onereason.model.backbone import load_model
    from onereason.protocol import Decoding
    from onereason.reasoning.interests import Interests
    from onereason.reasoning.sft_data import r3_prompts
    from onereason.reasoning.traces import split_trace

    run_dir = tiny_run[0]
    tok, sid = load_sid_tokens(run_dir)
    model = load_model(run_dir / rundir.SFT_MODEL).eval()
    interests = Interests.load(run_dir / rundir.INTERESTS)
    p = sample_prompts(pd.read_parquet(run_dir / rundir.INTERACTIONS), "valid", 50, 6, 0)
    domains = [sid.codec.item_domain[t[0]] for t in p.truths]
    ns = [1, 2, 3, 1, 2, 3]
    prompts = r3_prompts(p.histories, domains, ns, HistoryText(sid, tok), tok)
    names = [interests.names_in(d) for d in domains]
    hist = [[e.item for e in h] for h in p.histories]
    dec = Decoding(interests="chosen", trace_tokens=48)
    traces = generate_traces(model, prompts, hist, sid, tok, dec, batch_size=4, hypotheses=ns, interest_names=names)
    end_think = tok.convert_tokens_to_ids("</think>")
    for prompt, trace, n, opts, h in zip(prompts, traces, ns, names, hist):
        assert trace[-1] == end_think
        text = tok.decode(trace[:-1], skip_special_tokens=False)
        head, listed, _ = split_trace(text)
        assert len(listed) == n and set(listed) <= set(opts)
        before = text[:text.index("Interests:") + len("Interests:")]
        options = [tok(f" 1. {x}{e}", add_special_tokens=False)["input_ids"] for x in opts for e in ";."]
        s = np.array(option_logprobs(model, [prompt + tok(before, add_special_tokens=False)["input_ids"]], [options],
                                     tok.pad_token_id)[0])
        best = [opts[j] for j in np.argsort(-np.logaddexp(s[0::2], s[1::2]), kind="stable")[:n]]
        assert listed == best
        assert set(x for x in sid.codec.parse(text) if x) <= set(h)
    with pytest.raises(ValueError, match="interests=chosen"):
        generate_traces(model, prompts, hist, sid, tok, dec, hypotheses=ns)
