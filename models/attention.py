"""How the exporter traces attention: transformers' eager implementation instead of SDPA.

A model's default attention (SDPA) is exported as its decomposition, which reshapes K to three
dims and transposes it there: a physical copy of K on every call (measured on Florence-2: 30% of a
decoding step on ONNX Runtime's CPU provider, where the cross-attention K spans every encoder
position). The eager implementation is the same arithmetic as matmul(q, kᵀ) in four dims, a
transposed MatMul operand the runtimes fuse. Every recipe traces its graphs under this context; the
reference (and so every check of a graph) keeps the model's own implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import PretrainedConfig


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Every attention of ``model`` runs transformers' eager implementation for the duration.

    Each config is set and restored on its own (the config setter would recurse into sub-configs),
    so the reference runs its own implementation again afterwards."""
    configs: dict[int, PretrainedConfig] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            configs[id(config)] = config
    saved = {key: config._attn_implementation_internal for key, config in configs.items()}
    for config in configs.values():
        config._attn_implementation_internal = "eager"
    try:
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation_internal = saved[key]
