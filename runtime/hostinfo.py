"""What machine a figure was measured on: CPU, cores, SIMD level, memory, GPU, library versions.

A latency baseline is only comparable on the same class of machine, so results carry a
``machine_class`` string (architecture, best SIMD level, core count, GPU name) that baselines are
filed under.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

LIBRARIES = (
    "trtdeploy",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "torch",
    "transformers",
    "onnx",
    "tensorrt",
)
# Best first: the first flag the CPU reports names its SIMD level.
SIMD_LEVELS = ("amx_int8", "avx512_vnni", "avx512f", "avx_vnni", "avx2", "neon", "asimd")


def cpu_facts() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    simd = next((level for level in SIMD_LEVELS if level in flags), "baseline")
    return {
        "model": info.get("model name") or info.get("Model") or platform.processor() or "unknown",
        "arch": platform.machine(),
        "cores": os.cpu_count() or 1,
        "simd": simd,
        "memory_gib": round(_memory_bytes() / 2**30, 1),
    }


GPU_QUERY = "name,memory.total,clocks.sm,clocks.max.sm,driver_version"


def gpu_facts() -> dict[str, Any] | None:
    """GPU 0 as nvidia-smi reports it (name, memory, current and max SM clock, driver), or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run(
        [smi, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits", "--id=0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        return {"name": "unknown (nvidia-smi failed)", "error": done.stderr.strip()[:200]}
    values = [v.strip() for v in done.stdout.strip().splitlines()[0].split(",")]
    return dict(
        zip(["name", "memory_mib", "sm_clock_mhz", "max_sm_clock_mhz", "driver"], values, strict=False)
    )


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def host_facts() -> dict[str, Any]:
    cpu = cpu_facts()
    gpu = gpu_facts()
    return {"cpu": cpu, "gpu": gpu, "libraries": library_versions(), "machine_class": machine_class(cpu, gpu)}


def machine_class(cpu: dict[str, Any] | None = None, gpu: dict[str, Any] | None = None) -> str:
    """e.g. "x86_64-avx2-2c" or "x86_64-avx512_vnni-16c-nvidia-h100": what baselines are filed under."""
    cpu = cpu or cpu_facts()
    name = f"{cpu['arch']}-{cpu['simd']}-{cpu['cores']}c"
    if gpu:
        name += "-" + "-".join(gpu["name"].lower().replace("nvidia", "nvidia ").split())
    return name


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpuinfo() -> dict[str, str]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    facts: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in facts:
            facts[key.strip()] = value.strip()
    return facts


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
