"""Latent reasoning (ReaRec-style): k "thinking" steps taken in hidden space instead of in words.

A latent step is a position whose input is not a token's embedding alone: it is the last hidden state
of the position before it plus the embedding of that step's token (`<|latent_j|>`, j = 0..k-1, which act
as the reasoning position embeddings and are learned with the model). Step j's input needs step j-1's
output, so a sequence that holds k latent tokens runs k extra passes over its prefix before the pass that
is returned; a sequence without them runs as usual. The rule is a forward pre-hook on the model's
decoder, so training, a prefill, `generate` and the beam search all get it with no change of their own;
`load_model` installs it for a model whose config names its latent tokens.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from onereason.chat import END_THINK
from onereason.model.vocab import grow_vocab

LATENT = "<|latent_{}|>"


def latent_tokens(steps: int) -> list[str]:
    return [LATENT.format(j) for j in range(steps)]


def latent_ids(model) -> list[int] | None:
    """The latent tokens a model thinks with (`sft.latent_steps`), or None for a model that thinks in words."""
    return getattr(getattr(model, "config", None), "latent_token_ids", None) or None


def latent_trace(tok, ids: list[int]) -> list[int]:
    """A latent model's think block after its prompt: the k latent tokens on a line, then `</think>` (what its
    SFT samples hold in place of a text trace); decoding, the bench and RL all continue a prompt with it."""
    nl = tok.encode("\n", add_special_tokens=False)
    return nl + list(ids) + nl + [tok.convert_tokens_to_ids(END_THINK)]


def add_latent_steps(model: PreTrainedModel, tok, steps: int) -> list[int]:
    """Give `model` (and `tok`) `steps` latent tokens, rows initialised to the mean embedding, record their
    ids in the model's config (saved with it) and install the rule; returns the ids."""
    if steps < 1:
        raise ValueError(f"latent steps: {steps}; at least 1")
    new = [t for t in latent_tokens(steps) if t not in tok.get_vocab()]
    tok.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    ids = tok.convert_tokens_to_ids(latent_tokens(steps))
    grow_vocab(model, len(tok))
    model.config.latent_token_ids = ids
    install_latent_steps(model)
    return ids


def install_latent_steps(model: PreTrainedModel) -> torch.utils.hooks.RemovableHandle | None:
    """The latent rule on `model.model` (once), for the ids in `model.config.latent_token_ids`; None without them."""
    ids = latent_ids(model)
    if not ids:
        return None
    body = getattr(model, "model", None)
    if body is None or not hasattr(body, "embed_tokens"):
        raise ValueError(f"latent steps: {type(model).__name__} has no decoder at .model with .embed_tokens "
                         "(a Llama-family layout) to feed hidden states back into")
    if getattr(body, "_latent_hook", None) is not None:
        return body._latent_hook
    latent = torch.tensor(ids)
    busy = [False]

    def fill(module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if busy[0] or input_ids is None:
            return None
        at = input_ids[..., None] == latent.to(input_ids.device)  # [B, T, k]
        if not at.any():
            return None
        embeds = module.embed_tokens(input_ids)
        inner = {k: v for k, v in kwargs.items() if k not in ("input_ids", "inputs_embeds", "cache", "use_cache")}
        busy[0] = True
        try:
            for j in range(len(ids)):
                rows, cols = at[..., j].nonzero(as_tuple=True)
                if not len(rows):
                    break
                upto = int(cols.max())  # the prefix that step j reads: positions before it
                hidden = module(inputs_embeds=embeds[:, :upto], use_cache=False,
                                **{k: _prefix(v, upto) for k, v in inner.items()}).last_hidden_state
                embeds = embeds.index_put((rows, cols), embeds[rows, cols] + hidden[rows, cols - 1])
        finally:
            busy[0] = False
        return (), {**kwargs, "input_ids": None, "inputs_embeds": embeds}

    body._latent_hook = body.register_forward_pre_hook(fill, with_kwargs=True)
    return body._latent_hook


def _prefix(value, upto: int):
    """An attention mask or position ids cut to the first `upto` positions (a 4-d mask on both axes)."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.dim() == 4:
        return value[..., :upto, :upto]
    return value[..., :upto]
