"""The procedural "shapes" dataset: coloured shapes on photographic backgrounds, with ground truth
for every task our models do (caption, class label, referring expression + mask, boxes + classes).

Every sample is a pure function of (split, index): its seed is the split's first seed plus the
index, and nothing else feeds the random generator, so any sample can be rebuilt anywhere, alone.
Numpy and PIL only, so the torch-free side can regenerate evaluation data too.

Design, and why:
- One render size, 128 x 128, for all three models. The tiny models are configured for it, so the
  preprocessing resize is the identity and the pixels a model was trained on are the pixels a
  deployed bundle feeds it; masks and boxes live in the same pixel frame as the model outputs. 128
  keeps the smallest shape around 25 px (recognisable) while training fits minutes on two CPU cores.
- Objects sit on the 16 px patch grid of the tiny ViTs (an object's top-left corner is a multiple
  of PLACEMENT_GRID; its size still jitters). A ViT patch is a linear map of 16 x 16 pixels, so a
  shape edge at any of 16 x 16 sub-patch offsets is a different input, and a ViT learns that
  invariance only from far more images than minutes of CPU training show it. Measured with a
  supervised probe on the CLIP vision tower (one shape on grey, 300 steps): shape accuracy 30% at
  free positions (chance 20%), 96% on the grid; a small CNN reaches 86% at free positions.
- One to three objects with distinct size classes, listed largest first in the caption and the
  boxes. Distinct classes make that order visible in the image, so an exact-match caption is
  well defined. No two objects share both colour and shape, so "the red circle" names one object.
- Backgrounds are random crops of packaged photographs, jittered in brightness, contrast and
  saturation. Train and calibration crops come only from CALIBRATION_IMAGES, evaluation crops only
  from EVALUATION_IMAGES: evaluation measures shapes on photographs no model ever saw.
- Seed ranges of the splits never overlap (train [0, 1e6), calibration [1e6, 1e6+1e4), evaluation
  [2e6, 2e6+1e4)); a test checks the ranges and the background pools.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from trtdeploy.calibration.images import CALIBRATION_IMAGES, EVALUATION_IMAGES, SampleImage

# Bump when rendering or ground truth changes: it salts every seed, so old and new samples differ
# everywhere, and the committed model cards name the version they were measured on.
DATASET_VERSION = 2
IMAGE_SIZE = 128

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 185),
}
# Size classes: the side of the square an object is drawn in, as a fraction of the image side.
# Ordered largest first; jitter of +-10% keeps the classes apart (59 > 48 > 42 > 35 > 28 > 23 px).
SIZES: tuple[tuple[str, float], ...] = (("large", 0.42), ("medium", 0.30), ("small", 0.20))
SIZE_JITTER = 0.10
MAX_OBJECTS = 3
# Every (colour, shape) pair: CLIP's zero-shot label set, named as the class prompt says it.
LABELS: tuple[str, ...] = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered down, for anti-aliased edges
GAP = 2  # px kept free between the squares objects are drawn in, so masks and boxes never touch
# Range of the factor that pulls a background's pixels towards its mean (1 keeps the photograph).
BACKGROUND_CONTRAST = (0.5, 1.0)
PLACEMENT_GRID = 16  # px: objects' top-left corners lie on the ViT patch grid (see the docstring)


@dataclass(frozen=True)
class Split:
    """A fixed, named range of sample seeds and the photographs its backgrounds come from."""

    name: str
    first_seed: int
    size: int
    backgrounds: tuple[SampleImage, ...]

    def seed(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise IndexError(f"split {self.name!r} has samples 0..{self.size - 1}; asked for {index}")
        return self.first_seed + index

    @property
    def seeds(self) -> range:
        return range(self.first_seed, self.first_seed + self.size)


SPLITS: dict[str, Split] = {
    split.name: split
    for split in (
        Split("train", 0, 1_000_000, CALIBRATION_IMAGES),
        Split("calibration", 1_000_000, 10_000, CALIBRATION_IMAGES),
        Split("evaluation", 2_000_000, 10_000, EVALUATION_IMAGES),
    )
}


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]  # (x_min, y_min, x_max, y_max), pixel edges: max is exclusive
    mask: np.ndarray  # (H, W) bool

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class ShapesSample:
    split: str
    index: int
    seed: int
    background: str  # the photograph the background was cropped from
    image: np.ndarray  # (H, W, 3) uint8
    objects: tuple[ShapeObject, ...]  # largest first
    referent: int  # which object the referring expression names

    @property
    def caption(self) -> str:
        """'a red circle and a blue square': every object, largest first."""
        return " and ".join(f"a {obj.name}" for obj in self.objects)

    @property
    def label(self) -> str:
        """The class label: colour and shape of the largest object (one of LABELS)."""
        return self.objects[0].name

    @property
    def referring_expression(self) -> str:
        return f"the {self.objects[self.referent].name}"

    @property
    def referring_mask(self) -> np.ndarray:
        return self.objects[self.referent].mask  # (H, W) bool

    @property
    def boxes(self) -> np.ndarray:
        return np.array([obj.box for obj in self.objects], dtype=np.float32)  # (N, 4)

    @property
    def box_labels(self) -> tuple[str, ...]:
        """Detection classes are the shape names; colour is the caption's business."""
        return tuple(obj.shape for obj in self.objects)


