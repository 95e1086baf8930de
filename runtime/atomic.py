"""Filesystem steps that are one step: writing a file, swapping two folders, claiming a name,
locking a build.

Replacing a bundle must never pass through a moment with no bundle at its path: rename(2) can't
replace a non-empty folder, and two renames (old aside, new in) leave nothing there if the process
dies between them. Linux's renameat2(RENAME_EXCHANGE) swaps two names in one step; elsewhere the
two renames are used and the next build puts a bundle left aside back (see BundleWriter).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import tempfile
from pathlib import Path
from types import TracebackType

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1 << 0
_RENAME_EXCHANGE = 1 << 1


def _renameat2() -> object | None:
    if not hasattr(os, "O_DIRECTORY") or os.uname().sysname != "Linux":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    function = getattr(libc, "renameat2", None)  # glibc 2.28 and newer
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def _call(source: Path, target: Path, flags: int) -> bool:
    """renameat2; False when the kernel or filesystem does not offer it (the caller falls back)."""
    if _RENAMEAT2 is None:
        return False
    result = _RENAMEAT2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags)  # type: ignore[operator]
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(source), None, str(target))


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one step; False where that is not available here."""
    return _call(a, b, _RENAME_EXCHANGE)


def rename_no_replace(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, failing (FileExistsError) if ``target`` appeared meanwhile."""
    if _call(source, target, _RENAME_NOREPLACE):
        return
    if target.exists() or target.is_symlink():
        raise FileExistsError(errno.EEXIST, "exists", str(target))
    os.rename(source, target)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename: readers see all or nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BuildLock:
    """An exclusive lock on building one output name (``.<name>.lock`` beside it), held for the
    whole build: two builds of one bundle would otherwise clean up each other's work. The file
    stays (removing it would race with the next locker); the lock dies with the process."""

    def __init__(self, final: Path) -> None:
        import fcntl

        self.path = final.parent / f".{final.name}.lock"
        final.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            from trtdeploy.runtime.errors import ArtifactError

            raise ArtifactError(
                f"another trtdeploy build is writing {final} right now (it holds {self.path.name}); wait for it "
                "to finish, or build into another --out."
            ) from None

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> BuildLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
