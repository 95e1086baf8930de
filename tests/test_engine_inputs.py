"""Bad inputs against a real engine (ONNX Runtime, tiny CLIP bundle): our validator answers
before the backend, including for inputs ONNX Runtime itself would run."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from trtdeploy.build import BuildResult
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import BackendUnavailable, InputValidationError
from trtdeploy.runtime.onnxruntime_backend import OrtSettings, providers_for
from trtdeploy.runtime.targets import open_engine, open_engines


@pytest.fixture(scope="module")
def engines(tiny_clip: BuildResult):  # type: ignore[no-untyped-def]
    bundle = Bundle.load(tiny_clip.bundle)
    found = open_engines(bundle)
    yield found
    for engine in found.values():
        engine.close()


def good_text() -> dict[str, np.ndarray]:
    ids = np.array([[49406, 320, 1125, 49407]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def test_good_inputs_run(engines) -> None:  # type: ignore[no-untyped-def]
    out = engines["text"].run(good_text())
    assert out["text_embeds"].shape == (1, 16) and np.isfinite(out["text_embeds"]).all()


BAD_TEXT = [
    (
        "wrong name",
        lambda f: {"ids": f["input_ids"], "attention_mask": f["attention_mask"]},
        "missing ['input_ids']",
    ),
    (
        "int32 ids",
        lambda f: {**f, "input_ids": f["input_ids"].astype(np.int32)},
        "expected dtype int64, got int32",
    ),
    ("float mask", lambda f: {**f, "attention_mask": f["attention_mask"].astype(np.float32)}, "got float32"),
    (
        "id beyond vocab",
        lambda f: {**f, "input_ids": f["input_ids"] + 49408},
        "values must lie in [0, 49407]",
    ),
    (
        "text too long",
        lambda f: {k: np.ones((1, 78), np.int64) for k in f},
        "must be between 1 and 77, got 78",
    ),
    ("empty batch", lambda f: {k: v[:0] for k, v in f.items()}, "must be between 1 and 32, got 0"),
    ("ragged batch", lambda f: {**f, "attention_mask": np.ones((2, 4), np.int64)}, "must agree"),
    ("rank 1", lambda f: {k: v[0] for k, v in f.items()}, "expected rank 2"),
]


@pytest.mark.parametrize(("case", "make", "message"), BAD_TEXT, ids=[c[0] for c in BAD_TEXT])
def test_bad_text_inputs(engines, case: str, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputValidationError) as info:
        engines["text"].run(make(good_text()))
    assert message in str(info.value)
    assert str(info.value).startswith("text: ")  # names the component


def test_batch_beyond_profile_is_refused_although_onnxruntime_would_run_it(
    tiny_clip: BuildResult, engines
) -> None:  # type: ignore[no-untyped-def]
    pixels = np.zeros((33, 3, 224, 224), np.float32)
    raw = ort.InferenceSession(str(tiny_clip.bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    assert raw.run(None, {"pixel_values": pixels})[0].shape == (33, 16)  # ONNX Runtime: no profile
    with pytest.raises(InputValidationError, match="between 1 and 32, got 33"):
        engines["vision"].run({"pixel_values": pixels})


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((1, 3, 224, 224), np.float64), "expected dtype float32, got float64"),
        (np.zeros((1, 3, 225, 224), np.float32), "axis 2 must be 224"),
        (np.zeros((1, 224, 224, 3), np.float32), "axis 1 must be 3"),
        (np.full((1, 3, 224, 224), np.nan, np.float32), "NaN or Inf"),
        (np.full((1, 3, 224, 224), -np.inf, np.float32), "NaN or Inf"),
    ],
)
def test_bad_pixels(engines, pixels: np.ndarray, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputValidationError, match=message):
        engines["vision"].run({"pixel_values": pixels})


def test_unknown_target_and_missing_gpu_provider_say_what_to_do(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    with pytest.raises(BackendUnavailable, match="unknown target"):
        open_engine(bundle, "vision", "tflite")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailable, match="install onnxruntime-gpu|Install onnxruntime-gpu"):
            providers_for(OrtSettings(target="onnxruntime-cuda"))
