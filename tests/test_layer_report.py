"""`trtdeploy debug precision`: the layer-by-layer report of an FP16/INT8 bundle against FP32.

The report's numbers are checked against the graphs' own outputs on the same inputs, and a planted
FP16 overflow (one MatMul's weights scaled so its products pass 65504) must be named as the first
diverging layer, with its Inf count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import build_tiny, bundle_with_changed_graphs
from onnx import numpy_helper

from trtdeploy.build import BuildResult, ExportedModel
from trtdeploy.calibration.layer_report import LayerReport
from trtdeploy.cli import main
from trtdeploy.debug_precision import PrecisionDebugSettings, debug_precision
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.compare import Budget, Tolerance
from trtdeploy.runtime.errors import UsageError, VerificationError
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import bundle_references

pytestmark = pytest.mark.integration

FP16_MAX = 65504.0


def _report(reports: list[LayerReport], component: str) -> LayerReport:
    return next(r for r in reports if r.component == component)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_the_report_holds_the_graphs_own_numbers(
    tiny_clip: BuildResult, tiny_clip_fp16: BuildResult, tiny_clip_int8: BuildResult, precision: str
) -> None:
    """The last tensor of each graph is its output: its cosine in the report is the cosine of the
    candidate's output against the FP32 bundle's on the same held-out samples."""
    built = {"fp16": tiny_clip_fp16, "int8": tiny_clip_int8}[precision]
    reports = debug_precision(
        PrecisionDebugSettings(built.bundle, tiny_clip.bundle, samples=2, cosine_min=1.0)
    )
    assert [r.component for r in reports] == ["vision", "text"]
    candidate, fp32 = Bundle.load(built.bundle), Bundle.load(tiny_clip.bundle)
    inputs = bundle_references(candidate).inputs
    ours, theirs = open_engines(candidate, form="graph"), open_engines(fp32)
    for report in reports:
        feeds = {k: v[:2] for k, v in inputs[report.component].items()}
        output = candidate.manifest.component(report.component).io.output_names[0]
        a = theirs[report.component].run(feeds)[output].astype(np.float64).ravel()
        b = ours[report.component].run(feeds)[output].astype(np.float64).ravel()
        expected = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        tensor = next(t for t in report.tensors if t.tensor == output)
        assert tensor.cosine == pytest.approx(expected, abs=1e-6)
        assert tensor.max_abs == pytest.approx(float(np.max(np.abs(a - b))), rel=1e-3, abs=1e-7)
        assert len(report.tensors) > 20 and report.samples == 2
        # with a tolerance of 1.0 every rounding counts: the first diverging tensor is the first inexact one
        assert report.first_diverging(), "an FP16/INT8 graph equal to FP32 at every tensor"
        orders = [t.order for t in report.tensors]
        assert orders == sorted(orders)


def _planted_matmul(fp16_graph: Path) -> str:
    """A MatMul of the FP16 graph's FP16 part with a weight initializer, halfway down the graph."""
    model = onnx.load(str(fp16_graph))
    halves = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    candidates = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in halves]
    assert candidates, "no FP16 MatMul with a weight initializer"
    return candidates[len(candidates) // 2]


def test_a_planted_fp16_overflow_is_named(
    tiny_clip: BuildResult, tiny_clip_fp16: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = _planted_matmul(tiny_clip_fp16.bundle / "vision.onnx")

    def scaled(model: onnx.ModelProto) -> None:  # the same scaled weight in FP32 and FP16
        target = next(n for n in model.graph.node if n.name == node)
        weight = next(i for i in model.graph.initializer if i.name == target.input[1])
        values = numpy_helper.to_array(weight)
        factor = 30000.0 / float(np.max(np.abs(values)))  # the weights still fit FP16; their products do not
        scaled_values = (values.astype(np.float64) * factor).astype(values.dtype)
        weight.CopyFrom(numpy_helper.from_array(scaled_values, weight.name))

    fp32 = bundle_with_changed_graphs(tiny_clip.bundle, ["vision.onnx"], scaled, tmp_path / "fp32")
    fp16 = bundle_with_changed_graphs(tiny_clip_fp16.bundle, ["vision.onnx"], scaled, tmp_path / "fp16")
    out = tmp_path / "report.json"
    code = main(
        [
            "debug",
            "precision",
            str(fp16.root),
            "--reference",
            str(fp32.root),
            "--component",
            "vision",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    (record,) = json.loads(out.read_text(encoding="utf-8"))
    first = record["first_diverging"][0]
    assert first["node"] == node and first["non_finite"] > 0
    # named as the graph has it and as the PyTorch model has it (the module that traced the node)
    assert first["module"].startswith("vision_model.encoder.layers.")
    assert f"first diverging: **{node}** (MatMul in `{first['module']}`)" in printed
    assert "overflow to Inf/NaN" in printed
    assert first["ref_max"] > FP16_MAX  # finite in FP32, past FP16's range
    assert record["largest_growth"][0]["node"] == node
    assert record["overflows"][0] == node


def test_the_reference_must_be_the_same_weights_at_fp32(
    tiny_clip_fp16: BuildResult, tiny_clip_int8: BuildResult, tiny_clipseg: BuildResult
) -> None:
    with pytest.raises(UsageError, match="its precision is int8"):
        debug_precision(PrecisionDebugSettings(tiny_clip_fp16.bundle, tiny_clip_int8.bundle))
    with pytest.raises(UsageError, match="it is clipseg, not clip"):
        debug_precision(PrecisionDebugSettings(tiny_clip_fp16.bundle, tiny_clipseg.bundle))
    with pytest.raises(UsageError, match="compares an FP16 or INT8 bundle"):
        debug_precision(PrecisionDebugSettings(tiny_clipseg.bundle))
    with pytest.raises(UsageError, match="no component"):
        debug_precision(PrecisionDebugSettings(tiny_clip_fp16.bundle, components=("vision_tower",)))


def test_a_missed_budget_leaves_a_layer_report(tiny_clip_export: ExportedModel, tmp_path: Path) -> None:
    """An FP16 build held to a cosine no FP16 graph reaches is rejected with the report beside it."""
    strict = Budget({"*": Tolerance(cosine_min=0.9999999, atol=1e-7, rtol=0.0, max_outside=0.0)})
    out = tmp_path / "fp16"
    with pytest.raises(VerificationError):
        build_tiny(tiny_clip_export, out, precision="fp16", budget=strict)
    rejected = out.parent / "fp16.rejected"
    records = json.loads((rejected / "layer_report.json").read_text(encoding="utf-8"))
    assert {r["component"] for r in records} == {"vision", "text"}
    for record in records:
        assert record["first_diverging"], record["component"]
        assert record["first_diverging"][0]["cosine"] < 0.9999999
    assert "first diverging: **" in (rejected / "layer_report.md").read_text(encoding="utf-8")


def test_tensors_compared_in_passes_give_the_report_of_one_pass(
    tiny_clip: BuildResult, tiny_clip_int8: BuildResult
) -> None:
    """A graph too large to hold every tensor at once is compared a group of tensors per pass: the
    groups must not change a number (statuses carried from earlier groups included)."""
    from trtdeploy.calibration.layer_report import LayerReportFromGraphs

    feeds = {k: v[:2] for k, v in bundle_references(Bundle.load(tiny_clip.bundle)).inputs["vision"].items()}
    fp32, int8 = tiny_clip.bundle / "vision.onnx", tiny_clip_int8.bundle / "vision.onnx"
    whole = LayerReportFromGraphs(0.9999, "int8")("vision", fp32, int8, feeds)
    # bytes for a handful of tensors per pass: many passes over the same graph
    small = LayerReportFromGraphs(0.9999, "int8", pass_bytes=4 * int(feeds["pixel_values"].nbytes))
    assert small("vision", fp32, int8, feeds).tensors == whole.tensors
    assert len(whole.tensors) > 20
