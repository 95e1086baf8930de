"""A weights folder's preprocessor_config.json read as an ImagePreprocess, refused where trtdeploy
can't reproduce it. CLIPSeg's (ViTImageProcessor) and Florence-2's (CLIPImageProcessor without the
crop) folders describe the same thing: a plain resize to height × width, rescale, normalize."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.preprocess import ImagePreprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# transformers' PILImageResampling numbers in preprocessor_config.json.
RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}


def read_preprocessor_config(path: Path, default: str) -> dict[str, Any]:
    """preprocessor_config.json as an object; ``default`` says what applies without the file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(
            f"{path} could not be read as JSON ({exc}); fix it or remove it to use {default}."
        ) from exc
    if not isinstance(config, dict):
        raise ArtifactError(
            f"{path} holds a {type(config).__name__}, not an object; fix it or remove it to use {default}."
        )
    return config


def preprocess_from_config(config: Mapping[str, Any], source: Path, default: str) -> ImagePreprocess:
    """An ImagePreprocess equal to an exact-size processor config; refuses settings it can't
    reproduce, naming ``default``, what applies when the file is removed."""
    size = config.get("size", {})
    height, width = (size.get("height"), size.get("width")) if isinstance(size, Mapping) else (None, None)
    resample = config.get("resample", 2)
    unsupported = []
    if not config.get("do_resize", True) or height is None or height != width:
        unsupported.append(f"size {size} (a square height/width resize is expected)")
    if resample not in RESAMPLE_NAMES:
        unsupported.append(f"resample {resample} (2 bilinear or 3 bicubic are supported)")
    if (
        config.get("do_center_crop")
        or not config.get("do_normalize", True)
        or not config.get("do_rescale", True)
    ):
        unsupported.append("do_center_crop, or do_normalize/do_rescale off")
    if unsupported:
        raise ArtifactError(
            f"{source}: trtdeploy reproduces a plain resize + rescale + normalize; the folder asks for "
            f"{'; '.join(unsupported)}. Fix the preprocessor_config.json or remove it to use {default}."
        )
    return ImagePreprocess.from_json(
        {
            "resize": "exact",
            "size": [height, width],
            "crop": None,
            "resample": RESAMPLE_NAMES[resample],
            "mean": list(config.get("image_mean", IMAGENET_MEAN)),
            "std": list(config.get("image_std", IMAGENET_STD)),
            "rescale": config.get("rescale_factor", 1 / 255),
        }
    )
