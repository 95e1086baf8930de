"""FP16 in the graph: a typed FP16 ONNX with FP32 islands where FP16 is unsafe, FP32 graph I/O.

Islands: every LayerNormalization (its mean/variance over hundreds of channels loses precision
and can overflow in FP16), any node whose output exceeded ``data_max`` in magnitude on the
calibration data (headroom below FP16's 65504 for inputs calibration did not see), and any node
reading a weight tensor beyond FP16's range. Scalar constants beyond the range, such as the
float32-minimum attention-mask fill, are clamped to ±65504 instead of becoming -inf, so a fully
masked softmax row cannot turn into NaN.

The conversion itself is ONNX Runtime's float16 converter (it ships inside onnxruntime), driven by
the island lists computed here; the result is checked by calibration/checks.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from trtdeploy.calibration.activations import ActivationRecorder, absmax
from trtdeploy.calibration.data import Feeds
from trtdeploy.calibration.graph_types import float_tensors

FP16_MAX = 65504.0
ALWAYS_FP32_OPS = ("LayerNormalization",)
TENSORS_PER_PASS = 256


@dataclass(frozen=True)
class Fp16Settings:
    data_max: float = 4096.0  # 16x headroom below 65504 over what calibration saw
    keep_fp32_ops: tuple[str, ...] = ALWAYS_FP32_OPS
    keep_fp32_nodes: tuple[str, ...] = ()  # user-named exclusions


@dataclass(frozen=True)
class Fp16Result:
    path: Path
    fp32_nodes: tuple[str, ...]  # every node left in FP32, for the manifest
    reasons: dict[str, str] = field(default_factory=dict)  # node -> why

    def describe(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for reason in self.reasons.values():
            counts[reason] = counts.get(reason, 0) + 1
        return {"fp32_nodes": len(self.fp32_nodes), "fp32_reasons": counts}


class Fp16OnnxFromOnnx:
    """Stage: FP32 ONNX (+ calibration batches) -> FP16 ONNX with FP32 islands and FP32 I/O."""

    def __init__(self, settings: Fp16Settings | None = None) -> None:
        self.settings = settings or Fp16Settings()

    def __call__(self, fp32_path: Path, calibration: Iterable[Feeds], out_path: Path) -> Fp16Result:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        model = onnx.load(str(fp32_path))
        reasons = self._islands(model, fp32_path, calibration)
        converted = convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*DEFAULT_OP_BLOCK_LIST, *self.settings.keep_fp32_ops],
            node_block_list=sorted(reasons),
        )
        # The converter keeps stale float32 value_info entries for some tensors; re-infer from scratch.
        del converted.graph.value_info[:]
        converted = onnx.shape_inference.infer_shapes(converted)
        onnx.save(converted, str(out_path))
        fp32_nodes = tuple(
            n.name
            for n in converted.graph.node
            if n.name in reasons or n.op_type in self.settings.keep_fp32_ops
        )
        for node in converted.graph.node:
            if node.op_type in self.settings.keep_fp32_ops:
                reasons.setdefault(node.name, f"op type {node.op_type}")
        return Fp16Result(out_path, fp32_nodes, reasons)

    def _islands(
        self, model: onnx.ModelProto, fp32_path: Path, calibration: Iterable[Feeds]
    ) -> dict[str, str]:
        """node name -> why it stays FP32 (besides the op types that always do)."""
        reasons = dict.fromkeys(self.settings.keep_fp32_nodes, "named by the user")
        big_weights = {
            init.name
            for init in model.graph.initializer
            if _is_float(init) and init.dims and np.max(np.abs(numpy_helper.to_array(init))) > FP16_MAX
        }
        # Recording every tensor of a batch at once holds them all in memory (gigabytes for a ViT-B/16
        # at 352²); a few hundred at a time bounds that at the cost of more passes.
        batches = list(calibration)
        names = float_tensors(model)
        maxima: dict[str, float] = {}
        for start in range(0, len(names), TENSORS_PER_PASS):
            maxima.update(
                absmax(ActivationRecorder(fp32_path, names[start : start + TENSORS_PER_PASS]), batches)
            )
        for node in model.graph.node:
            if any(i in big_weights for i in node.input):
                reasons.setdefault(node.name, "weight beyond the FP16 range")
            peak = max((maxima.get(o, 0.0) for o in node.output), default=0.0)
            if peak > self.settings.data_max:
                reasons.setdefault(
                    node.name, f"activation above {self.settings.data_max:g} on calibration data"
                )
        return reasons


def _is_float(init: onnx.TensorProto) -> bool:
    return bool(init.data_type == onnx.TensorProto.FLOAT)
