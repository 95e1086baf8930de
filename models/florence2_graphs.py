"""Florence-2's five graphs: their export wrappers, their interfaces and the sizes to check them at.

The wrappers exist for export only (and for the PyTorch reference, which runs them): each returns
named flat tensors in the order of its interface. See models/florence2.py for the layout.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from trtdeploy.models.attention import eager_attention
from trtdeploy.models.recipe import Feeds
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.pipelines.florence2 import (
    DECODER_INIT,
    DECODER_WITH_PAST,
    EMBED_TOKENS,
    ENCODER,
    VISION_ENCODER,
)
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec

# Profiles: rows are images × beams (up to 8 images of 3 beams); one image of 3 beams is what
# TensorRT tunes for. The past grows to the decoder's position table.
MAX_IMAGES = 8
MAX_ROWS = 24
OPT_PROMPT, OPT_PAST = 16, 32


class VisionEncoderExport(torch.nn.Module):
    """Export wrapper for `vision_encoder`: pixel_values -> the projected image features the encoder
    reads (get_image_features(...).pooler_output). Exists for export only."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output  # (I, N, D)


@contextlib.contextmanager
def _channel_attention_rewritten(model: torch.nn.Module) -> Iterator[None]:
    """Every channel-attention module runs _channel_attention_forward for the duration (the model
    is shared with the reference, which must keep running the native forward afterwards)."""
    from transformers.models.florence2.modeling_florence2 import Florence2VisionChannelAttention

    modules = [m for m in model.modules() if isinstance(m, Florence2VisionChannelAttention)]
    for module in modules:
        module.forward = types.MethodType(_channel_attention_forward, module)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def _channel_attention_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """Florence2VisionChannelAttention.forward with the same arithmetic in another layout.

    The native forward permutes q, k and v to (B, G, head_dim, N) so that attention runs over
    channels: scores = q·kᵀ (head_dim × head_dim), out = softmax(scores)·v, then permutes out back
    to (B, N, G, head_dim). Exported, each of those permutes moves N to the innermost axis, an
    element-by-element transpose of the whole feature map: 16% of the tower's time on ONNX
    Runtime's CPU provider. Here q, k, v stay (B, G, N, head_dim), scores = qᵀ·k (a transposed
    MatMul operand, which the runtimes fuse) and outᵀ = v·softmax(scores)ᵀ, so every copy left
    moves whole head_dim rows."""
    batch, tokens, channels = hidden_states.shape
    groups = self.groups
    qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, groups, channels // groups)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, G, N, head_dim)
    scores = torch.matmul(query.transpose(-1, -2), key) * tokens**-0.5  # (B, G, head_dim, head_dim)
    weights = torch.softmax(scores, dim=-1)
    out = torch.matmul(value, weights.transpose(-1, -2))  # (B, G, N, head_dim): the native out, transposed
    return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


