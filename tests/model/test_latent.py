"""Latent steps: each latent position's input is the previous position's last hidden state plus its token's
embedding, computed as written out by hand; a sequence without latent tokens runs as before."""

import pytest
import torch

from onereason.model.backbone import build_model, load_model
from onereason.model.latent import add_latent_steps, install_latent_steps


class _Tok:
    """The smallest tokenizer `add_latent_steps` needs."""

    def __init__(self, n):
        self.vocab = {f"t{i}": i for i in range(n)}

    def get_vocab(self):
        return dict(self.vocab)

    def add_special_tokens(self, d, replace_extra_special_tokens=False):
        for t in d["additional_special_tokens"]:
            self.vocab.setdefault(t, len(self.vocab))

    def convert_tokens_to_ids(self, ts):
        return [self.vocab[t] for t in ts]

    def __len__(self):
        return len(self.vocab)


def _by_hand(model, ids: list[int], latent: list[int]) -> torch.Tensor:
    """The logits of `ids`, each latent position's input built from a plain forward of the prefix before it."""
    emb = model.get_input_embeddings()
    x = emb(torch.tensor([ids]))
    for p, t in enumerate(ids):
        if t in latent:
            h = model.model(inputs_embeds=x[:, :p]).last_hidden_state
            x = x.clone()
            x[0, p] = emb.weight[t] + h[0, p - 1]
    return model.lm_head(model.model(inputs_embeds=x).last_hidden_state)


def test_latent_steps_are_the_hidden_state_fed_back(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", 40, seed=0).eval()
    plain_ids = [3, 4, 5, 6, 7, 8]
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([plain_ids])).logits
    latent = add_latent_steps(model, _Tok(40), 2)
    assert latent == [40, 41] and model.get_input_embeddings().weight.shape[0] == 42
    with torch.no_grad():
        assert torch.allclose(model(input_ids=torch.tensor([plain_ids])).logits[..., :40], plain, atol=1e-6)  # as before
        ids = [3, 4, 5, 40, 41, 6, 7]
        got = model(input_ids=torch.tensor([ids])).logits
        assert torch.allclose(got, _by_hand(model, ids, latent), atol=1e-5)
        # left padding in a batch: the same logits on the real positions
        pad = [0, 0, 0]
        batch = torch.tensor([pad + ids, [9, 10, 11, 3, 4, 5, 40, 41, 6, 7]])
        attn = torch.tensor([[0] * 3 + [1] * 7, [1] * 10])
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=batch, attention_mask=attn, position_ids=pos).logits
        assert torch.allclose(out[0, 3:], got[0], atol=1e-5)
        assert torch.allclose(out[1], _by_hand(model, batch[1].tolist(), latent), atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m").eval()  # the rule comes back with the saved config
    with torch.no_grad():
        assert torch.allclose(again(input_ids=torch.tensor([ids])).logits, got, atol=1e-6)


def test_gradients_reach_the_prefix_through_the_latent_steps():
    model = build_model("tiny", 40, seed=0)
    latent = add_latent_steps(model, _Tok(40), 1)
    ids = torch.tensor([[3, 4, 5, latent[0], 6]])
    x = model(input_ids=ids).logits[0, -1].sum()
    x.backward()
    assert model.get_input_embeddings().weight.grad[latent[0]].abs().sum() > 0


def test_a_model_without_the_llama_layout_is_refused():
    model = build_model("tiny", 40, seed=0)
    model.config.latent_token_ids = [38, 39]
    del model.model.embed_tokens
    with pytest.raises(ValueError, match="latent steps"):
        install_latent_steps(model)
