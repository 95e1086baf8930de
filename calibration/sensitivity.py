"""Rank quantized layers by how much INT8 hurts them, cheaply: each layer alone, on real inputs.

For every target node a one-node graph (the same op, attributes and weight) runs on the
activation that reached it during calibration, once in FP32 and once with both operands
fake-quantized (the activation at its calibrated scale, the weight per channel). The local error
is 1 - cosine(FP32, INT8); the layer's work is its multiply-accumulates per sample.

The fallback keeps the best-ranked layers in FP16, so the ranking decides what the fallback costs
in speed: ordered by local error alone, a model whose most error-prone layers are also its most
expensive (Florence-2's vision tower, more than 80% of a caption's arithmetic) would give its INT8
speed away to buy accuracy that a cheap layer (a decoder step's) would have bought. The order is
therefore error per share of the model's work, worst first: the error removed for each unit of
speed given up. Work is counted per call of each graph; a decoder step runs once per token and
beam, which this leaves out: over a 20-token, 3-beam caption a decoder layer still does under a
fiftieth of the work of one of the vision tower's (0.6 M against 2.4 G multiply-accumulates a call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from trtdeploy.calibration.activations import ActivationRecorder
from trtdeploy.calibration.data import Feeds
from trtdeploy.calibration.int8 import QuantTarget


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # component/node
    local_error: float  # 1 - cosine of the layer's output, INT8 operands against FP32
    work: float  # multiply-accumulates per sample of the calibration batch


def total_work(layers: list[LayerSensitivity]) -> float:
    """What the layers' work shares are shares of (1.0 for layers that do none)."""
    return sum(layer.work for layer in layers) or 1.0


def rank_layers(layers: list[LayerSensitivity]) -> list[LayerSensitivity]:
    """Worst first by local error per share of the total work (ties keep the given order)."""
    total = total_work(layers)

    def error_per_share(layer: LayerSensitivity) -> float:
        return layer.local_error / max(layer.work / total, 1e-12)

    return sorted(layers, key=lambda layer: -error_per_share(layer))


def measure_sensitivity(
    component: str,
    fp32_path: Path,
    targets: list[QuantTarget],
    thresholds: Mapping[str, float],
    batch: Feeds,
) -> list[LayerSensitivity]:
    """Every target's local INT8 error and work, in graph order."""
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
        scored.append(
            LayerSensitivity(
                f"{component}/{target.node}",
                _one_minus_cosine(reference, quantized),
                _work_per_sample(x, weight, target.axis, reference),
            )
        )
    return scored


def _work_per_sample(x: np.ndarray, weight: np.ndarray, axis: int, y: np.ndarray) -> float:
    """Multiply-accumulates per sample: each output element sums over the weight's input extent
    (MatMul: K; Conv: input channels per group x kernel)."""
    per_output = weight.size / max(weight.shape[axis], 1)
    samples = x.shape[0] if x.ndim >= 2 else 1
    return float(y.size) * per_output / max(samples, 1)


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
