"""Scored options equal what a plain forward of prompt + option gives, whatever the mix of lengths."""

import pytest
import torch

from onereason.decoding.choice import option_logprobs
from onereason.model.backbone import build_model


def _plain(model, prompt, option):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + option])).logits[0].float(), dim=-1)
    return float(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(option)))


@pytest.mark.parametrize("fast", [True, False])
def test_option_logprobs_match_a_plain_forward(fast):
    model = build_model("tiny", 50, seed=0).eval()
    if not fast:  # the generic path: the model's own forward over the buffer
        model.config.rope_parameters = {**model.config.rope_parameters, "rope_type": "dynamic", "factor": 2.0}
    prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    options = [[[20], [21, 22, 23], [21, 22]], [[30, 31]], [[5], [6], [7], [8, 9, 10, 11]]]
    got = option_logprobs(model, prompts, options, pad_id=1, batch_size=2)
    for p, opts, scores in zip(prompts, options, got):
        assert len(scores) == len(opts)
        for o, s in zip(opts, scores):
            assert s == pytest.approx(_plain(model, p, o), abs=1e-4)


def test_an_empty_option_is_an_error():
    with pytest.raises(ValueError, match="no tokens"):
        option_logprobs(build_model("tiny", 50), [[3, 4]], [[[5], []]], pad_id=1)
