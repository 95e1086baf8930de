"""Bundles of the trained tiny shapes CLIP, gated on a task metric with ground truth.

Each precision is built from the committed clip-shapes-tiny weights and verified on 128 labelled
evaluation images: zero-shot top-1 against the true labels may fall at most the budget's
zero_shot_top1_drop below PyTorch FP32 (1 pt FP32/FP16, 2 pt INT8). The last test shows the gate
can fail: an INT8 graph whose activation scales are too small is rejected on top-1, not only on
the embeddings' cosine.
"""

from __future__ import annotations

import json
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

PRESET = "clip-shapes-tiny"


@pytest.fixture(scope="module")
def shapes_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuildResult]:
    return build_shapes_bundles("clip", PRESET, tmp_path_factory.mktemp("shapes-clip"))


def top1_result(tasks: tuple[TaskResult, ...]) -> TaskResult:
    return task_result(tasks, "zero_shot_top1")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_precision_keeps_top1_against_ground_truth(
    shapes_bundles: dict[str, BuildResult], precision: str
) -> None:
    result = shapes_bundles[precision]
    allowed = result.manifest.budget.tasks["zero_shot_top1_drop"]
    for report in result.reports:  # the Q/DQ graph and, for INT8, ONNX Runtime's fast form
        top1 = top1_result(report.tasks)
        assert top1.passed, f"{precision} {report.form}: {top1.detail}"
        reference = top1.minimum + allowed
        assert reference - top1.value <= allowed + 1e-9


def test_the_reference_is_the_trained_model(shapes_bundles: dict[str, BuildResult]) -> None:
    """PyTorch FP32 on the bundle's 128 images scores about what the card says on 500: a bundle
    built from the random-init architecture or the wrong weights would sit near 1/25."""
    figure = card.read_metrics(COMMITTED_WEIGHTS / PRESET)["evaluation"]["metrics"]["zero_shot_top1"]
    top1 = top1_result(shapes_bundles["fp32"].report.tasks)
    reference = top1.minimum + shapes_bundles["fp32"].manifest.budget.tasks["zero_shot_top1_drop"]
    assert abs(reference - figure) < 0.08, (reference, figure)


def test_the_bundle_carries_the_models_own_tokenizer(shapes_bundles: dict[str, BuildResult]) -> None:
    assert carries_committed_tokenizer(shapes_bundles["fp32"].bundle, PRESET)


def test_int8_calibrates_on_the_shapes_calibration_split(shapes_bundles: dict[str, BuildResult]) -> None:
    method = shapes_bundles["int8"].manifest.precision_method
    assert "shapes calibration split" in json.dumps(method)


def test_a_broken_calibration_fails_the_top1_gate(
    shapes_bundles: dict[str, BuildResult], tmp_path: Path
) -> None:
    bundle = bundle_with_narrowed_int8_ranges(shapes_bundles["int8"].bundle, ("vision.onnx",), tmp_path)
    report = verify_bundle(bundle, open_engines(bundle, form="graph"), "onnxruntime")
    top1 = top1_result(report.tasks)
    assert not top1.passed, top1.detail
