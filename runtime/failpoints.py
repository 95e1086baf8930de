"""Named points where a test can make a build die or run out of disk, to prove what is left after.

Inert unless the environment names a point: ``TRTDEPLOY_FAILPOINT=<name>`` makes the process kill
itself with SIGKILL there (as the kernel's OOM killer or a pulled plug would), and
``TRTDEPLOY_FAILPOINT_ACTION=enospc`` raises "No space left on device" instead. The points: export,
calibration, bundle-write (files written, nothing committed), bundle-commit (the manifest written,
before the swap), bundle-swapped (after the swap, before the old bundle is removed) and plan-write
(a TensorRT plan written, its record not yet).
"""

from __future__ import annotations

import errno
import os
import signal

POINTS = ("export", "calibration", "bundle-write", "bundle-commit", "bundle-swapped", "plan-write")


def failpoint(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}; the points are {POINTS}")
    if os.environ.get("TRTDEPLOY_FAILPOINT") != name:
        return
    if os.environ.get("TRTDEPLOY_FAILPOINT_ACTION", "kill") == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"(failpoint {name})")
    os.kill(os.getpid(), signal.SIGKILL)
