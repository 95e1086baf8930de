"""Calibration data: real images and prompts, prepared by the recipe's own preprocessing.

The built-in source is the calibration split of calibration/images.py (photographs that ship in
installed packages) stretched to the size asked for by deterministic augmentation, and the
built-in calibration prompts. A user folder (CALIB=dir) holds images and a prompts.txt. Either way
the evaluation images and prompts are never used, and the prepared set is identified by a content
hash recorded in the manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from trtdeploy.calibration.images import CALIBRATION_IMAGES, EVALUATION_IMAGES, load_images
from trtdeploy.calibration.prompts import CALIBRATION_PROMPTS, EVALUATION_PROMPTS, SEGMENTATION_PROMPTS
from trtdeploy.runtime.errors import ArtifactError

Feeds = dict[str, np.ndarray]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Prompt templates used to stretch the built-in prompt list (CLIP's own style of prompt).
TEMPLATES = ("{}", "a photo of {}", "a picture showing {}", "an image of {}")


@dataclass(frozen=True)
class CalibrationSettings:
    """Which raw inputs calibrate a model; ``folder`` None means the built-in set."""

    count: int = 128
    seed: int = 0
    folder: Path | None = None
    batch: int = 8  # feeds are batched like this; recorded, since some methods depend on it


@dataclass(frozen=True)
class RawCalibrationData:
    images: tuple[Image.Image, ...]
    prompts: tuple[str, ...]
    source: str  # "built-in" or the folder's name


def raw_calibration_data(settings: CalibrationSettings) -> RawCalibrationData:
    if settings.count < 1:
        raise ArtifactError(f"calibration needs at least one sample, got count={settings.count}.")
    if settings.folder is None:
        base_images, base_prompts, source = (
            load_images(CALIBRATION_IMAGES),
            list(CALIBRATION_PROMPTS),
            "built-in",
        )
    else:
        base_images, base_prompts = _folder_images(settings.folder), _folder_prompts(settings.folder)
        source = settings.folder.name
    rng = np.random.default_rng(settings.seed)
    images = [base_images[i] for i in range(min(settings.count, len(base_images)))]
    while len(images) < settings.count:  # augmented copies, cycling through the originals
        images.append(augment(base_images[len(images) % len(base_images)], rng))
    prompts = [TEMPLATES[(i // len(base_prompts)) % len(TEMPLATES)].format(base_prompts[i % len(base_prompts)])
               for i in range(settings.count)]  # fmt: skip
    return RawCalibrationData(tuple(images), tuple(prompts), source)


def shapes_calibration_data(settings: CalibrationSettings) -> RawCalibrationData:
    """The shapes calibration split (never trained or evaluated on): its images, and as prompts its
    captions and referring expressions in turn, the texts a shapes model reads."""
    from trtdeploy.calibration import shapes

    if settings.count < 1:
        raise ArtifactError(f"calibration needs at least one sample, got count={settings.count}.")
    samples = shapes.samples("calibration", 0, settings.count)
    images = tuple(Image.fromarray(s.image) for s in samples)
    prompts = tuple(s.caption if i % 2 == 0 else s.referring_expression for i, s in enumerate(samples))
    return RawCalibrationData(images, prompts, "shapes calibration split")


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random resized crop (40-100% of the area), a horizontal flip half of the time and a
    brightness/contrast jitter of up to 20%: new pixels, same kind of picture."""
    width, height = image.size
    scale = rng.uniform(0.4, 1.0)
    cw, ch = max(16, int(width * np.sqrt(scale))), max(16, int(height * np.sqrt(scale)))
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Contrast(out).enhance(rng.uniform(0.8, 1.2))


def _folder_images(folder: Path) -> list[Image.Image]:
    if not folder.is_dir():
        raise ArtifactError(f"calibration folder {folder} does not exist.")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ArtifactError(
            f"calibration folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    # Compared by decoded pixels, so a re-encoded copy of an evaluation image is caught too.
    evaluation = {_pixel_digest(s.load()) for s in EVALUATION_IMAGES}
    images = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if _pixel_digest(rgb) in evaluation:
            raise ArtifactError(
                f"calibration image {path.name} is one of the evaluation images; calibration and evaluation "
                "inputs must not overlap. Remove it from the folder."
            )
        images.append(rgb)
    return images


def _pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()


def _folder_prompts(folder: Path) -> list[str]:
    path = folder / "prompts.txt"
    if not path.is_file():
        raise ArtifactError(f"calibration folder {folder} has no prompts.txt (one prompt per line).")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ArtifactError(f"{path} holds no prompts.")
    overlap = sorted(set(prompts) & {*EVALUATION_PROMPTS, *SEGMENTATION_PROMPTS})
    if overlap:
        raise ArtifactError(f"{path} repeats evaluation prompts {overlap}; calibration must not see them.")
    return prompts


@dataclass(frozen=True)
class CalibrationSet:
    """Prepared feeds per component, batched: the same currency as Engine.run."""

    feeds: Mapping[str, tuple[Feeds, ...]]
    settings: CalibrationSettings
    source: str

    def batches(self, component: str) -> Iterator[Feeds]:
        if component not in self.feeds:
            raise ArtifactError(f"the calibration set has no feeds for component {component!r}.")
        return iter(self.feeds[component])

    def sha256(self, component: str | None = None) -> str:
        """Content hash over names, dtypes, shapes and bytes, in order: the set's identity."""
        digest = hashlib.sha256()
        for name in sorted(self.feeds) if component is None else [component]:
            for batch in self.feeds[name]:
                for key in sorted(batch):
                    array = np.ascontiguousarray(batch[key])
                    digest.update(f"{name}|{key}|{array.dtype}|{array.shape}|".encode())
                    digest.update(array.tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "count": self.settings.count,
            "seed": self.settings.seed,
            "batch": self.settings.batch,
            "sha256": self.sha256(),
            "components": {k: self.sha256(k) for k in sorted(self.feeds)},
            "batches": {k: len(self.feeds[k]) for k in sorted(self.feeds)},
        }


def batched(feeds: Feeds, batch: int) -> tuple[Feeds, ...]:
    """Split feeds with a common leading batch axis into batches of at most ``batch``."""
    total = len(next(iter(feeds.values())))
    return tuple({k: v[i : i + batch] for k, v in feeds.items()} for i in range(0, total, batch))
