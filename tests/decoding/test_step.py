"""The written-out decoding step computes what the model's own forward computes, on a tree of beams."""

import pytest
import torch
from transformers import DynamicCache

from onereason.decoding.constrained import PromptCache
from onereason.decoding.step import Decoder, decoder, written_out
from onereason.model.backbone import build_model


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("fast", [True, False])
def test_step_matches_the_forward_with_a_tree_mask_and_writes_the_buffer_in_place(beams, fast):
    model = build_model("tiny", 50, seed=0).eval()
    if not fast:  # a rope the table cannot hold: the generic path, the model's own forward over the buffer
        model.config.rope_parameters = {**model.config.rope_parameters, "rope_type": "dynamic", "factor": 2.0}
    step = Decoder(model)
    assert step.fast == fast == written_out(model)
    torch.manual_seed(0)
    prompt = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        kv = [(layer.keys, layer.values) for layer in model(input_ids=prompt, use_cache=True).cache.layers]
    room = 5
    buf = [tuple(torch.cat([t, torch.full_like(t[:, :, :room], float("nan"))], dim=2) for t in layer) for layer in kv]
    tokens, positions = torch.randint(0, 50, (2, beams)), torch.full((2, beams), 7)
    mask = torch.cat([torch.ones(2, beams, 7, dtype=torch.bool),
                      torch.eye(beams, dtype=torch.bool).expand(2, -1, -1)], dim=2)[:, None]
    logits = step(tokens, positions, buf, 7, mask)
    with torch.no_grad():
        ref = model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                    cache=DynamicCache(kv, config=model.config), use_cache=True)
    assert torch.allclose(logits, ref.logits, atol=1e-5)
    for (k, v), layer in zip(buf, ref.cache.layers):
        assert torch.allclose(k[:, :, :7 + beams], layer.keys, atol=1e-6)
        assert torch.allclose(v[:, :, :7 + beams], layer.values, atol=1e-6)
        assert k[:, :, 7 + beams:].isnan().all()  # the rest of the room untouched


def test_decoder_is_rebuilt_when_a_weight_changes_in_place():
    model = build_model("tiny", 50, seed=0).eval()
    first = decoder(model)
    assert decoder(model) is first
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.add_(1.0)  # what an optimizer step does
    second = decoder(model)
    assert second is not first
    assert torch.equal(second.layers[0]["qkv"][:4], model.model.layers[0].self_attn.q_proj.weight[:4])


def test_prompt_cache_keeps_the_recent_within_its_bytes():
    kv = torch.zeros(1, 2, 2, 10, 4)  # [layers, keys/values, heads, length, dim]: 640 bytes, and 40 for the log-probabilities
    cache = PromptCache(max_bytes=1500)
    for p in [(1,), (2,), (1,), (3,)]:  # (1,) read again before (3,) arrives: (2,) is the oldest
        if cache.get(p) is None:
            cache.put(p, kv, torch.zeros(10))
    assert list(cache.entries) == [(1,), (3,)] and cache.bytes == 1360
    assert (cache.hits, cache.misses) == (1, 3)


def test_rotary_angles_that_depend_on_the_sequence_length_are_not_read_from_a_table():
    model = build_model("tiny", 50, seed=0)
    model.config.rope_parameters = {**model.config.rope_parameters, "rope_type": "dynamic", "factor": 2.0}
    assert not written_out(model)  # the model's own forward runs
