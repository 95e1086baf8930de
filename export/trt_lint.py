"""TensorRT op-support lint: every node of every ONNX graph against onnx-tensorrt's operator table.

The table is data (onnx_tensorrt_ops.json beside this file): for each operator whether TensorRT's
ONNX parser takes it, the types it lists, and each documented restriction as a rule with its
parameters, transcribed from onnx-tensorrt's docs/operators.md at the tag the file names. This
module only evaluates those rules, so updating to another TensorRT release is a data change.

What is checked, per node (If/Loop/Scan bodies and model-local functions included):
the operator is in the table and marked supported, the graph's opset is in the table's range,
the first input's element type is one the table lists, and every restriction that can be
decided from the graph alone (constant inputs, attribute values, zero points, declared outputs).
A restriction that needs shapes the graph does not carry, or the parser itself, is reported as a
warning that says it was not checked, never passed over in silence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

TABLE_FILE = "onnx_tensorrt_ops.json"
DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX element types by the names the table uses; the rest are in no TensorRT type list.
_TYPE_NAMES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.DOUBLE: "DOUBLE",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.FLOAT8E4M3FN: "FP8",
    onnx.TensorProto.INT4: "INT4",
    onnx.TensorProto.FLOAT4E2M1: "FP4",
}


@dataclass(frozen=True)
class OperatorTable:
    """onnx-tensorrt's operator support table, as facts."""

    source: Mapping[str, Any]
    opset_min: int
    opset_max: int
    operators: Mapping[str, Mapping[str, Any]]
    double_cast_to: str = "FP32"
    io_only_types: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | None = None) -> OperatorTable:
        if path is None:
            text = resources.files("trtdeploy.export").joinpath(TABLE_FILE).read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        return cls(
            source=data["source"],
            opset_min=int(data["opset"]["min"]),
            opset_max=int(data["opset"]["max"]),
            operators=data["operators"],
            double_cast_to=str(data.get("double_cast_to", "FP32")),
            io_only_types=tuple(data.get("io_only_types", ())),
        )

    @property
    def label(self) -> str:
        s = self.source
        return (
            f"{s['repository']} {s['path']} @ {s['ref']} (TensorRT {s['table_header_tensorrt']} table, "
            f"opset {self.opset_min}-{self.opset_max})"
        )

    @property
    def tensorrt(self) -> str:
        return str(self.source["table_header_tensorrt"])


@dataclass(frozen=True)
class Finding:
    """One node TensorRT's parser would reject (error) or treat differently (warning)."""

    graph: str
    node: str
    op: str
    reason: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.graph}: node {self.node!r} ({self.op}): {self.reason}"


