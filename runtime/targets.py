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
# What a Python caller gets when it names no target: ONNX Runtime's CPU provider, which every
# host has. The command line defaults to AUTO_TARGET instead, which detect_target() resolves.
DEFAULT_TARGET = "onnxruntime"
AUTO_TARGET = "auto"


def detect_target() -> str:
    """TensorRT where it, cuda-python and a CUDA GPU are all present, else ONNX Runtime's CPU provider."""
    from trtdeploy.runtime.tensorrt_host import tensorrt_unavailable_reason

    return "tensorrt" if tensorrt_unavailable_reason() is None else "onnxruntime"


def resolve_target(target: str) -> str:
    """``target`` itself when it is one of TARGETS, the detected one for AUTO_TARGET."""
    if target == AUTO_TARGET:
        return detect_target()
    if target not in TARGETS:
        raise BackendUnavailable(f"unknown target {target!r}; choose one of {[*TARGETS, AUTO_TARGET]}.")
    return target


def open_engine(
    bundle: Bundle,
    component: str,
    target: str = DEFAULT_TARGET,
    *,
    threads: int | None = None,
    form: str = "auto",
) -> Engine:
    """An engine for one component of ``bundle`` on ``target``.

    ``form="auto"`` takes the target's own fast form when the bundle has one (the manifest says
    which file is which, e.g. dynamic INT8 for ONNX Runtime's CPU provider); ``form="graph"``
    always takes the precision-explicit graph that TensorRT builds.
    """
    target = resolve_target(target)
    if form not in ("auto", "graph"):
        raise BackendUnavailable(f"unknown form {form!r}; choose 'auto' or 'graph'.")
    entry = bundle.manifest.component(component)
    if target in ORT_TARGETS:
        settings = OrtSettings(
            target=target, threads=threads, trt_cache_dir=_ort_trt_cache(bundle, component)
        )
        onnx_file = entry.forms.get(target, entry.onnx) if form == "auto" else entry.onnx
        return OrtEngine(component, bundle.path(onnx_file), entry.io, settings)
    # The bundle's cached plan for this TensorRT and GPU; refused (IncompatibleEngine) if it was
    # built elsewhere, BackendUnavailable with what to install where TensorRT or a GPU is missing.
    from trtdeploy.runtime.tensorrt_backend import TrtEngine

    return TrtEngine.from_bundle(bundle, component)


def _ort_trt_cache(bundle: Bundle, component: str) -> str:
    """ONNX Runtime's TensorRT provider cache for one graph: in this host's cache folder, named by
    the graph's sha256, so only engines this host built from this very graph are ever found."""
    from trtdeploy.runtime.engine_cache import cache_folder

    digest = str(bundle.manifest.files[bundle.manifest.component(component).onnx]["sha256"])
    return str(cache_folder() / "onnxruntime-trt" / digest[:32])


def open_engines(
    bundle: Bundle, target: str = DEFAULT_TARGET, *, threads: int | None = None, form: str = "auto"
) -> dict[str, Engine]:
    """Engines for every component of ``bundle``, by component name; when one fails to open, the
    ones already opened are closed before the error goes on."""
    engines: dict[str, Engine] = {}
    try:
        for c in bundle.manifest.components:
            engines[c.name] = open_engine(bundle, c.name, target, threads=threads, form=form)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    return engines
