"""What every pipeline's `trtdeploy run` shares: options checked against what the pipeline reads,
comma-separated texts, and image files opened safely."""

from __future__ import annotations

from collections.abc import Iterator, Set
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
