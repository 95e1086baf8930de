"""INT8 in the graph: explicit Q/DQ as TensorRT wants it, the rest FP16.

    weights      int8 initializer -> DequantizeLinear, symmetric, zero point 0, one scale per
                 output channel on the axis TensorRT expects (MatMul B[K,N]: 1; Gemm transB: 0;
                 Conv W[K,C,R,S]: 0; ConvTranspose W[C,K,R,S]: 1)
    activations  QuantizeLinear -> DequantizeLinear on the inputs of MatMul/Gemm/Conv/ConvTranspose,
                 one per-tensor scale (threshold / 127), zero point 0
    outputs      never quantized; attention's activation-activation MatMuls stay FP16

Q/DQ go into the FP16 graph (calibration/fp16.py) with scales typed like the tensor they scale,
as a strongly typed TensorRT network requires (Q input type == scale type, DQ output type ==
scale type). FP16 scales need QuantizeLinear-19, so the graph's opset moves from 18 to 19; no op
in an opset-18 graph changes meaning at 19 (that opset only widens types and adds modes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from trtdeploy.calibration.activations import HISTOGRAM_BINS, ActivationRecorder, absmax, histograms
from trtdeploy.calibration.data import Feeds
from trtdeploy.calibration.graph_types import tensor_types
from trtdeploy.calibration.ranges import METHODS, threshold

QUANTIZABLE = ("MatMul", "Gemm", "Conv", "ConvTranspose")
QDQ_OPSET = 19
_NP_TYPES: dict[int, type[np.floating[Any]]] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
}


@dataclass(frozen=True)
class Int8Settings:
    method: str = "percentile"
    percentile: float = 99.99
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    # TensorRT has no INT8 kernel worth using for thin GEMMs; ModelOpt skips K or N below 16 too.
    min_channels: int = 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; choose one of {list(METHODS)}")


@dataclass(frozen=True)
class QuantTarget:
    """A weighted node whose activation input and weight get Q/DQ."""

    node: str
    op_type: str
    activation: str
    weight: str
    axis: int


def find_targets(model: onnx.ModelProto, settings: Int8Settings) -> list[QuantTarget]:
    """Nodes to quantize in an FP32 graph, in graph order, minus exclusions and thin GEMMs."""
    inits = {i.name: i for i in model.graph.initializer}
    targets = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZABLE or node.op_type in settings.exclude_op_types:
            continue
        if node.name in settings.exclude_nodes or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if node.input[0] in inits:
            continue  # both operands constant: nothing to calibrate
        weight = inits[node.input[1]]
        axis = _weight_axis(node, weight)
        if (
            axis is None
            or min(weight.dims[-2:] if node.op_type in ("MatMul", "Gemm") else weight.dims[:2])
            < settings.min_channels
        ):
            continue
        targets.append(QuantTarget(node.name, node.op_type, node.input[0], weight.name, axis))
    return targets


def _weight_axis(node: onnx.NodeProto, weight: onnx.TensorProto) -> int | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MatMul":
        return 1 if len(weight.dims) == 2 else None  # B[K, N]: one scale per output column
    if node.op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    if node.op_type == "Conv":
        return 0  # W[K, C/g, R, S]
    if node.op_type == "ConvTranspose":
        return 1 if attrs.get("group", 1) == 1 else None  # W[C, K/g, R, S]
    return None


def calibrate(
    fp32_path: Path, targets: list[QuantTarget], batches: Iterable[Feeds], settings: Int8Settings
) -> dict[str, float]:
    """Activation threshold per target input tensor, from the calibration batches."""
    names = sorted({t.activation for t in targets})
    if not names:  # a graph with nothing to quantize (Florence-2's embedding lookup)
        return {}
    recorder = ActivationRecorder(fp32_path, names)
    batches = list(batches)
    maxima = absmax(recorder, batches)
    hists: Mapping[str, np.ndarray] = {}
    if settings.method != "max":
        hists = histograms(recorder, batches, maxima, HISTOGRAM_BINS)
    return {n: threshold(settings.method, maxima[n], hists.get(n), settings.percentile) for n in names}


class QdqOnnxFromOnnx:
    """Stage: (FP16 graph, its FP32 source, activation thresholds) -> Q/DQ INT8 graph."""

    def __init__(self, targets: list[QuantTarget], thresholds: Mapping[str, float]) -> None:
        missing = sorted({t.activation for t in targets} - set(thresholds))
        if missing:
            raise ValueError(f"no calibrated threshold for {missing}")
        self.targets = targets
        self.thresholds = thresholds

    def __call__(self, fp16_path: Path, fp32_path: Path, out_path: Path) -> Path:
        model = onnx.load(str(fp16_path))
        fp32_weights = {i.name: i for i in onnx.load(str(fp32_path)).graph.initializer}
        _bump_opset(model)
        types = tensor_types(model)
        producers = {o: n for n in model.graph.node for o in n.output}
        nodes = {n.name: n for n in model.graph.node}
        inserted: dict[str, list[onnx.NodeProto]] = {}  # target node name -> Q/DQ nodes to put before it
        activation_dq: dict[str, str] = {}
        weight_dq: dict[str, str] = {}
        for target in self.targets:
            node = nodes.get(target.node)
            if node is None:
                raise ValueError(f"node {target.node} is not in the FP16 graph")
            act = node.input[0]
            dtype = types[act]
            if act not in activation_dq:
                source = _calibrated_name(act, producers, self.thresholds)
                scale = self.thresholds[source] / 127.0 if self.thresholds[source] > 0 else 1.0
                qdq, activation_dq[act] = _activation_qdq(model, act, scale, dtype)
                inserted.setdefault(target.node, []).extend(qdq)
            node.input[0] = activation_dq[act]
            if target.weight not in weight_dq:  # a weight shared by several nodes is quantized once
                dq, weight_dq[target.weight] = _weight_dq(
                    model, fp32_weights[target.weight], target.axis, dtype
                )
                inserted.setdefault(target.node, []).append(dq)
            node.input[1] = weight_dq[target.weight]
        _place_before(model, inserted)
        _drop_unused_initializers(model)
        del model.graph.value_info[:]
        model = onnx.shape_inference.infer_shapes(model)
        onnx.save(model, str(out_path))
        return out_path


def _bump_opset(model: onnx.ModelProto) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if opset.version < 17:
                raise ValueError(
                    f"Q/DQ needs an opset-17+ graph to move to opset {QDQ_OPSET}, got {opset.version}"
                )
            opset.version = max(opset.version, QDQ_OPSET)


def _calibrated_name(name: str, producers: Mapping[str, onnx.NodeProto], known: Mapping[str, float]) -> str:
    """The name calibration knows a tensor by: the FP16 converter may put Casts in between (and
    renames an FP32 island's output, giving the island's old output name to the Cast after it)."""
    chain = [name]
    while chain[-1] not in known and chain[-1] in producers and producers[chain[-1]].op_type == "Cast":
        chain.append(producers[chain[-1]].input[0])
    if chain[-1] not in known:
        raise ValueError(f"no calibrated threshold for {name} (looked through {chain})")
    return chain[-1]


def _activation_qdq(
    model: onnx.ModelProto, act: str, scale: float, dtype: int
) -> tuple[list[onnx.NodeProto], str]:
    np_type = _NP_TYPES[dtype]
    scale_name, zp_name = f"{act}_qdq_scale", f"{act}_qdq_zero_point"
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(scale, dtype=np_type), scale_name),
        numpy_helper.from_array(np.array(0, dtype=np.int8), zp_name),
    ])  # fmt: skip
    q = helper.make_node(
        "QuantizeLinear", [act, scale_name, zp_name], [f"{act}_q"], name=f"{act}_QuantizeLinear"
    )
    dq = helper.make_node(
        "DequantizeLinear", [f"{act}_q", scale_name, zp_name], [f"{act}_dq"], name=f"{act}_DequantizeLinear"
    )
    return [q, dq], f"{act}_dq"


def _weight_dq(
    model: onnx.ModelProto, weight: onnx.TensorProto, axis: int, dtype: int
) -> tuple[onnx.NodeProto, str]:
    np_type = _NP_TYPES[dtype]
    w = numpy_helper.to_array(weight).astype(np.float32)
    reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.max(np.abs(w), axis=reduce_axes)
    # Quantize with the scale exactly as stored (rounded to the compute type), so the stored
    # int8 values and scale agree bit for bit; an all-zero channel gets scale 1 (any positive works).
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np_type)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.astype(np.float32).reshape(shape)), -127, 127).astype(np.int8)
    base = weight.name
    model.graph.initializer.extend([
        numpy_helper.from_array(q, f"{base}_int8"),
        numpy_helper.from_array(scale, f"{base}_scale"),
        numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{base}_zero_point"),
    ])  # fmt: skip
    dq = helper.make_node(
        "DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero_point"], [f"{base}_dq"],
        name=f"{base}_DequantizeLinear", axis=axis,
    )  # fmt: skip
    return dq, f"{base}_dq"


def _place_before(model: onnx.ModelProto, inserted: Mapping[str, list[onnx.NodeProto]]) -> None:
    """Insert each target's Q/DQ nodes right before it, keeping the node list topologically sorted."""
    ordered: list[onnx.NodeProto] = []
    for node in model.graph.node:
        ordered.extend(inserted.get(node.name, []))
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def describe_targets(targets: list[QuantTarget]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for t in targets:
        counts[t.op_type] = counts.get(t.op_type, 0) + 1
    return {"quantized_nodes": len(targets), "by_op_type": counts}
