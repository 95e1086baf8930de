"""Image preprocessing in numpy + PIL, equal to the transformers image processors it replaces.

One dataclass describes the three processors our models use (CLIP: shortest edge + centre crop,
bicubic; CLIPSeg: exact size, bilinear; Florence-2: exact size, bicubic). It is stored in the bundle
as JSON, so the device preprocesses exactly as the workstation did. Tests check it against the
transformers PIL backend pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from trtdeploy.runtime.errors import ArtifactError, InputValidationError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

ImageLike = Image.Image | np.ndarray
# Work per image is bounded: the shortest-edge resize of a 1 x 10000 strip would make a 224 x
# 2,240,000 intermediate (seconds and gigabytes for one call). Wider strips are refused, not squeezed.
MAX_ASPECT_RATIO = 64.0
# The largest image accepted, in pixels (PIL refuses files above twice its own 89.5 M limit as
# decompression bombs; arrays and already-open images are held to this bound too).
MAX_PIXELS = 89_478_485
# The largest processor size a bundle may ask for: Florence-2's 768 is the largest in use; beyond a
# few thousand pixels a side, pipeline.json is wrong rather than ambitious.
MAX_MODEL_SIZE = 4096


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize (shortest edge or exact), optional centre crop, rescale, normalize, HWC -> CHW.

    ``size`` is the shortest edge for ``resize="shortest_edge"`` and (height, width) for
    ``resize="exact"``; ``crop`` is (height, width) or None.
    """

    resize: Literal["shortest_edge", "exact"]
    size: tuple[int, int] | int
    crop: tuple[int, int] | None
    resample: Literal["bicubic", "bilinear"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop
        if isinstance(self.size, int):
            return (self.size, self.size)
        return self.size

    def __call__(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(N, 3, H, W) float32 pixel values for a list of PIL images or HWC uint8 arrays."""
        if isinstance(images, Image.Image | np.ndarray) or not isinstance(images, Sequence):
            raise InputValidationError(
                f"expected a list of images (PIL images or (H, W[, C]) uint8 arrays), got {type(images).__name__}; "
                "wrap a single image in a list."
            )
        if not images:
            raise InputValidationError("no images to preprocess: give at least one image.")
        return np.stack([self.one(image) for image in images])

    def one(self, image: ImageLike) -> np.ndarray:
        pil = to_rgb(image)
        pil = pil.resize(self._resized_wh(pil.width, pil.height), resample=_RESAMPLE[self.resample])
        pixels = np.asarray(pil)  # (H, W, 3) uint8
        if self.crop is not None:
            pixels = _center_crop(pixels, self.crop)
        # float64 rescale then float32, then normalize in float32: the transformers order of ops.
        scaled = (pixels.astype(np.float64) * self.rescale).astype(np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((scaled - mean) / std).transpose(2, 0, 1).copy()  # (3, H, W)

    def _resized_wh(self, width: int, height: int) -> tuple[int, int]:
        if self.resize == "exact":
            h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
            return (w, h)
        if not isinstance(self.size, int):
            raise ValueError("shortest_edge resize takes one int size")
        # torchvision Resize semantics: the long side is truncated, not rounded.
        if width <= height:
            return (self.size, int(self.size * height / width))
        return (int(self.size * width / height), self.size)

    def to_json(self) -> dict[str, Any]:
        return {
            "resize": self.resize,
            "size": self.size if isinstance(self.size, int) else list(self.size),
            "crop": list(self.crop) if self.crop else None,
            "resample": self.resample,
            "mean": list(self.mean),
            "std": list(self.std),
            "rescale": self.rescale,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImagePreprocess:
        """The preprocessing a bundle's pipeline.json describes; refuses (ArtifactError) any value
        it could not honour (unknown resize or resample, non-positive or absurd sizes, a zero std)."""
        try:
            return cls._checked(data)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArtifactError(
                f"pipeline.json's preprocess block is not one trtdeploy can run ({exc}); got {dict(data)!r:.300}. "
                "Rebuild the bundle."
            ) from exc

    @classmethod
    def _checked(cls, data: Mapping[str, Any]) -> ImagePreprocess:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        resize, resample = data["resize"], data["resample"]
        if resize not in ("shortest_edge", "exact"):
            raise ValueError(f"unknown resize {resize!r}: 'shortest_edge' or 'exact'")
        if resample not in _RESAMPLE:
            raise ValueError(f"unknown resample {resample!r}: one of {sorted(_RESAMPLE)}")
        raw_size, raw_crop = data["size"], data.get("crop")
        size: int | tuple[int, int] = (
            _side(raw_size) if isinstance(raw_size, int) else (_side(raw_size[0]), _side(raw_size[1]))
        )
        if resize == "shortest_edge" and not isinstance(size, int):
            raise ValueError("a shortest_edge resize takes one int size")
        crop = (_side(raw_crop[0]), _side(raw_crop[1])) if raw_crop else None
        mean = tuple(_finite(v) for v in data["mean"])
        std = tuple(_finite(v) for v in data["std"])
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each and std > 0, got {mean} and {std}")
        rescale = _finite(data["rescale"])
        if not 0 < rescale <= 1:
            raise ValueError(f"rescale must lie in (0, 1], got {rescale}")
        return cls(resize, size, crop, resample, mean, std, rescale)


def _side(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MODEL_SIZE:
        raise ValueError(f"image sizes are whole numbers from 1 to {MAX_MODEL_SIZE}, got {value!r}")
    return value


def _finite(value: Any) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def to_rgb(image: ImageLike) -> Image.Image:
    """A PIL RGB image from a PIL image of any mode or an (H, W[, C]) uint8 array (C = 1, 3 or 4),
    refusing anything else, and images too large or too elongated to preprocess in bounded work."""
    if isinstance(image, np.ndarray):
        channels_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
        if image.dtype != np.uint8 or not channels_ok:
            raise InputValidationError(
                f"expected an image array of uint8 laid out (H, W) or (H, W, C) with C = 1, 3 or 4, got "
                f"{image.dtype} with shape {image.shape}. Convert it (e.g. np.transpose(x, (1, 2, 0)) for CHW, "
                "np.clip(x * 255, 0, 255).astype(np.uint8) for floats in [0, 1])."
            )
        image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if not isinstance(image, Image.Image):
        raise InputValidationError(
            f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}. Open files with "
            "PIL.Image.open(path) first."
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise InputValidationError(
            f"the image is {width}×{height} pixels; an image needs at least one pixel."
        )
    if width * height > MAX_PIXELS:
        raise InputValidationError(
            f"the image is {width}×{height} = {width * height:,} pixels, more than the {MAX_PIXELS:,} accepted; "
            "downscale it first."
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise InputValidationError(
            f"the image is {width}×{height}, an aspect ratio above {MAX_ASPECT_RATIO:g}:1 that no model here reads "
            "well and that would cost unbounded work to resize; crop or pad it to a saner shape first."
        )
    return image if image.mode == "RGB" else image.convert("RGB")


def _center_crop(pixels: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    height, width = pixels.shape[:2]
    ch, cw = crop
    if ch > height or cw > width:
        # transformers pads with zeros when the image is smaller than the crop.
        padded = np.zeros((max(ch, height), max(cw, width), pixels.shape[2]), dtype=pixels.dtype)
        top, left = -(-(padded.shape[0] - height) // 2), -(-(padded.shape[1] - width) // 2)
        padded[top : top + height, left : left + width] = pixels
        pixels, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - ch) // 2, (width - cw) // 2
    return pixels[top : top + ch, left : left + cw]
