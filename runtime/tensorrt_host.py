"""TensorRT and CUDA on this host: checked imports, the environment a plan is tied to, CUDA calls.

tensorrt and cuda-python (``cuda.bindings.runtime``) are imported inside functions, so importing
trtdeploy.runtime works where they are absent; the functions that need them raise
BackendUnavailable saying what to install. Every cuda-python call returns ``(error, *results)``;
``cuda_call`` checks the error and names the call that failed.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from trtdeploy.runtime.engine_cache import Environment
from trtdeploy.runtime.errors import BackendUnavailable, TrtDeployError

if TYPE_CHECKING:
    import tensorrt as trt

INSTALL_HINT = (
    "pip install 'trtdeploy[tensorrt]' (tensorrt and cuda-python; on Jetson, TensorRT comes with JetPack)"
)


class CudaError(TrtDeployError):
    """A CUDA runtime call failed on a host that has a GPU."""


def require_tensorrt() -> str:
    """TensorRT's version; BackendUnavailable when the tensorrt package can't be imported."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the package is there, its libraries are not
        raise BackendUnavailable(
            f"the tensorrt target needs TensorRT's Python package ({exc}). {INSTALL_HINT}."
        ) from exc
    return str(trt.__version__)


def tensorrt_major() -> int:
    return int(require_tensorrt().split(".")[0])


def cudart() -> Any:
    """cuda-python's runtime API module (typed Any: cuda-python ships no type information)."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise BackendUnavailable(
            f"the tensorrt target moves data with cuda-python's cuda.bindings ({exc}). {INSTALL_HINT}."
        ) from exc
    return runtime


def cuda_call(result: Any, call: str) -> Any:
    """The results of a cuda-python call, after checking its error code."""
    err, *values = result
    if int(err) != 0:  # cudaSuccess
        raise CudaError(f"CUDA call {call} failed with {_error_name(err)}.")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _error_name(err: Any) -> str:
    try:
        name = cudart().cudaGetErrorName(err)[1]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the error name is a courtesy; the code alone still says what failed
        return f"error {int(err)}"


def native_handle(obj: Any) -> int:
    """The address behind a cuda-python object (a stream), as TensorRT's execute_async_v3 takes it."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-python before 12.9.1, where int() was the documented way
        return int(obj)
    return int(get_cuda_native_handle(obj))


@functools.lru_cache(maxsize=1)
def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT, cuda-python and a CUDA GPU are all present, else why not."""
    try:
        require_tensorrt()
        runtime = cudart()
    except BackendUnavailable as exc:
        return str(exc)
    err, count = runtime.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        return f"no CUDA GPU is usable here ({_error_name(err) if int(err) else 'no devices'})"
    return None


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of ``device``."""
    props = cuda_call(cudart().cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    text = name.decode(errors="replace") if isinstance(name, bytes | bytearray) else str(name)
    return text.rstrip("\x00").strip(), f"{int(props.major)}.{int(props.minor)}"


def current_environment(device: int = 0) -> Environment:
    version = require_tensorrt()
    name, capability = gpu_identity(device)
    return Environment(tensorrt_version=version, gpu_name=name, compute_capability=capability)


class LogCapture:
    """Keeps TensorRT's recent error lines, so an exception can say what TensorRT said."""

    def __init__(self, echo_warnings: bool = True) -> None:
        self.errors: deque[str] = deque(maxlen=20)
        self.echo_warnings = echo_warnings

    def add(self, severity: int, message: str) -> None:
        # Severity: 0 internal error, 1 error, 2 warning, 3 info, 4 verbose.
        if severity <= 1:
            self.errors.append(message)
        if severity <= 1 or (severity == 2 and self.echo_warnings):
            print(f"[TensorRT] {message}", file=sys.stderr)

    def tail(self) -> str:
        return "\n  ".join(self.errors) if self.errors else "(TensorRT logged no error)"


def trt_logger(capture: LogCapture) -> trt.ILogger:
    """A TensorRT logger that hands every message to ``capture``."""
    require_tensorrt()
    import tensorrt as trt

    class _Forward(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # the binding needs its base initialised explicitly

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            capture.add(int(severity), msg)

    return _Forward()


class DeviceBuffer:
    """Device memory that grows on demand (never shrinks), so steady shapes allocate once."""

    def __init__(self) -> None:
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> bool:
        """Make room for ``nbytes``; True when the address changed."""
        if nbytes <= self.nbytes and self.ptr:
            return False
        self.free()
        self.ptr = int(cuda_call(cudart().cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        self.nbytes = max(nbytes, 1)
        return True

    def free(self) -> None:
        if self.ptr:
            cuda_call(cudart().cudaFree(self.ptr), "cudaFree")
        self.ptr, self.nbytes = 0, 0


class PinnedBuffer:
    """Page-locked host memory: copies from it run asynchronously, pageable ones do not."""

    def __init__(self) -> None:
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes and self.ptr:
            return
        self.free()
        self.ptr = int(cuda_call(cudart().cudaMallocHost(max(nbytes, 1)), "cudaMallocHost"))
        self.nbytes = max(nbytes, 1)

    def view(self, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
        """The first bytes of the buffer as an array of ``dtype`` and ``shape`` (no copy)."""
        count = int(np.prod(shape, dtype=np.int64))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        return (
            np.frombuffer(memoryview(raw), dtype=np.uint8)[: count * dtype.itemsize]
            .view(dtype)
            .reshape(shape)
        )

    def free(self) -> None:
        if self.ptr:
            cuda_call(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
        self.ptr, self.nbytes = 0, 0
