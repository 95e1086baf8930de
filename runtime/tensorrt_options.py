"""The options a TensorRT plan is built with: settings as data, part of every plan's cache key.

Pure Python (no tensorrt import): the cache, the refusal messages and the CLI all read it on hosts
without TensorRT. Precision is not an option here: it is a property of the ONNX graph (typed FP16,
Q/DQ INT8), which TensorRT builds strongly typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

PROFILING_VERBOSITIES = ("detailed", "layer_names_only", "none")
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True)
class TrtBuildOptions:
    """How to build a plan.

    ``workspace_mib`` caps the builder's scratch memory (TensorRT's default is all device memory,
    too much on an 8 GB Jetson). ``optimization_level`` is TensorRT's 0-5 (3 is its default; 0
    also ignores the timing cache). ``profiling_verbosity`` "detailed" lets the engine inspector
    show per-layer precision. ``dla_core`` runs layers on that DLA core, and ``gpu_fallback``
    lets layers the DLA can't run go to the GPU (off unless asked: layers would move without a
    word otherwise). ``version_compatible`` and ``hardware_compatibility`` trade speed for plans
    that load on newer TensorRT releases or other GPUs. ``timing_cache`` reuses kernel timings
    between builds; it changes build time, not the plan's meaning, so it is not part of the key.
    """

    workspace_mib: int = 2048
    optimization_level: int = 3
    profiling_verbosity: str = "detailed"
    dla_core: int | None = None
    gpu_fallback: bool = False
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    timing_cache: bool = True

    def __post_init__(self) -> None:
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be at least 1, got {self.workspace_mib}.")
        if not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization_level must be 0..5, got {self.optimization_level}.")
        if self.profiling_verbosity not in PROFILING_VERBOSITIES:
            raise ValueError(
                f"profiling_verbosity must be one of {PROFILING_VERBOSITIES}, got {self.profiling_verbosity!r}."
            )
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise ValueError(
                f"hardware_compatibility must be one of {HARDWARE_COMPATIBILITY}, "
                f"got {self.hardware_compatibility!r}."
            )
        if self.dla_core is not None and self.dla_core < 0:
            raise ValueError(f"dla_core must be 0 or more, got {self.dla_core}.")
        if self.gpu_fallback and self.dla_core is None:
            raise ValueError("gpu_fallback only applies to DLA builds; set dla_core as well.")

    def key_json(self) -> dict[str, Any]:
        """The options that shape the plan, as they enter its cache key."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "timing_cache"}

    @classmethod
    def from_key_json(cls, data: Mapping[str, Any]) -> TrtBuildOptions:
        """The options a plan record names; a key this version does not know is refused (a plan
        built with an option we would drop is not a plan of these options)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"builder options {unknown} are not ones this trtdeploy knows ({sorted(known)}): the plan was built "
                "by another version; rebuild it here"
            )
        return cls(**dict(data))

    def cli_args(self) -> list[str]:
        """The `trtdeploy engine` flags that rebuild with these options (defaults left out)."""
        default = TrtBuildOptions()
        args: list[str] = []
        if self.workspace_mib != default.workspace_mib:
            args += ["--workspace-mib", str(self.workspace_mib)]
        if self.optimization_level != default.optimization_level:
            args += ["--optimization-level", str(self.optimization_level)]
        if self.profiling_verbosity != default.profiling_verbosity:
            args += ["--profiling-verbosity", self.profiling_verbosity]
        if self.dla_core is not None:
            args += ["--dla-core", str(self.dla_core)]
        if self.gpu_fallback:
            args.append("--gpu-fallback")
        if self.version_compatible:
            args.append("--version-compatible")
        if self.hardware_compatibility != default.hardware_compatibility:
            args += ["--hardware-compatibility", self.hardware_compatibility]
        if not self.timing_cache:
            args.append("--no-timing-cache")
        return args
