"""One decoding step over a key/value cache held as plain tensors.

For the Llama family (Llama, Qwen2, Qwen3: what our presets build) the step is written over the
model's own modules, in the order its `forward` runs them: the same arithmetic, without the work
around it (mask building, cache objects, output capture, argument checks) that costs more than the
maths when a small model decodes a few tokens on a CPU. Any other model runs its `forward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [batch, kv heads, length, head dim]
WRITTEN_OUT = ("llama", "qwen2", "qwen3")


def written_out(model) -> bool:
    """Whether `decode_step` runs the written-out step for this model (else its `forward`)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    return (model.config.model_type in WRITTEN_OUT and layers is not None
            and all(getattr(layer.self_attn, "sliding_window", None) is None for layer in layers))


@torch.no_grad()
def decode_step(model, tokens: torch.Tensor, positions: torch.Tensor, kv: KV, mask: torch.Tensor
                ) -> tuple[torch.Tensor, KV]:
    """Logits for `tokens` [B, T] at `positions` [B, T] attending to the cache `kv` and to the new
    tokens as `mask` [B, 1, T, cached + T] allows (True: attend); and the cache with them appended."""
    if not written_out(model):
        res = model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                    cache=DynamicCache(kv, config=model.config), use_cache=True)
        return res.logits, [(layer.keys, layer.values) for layer in res.cache.layers]
    body = model.model
    x = body.embed_tokens(tokens)
    cos, sin = body.rotary_emb(x, positions)
    out = []
    for layer, (past_k, past_v) in zip(body.layers, kv):
        attn = layer.self_attn
        h = _norm(layer.input_layernorm, x)
        shape = (*h.shape[:-1], -1, attn.head_dim)
        q, k = attn.q_proj(h).view(shape), attn.k_proj(h).view(shape)
        if hasattr(attn, "q_norm"):  # Qwen3 normalizes each head's query and key
            q, k = _norm(attn.q_norm, q), _norm(attn.k_norm, k)
        q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, attn.v_proj(h).view(shape).transpose(1, 2)], dim=2)
        out.append((k, v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling, enable_gqa=True)
        x = x + attn.o_proj(o.transpose(1, 2).reshape(*h.shape[:-1], -1))
        x = x + layer.mlp(_norm(layer.post_attention_layernorm, x))
    return model.lm_head(_norm(body.norm, x)), out


def _norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm as one fused op (its module spells it out in six)."""
    return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
