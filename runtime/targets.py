"""Open a bundle's components on a target: ONNX Runtime (CPU, CUDA, TensorRT providers) or TensorRT.

The default target is chosen from what the host has, never silently changed from what the user
asked for: an unavailable target raises BackendUnavailable with what to install.
"""

from __future__ import annotations

from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import BackendUnavailable
from trtdeploy.runtime.onnxruntime_backend import ORT_TARGETS, OrtEngine, OrtSettings

TARGETS = (*ORT_TARGETS, "tensorrt")
DEFAULT_TARGET = "onnxruntime"


def open_engine(
    bundle: Bundle, component: str, target: str = DEFAULT_TARGET, *, threads: int | None = None
) -> Engine:
    """An engine for one component of ``bundle`` on ``target``."""
    entry = bundle.manifest.component(component)
    if target in ORT_TARGETS:
        settings = OrtSettings(
            target=target, threads=threads, trt_cache_dir=str(bundle.root / "ort-trt-cache")
        )
        return OrtEngine(component, bundle.path(entry.onnx), entry.io, settings)
    if target == "tensorrt":
        raise BackendUnavailable(
            "the tensorrt target builds its plans on the device: run `trtdeploy engine BUNDLE` there."
        )
    raise BackendUnavailable(f"unknown target {target!r}; choose one of {list(TARGETS)}.")


def open_engines(
    bundle: Bundle, target: str = DEFAULT_TARGET, *, threads: int | None = None
) -> dict[str, Engine]:
    """Engines for every component of ``bundle``, by component name."""
    return {c.name: open_engine(bundle, c.name, target, threads=threads) for c in bundle.manifest.components}
