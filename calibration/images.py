"""Real photographs that ship inside installed packages, split once into evaluation and calibration.

No network: scikit-image and matplotlib carry these files in their wheels. The two splits never
share an image (a test checks it), so verification always runs on inputs calibration never saw.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from trtdeploy.runtime.errors import ArtifactError


@dataclass(frozen=True)
class SampleImage:
    name: str
    package: str  # the distribution whose wheel carries the file
    relpath: str  # path inside that package's folder
    shows: str  # what is in the picture, for prompts and for readers

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ArtifactError(
                f"sample image {self.name!r} ships with the {self.package!r} package, which is not installed. "
                "Install the export extra: pip install 'trtdeploy[export]' (make does this)."
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        if not path.is_file():
            raise ArtifactError(
                f"sample image {self.name!r} is missing from the {self.package} install ({path.name})."
            )
        return path

    def load(self) -> Image.Image:
        with Image.open(self.path()) as image:
            return image.convert("RGB")


def _skimage(name: str, shows: str, ext: str = "png") -> SampleImage:
    return SampleImage(name, "skimage", f"data/{name}.{ext}", shows)


# Held-out images for verification and evaluation: photographs with one clear subject each.
EVALUATION_IMAGES = (
    _skimage("chelsea", "a cat"),
    _skimage("coffee", "a cup of coffee"),
    _skimage("astronaut", "an astronaut"),
    _skimage("rocket", "a rocket launch", "jpg"),
    _skimage("motorcycle_left", "a motorcycle"),
    _skimage("camera", "a man with a camera"),
    SampleImage("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "a woman in uniform"),
)

# Calibration images: every other photograph or texture the packages ship.
CALIBRATION_IMAGES = (
    _skimage("motorcycle_right", "a motorcycle"),
    _skimage("hubble_deep_field", "galaxies in deep space", "jpg"),
    _skimage("retina", "a retina", "jpg"),
    _skimage("ihc", "stained tissue"),
    _skimage("coins", "old coins"),
    _skimage("brick", "a brick wall"),
    _skimage("grass", "grass"),
    _skimage("gravel", "gravel"),
    _skimage("moon", "the surface of the moon"),
    _skimage("cell", "a cell under a microscope"),
    _skimage("page", "a page of text"),
    _skimage("text", "text on a sign"),
    _skimage("clock_motion", "a clock"),
    _skimage("color", "a colour wheel"),
    _skimage("chessboard_RGB", "a chessboard"),
    _skimage("horse", "a horse silhouette"),
    _skimage("logo", "a logo"),
)


def load_images(samples: tuple[SampleImage, ...]) -> list[Image.Image]:
    return [sample.load() for sample in samples]
