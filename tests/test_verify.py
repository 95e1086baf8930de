"""Verification can fail: an engine that drifts from the reference is named in the report."""

from __future__ import annotations

import numpy as np
import pytest

from trtdeploy.build import BuildResult
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import VerificationError
from trtdeploy.runtime.reports import raise_if_failed
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import verify_bundle


class Perturbed(Engine):
    """Wraps an engine and adds noise to its outputs: a stand-in for a broken precision."""

    def __init__(self, inner: Engine, scale: float) -> None:
        super().__init__(inner.component, inner.io)
        self.inner, self.scale = inner, scale
        self.rng = np.random.default_rng(0)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.run(feeds)
        return {k: v + self.scale * self.rng.standard_normal(v.shape).astype(v.dtype) for k, v in out.items()}


def test_clean_engines_pass(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    report = verify_bundle(bundle, open_engines(bundle), "onnxruntime")
    assert report.passed
    assert [(c.component, c.output) for c in report.comparisons] == [
        ("vision", "image_embeds"),
        ("text", "text_embeds"),
    ]
    assert all(c.max_abs < 1e-4 and c.cosine > 0.99999 for c in report.comparisons)
    assert report.tasks[0].name == "zero_shot_top1_agreement" and report.tasks[0].value == 1.0


def test_a_drifting_engine_fails_with_a_table(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    engines = open_engines(bundle)
    engines["text"] = Perturbed(engines["text"], scale=0.05)
    report = verify_bundle(bundle, engines, "onnxruntime")
    assert not report.passed
    failing = {c.output for c in report.comparisons if not c.passed}
    assert failing == {"text_embeds"}
    with pytest.raises(VerificationError) as info:
        raise_if_failed(report)
    assert "text/text_embeds" in str(info.value) and "image_embeds" not in str(info.value)
    assert "FAIL" in report.to_markdown()


def test_reference_outputs_match_the_engines_within_fp32_rounding(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    inputs, outputs = bundle.reference("vision")
    assert inputs["pixel_values"].shape[0] == 7  # held-out images, not the trace batch of 2
    engines = open_engines(bundle)
    np.testing.assert_allclose(
        engines["vision"].run(inputs)["image_embeds"], outputs["image_embeds"], atol=1e-5
    )
