"""Element types of every tensor in an ONNX graph, from shape inference plus the initializers."""

from __future__ import annotations

import onnx


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> onnx.TensorProto element type, for graph I/O, inferred values and initializers."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of every float32 tensor a node produces, in graph order."""
    types = tensor_types(model)
    return [
        out
        for node in model.graph.node
        for out in node.output
        if out and types.get(out) == onnx.TensorProto.FLOAT
    ]