class EmbedTokensExport(torch.nn.Module):
    """Export wrapper for `embed_tokens`: the shared token embedding (scaled as the model scales it)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)  # (B, S, D)


class EncoderExport(torch.nn.Module):
    """Export wrapper for `encoder`: [image features; prompt embeddings] through the BART encoder.

    The native forward scatters the image features into the placeholder positions, which the
    processor always puts first; concatenating them before the prompt is the same sequence without
    the data-dependent placeholder count check. The image positions are always attended."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model

    def forward(
        self, image_features: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        embeds = torch.cat([image_features, inputs_embeds], dim=1)  # (B, N + S, D)
        image_mask = attention_mask.new_ones(image_features.shape[:2])  # (B, N)
        mask = torch.cat([image_mask, attention_mask], dim=1)  # (B, N + S)
        encoder = self.model.model.language_model.encoder
        return encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state


def _decoder(model: Any) -> Any:
    return model.model.language_model.decoder


class DecoderInitExport(torch.nn.Module):
    """Export wrapper for `decoder_init`: the first decoder step(s) with an empty cache -> logits, the
    self-attention K/V of these positions and the cross-attention K/V of the encoder output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        out = _decoder(self.model)(
            input_ids=decoder_input_ids,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            cache=cache,
            use_cache=True,
        )
        logits = self.model.lm_head(out.last_hidden_state)  # (R, S, V)
        return (logits, *_flat_cache(out.cache, cross=True))


class DecoderWithPastExport(torch.nn.Module):
    """Export wrapper for `decoder_with_past`: one decoder step on the cache. ``beam_idx`` picks, for
    each row, the row of the previous step it continues; the self-attention past is gathered by it
    before the step (the cross-attention K/V are the same for every beam of an image). The cache is
    rebuilt from flat tensors, so transformers' own attention code runs on it unchanged."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model
        text: Any = model.config.text_config  # type: ignore[union-attr]
        self.layers = int(text.decoder_layers)
        self.d_model = int(text.d_model)

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        beam_idx: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        # past: per layer, decoder key, decoder value, encoder key, encoder value (the spec's order)
        self_kv, cross_kv = [], []
        for i in range(self.layers):
            key, value, cross_key, cross_value = past[4 * i : 4 * i + 4]
            self_kv.append((key.index_select(0, beam_idx), value.index_select(0, beam_idx)))
            cross_kv.append((cross_key, cross_value))
        cache = EncoderDecoderCache(DynamicCache(self_kv), DynamicCache(cross_kv))
        first = cross_kv[0][0]  # (R, H, T, hd)
        # Cross-attention reads its K/V from the cache; the decoder only needs the encoder length
        # from the states (for the mask), so a placeholder of the right shape stands in for them.
        placeholder = first.new_zeros(first.shape[0], first.shape[2], self.d_model)
        out = _decoder(self.model)(
            input_ids=input_ids,
            encoder_hidden_states=placeholder,
            encoder_attention_mask=encoder_attention_mask,
            cache=cache,
            use_cache=True,
        )
        logits = self.model.lm_head(out.last_hidden_state)  # (R, 1, V)
        return (logits, *_flat_cache(out.cache, cross=False))


def _flat_cache(cache: Any, *, cross: bool) -> list[torch.Tensor]:
    """An EncoderDecoderCache's tensors in the spec's order: per layer, decoder key/value, then
    (``cross``) encoder key/value."""
    tensors = []
    for i, layer in enumerate(cache.self_attention_cache.layers):
        tensors += [layer.keys, layer.values]
        if cross:
            other = cache.cross_attention_cache.layers[i]
            tensors += [other.keys, other.values]
    return tensors


# --------------------------------------------------------------------------------------------------
# Interfaces


@dataclass(frozen=True)
class Shape:
    """The sizes the interfaces are made of, read from the model's config."""

    image_size: int
    image_tokens: int  # N: features per image
    d_model: int
    heads: int
    head_dim: int
    layers: int
    vocab: int
    max_positions: int  # BART's learned positions: the encoder sequence and the decoder length

    @classmethod
    def of(cls, model: torch.nn.Module, image_size: int) -> Shape:
        config: Any = model.config
        text = config.text_config
        return cls(
            image_size=image_size,
            image_tokens=image_token_count(config.vision_config, image_size),
            d_model=int(text.d_model),
            heads=int(text.decoder_attention_heads),
            head_dim=int(text.d_model) // int(text.decoder_attention_heads),
            layers=int(text.decoder_layers),
            vocab=int(text.vocab_size),
            max_positions=int(text.max_position_embeddings),
        )


def image_token_count(vision: Any, image_size: int) -> int:
    """Features per image: the last stage's grid (each stage's conv embedding shrinks it), + 1 pooled.
    Refuses a grid the projector's learned 2-D position table can't index."""
    side = image_size
    for kernel, stride, padding in zip(
        vision.patch_size, vision.patch_stride, vision.patch_padding, strict=True
    ):
        side = (side + 2 * int(padding) - int(kernel)) // int(stride) + 1
    if side < 1:
        raise ArtifactError(f"a {image_size} px image leaves no features after the vision tower's strides.")
    table = int(vision.max_position_embeddings)
    if side > table:
        raise ArtifactError(
            f"a {image_size} px image makes a {side} x {side} feature grid, but the vision config's position "
            f"table (max_position_embeddings) has {table} rows and columns; use a smaller processor size or "
            "a model with a larger table."
        )
    return side * side + 1


def interfaces(shape: Shape) -> dict[str, IOSpec]:
    """Every graph's interface: images, prompt, rows (images × beams), encoder length and past dynamic."""
    n, d, h, hd = shape.image_tokens, shape.d_model, shape.heads, shape.head_dim
    max_prompt = shape.max_positions - n
    if max_prompt < 2:
        raise ArtifactError(
            f"the model's {shape.max_positions} positions leave no room for a prompt after {n} image features."
        )
    prompt = DimRange(1, min(OPT_PROMPT, max_prompt), max_prompt)
    encoder_sequence = DimRange(n + 1, n + prompt.opt, shape.max_positions)
    rows = {"rows": DimRange(1, 3, MAX_ROWS)}
    features = TensorSpec("image_features", "float32", ("batch", n, d))
    ids_range = (0, shape.vocab - 1)
    vision = IOSpec(
        inputs=(TensorSpec("pixel_values", "float32", ("batch", 3, shape.image_size, shape.image_size)),),
        outputs=(features,),
        dims={"batch": DimRange(1, 1, MAX_IMAGES)},
    )
    embed = IOSpec(
        inputs=(TensorSpec("input_ids", "int64", ("batch", "prompt"), value_range=ids_range),),
        outputs=(TensorSpec("inputs_embeds", "float32", ("batch", "prompt", d)),),
        dims={"batch": DimRange(1, 1, MAX_IMAGES), "prompt": prompt},
    )
    encoder = IOSpec(
        inputs=(
            features,
            TensorSpec("inputs_embeds", "float32", ("batch", "prompt", d)),
            TensorSpec("attention_mask", "int64", ("batch", "prompt"), value_range=(0, 1)),
        ),
        outputs=(TensorSpec("last_hidden_state", "float32", ("batch", "encoder_sequence", d)),),
        dims={"batch": DimRange(1, 1, MAX_IMAGES), "prompt": prompt, "encoder_sequence": encoder_sequence},
    )
    cross = [
        TensorSpec(f"present.{i}.encoder.{kind}", "float32", ("rows", h, "encoder_sequence", hd))
        for i in range(shape.layers)
        for kind in ("key", "value")
    ]
    init_outputs: list[TensorSpec] = [TensorSpec("logits", "float32", ("rows", "target", shape.vocab))]
    for i in range(shape.layers):
        init_outputs += [
            TensorSpec(f"present.{i}.decoder.key", "float32", ("rows", h, "target", hd)),
            TensorSpec(f"present.{i}.decoder.value", "float32", ("rows", h, "target", hd)),
            cross[2 * i],
            cross[2 * i + 1],
        ]
    decoder_init = IOSpec(
        inputs=(
            TensorSpec("decoder_input_ids", "int64", ("rows", "target"), value_range=ids_range),
            TensorSpec("encoder_hidden_states", "float32", ("rows", "encoder_sequence", d)),
            TensorSpec("encoder_attention_mask", "int64", ("rows", "encoder_sequence"), value_range=(0, 1)),
        ),
        outputs=tuple(init_outputs),
        dims={**rows, "target": DimRange(1, 1, shape.max_positions), "encoder_sequence": encoder_sequence},
    )
    past_inputs: list[TensorSpec] = []
    presents: list[TensorSpec] = []
    for i in range(shape.layers):
        for kind in ("key", "value"):
            past_inputs.append(TensorSpec(f"past.{i}.decoder.{kind}", "float32", ("rows", h, "past", hd)))
            presents.append(TensorSpec(f"present.{i}.decoder.{kind}", "float32", ("rows", h, "present", hd)))
        for kind in ("key", "value"):
            past_inputs.append(
                TensorSpec(f"past.{i}.encoder.{kind}", "float32", ("rows", h, "encoder_sequence", hd))
            )
    past_max = shape.max_positions - 1
    decoder_with_past = IOSpec(
        inputs=(
            TensorSpec("input_ids", "int64", ("rows", 1), value_range=ids_range),
            TensorSpec("encoder_attention_mask", "int64", ("rows", "encoder_sequence"), value_range=(0, 1)),
            TensorSpec("beam_idx", "int64", ("rows",), value_range=(0, MAX_ROWS - 1)),
            *past_inputs,
        ),
        outputs=(TensorSpec("logits", "float32", ("rows", 1, shape.vocab)), *presents),
        dims={
            **rows,
            "encoder_sequence": encoder_sequence,
            "past": DimRange(1, OPT_PAST, past_max),
            "present": DimRange(2, OPT_PAST + 1, past_max + 1),
        },
    )
    return {
        VISION_ENCODER: vision,
        EMBED_TOKENS: embed,
        ENCODER: encoder,
        DECODER_INIT: decoder_init,
        DECODER_WITH_PAST: decoder_with_past,
    }


# --------------------------------------------------------------------------------------------------
# Random inputs (the export traces and checks at sizes from these)


def random_inputs(shape: Shape, component: str) -> Any:
    n, d, h, hd, vocab = shape.image_tokens, shape.d_model, shape.heads, shape.head_dim, shape.vocab

    def mask(rows: int, length: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros((rows, length), dtype=np.int64)
        for r in range(rows):  # right padding, the first row full (as the processor pads)
            out[r, : length if r == 0 else int(rng.integers(1, length + 1))] = 1
        return out

    def normal(rng: np.random.Generator, *dims: int) -> np.ndarray:
        return rng.standard_normal(dims).astype(np.float32)

    def make(sizes: Mapping[str, int], rng: np.random.Generator) -> Feeds:
        if component == VISION_ENCODER:
            return {"pixel_values": normal(rng, sizes["batch"], 3, shape.image_size, shape.image_size)}
        if component == EMBED_TOKENS:
            return {"input_ids": rng.integers(0, vocab, (sizes["batch"], sizes["prompt"]), dtype=np.int64)}
        if component == ENCODER:
            b, s = sizes["batch"], sizes["prompt"]
            return {
                "image_features": normal(rng, b, n, d),
                "inputs_embeds": normal(rng, b, s, d),
                "attention_mask": mask(b, s, rng),
            }
        rows, t = sizes["rows"], sizes["encoder_sequence"]
        encoder_mask = np.concatenate([np.ones((rows, n), np.int64), mask(rows, t - n, rng)], axis=1)
        if component == DECODER_INIT:
            return {
                "decoder_input_ids": rng.integers(0, vocab, (rows, sizes["target"]), dtype=np.int64),
                "encoder_hidden_states": normal(rng, rows, t, d),
                "encoder_attention_mask": encoder_mask,
            }
        feeds = {
            "input_ids": rng.integers(0, vocab, (rows, 1), dtype=np.int64),
            "encoder_attention_mask": encoder_mask,
            "beam_idx": rng.integers(0, rows, rows, dtype=np.int64),
        }
        for i in range(shape.layers):
            for kind in ("key", "value"):
                feeds[f"past.{i}.decoder.{kind}"] = normal(rng, rows, h, sizes["past"], hd)
            for kind in ("key", "value"):
                feeds[f"past.{i}.encoder.{kind}"] = normal(rng, rows, h, t, hd)
        return feeds

    return make


@contextlib.contextmanager
def _vision_trace(model: torch.nn.Module) -> Iterator[None]:
    """The vision tower's trace: eager window attention, channel attention in its own layout."""
    with _channel_attention_rewritten(model), eager_attention(model):
        yield


# What the exporter traces each graph under where that differs from the reference (the same numbers
# in a layout the engines run faster); the reference wrappers, and every check, run the model as is.
TRACE_CONTEXTS: dict[str, Callable[[torch.nn.Module], contextlib.AbstractContextManager[None]]] = {
    VISION_ENCODER: _vision_trace,
    ENCODER: eager_attention,
    DECODER_INIT: eager_attention,
    DECODER_WITH_PAST: eager_attention,
}

WRAPPERS = {
    VISION_ENCODER: VisionEncoderExport,
    EMBED_TOKENS: EmbedTokensExport,
    ENCODER: EncoderExport,
    DECODER_INIT: DecoderInitExport,
    DECODER_WITH_PAST: DecoderWithPastExport,
}


def sizes(shape: Shape, trace: bool) -> dict[str, dict[str, int]]:
    """Trace and check sizes differ in every input dim and are >= 2 (torch.export specialises 0/1)."""
    n = shape.image_tokens
    batch, prompt, rows, target, past = (2, 7, 2, 2, 5) if trace else (3, 11, 3, 3, 9)
    return {
        VISION_ENCODER: {"batch": batch},
        EMBED_TOKENS: {"batch": batch, "prompt": prompt},
        ENCODER: {"batch": batch, "prompt": prompt},
        DECODER_INIT: {"rows": rows, "target": target, "encoder_sequence": n + prompt},
        DECODER_WITH_PAST: {"rows": rows, "encoder_sequence": n + prompt, "past": past},
    }
