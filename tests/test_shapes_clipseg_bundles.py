"""Bundles of the trained tiny shapes CLIPSeg, gated on mean IoU against ground-truth masks.

Each precision is built from the committed clipseg-shapes-tiny weights and verified on 16 labelled
evaluation images × the 25 referring expressions: the masks of the referred objects (about two per
image) are held against their true masks, and mean IoU may fall at most the budget's mean_iou_drop
below PyTorch FP32 (1 pt FP32/FP16, 2 pt INT8). The last test shows the gate can fail: an INT8
decoder whose activation scales are too small is rejected on IoU against the truth.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import (
    build_shapes_bundles,
    bundle_with_narrowed_int8_ranges,
    carries_committed_tokenizer,
    task_result,
)

from trtdeploy.build import BuildResult
from trtdeploy.models.recipe import COMMITTED_WEIGHTS
from trtdeploy.models.shapes import card
from trtdeploy.runtime.reports import TaskResult
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import verify_bundle

pytestmark = pytest.mark.integration

PRESET = "clipseg-shapes-tiny"


@pytest.fixture(scope="module")
def seg_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuildResult]:
    return build_shapes_bundles("clipseg", PRESET, tmp_path_factory.mktemp("shapes-clipseg"))


def truth_result(tasks: tuple[TaskResult, ...]) -> TaskResult:
    return task_result(tasks, "mean_iou")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_precision_keeps_mean_iou_against_ground_truth(
    seg_bundles: dict[str, BuildResult], precision: str
) -> None:
    result = seg_bundles[precision]
    allowed = result.manifest.budget.tasks["mean_iou_drop"]
    for report in result.reports:  # the Q/DQ graph and, for INT8, ONNX Runtime's fast form
        truth = truth_result(report.tasks)
        assert truth.passed, f"{precision} {report.form}: {truth.detail}"
        assert truth.minimum + allowed - truth.value <= allowed + 1e-9
        against_reference = {t.name: t for t in report.tasks}["mask_iou"]  # reported beside it
        assert "reported" in against_reference.detail and 0.0 <= against_reference.value <= 1.0


def test_the_reference_is_the_trained_model(seg_bundles: dict[str, BuildResult]) -> None:
    """PyTorch FP32 on the bundle's referred objects scores about what the card says on 500 images;
    an untrained decoder's masks would sit near 0."""
    figure = card.read_metrics(COMMITTED_WEIGHTS / PRESET)["evaluation"]["metrics"]["mean_iou"]
    truth = truth_result(seg_bundles["fp32"].report.tasks)
    reference = truth.minimum + seg_bundles["fp32"].manifest.budget.tasks["mean_iou_drop"]
    assert abs(reference - figure) < 0.1, (reference, figure)


def test_the_bundle_carries_the_models_own_tokenizer(seg_bundles: dict[str, BuildResult]) -> None:
    assert carries_committed_tokenizer(seg_bundles["fp32"].bundle, PRESET)


def test_a_broken_calibration_fails_the_iou_gate(seg_bundles: dict[str, BuildResult], tmp_path: Path) -> None:
    bundle = bundle_with_narrowed_int8_ranges(
        seg_bundles["int8"].bundle, ("image_encoder.onnx", "decoder.onnx"), tmp_path
    )
    report = verify_bundle(bundle, open_engines(bundle, form="graph"), "onnxruntime")
    assert not truth_result(report.tasks).passed, truth_result(report.tasks).detail
