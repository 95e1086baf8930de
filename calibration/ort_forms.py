"""The ONNX Runtime CPU fast forms: what that provider runs, beside the graph TensorRT builds.

INT8: the TensorRT-bound Q/DQ graph runs on ONNX Runtime's CPU provider only as a numerical proof
(its FP16 parts have few fast CPU kernels). For serving on that provider, the same layers are
quantized the way it runs fastest on this class of CPU: dynamic INT8 MatMul (weights INT8 per
channel, activations quantized per call), everything else FP32. Measured on a 2-core AVX2 CPU
against the static forms; see the README's results.

FP32: for graphs a recipe names, ONNX Runtime's own transformer optimizer fuses what its CPU
kernels run in one pass (bias + GELU, residual add + LayerNorm) into its contrib ops, which
TensorRT does not read, so the fused graph is a form of its own; the graph every target builds
stays plain ONNX. Both are verified against the same budget.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

FORM_NAME = "onnxruntime-cpu dynamic int8 (MatMulInteger)"
FUSED_FORM_NAME = (
    "onnxruntime-cpu fp32 fused by onnxruntime.transformers' optimizer (BiasGelu, SkipLayerNormalization)"
)


def dynamic_int8_form(fp32_path: Path, nodes: Sequence[str], out_path: Path) -> Path:
    """Quantize the named MatMul nodes of the FP32 graph dynamically; returns ``out_path``."""
    model = onnx.load(str(fp32_path))
    matmuls = [n.name for n in model.graph.node if n.name in set(nodes) and n.op_type == "MatMul"]
    if not matmuls:
        # quantize_dynamic reads an empty node list as "every node"; nothing to quantize means the
        # FP32 graph itself.
        shutil.copyfile(fp32_path, out_path)
        return out_path
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to run pre-processing goes to the root logger
    try:
        _quantize(fp32_path, matmuls, out_path)
    finally:
        root.setLevel(level)
    return out_path


def _quantize(fp32_path: Path, matmuls: list[str], out_path: Path) -> None:
    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=matmuls,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def fused_fp32_form(fp32_path: Path, model_type: str, out_path: Path) -> tuple[Path, dict[str, int]]:
    """The FP32 graph with ONNX Runtime's fusions for ``model_type`` (its optimizer's name, e.g.
    "bart", "swin"); returns the path and how many of each fused operator it made."""
    from onnxruntime.transformers.optimizer import optimize_model

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the optimizer logs every fusion it tries
    try:
        # opt_level 0: only the optimizer's own graph fusions; the session applies its usual ones.
        model = optimize_model(str(fp32_path), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0)
    finally:
        root.setLevel(level)
    fused = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    model.save_model_to_file(str(out_path))
    return out_path, fused
