"""FP16 and INT8 bundles of the trained tiny Florence-2, gated on what users see.

Each is built from the committed florence2-shapes-tiny weights (calibrated on 64 shapes images) and
verified on the card's 32 evaluation images, asked <CAPTION> and <OD>, greedy and with 3 beams:
generated sequences against generate()'s (exact-sequence rate, token agreement) and caption exact
match and OD mAP@0.5 against the ground truth, each within its precision's allowed drop. The last
tests show the task gate rejecting a broken INT8 calibration, and the decoder calibrated on the
steps of real generations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import bundle_with_narrowed_int8_ranges

from trtdeploy.build import BuildResult, ExportedModel
from trtdeploy.models.florence2_calibration import RECORDED_STEPS, decoder_steps
from trtdeploy.models.reference import TorchEngine
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.executor import Executor
from trtdeploy.runtime.florence2_decoder import past_name, present_name
from trtdeploy.runtime.pipelines.florence2 import DECODER_INIT, Florence2Pipeline
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import bundle_references, verify_bundle

pytestmark = pytest.mark.integration

GATES = ("generation_exact_match", "generation_token_agreement", "caption_exact_match", "od_map50")


@pytest.fixture(scope="module")
def bundles(shapes_florence2_fp16: BuildResult, shapes_florence2_int8: BuildResult) -> dict[str, BuildResult]:
    return {"fp16": shapes_florence2_fp16, "int8": shapes_florence2_int8}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_each_precision_meets_its_task_gates(bundles: dict[str, BuildResult], precision: str) -> None:
    result = bundles[precision]
    budget = result.manifest.budget.tasks
    forms = {report.form for report in result.reports}
    assert forms == ({"graph", "onnxruntime fast form"} if precision == "int8" else {"graph"})
    for report in result.reports:
        for name in GATES:
            task = report.task(name)
            assert task.passed, f"{precision} {report.form}: {name} {task.value} ({task.detail})"
        # the gates are the budget's, not defaults: the rates and the drops the recipe sets
        assert report.task("generation_exact_match").minimum == budget["generation_exact_match"] > 0.5
        assert (
            report.task("generation_token_agreement").minimum == budget["generation_token_agreement"] >= 0.95
        )
        od = report.task("od_map50")
        assert od.minimum == pytest.approx(0.9403 - budget["od_map50_drop"], abs=1e-3)


def test_int8_runs_every_quantizable_graph_in_int8(bundles: dict[str, BuildResult]) -> None:
    method = bundles["int8"].manifest.precision_method
    quantized = method["quantized"]
    for graph in ("vision_encoder", "encoder", "decoder_init", "decoder_with_past"):
        assert quantized[graph]["quantized_nodes"] > 0, f"{graph} has no INT8 layer"
    assert quantized["embed_tokens"]["quantized_nodes"] == 0  # a lookup: nothing to quantize
    assert method["calibration"]["source"] == "shapes calibration split"
    # 64 images in 8 batches: one start-token step each, and RECORDED_STEPS of each generation
    assert method["calibration"]["batches"]["decoder_with_past"] == 8 * (1 + len(RECORDED_STEPS))


def test_a_broken_decoder_calibration_fails_the_generation_gate(
    bundles: dict[str, BuildResult], tmp_path: Path
) -> None:
    """Activation scales 8x too small in both decoders: most values saturate, and the sequences
    (not only the per-graph tensors) fail."""
    built = bundles["int8"].bundle
    bundle = bundle_with_narrowed_int8_ranges(
        built, ("decoder_init.onnx", "decoder_with_past.onnx"), tmp_path
    )
    report = verify_bundle(bundle, open_engines(bundle, form="graph"), "onnxruntime")
    assert not report.passed
    exact = report.task("generation_exact_match")
    assert not exact.passed, exact.detail
    assert exact.value < 0.5


def test_the_decoder_is_calibrated_on_generation_steps(
    shapes_florence2_export: ExportedModel, shapes_florence2: BuildResult
) -> None:
    """The with-past graph's calibration feeds are the reference's own decoding steps: a past as
    long as the step, cross-attention K/V equal to decoder_init's on the same images."""
    loaded = shapes_florence2_export.loaded
    bundle = Bundle.load(shapes_florence2.bundle)
    references = bundle_references(bundle)
    sources = {c: {k: v[:2] for k, v in references.inputs[c].items()} for c in Florence2Pipeline.sources}
    components = {c.name: c for c in shapes_florence2_export.components}
    reference = Executor({name: TorchEngine(c, loaded.model) for name, c in components.items()})
    runs = Florence2Pipeline.flow(reference, sources, bundle.manifest.pipeline_config)
    steps = decoder_steps(reference, runs, bundle.manifest.pipeline_config)
    assert [feeds[past_name(0, "decoder", "key")].shape[2] for feeds in steps] == list(RECORDED_STEPS)
    init = reference.run(DECODER_INIT, runs.inputs[DECODER_INIT])
    for feeds in steps:
        np.testing.assert_allclose(
            feeds[past_name(0, "encoder", "value")],
            init[present_name(0, "encoder", "value")],
            rtol=0,
            atol=1e-6,
        )
        assert feeds["input_ids"].shape == (2, 1)
