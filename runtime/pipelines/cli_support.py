"""What every pipeline's `trtdeploy run` shares: options checked against what the pipeline reads,
comma-separated texts, and image files opened safely."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence, Set
from pathlib import Path
from typing import Any

from PIL import Image

from trtdeploy.runtime.errors import UsageError
from trtdeploy.runtime.images import open_image_file
from trtdeploy.runtime.pipelines.base import RunRequest


def check_options(request: RunRequest, known: Set[str], usage: str, *, allow_out_dir: bool) -> None:
    """Refuse options this pipeline does not read, rather than ignore them."""
    given = sorted(name for name, value in request.options.items() if value is not None and name not in known)
    if request.out_dir is not None and not allow_out_dir:
        given.append("--out-dir")
    if given:
        raise UsageError(f"{', '.join(given)} do not apply to this bundle: {usage}.")
    if request.out_dir is not None:
        out = request.out_dir
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out-dir {out} is a file, not a folder; name a folder to write into.")


def text_list(value: Any, option: str, usage: str) -> list[str]:
    """The comma-separated texts of ``option``; refuses it missing or empty."""
    texts = [t.strip() for t in str(value or "").split(",") if t.strip()]
    if not texts:
        raise UsageError(f"{option} is missing or empty: {usage}.")
    return texts


def request_images(request: RunRequest) -> Iterator[tuple[Path, Image.Image]]:
    """Each --image, opened and checked (a missing file, a folder, a FIFO, a text file or a
    decompression bomb is refused with the reason before any engine runs)."""
    if not request.images:
        raise UsageError("give at least one --image FILE.")
    opened = [(path, open_image_file(path)) for path in request.images]  # every file checked first
    yield from opened


class OutputNames:
    """File names under --out-dir for the outputs of one run: ``<stem>.<parts>.png``, prefixed with
    the image's position when two inputs share a stem (a/cat.jpg, b/cat.jpg), and never the name of
    an input image (`--out-dir .` next to the photographs must not write over them)."""

    def __init__(self, out_dir: Path, images: Sequence[Path]) -> None:
        self.out_dir = out_dir
        self.inputs = {p.resolve() for p in images}
        stems = Counter(p.stem for p in images)
        self.stems = [f"{i}-{p.stem}" if stems[p.stem] > 1 else p.stem for i, p in enumerate(images)]

    def png(self, image_index: int, *parts: str) -> Path:
        slugs = [re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-")[:40] or "output" for part in parts]
        path = self.out_dir / ".".join([self.stems[image_index], *slugs, "png"])
        if path.resolve() in self.inputs:
            raise UsageError(
                f"--out-dir would write {path} over an input image; name another folder for the outputs."
            )
        return path
