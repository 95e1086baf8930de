"""What every pipeline's `trtdeploy run` shares: options checked against what the pipeline reads,
comma-separated texts, and image files (named, or found in folders and globs) opened safely."""

from __future__ import annotations

import glob
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


# What a folder given to --image/--images contributes: its files with these suffixes (any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GLOB_CHARACTERS = frozenset("*?[")


def request_image_paths(request: RunRequest) -> list[Path]:
    """The image files a run names, in order and each once: a path that exists is a file or a
    folder, whose image files (by IMAGE_SUFFIXES, hidden files aside, not recursive) are taken in
    name order; a path that does not exist and holds * ? or [ is a glob, whose matches (in name
    order; `**` reaches into subfolders) are taken like typed paths. A folder or glob that yields
    no image is refused; any other path is left for open_image_file to judge."""
    if not request.images:
        raise UsageError("give at least one --image FILE (or --images FILE|FOLDER|'GLOB' ...).")
    found: list[Path] = []
    for given in request.images:
        if not given.exists() and GLOB_CHARACTERS & set(str(given)):
            matches = sorted(glob.glob(str(given), recursive=True))
            if not matches:
                raise UsageError(
                    f"--image {given} matches no file; check the pattern (quote it, as in --images 'photos/*.jpg', "
                    "so the shell leaves it to trtdeploy)."
                )
            for match in map(Path, matches):
                found += _folder_images(match) if match.is_dir() else [match]
        elif given.is_dir():
            found += _folder_images(given)
        else:
            found.append(given)
    return list(dict.fromkeys(found))  # a file named twice is answered once


def _folder_images(folder: Path) -> list[Path]:
    images = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and not p.is_dir()
    )
    if not images:
        raise UsageError(
            f"image {folder} is a folder with no image files in it (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "put images in it, or name image files."
        )
    return images


def request_images(request: RunRequest) -> Iterator[tuple[Path, Image.Image]]:
    """Each image the run names (see request_image_paths), opened and checked (a missing file, a
    FIFO, a text file or a decompression bomb is refused with the reason before any engine runs)."""
    opened = [
        (path, open_image_file(path)) for path in request_image_paths(request)
    ]  # every file checked first
    yield from opened


def checked_image_paths(request: RunRequest) -> list[Path]:
    """request_image_paths, each file opened and checked once, without keeping its pixels: a bad
    file is refused before any engine runs, and a folder of thousands of photographs is not held
    in memory at once (open_image_batches opens them again, a batch at a time)."""
    paths = request_image_paths(request)
    for path in paths:
        open_image_file(path)
    return paths


def open_image_batches(paths: Sequence[Path], size: int) -> Iterator[list[tuple[Path, Image.Image]]]:
    """The images of ``paths`` opened ``size`` at a time (the vision engine's largest batch)."""
    for start in range(0, len(paths), size):
        yield [(path, open_image_file(path)) for path in paths[start : start + size]]


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
