"""Tokens a stage after pre-training adds to the model (latent steps, interests): the embedding grows and
the new rows start at the mean row, a neutral point, unless the caller sets them from what they stand for."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def grow_vocab(model: PreTrainedModel, size: int) -> int:
    """Resize `model`'s embeddings (and tied head) to `size` rows, new rows at the mean of the old ones;
    returns the old size (unchanged when the model already has `size` rows or more)."""
    old = model.get_input_embeddings().weight.shape[0]
    if size > old:
        model.resize_token_embeddings(size, mean_resizing=False)
        with torch.no_grad():
            for w in embedding_rows(model):
                w[old:] = w[:old].mean(0)
    return old


def embedding_rows(model: PreTrainedModel) -> list[torch.Tensor]:
    """The input embedding, and the output head's weight when it is not tied to it: the tables a token has a row in."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    return [emb] if head is None or head.weight is emb else [emb, head.weight]
