"""Florence-2 location tokens: boxes to `<loc_N>` text and back.

Florence-2 writes a box as four tokens `<loc_x1><loc_y1><loc_x2><loc_y2>`, each coordinate
quantised into 1000 bins of the image side (x bins of the width, y bins of the height). A detection
answer is a label followed by one or more boxes: `circle<loc_10><loc_20><loc_300><loc_400>square...`.
Quantising floors coord / (size / 1000) and clamps to [0, 999]; dequantising takes the bin centre,
(bin + 0.5) · size / 1000 — the rules of transformers' Florence2PostProcessor, which then truncates to
int pixels. We keep the float: on the 128 px images the tiny models see, a truncated pixel is a
visible share of a small box's IoU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOCATION_BINS = 1000
_SPECIALS = ("<s>", "</s>", "<pad>")
# A phrase: text that holds no '<', then four or more location tokens (the post-processor's pattern).
_PHRASE = re.compile(r"([^<]+(?:<loc_\d+>){4,})")
_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")


@dataclass(frozen=True)
class Detections:
    """Boxes (N, 4) as (x_min, y_min, x_max, y_max) in pixels, a label per box, optional scores."""

    boxes: np.ndarray
    labels: tuple[str, ...]
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4); got shape {self.boxes.shape}")
        if len(self.labels) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels")
        if self.scores is not None and self.scores.shape != (len(self.boxes),):
            raise ValueError(f"scores must be ({len(self.boxes)},); got shape {self.scores.shape}")


def quantize_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) pixel boxes -> (N, 4) int64 bins; ``image_size`` is (width, height)."""
    per_bin = _per_bin(image_size)  # (4,)
    bins = np.floor(np.asarray(boxes, dtype=np.float64) / per_bin)
    return np.clip(bins, 0, LOCATION_BINS - 1).astype(np.int64)


def dequantize_boxes(bins: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) bins -> (N, 4) float64 pixel boxes at bin centres; ``image_size`` is (width, height)."""
    return (np.asarray(bins, dtype=np.float64) + 0.5) * _per_bin(image_size)


def location_text(labels: Sequence[str], boxes: np.ndarray, image_size: tuple[int, int]) -> str:
    """'circle<loc_..><loc_..><loc_..><loc_..>square<loc_..>...': one phrase per box, in order."""
    bins = quantize_boxes(np.asarray(boxes).reshape(-1, 4), image_size)
    if len(labels) != len(bins):
        raise ValueError(f"{len(bins)} boxes but {len(labels)} labels")
    return "".join(
        label + "".join(f"<loc_{b}>" for b in row) for label, row in zip(labels, bins, strict=True)
    )


def parse_location_text(text: str, image_size: tuple[int, int]) -> Detections:
    """Detections from generated text, as Florence-2's description_with_bboxes parser reads it.

    Special tokens are dropped; each phrase's label is its text before the first location token,
    stripped; every complete group of four location tokens in the phrase is one box with that label.
    Text that is not a phrase (a label without boxes, a dangling location token) yields nothing.
    """
    for special in _SPECIALS:
        text = text.replace(special, "")
    labels: list[str] = []
    bins: list[list[int]] = []
    for phrase in _PHRASE.findall(text):
        label = phrase[: phrase.index("<loc_")].strip()
        for match in _BOX.finditer(phrase):
            labels.append(label)
            bins.append([int(match.group(i)) for i in range(1, 5)])
    if not bins:
        return Detections(np.zeros((0, 4), dtype=np.float64), ())
    return Detections(dequantize_boxes(np.array(bins), image_size), tuple(labels))


def _per_bin(image_size: tuple[int, int]) -> np.ndarray:
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size is (width, height) in pixels; got {image_size}")
    return np.array([width, height, width, height], dtype=np.float64) / LOCATION_BINS
