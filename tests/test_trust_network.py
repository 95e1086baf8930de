"""No network, ever, and nothing written outside the bundle and the build folder: `trtdeploy run`
and `trtdeploy build` are run inside a network namespace without network (unshare -n), with their
system calls traced (strace), and the trace is read: no internet socket opened, no connection but
local ones, no file created, written, renamed or removed outside the folders they own, and an empty
HOME left empty (onnxruntime's telemetry writes a device id and an event database there otherwise).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trtdeploy.build import BuildResult
from trtdeploy.calibration.images import EVALUATION_IMAGES

pytestmark = pytest.mark.integration
CALLS = "%network,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,link,symlink,truncate"
WRITES = re.compile(
    r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|^\d+\s+(mkdir|rename|unlink|link|symlink|creat|truncate)"
)
# Where a process may write without it being a file of anyone's: devices, its own /proc entries.
SYSTEM = ("/dev/", "/proc/")


def _traced_tools_reason() -> str | None:
    for tool in ("strace", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed here (Debian: apt-get install strace util-linux)"
    try:
        done = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n could not run: {exc}"
    return (
        None
        if done.returncode == 0
        else f"unshare -n needs root or user namespaces: {done.stderr.decode().strip()}"
    )


REASON = _traced_tools_reason()
needs_tracing = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def traced(argv: list[str], workdir: Path, home: Path) -> list[str]:
    """Run ``trtdeploy argv`` without network under strace; its trace lines."""
    trace = workdir / "trace.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR", "TRTDEPLOY"))}
    env.update(HOME=str(home), TMPDIR=str(workdir / "tmp"))
    (workdir / "tmp").mkdir()
    command = ["unshare", "-n", "strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={CALLS}"]
    command += [sys.executable, "-m", "trtdeploy", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    return trace.read_text().splitlines()


def network_calls(lines: list[str]) -> list[str]:
    """Internet sockets, and connections to anything but a local socket (nscd's user lookups are local)."""
    bad = [line for line in lines if re.search(r"socket\((AF_INET|AF_INET6|AF_PACKET)", line)]
    bad += [line for line in lines if "connect(" in line and "AF_UNIX" not in line]
    bad += [line for line in lines if re.search(r"(sendto|sendmsg)\(", line) and "AF_UNIX" not in line]
    return bad


def writes_outside(lines: list[str], allowed: list[Path]) -> list[str]:
    outside = []
    for line in lines:
        if not WRITES.search(line) or "ENOENT" in line or "EEXIST" in line:
            continue
        paths = re.findall(r'"(/[^"]*)"', line)
        for path in paths:
            if path.startswith(SYSTEM) or any(path == str(a) or path.startswith(f"{a}/") for a in allowed):
                continue
            outside.append(line)
    return outside


@needs_tracing
def test_run_touches_no_network_and_writes_nothing(tiny_clip: BuildResult, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_clip.bundle, bundle)
    home = tmp_path / "home"
    home.mkdir()
    lines = traced(
        ["run", str(bundle), "--image", str(EVALUATION_IMAGES[0].path()), "--labels", "a cat,a dog"],
        tmp_path,
        home,
    )
    assert len(lines) > 100  # the trace is real
    assert network_calls(lines) == []
    assert writes_outside(lines, allowed=[]) == []  # `run` writes nothing at all
    assert list(home.iterdir()) == []  # no ~/.cache/Microsoft/DeveloperTools/.onnxruntime


@needs_tracing
def test_build_touches_no_network_and_writes_only_its_build_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "build" / "clip" / "fp32"
    lines = traced(["build", "clip", "--preset", "tiny", "--out", str(out), "--quiet"], tmp_path, home)
    assert network_calls(lines) == []
    assert writes_outside(lines, allowed=[tmp_path / "build"]) == []  # build/: the build folder
    assert list(home.iterdir()) == [] and not list((tmp_path / "tmp").iterdir())
    assert sorted(p.name for p in out.parent.iterdir()) == [".fp32.lock", "fp32"]  # temporary files cleared


@needs_tracing
def test_the_trace_would_show_a_connection(tmp_path: Path) -> None:
    """The check can fail: a process that tries to reach the network is seen doing it."""
    trace = tmp_path / "trace.txt"
    script = "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 443), timeout=1)\nexcept OSError:\n    pass"
    subprocess.run(
        [
            "unshare",
            "-n",
            "strace",
            "-f",
            "-qq",
            "-o",
            str(trace),
            "-e",
            f"trace={CALLS}",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        timeout=60,
    )
    assert network_calls(trace.read_text().splitlines())
    home = tmp_path / "h"
    assert writes_outside(
        [f'1 openat(AT_FDCWD, "{home}/.cache/x", O_WRONLY|O_CREAT, 0644) = 3'], [tmp_path / "b"]
    )
