"""The ONNX Runtime backend: the CPU provider everywhere, CUDA / TensorRT providers where
onnxruntime-gpu is installed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtdeploy.runtime.engine import Engine, Resident, check_finite_outputs
from trtdeploy.runtime.errors import ArtifactError, BackendUnavailable
from trtdeploy.runtime.specs import IOSpec

# Target name -> the providers it asks for, in priority order (the CPU one is the fallback
# ONNX Runtime itself uses for nodes a GPU provider does not take).
ORT_TARGETS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("CPUExecutionProvider",),
    "onnxruntime-cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "onnxruntime-trt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}

# ONNX Runtime's type strings for the dtypes our specs use.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class OrtSettings:
    """How to open a session. ``threads`` None lets ONNX Runtime use every core."""

    target: str = "onnxruntime"
    threads: int | None = None
    trt_cache_dir: str | None = None  # engine cache of the TensorRT execution provider


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(settings: OrtSettings) -> list[str | tuple[str, dict[str, str]]]:
    """The provider list for ``settings.target``; raises if its first provider is not installed."""
    if settings.target not in ORT_TARGETS:
        raise BackendUnavailable(
            f"unknown ONNX Runtime target {settings.target!r}; choose one of {sorted(ORT_TARGETS)}."
        )
    wanted = ORT_TARGETS[settings.target]
    have = available_providers()
    missing = [name for name in wanted if name not in have]
    if missing:
        # Every provider a target names is required: the TensorRT provider without CUDA's would
        # send whatever TensorRT can't take to the CPU without a word.
        raise BackendUnavailable(
            f"target {settings.target!r} needs ONNX Runtime's {', '.join(missing)}, but this installation offers "
            f"{have}. Install onnxruntime-gpu in place of onnxruntime (pip uninstall onnxruntime; "
            "pip install 'trtdeploy[gpu]') on a machine with an NVIDIA GPU, or use TARGET=onnxruntime."
        )
    providers: list[str | tuple[str, dict[str, str]]] = []
    for name in wanted:
        if name == "TensorrtExecutionProvider":
            # Precision comes from the graph (FP16 types, Q/DQ), so no fp16/int8 flags here.
            options = {"trt_engine_cache_enable": "True"}
            if settings.trt_cache_dir:
                options["trt_engine_cache_path"] = settings.trt_cache_dir
            providers.append((name, options))
        else:
            providers.append(name)
    return providers


class OrtEngine(Engine):
    """One ONNX file in an ONNX Runtime session."""

    resident_kind = "onnxruntime"

    def __init__(
        self, component: str, onnx_path: Path, io: IOSpec, settings: OrtSettings | None = None
    ) -> None:
        super().__init__(component, io)
        import onnxruntime as ort

        self.settings = settings or OrtSettings()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.settings.threads is not None:
            options.intra_op_num_threads = self.settings.threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), options, providers=providers_for(self.settings)
            )
        except BackendUnavailable:
            raise
        except Exception as exc:  # ONNX Runtime raises its own exception types for bad models
            raise ArtifactError(
                f"{component}: ONNX Runtime could not load {onnx_path.name}: {exc}. "
                "Rebuild the bundle (make engine) if the file was changed."
            ) from exc
        self._check_session_matches_spec(onnx_path)
        self._dtypes = {s.name: s.dtype for s in io.outputs}
        # Where kept outputs live: the first provider's device (CPU memory for the CPU provider).
        self._device = "cuda" if self.settings.target in ("onnxruntime-cuda", "onnxruntime-trt") else "cpu"

    def _check_session_matches_spec(self, onnx_path: Path) -> None:
        got_in = {i.name: _ORT_TYPES.get(i.type, i.type) for i in self.session.get_inputs()}
        got_out = {o.name: _ORT_TYPES.get(o.type, o.type) for o in self.session.get_outputs()}
        want_in = {s.name: s.dtype for s in self.io.inputs}
        want_out = {s.name: s.dtype for s in self.io.outputs}
        if (
            got_in != want_in
            or not set(want_out) <= set(got_out)
            or any(got_out[n] != d for n, d in want_out.items())
        ):
            raise ArtifactError(
                f"{self.component}: {onnx_path.name} has inputs {got_in} and outputs {got_out}, but the "
                f"manifest promises inputs {want_in} and outputs {want_out}. Rebuild the bundle."
            )

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.io.output_names)
        values = self.session.run(names, feeds)
        return dict(zip(names, values, strict=True))

    def _upload(self, array: np.ndarray) -> object:
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(array, self._device, 0)

    def _run_resident(
        self, feeds: dict[str, np.ndarray], resident: Mapping[str, Resident], keep: Collection[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, Resident]]:
        """IO binding: resident inputs are bound as the OrtValues an earlier call left, kept outputs
        stay OrtValues on the provider's device (the KV cache never comes back through numpy)."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name, r in resident.items():
            binding.bind_ortvalue_input(name, r.handle)
        names = list(self.io.output_names)
        for name in names:
            binding.bind_output(name, self._device if name in keep else "cpu")
        self.session.run_with_iobinding(binding)
        values = dict(zip(names, binding.get_outputs(), strict=True))
        host = {n: v.numpy() for n, v in values.items() if n not in keep}
        check_finite_outputs(self.component, host, feeds)
        kept = {
            n: Resident(tuple(values[n].shape()), self._dtypes[n], values[n], self.resident_kind)
            for n in keep
        }
        return host, kept

    def close(self) -> None:
        self.__dict__.pop("session", None)
