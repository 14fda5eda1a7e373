"""Backbones: small Qwen3 models built from a config, or any local HF causal LM."""
