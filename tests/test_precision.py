"""Precision in the graph: the FP16 and INT8 bundles' ONNX obey the rules TensorRT builds them by,
and their numbers stay within budget of the PyTorch reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import EMBEDDINGS_ONLY_INT8, build_tiny
from onnx import helper, numpy_helper

from trtdeploy.build import BuildResult, ExportedModel
from trtdeploy.calibration.checks import check_fp16_graph, check_qdq_graph
from trtdeploy.calibration.data import CalibrationSet, CalibrationSettings, raw_calibration_data
from trtdeploy.calibration.graph_types import tensor_types
from trtdeploy.calibration.int8 import Int8Settings, QdqOnnxFromOnnx, calibrate, find_targets
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.compare import Budget, Tolerance
from trtdeploy.runtime.errors import ExportError, VerificationError
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import verify_bundle

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("component", ["vision", "text"])
def test_fp16_graph_keeps_fp32_io_and_layernorm(tiny_clip_fp16: BuildResult, component: str) -> None:
    model = onnx.load(str(tiny_clip_fp16.bundle / f"{component}.onnx"))
    types = tensor_types(model)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), (
            value.name
        )
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert matmuls and all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in matmuls)
    check_fp16_graph(model, component)


@pytest.mark.parametrize("component", ["vision", "text"])
def test_int8_graph_follows_tensorrt_qdq_rules(tiny_clip_int8: BuildResult, component: str) -> None:
    model = onnx.load(str(tiny_clip_int8.bundle / f"{component}.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    consumers = {i: n for n in model.graph.node for i in n.input}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 10
    weight_dq = 0
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.data_type == onnx.TensorProto.INT8
        assert not numpy_helper.to_array(zero_point).any()
        assert node.output[0] not in outputs
        scale = numpy_helper.to_array(inits[node.input[1]])
        assert (scale > 0).all()
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight
            weight_dq += 1
            weight = inits[node.input[0]]
            axis = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "axis")
            assert weight.data_type == onnx.TensorProto.INT8
            consumer = consumers[node.output[0]]
            assert (consumer.op_type, axis) in {("MatMul", 1), ("Conv", 0), ("Gemm", 1), ("Gemm", 0)}
            assert scale.shape == (weight.dims[axis],)  # one scale per output channel
        else:
            assert scale.shape == ()  # activations: per tensor
    assert weight_dq >= 5
    check_qdq_graph(model, component)


def test_int8_bundle_quantizes_every_layer_and_says_how(tiny_clip_int8: BuildResult) -> None:
    method = tiny_clip_int8.manifest.precision_method
    assert method["kind"] == "int8" and method["fallback"]["kept_in_fp16"] == []
    assert method["quantized"]["vision"]["quantized_nodes"] == 13  # 2 layers x 6 linears + projection
    assert method["calibration"]["method"] == "percentile" and len(method["calibration"]["sha256"]) == 64
    entry = tiny_clip_int8.manifest.component("vision")
    assert entry.forms == {"onnxruntime": "vision.onnxruntime.onnx"}
    graph, fast = tiny_clip_int8.reports
    assert (graph.form, fast.form) == ("graph", "onnxruntime fast form")
    # Two different files really ran: the Q/DQ graph and the dynamic-INT8 form differ in rounding.
    assert graph.comparisons[0].max_abs != fast.comparisons[0].max_abs
    assert min(c.samples.worst_cosine for r in (graph, fast) for c in r.comparisons) > 0.99
    record = json.loads((tiny_clip_int8.bundle / "calibration" / "vision.json").read_text())
    assert record["key_fields"]["method"] == "percentile" and record["thresholds"]


def test_bundles_verify_again_from_disk(tiny_clip_fp16: BuildResult, tiny_clip_int8: BuildResult) -> None:
    for result in (tiny_clip_fp16, tiny_clip_int8):
        bundle = Bundle.load(result.bundle)
        for form in ("graph", "auto"):
            report = verify_bundle(bundle, open_engines(bundle, form=form), "onnxruntime", form)
            assert report.passed, report.failures()
            assert min(c.cosine for c in report.comparisons) > (
                0.999 if result.manifest.precision == "fp16" else 0.99
            )


def test_same_inputs_give_byte_identical_scales(tiny_clip_export: ExportedModel, tmp_path: Path) -> None:
    """Three calibrations from scratch (no cache) write the same scale bytes."""
    fp32 = tiny_clip_export.fp32["vision"]
    settings = Int8Settings(method="entropy")
    targets = find_targets(onnx.load(str(fp32)), settings)
    feeds = tiny_calibration(tiny_clip_export)
    scale_bytes = []
    for run in range(3):
        thresholds = calibrate(fp32, targets, feeds.batches("vision"), settings)
        out = QdqOnnxFromOnnx(targets, thresholds)(fp32, fp32, tmp_path / f"run{run}.onnx")
        model = onnx.load(str(out))
        scale_bytes.append({i.name: i.raw_data for i in model.graph.initializer if i.name.endswith("scale")})
    assert scale_bytes[0] and scale_bytes[0] == scale_bytes[1] == scale_bytes[2]


def tiny_calibration(exported: ExportedModel) -> CalibrationSet:
    from trtdeploy.calibration.data import batched
    from trtdeploy.calibration.images import CALIBRATION_IMAGES, load_images
    from trtdeploy.models.clip import preprocess_for

    pixels = preprocess_for(224)(load_images(CALIBRATION_IMAGES[:8]))
    settings = CalibrationSettings(count=8)
    return CalibrationSet({"vision": batched({"pixel_values": pixels}, 4)}, settings, "test")


def test_calibration_cache_is_reused(tiny_clip_export: ExportedModel, bundles_dir: Path) -> None:
    again = build_tiny(
        tiny_clip_export,
        bundles_dir / "clip-tiny" / "int8-again",
        precision="int8",
        budget=EMBEDDINGS_ONLY_INT8,
    )
    record = json.loads((again.bundle / "calibration" / "vision.json").read_text())
    first = json.loads((bundles_dir / "clip-tiny" / "int8" / "calibration" / "vision.json").read_text())
    assert record["reused"] is True and first["reused"] is False
    assert record["thresholds"] == first["thresholds"]


def test_fallback_keeps_the_fewest_layers_that_meet_a_strict_budget(
    tiny_clip_export: ExportedModel, tmp_path: Path
) -> None:
    strict = Budget({"*": Tolerance(cosine_min=0.9997, atol=0.1, rtol=0.1, max_outside=0.05)})
    result = build_tiny(tiny_clip_export, tmp_path / "strict", precision="int8", budget=strict)
    fallback = result.manifest.precision_method["fallback"]
    kept = fallback["kept_in_fp16"]
    assert kept and all(name.split("/")[0] in ("vision", "text") for name in kept)
    first, *rest = fallback["evaluations"]
    assert first["kept_out_of_int8"] == 0 and first["passed"] is False  # plain INT8 missed it
    passing = [e["kept_out_of_int8"] for e in rest if e["passed"]]
    failing = [e["kept_out_of_int8"] for e in rest if not e["passed"]]
    assert min(passing) == len(kept) and (not failing or max(failing) == len(kept) - 1)  # the fewest
    # The committed bundle, verified afresh from disk, holds the strict budget on every held-out sample.
    bundle = Bundle.load(result.bundle)
    report = verify_bundle(bundle, open_engines(bundle), "onnxruntime")
    assert report.passed and min(c.samples.worst_cosine for c in report.comparisons) >= 0.9997
    model = onnx.load(str(result.bundle / "vision.onnx"))
    qdq_inputs = {n.name for n in model.graph.node for i in n.input if i.endswith("_dq")}
    kept_vision = {name.split("/")[1] for name in kept if name.startswith("vision/")}
    assert not kept_vision & qdq_inputs  # kept layers really have no Q/DQ


def test_user_exclusions_stay_out_of_int8(tiny_clip_export: ExportedModel, tmp_path: Path) -> None:
    result = build_tiny(
        tiny_clip_export, tmp_path / "noconv", precision="int8", budget=EMBEDDINGS_ONLY_INT8,
        int8=Int8Settings(exclude_op_types=("Gemm",)),
    )  # fmt: skip
    model = onnx.load(str(result.bundle / "vision.onnx"))
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert gemms and not any(i.endswith("_dq") for n in gemms for i in n.input)
    assert result.manifest.precision_method["excluded_by_user"]["op_types"] == ["Gemm"]


def test_broken_calibration_is_caught_by_verification(tiny_clip_int8: BuildResult, tmp_path: Path) -> None:
    """The gate can fail: activation scales 100x too small clip almost everything."""
    import shutil

    from trtdeploy.runtime.bundle_writer import BundleWriter

    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip_int8.bundle, broken)
    model = onnx.load(str(broken / "vision.onnx"))
    for init in model.graph.initializer:
        if init.name.endswith("_qdq_scale"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) / 100, init.name))
    onnx.save(model, str(broken / "vision.onnx"))
    manifest = Bundle.load(tiny_clip_int8.bundle).manifest
    with BundleWriter(tmp_path / "rehashed") as writer:  # a consistent bundle holding the broken graph
        for path in broken.rglob("*"):
            if path.is_file() and path.name != "manifest.json":
                shutil.copyfile(path, writer.path(path.relative_to(broken).as_posix()))
        writer.commit(manifest)
    bundle = Bundle.load(tmp_path / "rehashed")
    report = verify_bundle(bundle, open_engines(bundle, form="graph"), "onnxruntime")
    assert not report.passed and any(c.component == "vision" and not c.passed for c in report.comparisons)
    with pytest.raises(VerificationError, match="vision/image_embeds"):
        from trtdeploy.runtime.reports import raise_if_failed

        raise_if_failed(report)


def test_checks_reject_what_tensorrt_would(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(3, np.uint8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 19)]
    )
    with pytest.raises(ExportError) as info:
        check_qdq_graph(model, "c")
    text = str(info.value)
    assert "zero point is UINT8, TensorRT needs INT8" in text and "Q/DQ on graph output y" in text


def test_fp16_check_rejects_fp16_io_and_fp16_layernorm() -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [1, 4])
    inits = [
        numpy_helper.from_array(np.ones(4, np.float16), "g"),
        numpy_helper.from_array(np.zeros(4, np.float16), "b"),
    ]
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", axis=-1)
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)]
    )
    with pytest.raises(ExportError) as info:
        check_fp16_graph(model, "c")
    assert "graph I/O x is FP16" in str(info.value) and "LayerNormalization ln computes in FLOAT16" in str(
        info.value
    )


def test_calibration_data_is_deterministic_and_never_evaluation_data(tmp_path: Path) -> None:
    from trtdeploy.calibration.images import EVALUATION_IMAGES
    from trtdeploy.calibration.prompts import EVALUATION_PROMPTS
    from trtdeploy.runtime.errors import ArtifactError

    a = raw_calibration_data(CalibrationSettings(count=24, seed=3))
    b = raw_calibration_data(CalibrationSettings(count=24, seed=3))
    assert [np.asarray(i).tobytes() for i in a.images] == [np.asarray(i).tobytes() for i in b.images]
    assert not set(a.prompts) & set(EVALUATION_PROMPTS)
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "prompts.txt").write_text("a red car\n")
    EVALUATION_IMAGES[0].load().save(folder / "mine.png")
    with pytest.raises(ArtifactError, match="is one of the evaluation images"):
        raw_calibration_data(CalibrationSettings(count=4, folder=folder))
    (folder / "mine.png").unlink()
    EVALUATION_IMAGES[0].load().rotate(90).save(folder / "mine.png")
    data = raw_calibration_data(CalibrationSettings(count=4, folder=folder))
    assert len(data.images) == 4 and data.prompts[0] == "a red car" and data.source == "calib"
    (folder / "prompts.txt").write_text(f"{EVALUATION_PROMPTS[0]}\n")
    with pytest.raises(ArtifactError, match="repeats evaluation prompts"):
        raw_calibration_data(CalibrationSettings(count=4, folder=folder))
