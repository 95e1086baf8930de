"""Image files from users, opened safely: a regular file PIL can read, within bounded size.

A newcomer's first mistakes (a path that does not exist, a folder, a text file, a FIFO that would
block forever, a 20000 × 20000 decompression bomb) each get one clear InputValidationError instead
of a traceback or a hang.
"""

from __future__ import annotations

import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.preprocess import MAX_PIXELS, to_rgb


def open_image_file(path: str | Path) -> Image.Image:
    """The RGB image in ``path``, fully read; refuses anything that is not a readable image file."""
    path = Path(path)
    try:
        info = path.stat()  # follows links: the file they point to must be a regular file
    except FileNotFoundError:
        raise InputValidationError(f"image {path}: no such file. Check the path.") from None
    except OSError as exc:
        raise InputValidationError(f"image {path}: cannot be read ({exc.strerror}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputValidationError(
            f"image {path} is a folder; pass image files (--image a.jpg --image b.png)."
        )
    if not stat.S_ISREG(info.st_mode):
        # Opening a FIFO or a device would block or read without end.
        raise InputValidationError(
            f"image {path} is not a regular file (a pipe or a device?); pass an image file."
        )
    if info.st_size == 0:
        raise InputValidationError(f"image {path} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size  # read from the header, before any pixel is decoded
                if width * height > MAX_PIXELS:
                    raise InputValidationError(
                        f"image {path} is {width}×{height} = {width * height:,} pixels, more than the "
                        f"{MAX_PIXELS:,} accepted (a decompression bomb, or a photograph to downscale first)."
                    )
                image.load()
                rgb = image.convert("RGB")  # a copy that outlives the file
        return to_rgb(rgb)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputValidationError(f"image {path} is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InputValidationError(
            f"image {path} is not an image PIL can read (is it a text file or an unsupported format?)."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InputValidationError):
            raise
        raise InputValidationError(
            f"image {path} could not be decoded ({exc}); is the file truncated?"
        ) from None
