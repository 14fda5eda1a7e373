"""Backbones: presets build, and any local HF causal LM directory loads with resized embeddings;
any HF tokenizer directory gets the same item tokens."""

import torch

from onereason.itemic.tokenizer import build_tokenizer
from onereason.model.backbone import PRESETS, build_model, count_parameters


def test_presets_build_with_the_requested_vocab():
    for name in PRESETS:
        m = build_model(name, 1000)
        assert m.get_input_embeddings().weight.shape[0] == 1000
        assert count_parameters(m)["non_embedding"] > 0


def test_local_hf_directory_is_loaded_and_resized(tmp_path):
    build_model("tiny", 500, seed=0).save_pretrained(tmp_path / "lm")
    m = build_model(str(tmp_path / "lm"), 520)
    assert m.get_input_embeddings().weight.shape[0] == 520
    assert m(input_ids=torch.tensor([[1, 519]])).logits.shape == (1, 2, 520)


def test_hf_tokenizer_directory_is_extended(tmp_path):
    base = build_tokenizer(["plain english text to learn merges from"] * 4, [], [], vocab_size=300)
    base.save_pretrained(tmp_path / "tok")
    tok = build_tokenizer([], ["<s_a_0>", "<s_a_1>"], ["<|office_begin|>", "<|office_end|>"], base=tmp_path / "tok")
    assert len(tok) == len(base) + 4  # chat specials were there already
    assert tok.tokenize("<|office_begin|><s_a_1>") == ["<|office_begin|>", "<s_a_1>"]
    assert tok.decode(tok("<s_a_0>english")["input_ids"]) == "<s_a_0>english"
