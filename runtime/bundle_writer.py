"""Writing a bundle without ever destroying what was at its path, or leaving half of one.

A build claims its output first (OutputClaim): the path must be free, empty, or a trtdeploy bundle
(its manifest says so); never a file, a folder of the user's, or the weights folder being read. The
claim holds a lock for the whole build and clears what killed builds of the same output left.
The bundle is written into a hidden sibling folder (BundleWriter), the manifest last, and swapped
into place in one step (renameat2 RENAME_EXCHANGE on Linux): at every moment the path holds the
old bundle or the new one, complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from trtdeploy.runtime.atomic import BuildLock, exchange, fsync_path, rename_no_replace
from trtdeploy.runtime.bundle import MANIFEST, Manifest, _checked_relpath, read_manifest, sha256_file
from trtdeploy.runtime.errors import ArtifactError, UsageError
from trtdeploy.runtime.failpoints import failpoint

# Inside a folder kept for inspection after a failed verification (<out>.rejected): trtdeploy made it
# and may replace it; a folder of that name without the mark is the user's and is left alone.
REJECTED_MARK = ".trtdeploy-rejected"
LEFTOVERS = ("partial", "old", "export", "tmp")  # hidden siblings .<name>.<kind>-* a build makes


def check_destination(final: Path, protected: Sequence[Path] = ()) -> None:
    """Refuse an output path that is not trtdeploy's to replace: a file, a link, the folder of the
    weights being read (or one inside or around it), or a non-empty folder that is not a bundle."""
    final = Path(final)
    if final.is_symlink():
        raise UsageError(f"--out {final} is a symbolic link; name a folder (a link could point anywhere).")
    if final.exists() and not final.is_dir():
        raise UsageError(
            f"--out {final} is a file, not a folder: nothing was written. Name a folder for the bundle."
        )
    here = final.absolute().resolve()
    for other in protected:
        theirs = Path(other).absolute().resolve()
        if here == theirs or theirs in here.parents or here in theirs.parents:
            raise UsageError(
                f"--out {final} overlaps the weights folder {other} the build reads; writing there would destroy "
                "or mix with the checkpoint. Name another folder."
            )
    if final.is_dir() and any(final.iterdir()) and not is_bundle(final):
        entries = sorted(p.name for p in final.iterdir())
        raise UsageError(
            f"--out {final} is a folder that is not a trtdeploy bundle (it holds {', '.join(entries[:5])}"
            f"{' …' if len(entries) > 5 else ''}); a build only replaces a bundle it made. Nothing was "
            "written: name an empty or new folder."
        )


def is_bundle(folder: Path) -> bool:
    try:
        read_manifest(folder)
    except ArtifactError:
        return False
    return True


class OutputClaim:
    """The right to write one output path for the length of a build (see the module docstring)."""

    def __init__(self, final: Path, protected: Sequence[Path] = (), keep: Sequence[Path] = ()) -> None:
        """``keep``: hidden folders of this output that are in use (an export shared by several
        precisions), never cleared."""
        self.final = Path(final).absolute()
        check_destination(self.final, protected)
        self._lock = BuildLock(self.final)
        try:
            clear_leftovers(self.final, keep)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def leftover_prefix(final: Path, kind: str) -> str:
    return f".{final.name}.{kind}-"


def clear_leftovers(final: Path, keep: Sequence[Path] = ()) -> list[Path]:
    """Remove what killed builds of ``final`` left beside it (their hidden partial, old and export
    folders, but those in ``keep``); first put back a bundle a build had moved aside if nothing is
    at ``final``."""
    parent = final.parent
    if not parent.is_dir():
        return []
    kept = {Path(p).absolute() for p in keep}
    found = [
        p
        for p in parent.iterdir()
        if any(p.name.startswith(leftover_prefix(final, k)) for k in LEFTOVERS) and p.absolute() not in kept
    ]
    if not final.exists():
        for old in sorted(p for p in found if p.name.startswith(leftover_prefix(final, "old"))):
            if is_bundle(old / "bundle"):
                os.rename(old / "bundle", final)
                break
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


class BundleWriter:
    """Writes a bundle into a hidden temporary sibling folder and swaps it into place on commit.

    Use as a context manager: leaving the block without ``commit`` (an exception, a kill) leaves
    the final folder untouched and the temporary one is removed (or, after a kill, is a hidden
    folder without a manifest that no loader accepts, cleared by the next build of that output).
    """

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final).absolute()
        check_destination(self.final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(
            tempfile.mkdtemp(prefix=leftover_prefix(self.final, "partial"), dir=self.final.parent)
        )
        self.root.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be copied and shared
        self.committed = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            shutil.rmtree(self.root, ignore_errors=True)

    def path(self, rel: str) -> Path:
        path = _checked_relpath(self.root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, rel: str, obj: Any) -> Path:
        path = self.path(rel)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def write_text(self, rel: str, text: str) -> Path:
        path = self.path(rel)
        path.write_text(text, encoding="utf-8")
        return path

    def write_npz(self, rel: str, arrays: Mapping[str, np.ndarray]) -> Path:
        path = self.path(rel)
        with open(path, "wb") as fh:
            # numpy's stub reads **arrays as a possible allow_pickle=...; the keys are tensor names.
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        return path

    def files(self) -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.name != MANIFEST:
                yield path.relative_to(self.root).as_posix()

    def commit(self, manifest: Manifest) -> Manifest:
        """Hash every file, write the manifest last, fsync, and swap the folder into place."""
        failpoint("bundle-write")
        files = {}
        for rel in self.files():
            path = self.root / rel
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
            fsync_path(path)
        final_manifest = replace(manifest, files=files)
        manifest_path = self.root / MANIFEST
        manifest_path.write_text(json.dumps(final_manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        fsync_path(manifest_path)
        failpoint("bundle-commit")
        self._swap_into_place()
        self.committed = True
        return final_manifest

    def reject(self) -> Path:
        """Keep an unfinished bundle for inspection at ``<final>.rejected`` (it has no manifest, so
        no loader accepts it) and return that path. A folder of that name that trtdeploy did not
        make is left alone; the rejected build then gets a name of its own beside it."""
        (self.root / REJECTED_MARK).write_text("verification failed; kept for inspection\n", encoding="utf-8")
        rejected = self.final.with_name(self.final.name + ".rejected")
        if rejected.is_dir() and not rejected.is_symlink() and (rejected / REJECTED_MARK).is_file():
            shutil.rmtree(rejected)
        elif rejected.exists() or rejected.is_symlink():
            rejected = Path(tempfile.mkdtemp(prefix=f"{self.final.name}.rejected-", dir=self.final.parent))
        os.replace(self.root, rejected)
        self.root = rejected
        self.committed = True  # nothing left for __exit__ to clean up
        return rejected

    def _swap_into_place(self) -> None:
        check_destination(self.final)  # still trtdeploy's to replace, after a build that took minutes
        if not self.final.exists():
            rename_no_replace(self.root, self.final)
        elif exchange(self.root, self.final):
            failpoint("bundle-swapped")
            shutil.rmtree(self.root, ignore_errors=True)  # now the old bundle
        else:
            self._swap_in_two_steps()
        self.root = self.final
        with contextlib.suppress(OSError):
            fsync_path(self.final.parent)

    def _swap_in_two_steps(self) -> None:
        """Where renameat2 is missing: old bundle aside, new one in. A kill between the two leaves
        the old one in the aside folder, which the next build of this output puts back."""
        aside = Path(tempfile.mkdtemp(prefix=leftover_prefix(self.final, "old"), dir=self.final.parent))
        os.replace(self.final, aside / "bundle")
        failpoint("bundle-swapped")
        os.replace(self.root, self.final)
        shutil.rmtree(aside, ignore_errors=True)
