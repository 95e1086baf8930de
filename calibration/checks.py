"""Checks of a precision-explicit graph, run on every FP16/INT8 build and asserted by the tests.

INT8 (TensorRT's explicit-quantization rules): every QuantizeLinear/DequantizeLinear has an INT8
zero point that is all zeros; scales are positive constants; weight scales are per channel on
the axis the consuming op needs; activation scales are per tensor; Q input type equals its scale
type; no Q/DQ output is a graph output. FP16: graph inputs and outputs stay FP32, every
LayerNormalization computes in FP32, and most float compute really is FP16.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from trtdeploy.calibration.graph_types import tensor_types
from trtdeploy.runtime.errors import ExportError

WEIGHT_AXIS = {("MatMul", 1): 1, ("Gemm", 1): None, ("Conv", 1): 0, ("ConvTranspose", 1): 1}


def check_fp16_graph(model: onnx.ModelProto, component: str) -> dict[str, int]:
    """Raise ExportError if the FP16 contract is broken; return node counts by compute type."""
    types = tensor_types(model)
    problems = []
    for value in (*model.graph.input, *model.graph.output):
        elem = value.type.tensor_type.elem_type
        if elem == onnx.TensorProto.FLOAT16:
            problems.append(f"graph I/O {value.name} is FP16; FP16 graphs keep FP32 inputs and outputs")
    for node in model.graph.node:
        if node.op_type == "LayerNormalization" and types.get(node.input[0]) != onnx.TensorProto.FLOAT:
            problems.append(
                f"LayerNormalization {node.name} computes in {onnx.TensorProto.DataType.Name(types.get(node.input[0], 0))}, not FP32"
            )
    counts = {"fp16": 0, "fp32": 0}
    for node in model.graph.node:
        if node.op_type in ("Cast", "Shape", "Constant") or not node.output:
            continue
        elem = types.get(node.output[0])
        if elem == onnx.TensorProto.FLOAT16:
            counts["fp16"] += 1
        elif elem == onnx.TensorProto.FLOAT:
            counts["fp32"] += 1
    if counts["fp16"] <= counts["fp32"]:
        problems.append(f"only {counts['fp16']} nodes compute in FP16 against {counts['fp32']} in FP32")
    if problems:
        raise ExportError(f"{component}: the FP16 graph breaks its contract:\n  " + "\n  ".join(problems))
    return counts


def check_qdq_graph(model: onnx.ModelProto, component: str) -> dict[str, int]:
    """Raise ExportError listing every Q/DQ that TensorRT would reject or misread."""
    inits = {i.name: i for i in model.graph.initializer}
    types = tensor_types(model)
    outputs = {o.name for o in model.graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems: list[str] = []
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0, "per_channel_weights": 0}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts[node.op_type] += 1
        where = f"{node.op_type} {node.name}"
        problems += _check_zero_point(node, inits, where)
        if node.input[1] not in inits:
            problems.append(f"{where}: scale {node.input[1]} is not a constant")
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        if not np.all(scale > 0):
            problems.append(f"{where}: scales must be positive")
        if node.output[0] in outputs:
            problems.append(f"{where}: Q/DQ on graph output {node.output[0]}")
        if node.op_type == "QuantizeLinear" and types.get(node.input[0]) != inits[node.input[1]].data_type:
            problems.append(
                f"{where}: input type differs from scale type (strongly typed TensorRT rejects it)"
            )
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            problems += _check_weight_scale(node, inits, scale, consumers, where)
            counts["per_channel_weights"] += int(scale.ndim == 1)
        elif scale.ndim != 0:
            problems.append(f"{where}: activation scale has shape {scale.shape}; activations are per tensor")
    if problems:
        raise ExportError(
            f"{component}: the INT8 graph breaks TensorRT's Q/DQ rules:\n  " + "\n  ".join(problems)
        )
    return counts


def _check_zero_point(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], where: str) -> list[str]:
    if len(node.input) < 3 or node.input[2] not in inits:
        return [f"{where}: zero point missing (INT8 needs an explicit int8 zero point of 0)"]
    zp = inits[node.input[2]]
    if zp.data_type != onnx.TensorProto.INT8:
        return [f"{where}: zero point is {onnx.TensorProto.DataType.Name(zp.data_type)}, TensorRT needs INT8"]
    if np.any(numpy_helper.to_array(zp) != 0):
        return [f"{where}: non-zero zero point; TensorRT supports symmetric quantization only"]
    return []


def _check_weight_scale(
    node: onnx.NodeProto,
    inits: Mapping[str, onnx.TensorProto],
    scale: np.ndarray,
    consumers: Mapping[str, list[onnx.NodeProto]],
    where: str,
) -> list[str]:
    weight = inits[node.input[0]]
    if weight.data_type != onnx.TensorProto.INT8:
        return [f"{where}: weight {weight.name} is not INT8"]
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    problems = []
    if scale.ndim != 1 or scale.shape[0] != weight.dims[axis]:
        problems.append(
            f"{where}: weight scale shape {scale.shape} does not match axis {axis} of {list(weight.dims)}"
        )
    for consumer in consumers.get(node.output[0], []):
        want = _expected_axis(consumer)
        if want is not None and want != axis:
            problems.append(
                f"{where}: per-channel axis {axis}, but {consumer.op_type} {consumer.name} needs axis {want}"
            )
    return problems


def _expected_axis(consumer: onnx.NodeProto) -> int | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in consumer.attribute}
    if consumer.op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    return WEIGHT_AXIS.get((consumer.op_type, 1))
