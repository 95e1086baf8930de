"""The TensorRT op-support lint: planted unsupported nodes are reported by name, real bundles pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtdeploy.build import BuildResult
from trtdeploy.export.trt_lint import RULES, OperatorTable, TrtLint, lint_bundle, lint_graph_files

F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: tuple[onnx.TensorProto, ...] = (),
    opset: int = 18,
    functions: tuple[onnx.FunctionProto, ...] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("custom", 1)],
        functions=list(functions),
    )


def tensor(name: str, elem: int = F32, shape: tuple[int | str, ...] = (2, 4)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def const(name: str, values: list[int] | list[float], dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def findings(m: onnx.ModelProto) -> dict[str, list[str]]:
    """node name -> reasons of its error findings."""
    out: dict[str, list[str]] = {}
    for f in TrtLint().lint_model("g.onnx", m):
        if f.severity == "error":
            out.setdefault(f.node, []).append(f.reason)
    return out


def test_table_is_pinned_data_with_its_source() -> None:
    table = OperatorTable.load()
    assert table.source["repository"] == "onnx/onnx-tensorrt" and table.source["ref"] == "10.1-GA"
    assert len(table.source["commit"]) == 40
    assert (table.opset_min, table.opset_max) == (9, 20)
    assert table.operators["LayerNormalization"]["supported"] is True
    assert table.operators["Unique"]["supported"] is False
    assert "Attention" not in table.operators  # added to the parser in 10.14, after this table
    used = {r["rule"] for op in table.operators.values() for r in op.get("restrictions", ())}
    assert used <= set(RULES), f"rules in the table without an implementation: {used - set(RULES)}"


def test_planted_unsupported_ops_are_reported_with_node_names() -> None:
    m = model(
        [
            helper.make_node("Unique", ["x"], ["u"], name="uniq"),  # in the table, marked N
            helper.make_node("Attention", ["x", "x", "x"], ["a"], name="attn"),  # not in the table
            helper.make_node("FancyOp", ["x"], ["c"], name="plugin_op", domain="custom"),  # no plugin
            helper.make_node("Relu", ["x"], ["y"], name="fine"),
        ],
        [tensor("x")],
        [tensor("y"), tensor("u"), tensor("a"), tensor("c")],
    )
    got = findings(m)
    assert set(got) == {"uniq", "attn", "plugin_op"}
    assert "marks Unique as not supported" in got["uniq"][0]
    assert "not in TensorRT 10.0's ONNX operator table" in got["attn"][0]
    assert "'custom' is not ONNX's" in got["plugin_op"][0]


def test_documented_restrictions_are_checked() -> None:
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zp_bad = numpy_helper.from_array(np.array(3, np.int8), "zp_bad")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zp_bad"], ["q"], name="asymmetric_q"),
        helper.make_node(
            "Resize", ["x", "", "scales"], ["r"], name="antialiased", mode="linear", antialias=1
        ),
        helper.make_node("Resize", ["x", "", "scales"], ["r2"], name="cubic", mode="cubic"),
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="unsorted", sorted=0),
        helper.make_node("TopK", ["x", "k_big"], ["v2", "i2"], name="huge_k"),
        helper.make_node("LayerNormalization", ["x", "g"], ["ln", "mean", "istd"], name="ln_three_outputs"),
        helper.make_node("Shape", ["x"], ["dyn_axes"], name="shape"),
        helper.make_node("Slice", ["x", "starts", "ends", "dyn_axes"], ["s"], name="runtime_axes"),
        helper.make_node("ScatterND", ["x", "idx", "x"], ["sc"], name="scatter_add", reduction="add"),
        helper.make_node("MaxPool", ["img"], ["mp", "mp_idx"], name="pool_indices", kernel_shape=[2, 2]),
        helper.make_node("MatMul", ["ids", "ids"], ["mm"], name="int_matmul"),
    ]
    inits = (
        scale,
        zp_bad,
        const("scales", [1.0, 2.0], np.float32),
        const("k", [2]),
        const("k_big", [4000]),
        const("g", [1.0] * 4, np.float32),
        const("starts", [0]),
        const("ends", [1]),
        const("idx", [[0]]),
    )
    m = model(
        nodes,
        [tensor("x"), tensor("img", F32, (1, 1, 4, 4)), tensor("ids", I64, (2, 2))],
        [tensor("q", TensorProto.INT8)],
        inits,
    )
    got = findings(m)
    assert set(got) == {
        "asymmetric_q",
        "antialiased",
        "cubic",
        "unsorted",
        "huge_k",
        "ln_three_outputs",
        "runtime_axes",
        "scatter_add",
        "pool_indices",
        "int_matmul",
    }
    assert "symmetric quantization only" in got["asymmetric_q"][0]
    assert "antialias=1" in got["antialiased"][0]
    assert "mode='cubic'" in got["cubic"][0]
    assert "sorted=0" in got["unsorted"][0]
    assert "below 3840" in got["huge_k"][0]
    assert "declares 3 outputs" in got["ln_three_outputs"][0]
    assert "'axes' ('dyn_axes') is computed at run time" in got["runtime_axes"][0]
    assert "reduction='add'" in got["scatter_add"][0]
    assert "declares 2 outputs" in got["pool_indices"][0]
    assert "is INT64" in got["int_matmul"][0]


def test_allowed_forms_of_the_same_ops_pass() -> None:
    """The rules above must not fire on their documented, supported forms."""
    nodes = [
        helper.make_node("Constant", [], ["zp"], value=numpy_helper.from_array(np.zeros(1, np.int8))),
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="symmetric_q"),
        helper.make_node("DequantizeLinear", ["q", "scale"], ["dq"], name="dq_no_zp"),
        helper.make_node("Resize", ["x", "", "scales"], ["r"], name="linear", mode="linear"),
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="sorted"),
        helper.make_node("LayerNormalization", ["x", "g"], ["ln"], name="ln"),
        helper.make_node("Constant", [], ["axes"], value_ints=[1]),
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"], name="const_axes"),
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="float_matmul"),
    ]
    inits = (
        numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
        const("scales", [1.0, 2.0], np.float32),
        const("k", [2]),
        const("g", [1.0] * 4, np.float32),
        const("starts", [0]),
        const("ends", [1]),
        const("w", [[1.0]] * 4, np.float32),
    )
    m = model(nodes, [tensor("x")], [tensor("dq")], inits)
    assert TrtLint().lint_model("g.onnx", m) == []


def test_subgraphs_and_local_functions_are_walked() -> None:
    then_branch = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["t"], name="unique_in_then")], "then", [], [tensor("t")]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"], name="id_in_else")], "else", [], [tensor("e")]
    )
    function = helper.make_function(
        "local",
        "Helper",
        ["a"],
        ["b"],
        [helper.make_node("NonMaxUnknown", ["a"], ["b"], name="inner")],
        [helper.make_opsetid("", 18)],
    )
    m = model(
        [
            helper.make_node(
                "If", ["cond"], ["out"], name="branch", then_branch=then_branch, else_branch=else_branch
            ),
            helper.make_node("Helper", ["x"], ["h"], name="call", domain="local"),
        ],
        [tensor("x"), tensor("cond", TensorProto.BOOL, ())],
        [tensor("out"), tensor("h")],
        functions=(function,),
    )
    m.opset_import.append(helper.make_opsetid("local", 1))
    got = findings(m)
    assert set(got) == {"branch/then_branch/unique_in_then", "call/inner"}


def test_opset_outside_the_table_is_reported() -> None:
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], [tensor("x")], [tensor("y")], opset=21)
    got = findings(m)
    assert "opset 21" in got["(model)"][0] and "9 to 20" in got["(model)"][0]


def test_real_bundle_passes_and_a_planted_node_in_it_fails(tiny_clip: BuildResult, tmp_path: Path) -> None:
    report = lint_bundle(tiny_clip.bundle)
    assert report.passed, report.lines()
    assert report.graphs == ("vision.onnx", "text.onnx")
    text = onnx.load(str(tiny_clip.bundle / "text.onnx"))
    victim = next(n for n in text.graph.node if n.op_type == "Softmax")
    victim.op_type = "Unique"  # same wiring, an operator TensorRT's parser has no importer for
    planted = tmp_path / "text.onnx"
    onnx.save(text, str(planted))
    report = lint_graph_files({"text.onnx": planted})
    assert [(f.node, f.op) for f in report.errors] == [(victim.name, "Unique")]


def test_table_file_ships_as_package_data() -> None:
    from importlib import resources

    data = json.loads(resources.files("trtdeploy.export").joinpath("onnx_tensorrt_ops.json").read_text())
    assert data["source"]["path"] == "docs/operators.md"


@pytest.mark.parametrize("severity", ["error", "warning"])
def test_report_lines_name_graph_node_and_op(severity: str) -> None:
    from trtdeploy.export.trt_lint import Finding, LintReport

    f = Finding("vision.onnx", "/enc/Foo_1", "Foo", "why", severity)
    report = LintReport("table", ("vision.onnx",), (f,))
    assert report.lines()[1] == f"{severity}: vision.onnx: node '/enc/Foo_1' (Foo): why"
    assert report.passed is (severity == "warning")


def test_lint_command(tiny_clip: BuildResult, capsys: pytest.CaptureFixture[str]) -> None:
    from trtdeploy.cli import main

    assert main(["lint", str(tiny_clip.bundle)]) == 0
    assert "TensorRT lint of vision.onnx, text.onnx: 0 unsupported" in capsys.readouterr().out
