"""One decoding step over a preallocated key/value buffer held as plain tensors.

For the Llama family (Llama, Qwen2, Qwen3: what our presets build) the step is written out over the
model's own weights, in the order its `forward` runs them: the same arithmetic, without the work around
it (mask building, cache objects, module calls, output capture, argument checks) that costs more than
the maths when a small model decodes a few tokens on a CPU. Query, key and value projections run as
one matrix product, as do the MLP's gate and up projections; rotary angles come from a table; new keys
and values are written into the buffer in place instead of concatenated onto the cache every step.
Any other model runs its `forward`.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import rotate_half

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [batch, kv heads, capacity, head dim]
WRITTEN_OUT = ("llama", "qwen2", "qwen3")


SEQUENCE_DEPENDENT_ROPE = ("dynamic", "longrope")  # angles that depend on the sequence length: no table


def written_out(model) -> bool:
    """Whether the decoder runs the written-out step for this model (else its `forward`)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    rope = getattr(model.config, "rope_parameters", None) or {}
    return (model.config.model_type in WRITTEN_OUT and layers is not None
            and rope.get("rope_type", "default") not in SEQUENCE_DEPENDENT_ROPE
            and all(getattr(layer.self_attn, "sliding_window", None) is None for layer in layers))


class Decoder:
    """`model`'s decoding step: logits for `tokens` [B, T] at `positions` [B, T], attending to the first
    `length` entries of the buffer `kv` and to the new tokens as `mask` [B, 1, T, length + T] allows
    (True: attend); the new tokens' keys and values are written at `length` onwards."""

    def __init__(self, model):
        self.params = list(model.parameters())
        self.signature = _signature(self.params)
        self.fast = written_out(model)
        if not self.fast:  # a weak reference: the decoders' table must not keep a model alive
            self.model = weakref.ref(model)
            return
        body = model.model
        self.embed, self.final_norm = body.embed_tokens.weight, _weights(body.norm)
        self.head = model.lm_head
        self.layers = []
        for layer in body.layers:
            a, m = layer.self_attn, layer.mlp
            qkv = [a.q_proj, a.k_proj, a.v_proj]
            heads = [p.weight.shape[0] // a.head_dim for p in qkv]
            qk_norm = None
            if hasattr(a, "q_norm"):  # Qwen3 normalizes each head's query and key: one weight row per head
                qk_norm = (torch.cat([a.q_norm.weight.expand(heads[0], -1), a.k_norm.weight.expand(heads[1], -1)]),
                           a.q_norm.variance_epsilon)
            self.layers.append(dict(
                qkv=torch.cat([p.weight for p in qkv]),
                qkv_bias=torch.cat([p.bias for p in qkv]) if a.q_proj.bias is not None else None,
                heads=heads, head_dim=a.head_dim, scale=a.scaling, o=a.o_proj, qk_norm=qk_norm,
                norm_in=_weights(layer.input_layernorm), norm_mlp=_weights(layer.post_attention_layernorm),
                gate_up=torch.cat([m.gate_proj.weight, m.up_proj.weight]),
                gate_up_bias=torch.cat([m.gate_proj.bias, m.up_proj.bias]) if m.gate_proj.bias is not None else None,
                act=m.act_fn, down=m.down_proj))
        self.rotary = body.rotary_emb
        self.cos = self.sin = self.embed.new_zeros(0, self.layers[0]["head_dim"])

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, kv: KV, length: int,
                 mask: torch.Tensor) -> torch.Tensor:
        end = length + tokens.shape[1]
        if not self.fast:
            model = self.model()
            res = model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True,
                        cache=DynamicCache([(k[:, :, :length], v[:, :, :length]) for k, v in kv], config=model.config))
            for (k, v), layer in zip(kv, res.cache.layers):
                k[:, :, length:end], v[:, :, length:end] = layer.keys[:, :, length:], layer.values[:, :, length:]
            return res.logits
        x = F.embedding(tokens, self.embed)
        mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        cos, sin = self._angles(positions)
        cos, sin = cos[:, :, None], sin[:, :, None]  # [B, T, 1 (every head), head dim]
        for w, (k_buf, v_buf) in zip(self.layers, kv):
            nq, nk = w["heads"][:2]
            qkv = F.linear(_norm(x, *w["norm_in"]), w["qkv"], w["qkv_bias"]).view(*tokens.shape, -1, w["head_dim"])
            qk, v = qkv[:, :, :nq + nk], qkv[:, :, nq + nk:]  # queries and keys normalized and rotated together
            if w["qk_norm"] is not None:
                qk = _norm(qk, *w["qk_norm"])
            qk = qk * cos + rotate_half(qk) * sin
            q, k = qk[:, :, :nq].transpose(1, 2), qk[:, :, nq:].transpose(1, 2)
            k_buf[:, :, length:end], v_buf[:, :, length:end] = k, v.transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k_buf[:, :, :end], v_buf[:, :, :end], attn_mask=mask,
                                               scale=w["scale"], enable_gqa=True)
            x = x + F.linear(o.transpose(1, 2).reshape(*tokens.shape, -1), w["o"].weight, w["o"].bias)
            gate, up = F.linear(_norm(x, *w["norm_mlp"]), w["gate_up"], w["gate_up_bias"]).chunk(2, dim=-1)
            x = x + F.linear(w["act"](gate) * up, w["down"].weight, w["down"].bias)
        return F.linear(_norm(x, *self.final_norm), self.head.weight, self.head.bias)

    def _angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary cos and sin at `positions`, read from a table the model's rotary module fills (each
        angle is one product of a frequency and a position, so a table entry is what it would compute)."""
        need = int(positions.max()) + 1
        if need > self.cos.shape[0]:
            size = max(need, 2 * self.cos.shape[0], 1024)
            span = torch.arange(size, device=positions.device)[None]
            cos, sin = self.rotary(self.embed[None, :1], span)
            self.cos, self.sin = cos[0], sin[0]
        return self.cos[positions], self.sin[positions]


_decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def decoder(model) -> Decoder:
    """The model's `Decoder`, built once and rebuilt when a weight changed (training between evaluations
    updates them in place, which bumps their version counters)."""
    found = _decoders.get(model)
    if found is None or found.signature != _signature(found.params):
        found = _decoders[model] = Decoder(model)
    return found


def _signature(params: list[torch.nn.Parameter]) -> list[tuple[int, int]]:
    return [(p.data_ptr(), p._version) for p in params]


def _weights(norm: torch.nn.Module) -> tuple[torch.Tensor, float]:
    return norm.weight, norm.variance_epsilon


def _norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The model's RMSNorm, its arithmetic in five ops (in float32, as the module computes it)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)
