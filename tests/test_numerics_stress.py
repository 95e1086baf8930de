"""Numerics under stress, every built engine at every precision: an empty prompt, a prompt filling
the text window, rows that are all padding, and extreme but finite pixels. Real inputs (what a
pipeline can be given) must give finite answers; synthetic extremes at the engine's door either
give finite outputs or a NumericalError naming them, never a NaN handed back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trtdeploy.build import BuildResult
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import NumericalError
from trtdeploy.runtime.pipelines.clip import ClipPipeline
from trtdeploy.runtime.pipelines.clipseg import ClipSegPipeline
from trtdeploy.runtime.targets import open_engines

pytestmark = pytest.mark.integration
CLIP_BUNDLES = ["tiny_clip", "tiny_clip_fp16", "tiny_clip_int8"]
CLIPSEG_BUNDLES = ["tiny_clipseg", "tiny_clipseg_fp16", "tiny_clipseg_int8"]
LONG_PROMPT = " ".join(["a very long description of a photograph"] * 30)  # past the 77-token window


def stress_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.new("RGB", (224, 224), (0, 0, 0)),
        Image.new("RGB", (224, 224), (255, 255, 255)),
        Image.fromarray(rng.choice([0, 255], size=(300, 200, 3)).astype(np.uint8)),  # full-contrast noise
        Image.new("RGB", (64, 1000), (255, 0, 0)),  # elongated, within the accepted ratio
    ]


def finite_or_refused(engine: object, feeds: dict[str, np.ndarray]) -> str:
    """What an engine does with an extreme input: 'finite' outputs, or a clear 'refused'."""
    try:
        outputs = engine.run(feeds)  # type: ignore[attr-defined]
    except NumericalError as exc:
        assert "hold NaN or Inf" in str(exc)
        return "refused"
    assert all(np.isfinite(v).all() for v in outputs.values())
    return "finite"


@pytest.mark.parametrize("fixture", CLIP_BUNDLES)
def test_clip_answers_are_finite_on_stress_inputs(fixture: str, request: pytest.FixtureRequest) -> None:
    result: BuildResult = request.getfixturevalue(fixture)
    pipeline = ClipPipeline.from_bundle(Bundle.load(result.bundle))
    texts = pipeline.text_embeddings([LONG_PROMPT, "a", "!!!", "日本語 🚀"])
    assert np.isfinite(texts).all() and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-3)
    for image in stress_images():
        ranked = pipeline.zero_shot(image, ["a cat", LONG_PROMPT])
        assert all(np.isfinite(r.probability) for r in ranked)
        assert sum(r.probability for r in ranked) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("fixture", CLIP_BUNDLES)
def test_clip_engines_at_their_limits(fixture: str, request: pytest.FixtureRequest) -> None:
    result: BuildResult = request.getfixturevalue(fixture)
    bundle = Bundle.load(result.bundle)
    engines = open_engines(bundle)
    bos, eos = 49406, 49407
    empty = {"input_ids": np.array([[bos, eos]], np.int64), "attention_mask": np.ones((1, 2), np.int64)}
    assert finite_or_refused(engines["text"], empty) == "finite"  # the empty prompt
    full = np.full((1, 77), 320, np.int64)
    full[0, 0], full[0, -1] = bos, eos
    assert (
        finite_or_refused(engines["text"], {"input_ids": full, "attention_mask": np.ones_like(full)})
        == "finite"
    )
    padding = {"input_ids": np.full((2, 5), eos, np.int64), "attention_mask": np.zeros((2, 5), np.int64)}
    finite_or_refused(engines["text"], padding)  # all-padding rows: a fully masked softmax
    for value in (1e4, -1e4, 6e4):  # far past any normalised pixel (|x| < 3), still finite in FP16
        finite_or_refused(engines["vision"], {"pixel_values": np.full((1, 3, 224, 224), value, np.float32)})


@pytest.mark.parametrize("fixture", CLIPSEG_BUNDLES)
def test_clipseg_masks_are_finite_on_stress_inputs(fixture: str, request: pytest.FixtureRequest) -> None:
    result: BuildResult = request.getfixturevalue(fixture)
    pipeline = ClipSegPipeline.from_bundle(Bundle.load(result.bundle))
    for image in stress_images():
        segmentation = pipeline.segment(image, ["a cat", LONG_PROMPT, "x"])
        assert np.isfinite(segmentation.probabilities).all()
        assert segmentation.masks.shape == (3, image.height, image.width)
    engines = open_engines(Bundle.load(result.bundle))
    for value in (1e4, -1e4):
        finite_or_refused(
            engines["image_encoder"], {"pixel_values": np.full((1, 3, 352, 352), value, np.float32)}
        )


def test_an_overflow_is_refused_not_returned(tiny_clip_fp16: BuildResult) -> None:
    """The refusal is real: pixels past FP16's range overflow the FP16 graph, and the engine says so."""
    engines = open_engines(Bundle.load(tiny_clip_fp16.bundle), form="graph")
    assert (
        finite_or_refused(engines["vision"], {"pixel_values": np.full((1, 3, 224, 224), 1e30, np.float32)})
        == "refused"
    )