def label_prompt(label: str) -> str:
    """The zero-shot prompt for a class label: the caption of an image holding only that object."""
    return f"a {label}"


def sample(split: str, index: int) -> ShapesSample:
    """The sample ``index`` of ``split``, rendered from its seed alone."""
    if split not in SPLITS:
        raise KeyError(f"unknown shapes split {split!r}; the splits are {sorted(SPLITS)}")
    spec = SPLITS[split]
    seed = spec.seed(index)
    rng = np.random.default_rng([DATASET_VERSION, seed])
    source = spec.backgrounds[int(rng.integers(len(spec.backgrounds)))]
    canvas = _background(rng, source).astype(np.float32)  # (H, W, 3)
    objects = tuple(_draw_object(rng, canvas, *layout) for layout in _layout(rng))
    # Sensor-like noise, so flat fills are not exact.
    noise = 4.0 * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(np.rint(canvas + noise), 0, 255).astype(np.uint8)
    referent = int(rng.integers(len(objects)))
    return ShapesSample(split, index, seed, source.name, image, objects, referent)


def samples(split: str, start: int, count: int) -> list[ShapesSample]:
    return [sample(split, index) for index in range(start, start + count)]


@functools.cache
def _photo(source: SampleImage) -> Image.Image:
    return source.load()


def _background(rng: np.random.Generator, source: SampleImage) -> np.ndarray:
    """A random square crop of the photograph, flipped/rotated and jittered: (H, W, 3) float32."""
    photo = _photo(source)
    side = int(min(photo.size) * rng.uniform(0.3, 1.0))
    left = int(rng.integers(photo.width - side + 1))
    top = int(rng.integers(photo.height - side + 1))
    crop = photo.resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
    )
    pixels = np.asarray(crop, dtype=np.float32)  # (H, W, 3)
    pixels = np.rot90(pixels, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    grey = pixels.mean(axis=2, keepdims=True)  # (H, W, 1)
    pixels = grey + (pixels - grey) * rng.uniform(0.3, 1.0)  # saturation
    mean = float(pixels.mean())
    pixels = mean + (pixels - mean) * rng.uniform(*BACKGROUND_CONTRAST)
    return np.clip(pixels * rng.uniform(0.6, 1.1), 0, 255).astype(np.float32)  # brightness


def _layout(rng: np.random.Generator) -> list[tuple[str, str, str, int, int, int]]:
    """(shape, colour, size class, side, x, y) per object, largest first, never overlapping."""
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    size_ids = sorted(rng.choice(len(SIZES), size=count, replace=False))  # distinct, largest first
    used: set[tuple[str, str]] = set()
    kinds = [_new_kind(rng, used) for _ in size_ids]
    sides = [
        round(SIZES[i][1] * IMAGE_SIZE * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)) for i in size_ids
    ]
    spots = _free_spots(rng, sides)
    return [
        (shape, colour, SIZES[i][0], side, x, y)
        for (shape, colour), i, side, (x, y) in zip(kinds, size_ids, sides, spots, strict=True)
    ]


