"""Rank quantized layers by how much INT8 hurts them, cheaply: each layer alone, on real inputs.

For every target node a one-node graph (the same op, attributes and weight) runs on the
activation that reached it during calibration, once in FP32 and once with both operands
fake-quantized (the activation at its calibrated scale, the weight per channel). The local error
1 - cosine(FP32, INT8) orders the layers; the fallback then keeps the worst ones in FP16.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from trtdeploy.calibration.activations import ActivationRecorder
from trtdeploy.calibration.data import Feeds
from trtdeploy.calibration.int8 import QuantTarget


def rank_by_sensitivity(
    fp32_path: Path, targets: list[QuantTarget], thresholds: Mapping[str, float], batch: Feeds
) -> list[tuple[QuantTarget, float]]:
    """Targets with their local INT8 error, worst first (ties keep graph order)."""
    model = onnx.load(str(fp32_path))
    nodes = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    activations = ActivationRecorder(fp32_path, sorted({t.activation for t in targets}))(batch)
    scored = []
    for target in targets:
        node = nodes[target.node]
        x = activations[target.activation]
        weight = numpy_helper.to_array(inits[target.weight]).astype(np.float32)
        extra = [numpy_helper.to_array(inits[name]) for name in node.input[2:] if name in inits]
        reference = _run_node(node, model.opset_import, x, weight, extra)
        quantized = _run_node(
            node,
            model.opset_import,
            _fake_quant(x, thresholds[target.activation]),
            _fake_quant_weight(weight, target.axis),
            extra,
        )
        scored.append((target, _one_minus_cosine(reference, quantized)))
    return sorted(scored, key=lambda item: -item[1])


def _run_node(
    node: onnx.NodeProto, opsets: object, x: np.ndarray, weight: np.ndarray, extra: list[np.ndarray]
) -> np.ndarray:
    names = ["x", "w", *[f"extra{i}" for i in range(len(extra))]]
    single = helper.make_node(
        node.op_type, names, ["y"], **{a.name: helper.get_attribute_value(a) for a in node.attribute}
    )
    graph = helper.make_graph(
        [single],
        "one_node",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            *[numpy_helper.from_array(e, n) for e, n in zip(extra, names[2:], strict=True)],
        ],
    )
    model = helper.make_model(graph, opset_imports=list(opsets))  # type: ignore[call-overload]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def _fake_quant(x: np.ndarray, threshold: float) -> np.ndarray:
    scale = threshold / 127.0 if threshold > 0 else 1.0
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


def _fake_quant_weight(w: np.ndarray, axis: int) -> np.ndarray:
    reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
    scale = np.max(np.abs(w), axis=reduce_axes, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return (np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32)


def _one_minus_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a64) * np.linalg.norm(b64)
    return float(1.0 - np.dot(a64, b64) / norm) if norm > 0 else 0.0
