"""The written-out decoding step computes what the model's own forward computes, on a tree of beams."""

import pytest
import torch
from transformers import DynamicCache

from onereason.decoding.constrained import PromptCache
from onereason.decoding.step import decode_step, written_out
from onereason.model.backbone import build_model


@pytest.mark.parametrize("beams", [1, 3])
def test_written_out_step_matches_the_forward_with_a_tree_mask(beams):
    model = build_model("tiny", 50, seed=0).eval()
    assert written_out(model)
    torch.manual_seed(0)
    prompt = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        kv = [(layer.keys, layer.values) for layer in model(input_ids=prompt, use_cache=True).cache.layers]
    tokens, positions = torch.randint(0, 50, (2, beams)), torch.full((2, beams), 7)
    mask = torch.cat([torch.ones(2, beams, 7, dtype=torch.bool),
                      torch.eye(beams, dtype=torch.bool).expand(2, -1, -1)], dim=2)[:, None]
    logits, new = decode_step(model, tokens, positions, kv, mask)
    with torch.no_grad():
        ref = model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                    cache=DynamicCache(kv, config=model.config), use_cache=True)
    assert torch.allclose(logits, ref.logits, atol=1e-5)
    for (k, v), layer in zip(new, ref.cache.layers):
        assert k.shape[2] == 7 + beams and torch.allclose(k, layer.keys, atol=1e-6)
        assert torch.allclose(v, layer.values, atol=1e-6)


def test_prompt_cache_keeps_the_recent_within_its_bytes():
    kv = [(torch.zeros(2, 10, 4), torch.zeros(2, 10, 4))]  # 640 bytes, and 40 for the log-probabilities
    cache = PromptCache(max_bytes=1500)
    for p in [(1,), (2,), (1,), (3,)]:  # (1,) read again before (3,) arrives: (2,) is the oldest
        if cache.get(p) is None:
            cache.put(p, kv, torch.zeros(10))
    assert list(cache.entries) == [(1,), (3,)] and cache.bytes == 1360
    assert (cache.hits, cache.misses) == (1, 3)
