"""Backbones: presets build, and any local HF causal LM directory loads with resized embeddings;
any HF tokenizer directory gets the same item tokens."""

import torch

from onereason.itemic.tokenizer import build_tokenizer
import pytest

from onereason.model.backbone import PRESETS, add_dropout, build_model, count_parameters


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


def test_dropout_acts_only_while_training_and_comes_off_with_its_hooks():
    m = build_model("tiny", 300)
    x = torch.randint(0, 300, (2, 12))
    m.eval()
    plain = m(input_ids=x).logits
    hooks = add_dropout(m, 0.3)
    assert len(hooks) == 1 + 2 * m.config.num_hidden_layers  # embeddings + two residual branches per block
    assert torch.equal(m(input_ids=x).logits, plain)  # eval: no dropout
    m.train()
    assert not torch.allclose(m(input_ids=x).logits, m(input_ids=x).logits)
    for h in hooks:
        h.remove()
    assert torch.equal(m(input_ids=x).logits, plain)  # train mode without hooks: the model has no dropout of its own
    assert add_dropout(m, 0.0) == []


def test_dropout_refuses_a_model_it_cannot_regularize():
    with pytest.raises(ValueError, match="dropout"):
        add_dropout(torch.nn.Sequential(torch.nn.Embedding(4, 2)), 0.1)
