"""Florence-2's two decoder graphs behind generation's StepDecoder protocol.

`decoder_init` runs the start token(s) against the encoder output and returns the first logits, the
self-attention K/V of those positions and the cross-attention K/V (computed once per generation).
`decoder_with_past` then runs one token per row per step. Both keep their K/V outputs in the backend
(Engine.run_resident: ONNX Runtime IO binding on the CPU and CUDA providers, device buffers on
TensorRT), and the with-past graph gathers the self-attention past by ``beam_idx`` itself, so the
cache never comes back through numpy and is never scanned again by the input checks.
"""

from __future__ import annotations

import numpy as np

from trtdeploy.runtime.engine import Engine, Resident

LOGITS = "logits"


def present_name(layer: int, attention: str, kind: str) -> str:
    return f"present.{layer}.{attention}.{kind}"


def past_name(layer: int, attention: str, kind: str) -> str:
    return f"past.{layer}.{attention}.{kind}"


class EngineStepDecoder:
    """The decoder of one generate() call: holds the encoder output of B items and the KV cache."""

    def __init__(
        self,
        init: Engine,
        with_past: Engine,
        encoder_hidden_states: np.ndarray,
        encoder_attention_mask: np.ndarray,
        layers: int,
    ) -> None:
        self.init = init
        self.with_past = with_past
        self.hidden = encoder_hidden_states  # (B, T, D)
        self.mask = encoder_attention_mask  # (B, T) int64
        self.layers = layers
        self.cache: dict[str, Resident] = {}
        self.rows_mask = self.mask
        self.calls = 0

    def first(self, input_ids: np.ndarray, repeat: int) -> np.ndarray:
        """Logits (B·repeat, V) of the last start token; the encoder output serves ``repeat`` rows per item.

        Every beam of an item starts from the same tokens, so decoder_init runs once per item and
        its outputs are repeated over the beams: the cross-attention K/V, the costliest part of the
        first step, are computed once instead of once per beam, then kept in the backend."""
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)  # (B·repeat, S), item-major
        self.rows_mask = np.repeat(self.mask, repeat, axis=0)  # (R, T)
        per_item = ids[::repeat]
        if not np.array_equal(np.repeat(per_item, repeat, axis=0), ids):
            return self._first_per_row(ids, repeat)
        outputs = self.init.run(
            {
                "decoder_input_ids": per_item,
                "encoder_hidden_states": self.hidden,
                "encoder_attention_mask": self.mask,
            }
        )
        self.cache = {
            past_name(i, a, k): self.with_past.keep(np.repeat(outputs[present_name(i, a, k)], repeat, axis=0))
            for i in range(self.layers)
            for a in ("decoder", "encoder")
            for k in ("key", "value")
        }
        self.calls += 1
        return np.repeat(outputs[LOGITS][:, -1], repeat, axis=0)  # (R, V)

    def _first_per_row(self, ids: np.ndarray, repeat: int) -> np.ndarray:
        """Rows of one item that start differently: every row through decoder_init."""
        names = [
            present_name(i, a, k)
            for i in range(self.layers)
            for a in ("decoder", "encoder")
            for k in ("key", "value")
        ]
        outputs, kept = self.init.run_resident(
            {
                "decoder_input_ids": ids,
                "encoder_hidden_states": np.repeat(self.hidden, repeat, axis=0),
                "encoder_attention_mask": self.rows_mask,
            },
            {},
            names,
        )
        self.cache = {name.replace("present.", "past.", 1): value for name, value in kept.items()}
        self.calls += 1
        return outputs[LOGITS][:, -1]

    def next(self, input_ids: np.ndarray, beam_idx: np.ndarray) -> np.ndarray:
        """Logits (R, V) of one more token per row; row r continues the previous call's row beam_idx[r]."""
        keep = [present_name(i, "decoder", k) for i in range(self.layers) for k in ("key", "value")]
        outputs, kept = self.with_past.run_resident(
            {
                "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                "encoder_attention_mask": self.rows_mask,
                "beam_idx": np.ascontiguousarray(beam_idx, dtype=np.int64),
            },
            self.cache,
            keep,
        )
        for name, value in kept.items():  # the self-attention past grows; the cross K/V stay
            self.cache[name.replace("present.", "past.", 1)] = value
        self.calls += 1
        return outputs[LOGITS][:, 0]  # (R, V)