@dataclass(frozen=True)
class LintReport:
    table: str
    graphs: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def passed(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (
            f"TensorRT lint of {', '.join(self.graphs)}: {len(self.errors)} unsupported, "
            f"{len(self.warnings)} warnings (table: {self.table})"
        )

    def lines(self) -> list[str]:
        return [self.summary(), *(str(f) for f in self.findings)]


@dataclass
class _Scope:
    """What is known where a node is read: constants, element types and shapes by tensor name."""

    graph: str
    path: str  # "" at the top level; "node/attribute" inside subgraphs and functions
    constants: dict[str, np.ndarray | None]  # None: a constant whose value is stored externally
    types: dict[str, int]
    shapes: dict[str, tuple[int | str | None, ...]]
    graph_io: frozenset[str]

    def child(self, path: str, graph_io: Iterable[str] = ()) -> _Scope:
        return _Scope(
            self.graph,
            path,
            dict(self.constants),
            dict(self.types),
            dict(self.shapes),
            self.graph_io | frozenset(graph_io),
        )


Rule = Callable[[onnx.NodeProto, Mapping[str, Any], _Scope], list[tuple[str, str]]]  # (severity, reason)


class TrtLint:
    """Stage: lint ONNX graphs (by label, e.g. "vision.onnx") against the operator table."""

    def __init__(self, table: OperatorTable | None = None) -> None:
        self.table = table or OperatorTable.load()

    def __call__(self, graphs: Mapping[str, Path | onnx.ModelProto]) -> LintReport:
        findings: list[Finding] = []
        for label, source in graphs.items():
            model = source if isinstance(source, onnx.ModelProto) else _load(source)
            findings += self.lint_model(label, model)
        return LintReport(self.table.label, tuple(graphs), tuple(findings))

    def lint_model(self, label: str, model: onnx.ModelProto) -> list[Finding]:
        findings = self._check_opsets(label, model)
        typed, note = _with_inferred_types(model)
        if note:
            findings.append(Finding(label, "(model)", "-", note, "warning"))
        functions = {(f.domain, f.name): f for f in typed.functions}
        graph = typed.graph
        io = frozenset([*(v.name for v in graph.input), *(v.name for v in graph.output)])
        scope = _Scope(label, "", {}, {}, {}, io)
        _add_graph_facts(scope, graph)
        findings += self._walk(graph.node, scope, functions)
        return findings

    def _check_opsets(self, label: str, model: onnx.ModelProto) -> list[Finding]:
        out = []
        for entry in model.opset_import:
            if entry.domain in DEFAULT_DOMAINS and not (
                self.table.opset_min <= entry.version <= self.table.opset_max
            ):
                out.append(
                    Finding(
                        label,
                        "(model)",
                        "opset",
                        f"the graph uses ONNX opset {entry.version}; TensorRT {self.table.tensorrt}'s parser "
                        f"takes opsets {self.table.opset_min} to {self.table.opset_max}. Export with an opset "
                        "in that range.",
                    )
                )
        return out

    def _walk(
        self,
        nodes: Sequence[onnx.NodeProto],
        scope: _Scope,
        functions: Mapping[tuple[str, str], onnx.FunctionProto],
    ) -> list[Finding]:
        findings: list[Finding] = []
        for index, node in enumerate(nodes):
            name = scope.path + (node.name or f"<unnamed #{index} -> {', '.join(node.output)}>")
            function = functions.get((node.domain, node.op_type))
            if function is not None:
                # The parser imports a model-local function by importing its body.
                inner = scope.child(f"{name}/")
                findings += self._walk(function.node, inner, functions)
            else:
                for severity, reason in self._check_node(node, scope):
                    findings.append(Finding(scope.graph, name, node.op_type, reason, severity))
            findings += self._walk_subgraphs(node, name, scope, functions)
            _add_node_constants(scope, node)
        return findings

    def _walk_subgraphs(
        self,
        node: onnx.NodeProto,
        name: str,
        scope: _Scope,
        functions: Mapping[tuple[str, str], onnx.FunctionProto],
    ) -> list[Finding]:
        findings: list[Finding] = []
        for attr in node.attribute:
            graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in graphs:
                inner = scope.child(f"{name}/{attr.name}/", [v.name for v in sub.output])
                _add_graph_facts(inner, sub)
                findings += self._walk(sub.node, inner, functions)
        return findings

    def _check_node(self, node: onnx.NodeProto, scope: _Scope) -> list[tuple[str, str]]:
        table = self.table
        if node.domain not in DEFAULT_DOMAINS:
            return [
                (
                    "error",
                    f"operator domain {node.domain!r} is not ONNX's; TensorRT parses it only through a "
                    "plugin registered under that name.",
                )
            ]
        entry = table.operators.get(node.op_type)
        if entry is None:
            return [
                (
                    "error",
                    f"{node.op_type} is not in TensorRT {table.tensorrt}'s ONNX operator table; its parser "
                    "has no importer for it. Export it as supported operators.",
                )
            ]
        if not entry["supported"]:
            return [
                ("error", f"TensorRT {table.tensorrt}'s ONNX parser marks {node.op_type} as not supported.")
            ]
        found = self._check_type(node, entry, scope)
        for rule in entry.get("restrictions", ()):
            found += RULES[rule["rule"]](node, rule, scope)
        return found

    def _check_type(
        self, node: onnx.NodeProto, entry: Mapping[str, Any], scope: _Scope
    ) -> list[tuple[str, str]]:
        if not node.input or not node.input[0] or node.input[0] not in scope.types:
            return []  # no data input (Constant, Random*), or a type inference could not tell
        tensor = node.input[0]
        elem = scope.types[tensor]
        name = _TYPE_NAMES.get(elem, onnx.TensorProto.DataType.Name(elem))
        listed = list(entry.get("types", ()))
        if name == "DOUBLE" and self.table.double_cast_to in listed:
            return [
                (
                    "warning",
                    f"input {tensor!r} is DOUBLE; TensorRT casts it down to FLOAT, clamping to ±FLT_MAX.",
                )
            ]
        if name in listed:
            return []
        if name in self.table.io_only_types and tensor in scope.graph_io:
            return []
        return [
            (
                "error",
                f"input {tensor!r} is {name}; TensorRT {self.table.tensorrt} lists {node.op_type} for "
                f"{', '.join(listed)} only.",
            )
        ]


def lint_graph_files(graphs: Mapping[str, Path], table: OperatorTable | None = None) -> LintReport:
    """Lint ONNX files by label (the bundle-relative name, e.g. "vision.onnx")."""
    return TrtLint(table)(dict(graphs))


def lint_bundle(root: str | Path, table: OperatorTable | None = None) -> LintReport:
    """Lint every component graph of the bundle at ``root`` (its hashes are checked first)."""
    from trtdeploy.runtime.bundle import Bundle

    bundle = Bundle.load(root)
    return lint_graph_files({c.onnx: bundle.path(c.onnx) for c in bundle.manifest.components}, table)


def _load(path: Path) -> onnx.ModelProto:
    # External weights are not needed: types live in the protobuf, and every value a rule reads
    # (zero points, K, axes) is small enough to be stored inline.
    return onnx.load(str(path), load_external_data=False)


def _with_inferred_types(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    try:
        return onnx.shape_inference.infer_shapes(model), ""
    except Exception as exc:  # onnx raises several types for graphs it can't infer
        return model, f"ONNX type inference failed ({exc}); element types were checked where declared only."


def _add_graph_facts(scope: _Scope, graph: onnx.GraphProto) -> None:
    for init in graph.initializer:
        scope.constants[init.name] = _tensor_value(init)
        scope.types[init.name] = init.data_type
        scope.shapes[init.name] = tuple(int(d) for d in init.dims)
    for info in (*graph.input, *graph.output, *graph.value_info):
        tensor_type = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor_type.elem_type:
            scope.types[info.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                scope.shapes[info.name] = tuple(_dim(d) for d in tensor_type.shape.dim)


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    return d.dim_param or None


def _add_node_constants(scope: _Scope, node: onnx.NodeProto) -> None:
    """A Constant node's output is a build-time constant: the parser imports it as weights."""
    if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
        scope.constants[node.output[0]] = _constant_node_value(node)


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return _tensor_value(attr.t)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
    return None


def _tensor_value(tensor: onnx.TensorProto) -> np.ndarray | None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return np.asarray(numpy_helper.to_array(tensor))


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                return value.decode("utf-8")
            if isinstance(value, list):
                return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
            return value
    return None


def _input(node: onnx.NodeProto, index: int) -> str:
    """The name of input ``index``, or "" when the node omits it."""
    return node.input[index] if len(node.input) > index else ""


# ---- the rules the table names ------------------------------------------------------------------


def _input_constant(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    tensor = _input(node, rule["input"])
    if not tensor or tensor in scope.constants:
        return []
    return [
        (
            "error",
            f"input {rule['name']!r} ({tensor!r}) is computed at run time; TensorRT needs it as a "
            "build-time constant (an initializer or a Constant node).",
        )
    ]


def _input_constant_equals(
    node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope
) -> list[tuple[str, str]]:
    tensor = _input(node, rule["input"])
    if not tensor:
        return []
    if tensor not in scope.constants:
        return _input_constant(node, rule, scope)
    value = scope.constants[tensor]
    if value is None:
        return [
            (
                "warning",
                f"input {rule['name']!r} is stored outside the graph file; its value was not checked.",
            )
        ]
    if not np.all(value == rule["value"]):
        return [("error", f"input {rule['name']!r} is {value.tolist()}; TensorRT needs {rule['value']}.")]
    return []


def _input_all_zero(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    tensor = _input(node, rule["input"])
    if not tensor:
        return []  # an omitted zero point is zero
    if tensor not in scope.constants:
        return [
            (
                "error",
                f"{rule['name']} ({tensor!r}) is computed at run time, so it can't be shown to be zero; "
                "TensorRT supports symmetric quantization only.",
            )
        ]
    value = scope.constants[tensor]
    if value is None:
        return [("warning", f"{rule['name']} is stored outside the graph file; its value was not checked.")]
    nonzero = int(np.count_nonzero(value))
    if nonzero:
        return [
            (
                "error",
                f"{rule['name']} has {nonzero} non-zero values of {value.size}; TensorRT supports symmetric "
                "quantization only (zero point 0). Quantize with symmetric activations and weights.",
            )
        ]
    return []


def _input_constant_below(
    node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope
) -> list[tuple[str, str]]:
    tensor = _input(node, rule["input"])
    if not tensor:
        return []
    value = scope.constants.get(tensor)
    if value is None:
        return [
            (
                "warning",
                f"{rule['name']} ({tensor!r}) is not a constant stored in the graph; TensorRT needs it below "
                f"{rule['limit']}, which was not checked.",
            )
        ]
    if np.any(value >= rule["limit"]):
        return [("error", f"{rule['name']} is {value.tolist()}; TensorRT needs it below {rule['limit']}.")]
    return []


def _attribute_in(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    value = _attr(node, rule["attribute"])
    if value is None:
        value = rule["default"]
    if value in rule["allowed"]:
        return []
    return [
        (
            "error",
            f"attribute {rule['attribute']}={value!r}; TensorRT supports {', '.join(map(repr, rule['allowed']))}.",
        )
    ]


def _attribute_absent(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    present = [a.name for a in node.attribute if a.name in rule["attributes"]]
    if not present:
        return []
    return [("error", f"attribute {', '.join(present)} is not supported by TensorRT.")]


def _attribute_all_ones(
    node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope
) -> list[tuple[str, str]]:
    value = _attr(node, rule["attribute"])
    if not value or all(v == 1 for v in value):
        return []
    return [("error", f"attribute {rule['attribute']}={value}; TensorRT supports none or all ones.")]


def _attribute_ignored(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    if _attr(node, rule["attribute"]) is None:
        return []
    return [
        (
            "warning",
            f"TensorRT ignores attribute {rule['attribute']!r}; results will differ from the reference.",
        )
    ]


def _kernel_rank_in(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    kernel = _attr(node, "kernel_shape")
    if kernel is None or len(kernel) in rule["allowed"]:
        return []
    return [("error", f"{len(kernel)}D pooling (kernel_shape={kernel}); TensorRT supports 2D and 3D only.")]


def _outputs_absent(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    # The parser refuses a node that declares more outputs than its importer makes, used or not.
    if len(node.output) <= min(rule["outputs"]):
        return []
    return [
        (
            "error",
            f"the node declares {len(node.output)} outputs; TensorRT produces only the first "
            f"({rule['name']} unsupported). Export it with the first output only.",
        )
    ]


def _input_rank_in(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    tensor = _input(node, rule["input"])
    shape = scope.shapes.get(tensor)
    if shape is None:
        return [
            ("warning", f"the rank of {rule['name']!r} is unknown; TensorRT needs rank {rule['allowed']}.")
        ]
    if len(shape) in rule["allowed"]:
        return []
    return [("error", f"{rule['name']!r} has rank {len(shape)}; TensorRT supports rank {rule['allowed']}.")]


def _input_static_dims(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    shape = scope.shapes.get(_input(node, rule["input"]))
    if shape is None:
        return [("warning", f"the shape of {rule['name']!r} is unknown; TensorRT needs it static.")]
    if all(isinstance(d, int) for d in shape):
        return []
    return [("error", f"{rule['name']!r} has shape {shape}; TensorRT needs static dimensions.")]


def _pads_symmetric(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    pads = _attr(node, "pads")
    if not pads:
        return []
    half = len(pads) // 2
    if list(pads[:half]) == list(pads[half:]):
        return []
    return [("error", f"pads={pads}: TensorRT needs equal padding at the start and end of each axis.")]


def _same_activations_both_directions(
    node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope
) -> list[tuple[str, str]]:
    activations = _attr(node, "activations")
    if _attr(node, "direction") != "bidirectional" or not activations:
        return []
    half = len(activations) // 2
    if activations[:half] == activations[half:]:
        return []
    return [
        (
            "error",
            f"activations={activations}: TensorRT needs the same activations for the forward and "
            "reverse directions.",
        )
    ]


def _resize_axes_iota(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    scales = _input(node, 2)
    axes = _attr(node, "axes")
    if not scales or scales in scope.constants or axes is None:
        return []
    shape = scope.shapes.get(_input(node, 0))
    expected = list(range(len(shape) if shape is not None else len(axes)))
    if list(axes) == expected:
        return []
    return [
        (
            "error",
            f"axes={axes} with run-time scales; TensorRT needs axes {expected} (every axis, in order).",
        )
    ]


def _if_branch_outputs(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    then_branch, else_branch = _attr(node, "then_branch"), _attr(node, "else_branch")
    if then_branch is None or else_branch is None:
        return []
    found: list[tuple[str, str]] = []
    for i, (a, b) in enumerate(zip(then_branch.output, else_branch.output, strict=False)):
        if a.name == b.name:
            found.append(
                ("error", f"output {i} of both branches is named {a.name!r}; TensorRT needs different names.")
            )
        rank_a, rank_b = _declared_rank(a), _declared_rank(b)
        if rank_a is not None and rank_b is not None and rank_a != rank_b:
            found.append(
                ("error", f"output {i} has rank {rank_a} in then_branch and {rank_b} in else_branch.")
            )
    return found


def _declared_rank(info: onnx.ValueInfoProto) -> int | None:
    tensor_type = info.type.tensor_type
    if not info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    return len(tensor_type.shape.dim)


def _unchecked(node: onnx.NodeProto, rule: Mapping[str, Any], scope: _Scope) -> list[tuple[str, str]]:
    return [("warning", f"not checked from the graph alone: {rule['fact']}.")]


RULES: dict[str, Rule] = {
    "input_constant": _input_constant,
    "input_constant_equals": _input_constant_equals,
    "input_all_zero": _input_all_zero,
    "input_constant_below": _input_constant_below,
    "attribute_in": _attribute_in,
    "attribute_absent": _attribute_absent,
    "attribute_all_ones": _attribute_all_ones,
    "attribute_ignored": _attribute_ignored,
    "kernel_rank_in": _kernel_rank_in,
    "outputs_absent": _outputs_absent,
    "input_rank_in": _input_rank_in,
    "input_static_dims": _input_static_dims,
    "pads_symmetric": _pads_symmetric,
    "same_activations_both_directions": _same_activations_both_directions,
    "resize_axes_iota": _resize_axes_iota,
    "if_branch_outputs": _if_branch_outputs,
    "unchecked": _unchecked,
}