def _new_kind(rng: np.random.Generator, used: set[tuple[str, str]]) -> tuple[str, str]:
    while True:
        kind = (SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS)[int(rng.integers(len(COLOURS)))])
        if kind not in used:
            used.add(kind)
            return kind


def _free_spots(rng: np.random.Generator, sides: Sequence[int]) -> list[tuple[int, int]]:
    """Top-left corners on the PLACEMENT_GRID for squares of these sides that keep GAP px apart.

    Squares are placed one by one at random grid points; a large square placed centrally can leave
    no room for the next, so after a few misses the whole layout starts over.
    """
    for _ in range(100):
        placed: list[tuple[int, int, int]] = []
        for side in sides:
            for _ in range(20):
                cells = (IMAGE_SIZE - side) // PLACEMENT_GRID + 1  # grid points where the square fits
                x, y = (int(v) * PLACEMENT_GRID for v in rng.integers(0, cells, size=2))
                if all(_apart((x, y, side), other) for other in placed):
                    placed.append((x, y, side))
                    break
            else:
                break
        if len(placed) == len(sides):
            return [(x, y) for x, y, _ in placed]
    # The three largest squares cover about a third of the image, so this means a broken constant.
    raise RuntimeError(
        f"could not place squares of {list(sides)} px in {IMAGE_SIZE} px; check SIZES and IMAGE_SIZE"
    )


def _apart(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    (ax, ay, aside), (bx, by, bside) = a, b
    return (
        ax + aside + GAP <= bx or bx + bside + GAP <= ax or ay + aside + GAP <= by or by + bside + GAP <= ay
    )


def _draw_object(
    rng: np.random.Generator,
    canvas: np.ndarray,
    shape: str,
    colour: str,
    size: str,
    side: int,
    x: int,
    y: int,
) -> ShapeObject:
    """Paint one shape into ``canvas`` (in place) and return it with its mask and tight box."""
    alpha = _coverage(shape, side)  # (side, side) float32 in [0, 1]
    fill = np.clip(np.array(COLOURS[colour]) + rng.integers(-12, 13, size=3), 0, 255)
    region = canvas[y : y + side, x : x + side]  # (side, side, 3), a view into canvas
    region[:] = region * (1 - alpha[..., None]) + fill * alpha[..., None]
    mask = np.zeros(canvas.shape[:2], dtype=bool)
    mask[y : y + side, x : x + side] = alpha >= 0.5
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return ShapeObject(shape, colour, size, box, mask)


def _coverage(shape: str, side: int) -> np.ndarray:
    """Fraction of each pixel the shape covers, drawn at SUPERSAMPLE x and box-filtered down."""
    big = side * SUPERSAMPLE
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    if shape == "circle":
        draw.ellipse((0, 0, big - 1, big - 1), fill=255)
    else:
        draw.polygon([(u * big, v * big) for u, v in _OUTLINES[shape]], fill=255)
    small = layer.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _star(points: int = 5, inner: float = 0.42) -> tuple[tuple[float, float], ...]:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points  # first point straight up
    radii = np.where(np.arange(2 * points) % 2 == 0, 0.5, 0.5 * inner)
    return tuple((0.5 + r * np.cos(a), 0.54 + r * np.sin(a)) for r, a in zip(radii, angles, strict=True))


def _cross(arm: float = 0.18) -> tuple[tuple[float, float], ...]:
    """A plus sign whose arms are 2 * arm wide, traced clockwise from the top arm's left edge."""
    a, e = 0.5 - arm, 0.5 + arm  # inner edges of the arms
    return ((a, 0), (e, 0), (e, a), (1, a), (1, e), (e, e), (e, 1), (a, 1), (a, e), (0, e), (0, a), (a, a))


# Outlines in the unit square (u right, v down), scaled to the object's side when drawn.
_OUTLINES: dict[str, tuple[tuple[float, float], ...]] = {
    "square": ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)),
    "triangle": ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0)),
    "star": _star(),
    "cross": _cross(),
}
