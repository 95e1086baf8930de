"""Image preprocessing equals transformers' CLIPImageProcessor (PIL backend) on real photographs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessorPil

from trtdeploy.calibration.images import CALIBRATION_IMAGES, EVALUATION_IMAGES
from trtdeploy.models.clip import preprocess_for
from trtdeploy.runtime.preprocess import ImagePreprocess


def test_splits_never_share_an_image() -> None:
    evaluation = {s.name for s in EVALUATION_IMAGES}
    calibration = {s.name for s in CALIBRATION_IMAGES}
    assert not evaluation & calibration
    assert all(s.path().is_file() for s in (*EVALUATION_IMAGES, *CALIBRATION_IMAGES))


def odd_images() -> list[Image.Image]:
    """Landscape, portrait, grayscale, RGBA and smaller-than-crop inputs."""
    photo = EVALUATION_IMAGES[0].load()  # 451 x 300 landscape
    return [
        photo,
        photo.transpose(Image.Transpose.ROTATE_90),  # portrait
        photo.convert("L"),
        photo.convert("RGBA"),
        photo.resize((100, 60)),  # upscaled by the resize
        Image.new("RGB", (224, 224), (255, 0, 0)),
    ]


@pytest.mark.parametrize("index", range(6))
def test_clip_preprocessing_matches_transformers(index: int) -> None:
    image = odd_images()[index]
    ours = preprocess_for(224)([image])
    theirs = CLIPImageProcessorPil()(images=[image], return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_every_evaluation_image_matches_transformers() -> None:
    images = [s.load() for s in EVALUATION_IMAGES]
    ours = preprocess_for(224)(images)
    theirs = CLIPImageProcessorPil()(images=images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_numpy_input_and_json_round_trip() -> None:
    pre = preprocess_for(224)
    photo = EVALUATION_IMAGES[1].load()
    np.testing.assert_array_equal(pre([np.asarray(photo)]), pre([photo]))
    assert ImagePreprocess.from_json(pre.to_json()) == pre


def test_bad_images_are_rejected() -> None:
    pre = preprocess_for(224)
    with pytest.raises(ValueError, match="uint8"):
        pre([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError, match="PIL image"):
        pre(["cat.jpg"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no images"):
        pre([])
