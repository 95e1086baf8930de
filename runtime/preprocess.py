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

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

ImageLike = Image.Image | np.ndarray


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
        if not images:
            raise ValueError("no images to preprocess")
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
        size = data["size"]
        crop = data.get("crop")
        return cls(
            resize=data["resize"],
            size=int(size) if isinstance(size, int) else (int(size[0]), int(size[1])),
            crop=(int(crop[0]), int(crop[1])) if crop else None,
            resample=data["resample"],
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            rescale=float(data["rescale"]),
        )


def to_rgb(image: ImageLike) -> Image.Image:
    """A PIL RGB image from a PIL image of any mode or an (H, W[, C]) uint8 array."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                f"expected an (H, W) or (H, W, C) uint8 image array, got {image.dtype} with shape {image.shape}"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}")
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
