"""Size presets as plain functions with literal numbers (torchtune style), and model loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen3Config, Qwen3ForCausalLM

from onereason.model.latent import install_latent_steps


def qwen3_tiny(vocab_size: int) -> Qwen3Config:
    """~74k parameters besides the embeddings: for tests."""
    return Qwen3Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                       tie_word_embeddings=True, rope_theta=10000.0)


def qwen3_small(vocab_size: int) -> Qwen3Config:
    """~0.8M parameters besides the embeddings: trains in minutes on a 2-core CPU (the demo's
    default; SASRec-sized, which is what small public datasets support)."""
    return Qwen3Config(vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                       tie_word_embeddings=True, rope_theta=10000.0)


def qwen3_medium(vocab_size: int) -> Qwen3Config:
    """~3.1M parameters besides the embeddings: about 3x the small preset's compute, for a CPU with
    a few more cores or for checking whether the small preset's capacity is what limits a run."""
    return Qwen3Config(vocab_size=vocab_size, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=2048,
                       tie_word_embeddings=True, rope_theta=10000.0)


def qwen3_base(vocab_size: int) -> Qwen3Config:
    """~25M parameters besides the embeddings: for a GPU, or a patient CPU."""
    return Qwen3Config(vocab_size=vocab_size, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=64, max_position_embeddings=4096,
                       tie_word_embeddings=True, rope_theta=10000.0)


PRESETS: dict[str, Callable[[int], Qwen3Config]] = {"tiny": qwen3_tiny, "small": qwen3_small, "medium": qwen3_medium,
                                                     "base": qwen3_base}


def build_model(preset_or_path: str, vocab_size: int, seed: int = 0) -> PreTrainedModel:
    """A preset name builds a fresh Qwen3 model; a directory loads any HF causal LM.
    Either way the embeddings are resized to `vocab_size` (the tokenizer with item tokens)."""
    if preset_or_path in PRESETS:
        torch.manual_seed(seed)
        config = PRESETS[preset_or_path](vocab_size)
        config._attn_implementation = "sdpa"
        return Qwen3ForCausalLM(config)
    path = Path(preset_or_path)
    if not path.is_dir():
        raise ValueError(f"model: {preset_or_path!r} is neither a preset {sorted(PRESETS)} nor a local directory")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if model.get_input_embeddings().weight.shape[0] != vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    return model


def load_model(path: Path) -> PreTrainedModel:
    """A model a stage saved (sft/model, rl/grpo/model, ...), with its latent steps if it was trained with
    them (`model/latent.py`); a missing one is an error naming the folder."""
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"no model at {path}: run the stage that writes it first")
    model = AutoModelForCausalLM.from_pretrained(str(path))
    install_latent_steps(model)
    return model


def add_dropout(model: torch.nn.Module, p: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Training-time dropout for a model whose config has none (our presets, most HF LLMs): on the
    embedding output and on each block's two residual branches (the `o_proj` / `down_proj` outputs of
    Llama/Qwen/Mistral-style blocks). Not on attention weights: that makes SDPA leave its fused kernel
    (2.5x slower steps on a CPU, against 1.3x for these). Returns the hooks to remove; nothing is
    saved with the model."""
    def drop(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(output, p, training=module.training)

    if p == 0:
        return []
    branches = [m for name, m in model.named_modules() if name.endswith(("o_proj", "down_proj"))]
    if not branches:
        raise ValueError(f"dropout: {type(model).__name__} has no o_proj/down_proj modules to regularize; set it to 0")
    return [m.register_forward_hook(drop) for m in [model.get_input_embeddings(), *branches]]


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    emb = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "embedding": emb, "non_embedding": total - emb}
