"""The TensorRT backend: a plan from the bundle's engine cache behind the common Engine interface.

Feeds are validated by Engine.run exactly as for ONNX Runtime (same checks, same messages), then:
set_input_shape per call, output buffers sized from the context once the input shapes are set,
set_tensor_address, execute_async_v3 on the context's own non-default stream, and host<->device
copies through pinned memory with cuda-python. int64 inputs (token ids) stay int64: TensorRT 10
binds int64 natively and nothing is ever cast. One execution context per concurrent caller comes
from a small pool. With ``cuda_graphs`` the enqueue is captured once per input-shape set and
replayed (TensorRT's own advice: enqueue once before capturing, so one-time set-up stays out).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine import Engine, Resident, check_finite_outputs
from trtdeploy.runtime.engine_cache import EngineCache, PlanKey, PlanRecord, rebuild_command
from trtdeploy.runtime.errors import ArtifactError, BackendUnavailable, IncompatibleEngine
from trtdeploy.runtime.specs import IOSpec
from trtdeploy.runtime.tensorrt_host import (
    DeviceBuffer,
    LogCapture,
    PinnedBuffer,
    cuda_call,
    cudart,
    current_environment,
    native_handle,
    require_tensorrt,
    tensorrt_unavailable_reason,
    trt_logger,
)
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions

if TYPE_CHECKING:
    import tensorrt as trt


@dataclass(frozen=True)
class TrtEngineSettings:
    """``max_contexts``: execution contexts, one per thread running at once (each holds its own
    activation memory, stream and buffers). ``cuda_graphs``: capture and replay the enqueue for
    each set of input shapes (at most ``graphs_per_context`` kept per context)."""

    max_contexts: int = 2
    cuda_graphs: bool = False
    graphs_per_context: int = 8
    device: int = 0

    def __post_init__(self) -> None:
        if self.max_contexts < 1 or self.graphs_per_context < 1:
            raise ValueError(f"max_contexts and graphs_per_context must be at least 1: {self}")


class DeviceTensor:
    """An output kept on the device for a later call (Engine.run_resident): its own allocation,
    freed when the last reference to it goes."""

    def __init__(self, buffer: DeviceBuffer) -> None:
        self.buffer = buffer

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # the CUDA context may already be gone at exit
            self.buffer.free()


class TrtEngine(Engine):
    """One component's TensorRT plan, deserialized and ready to run."""

    resident_kind = "tensorrt"

    def __init__(
        self,
        component: str,
        io: IOSpec,
        plan: bytes,
        record: PlanRecord,
        settings: TrtEngineSettings | None = None,
        rebuild: str = "trtdeploy engine BUNDLE",
    ) -> None:
        """``plan`` must already have been checked against ``record`` (EngineCache.read_plan);
        ``rebuild`` is the command that rebuilds it, for error messages."""
        super().__init__(component, io)
        require_tensorrt()
        import tensorrt as trt

        self.settings = settings or TrtEngineSettings()
        self.record = record
        self._log = LogCapture()
        # TensorRT needs its logger alive as long as anything made through it, so it is kept.
        self._logger = trt_logger(self._log)
        self._runtime = trt.Runtime(self._logger)
        options = record.key.options
        if options.version_compatible:
            # A version-compatible plan carries its own host code; the runtime refuses it by default.
            self._runtime.engine_host_code_allowed = True
        if options.dla_core is not None:
            self._runtime.DLA_core = options.dla_core
        cuda_call(cudart().cudaSetDevice(self.settings.device), "cudaSetDevice")
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:  # the stubs say ICudaEngine; the binding returns None on failure
            raise IncompatibleEngine(
                f"{component}: TensorRT could not deserialize {record.plan}:\n  {self._log.tail()}\n"
                f"Rebuild it on this device: {rebuild} --rebuild"
            )
        self._engine: trt.ICudaEngine | None = engine
        self._dtypes = check_engine_io(component, engine, io, rebuild)
        self._pool = _ContextPool(engine, self._dtypes, io, self.settings, rebuild)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        component: str,
        settings: TrtEngineSettings | None = None,
        options: TrtBuildOptions | None = None,
    ) -> TrtEngine:
        """The engine of ``component`` from the bundle's cached plan that fits this host.

        Refuses (IncompatibleEngine) a plan built for another TensorRT, GPU, graph or, when
        ``options`` is given, other options; checks the plan's sha256 before TensorRT reads it.
        """
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"the tensorrt target needs TensorRT and a CUDA GPU: {reason}")
        env = current_environment((settings or TrtEngineSettings()).device)
        cache = EngineCache(bundle.root)
        expected = PlanKey.for_bundle(bundle, component, env, options or TrtBuildOptions())
        record = cache.select(expected, env, options)
        plan = cache.read_plan(record)
        io = bundle.manifest.component(component).io
        return cls(component, io, plan, record, settings, rebuild_command(bundle.root, record.key.options))

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._engine is None:
            raise BackendUnavailable(f"{self.component}: the engine was closed.")
        slot = self._pool.acquire()
        try:
            return slot.run(feeds)
        finally:
            self._pool.release(slot)

    def _upload(self, array: np.ndarray) -> DeviceTensor:
        rt = cudart()
        buffer = DeviceBuffer()
        buffer.ensure(array.nbytes)
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call(
            rt.cudaMemcpy(buffer.ptr, array.ctypes.data, array.nbytes, h2d), "cudaMemcpy (host to device)"
        )
        return DeviceTensor(buffer)

    def _run_resident(
        self, feeds: dict[str, np.ndarray], resident: Mapping[str, Resident], keep: Collection[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, Resident]]:
        """Resident inputs are bound by their device address (no copy), kept outputs are written
        into allocations of their own and handed back as Residents (no copy either)."""
        if self._engine is None:
            raise BackendUnavailable(f"{self.component}: the engine was closed.")
        slot = self._pool.acquire()
        try:
            host, kept = slot.run_resident(feeds, resident, keep, self.resident_kind)
        finally:
            self._pool.release(slot)
        check_finite_outputs(self.component, host, feeds)
        return host, kept

    def close(self) -> None:
        pool = self.__dict__.pop("_pool", None)
        if pool is not None:
            pool.close()
        self._engine = None


def check_engine_io(
    component: str, engine: trt.ICudaEngine, io: IOSpec, rebuild: str
) -> dict[str, np.dtype[Any]]:
    """numpy dtype per I/O tensor, after checking names, directions and dtypes against the manifest."""
    import tensorrt as trt

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
    dtypes: dict[str, np.dtype[Any]] = {}
    for name in names:
        try:
            dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        except TypeError as exc:  # BF16, FP8, INT4 have no numpy type
            raise ArtifactError(
                f"{component}: the plan's I/O tensor {name!r} is {engine.get_tensor_dtype(name)}, which numpy "
                "can't hold. Keep the graph's inputs and outputs FP32/FP16/int (AutoCast keep_io_types)."
            ) from exc
    want_in = {s.name: s.dtype for s in io.inputs}
    want_out = {s.name: s.dtype for s in io.outputs}
    got_in = {n: str(dtypes[n]) for n in names if n in inputs}
    got_out = {n: str(dtypes[n]) for n in names if n not in inputs}
    if got_in != want_in or any(got_out.get(n) != d for n, d in want_out.items()):
        raise ArtifactError(
            f"{component}: the plan has inputs {got_in} and outputs {got_out}, but the manifest promises "
            f"inputs {want_in} and outputs {want_out}. Rebuild the plan: {rebuild} --rebuild"
        )
    return dtypes


class _ContextPool:
    """Execution contexts handed out one per concurrent caller; at most ``max_contexts``."""

    def __init__(
        self,
        engine: trt.ICudaEngine,
        dtypes: Mapping[str, np.dtype[Any]],
        io: IOSpec,
        settings: TrtEngineSettings,
        rebuild: str,
    ) -> None:
        self._engine = engine
        self._dtypes = dtypes
        self._io = io
        self._settings = settings
        self._rebuild = rebuild
        self._free: list[_ExecutionSlot] = []
        self._all: list[_ExecutionSlot] = []
        self._ready = threading.Condition()

    def acquire(self) -> _ExecutionSlot:
        with self._ready:
            while not self._free and len(self._all) >= self._settings.max_contexts:
                self._ready.wait()
            if self._free:
                return self._free.pop()
            slot = _ExecutionSlot(self._engine, self._dtypes, self._io, self._settings, self._rebuild)
            self._all.append(slot)
            return slot

    def release(self, slot: _ExecutionSlot) -> None:
        with self._ready:
            self._free.append(slot)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            for slot in self._all:
                slot.close()
            self._all.clear()
            self._free.clear()


class _ExecutionSlot:
    """One execution context with its own stream, device buffers and pinned host buffers."""

    def __init__(
        self,
        engine: trt.ICudaEngine,
        dtypes: Mapping[str, np.dtype[Any]],
        io: IOSpec,
        settings: TrtEngineSettings,
        rebuild: str,
    ) -> None:
        rt = cudart()
        self._settings = settings
        self._rebuild = rebuild
        cuda_call(rt.cudaSetDevice(settings.device), "cudaSetDevice")
        context = engine.create_execution_context()
        if context is None:  # the stubs say IExecutionContext; the binding returns None on failure
            raise BackendUnavailable(
                "TensorRT could not create an execution context (out of device memory?)."
            )
        self.context: trt.IExecutionContext = context
        self._dtypes = dtypes
        self._inputs = io.input_names
        # Every output of the plan is bound (TensorRT needs an address for each); the manifest's
        # outputs are returned.
        self._bound_outputs = tuple(n for n in dtypes if n not in self._inputs)
        self._outputs = io.output_names
        # A non-default stream: on the default one TensorRT adds device-wide synchronisations.
        self.stream = cuda_call(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        self._device = {n: DeviceBuffer() for n in dtypes}
        self._host = {n: PinnedBuffer() for n in dtypes}
        self._graphs: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rt = cudart()
        cuda_call(rt.cudaSetDevice(self._settings.device), "cudaSetDevice")
        self._set_input_shapes(feeds)
        out_shapes = self._output_shapes()
        self._place_buffers(feeds, out_shapes)
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name in self._inputs:
            array = feeds[name]
            self._host[name].view(array.dtype, array.shape)[...] = array
            cuda_call(
                rt.cudaMemcpyAsync(
                    self._device[name].ptr, self._host[name].ptr, array.nbytes, h2d, self.stream
                ),
                "cudaMemcpyAsync (host to device)",
            )
        self._execute(tuple(tuple(feeds[n].shape) for n in self._inputs))
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._outputs:
            nbytes = _nbytes(self._dtypes[name], out_shapes[name])
            cuda_call(
                rt.cudaMemcpyAsync(self._host[name].ptr, self._device[name].ptr, nbytes, d2h, self.stream),
                "cudaMemcpyAsync (device to host)",
            )
        cuda_call(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        # Copies: the pinned buffers are reused by the next call.
        return {n: self._host[n].view(self._dtypes[n], out_shapes[n]).copy() for n in self._outputs}

    def run_resident(
        self,
        feeds: Mapping[str, np.ndarray],
        resident: Mapping[str, Resident],
        keep: Collection[str],
        kind: str,
    ) -> tuple[dict[str, np.ndarray], dict[str, Resident]]:
        rt = cudart()
        cuda_call(rt.cudaSetDevice(self._settings.device), "cudaSetDevice")
        shapes = {n: tuple(int(d) for d in a.shape) for n, a in feeds.items()}
        shapes.update({n: r.shape for n, r in resident.items()})
        self._set_input_shapes(shapes)
        out_shapes = self._output_shapes()
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name, array in feeds.items():
            self._device[name].ensure(array.nbytes)
            self._host[name].ensure(array.nbytes)
            self._bind(name, self._device[name].ptr)
            self._host[name].view(array.dtype, array.shape)[...] = array
            cuda_call(
                rt.cudaMemcpyAsync(
                    self._device[name].ptr, self._host[name].ptr, array.nbytes, h2d, self.stream
                ),
                "cudaMemcpyAsync (host to device)",
            )
        for name, r in resident.items():
            self._bind(name, r.handle.ptr)
        kept: dict[str, DeviceTensor] = {}
        for name, shape in out_shapes.items():
            nbytes = _nbytes(self._dtypes[name], shape)
            if name in keep:  # its own allocation: the next call must not write over it
                buffer = DeviceBuffer()
                buffer.ensure(nbytes)
                kept[name] = DeviceTensor(buffer)
                self._bind(name, buffer.ptr)
            else:
                self._device[name].ensure(nbytes)
                self._host[name].ensure(nbytes)
                self._bind(name, self._device[name].ptr)
        self._drop_graphs()  # the addresses change every step: no graph replays them
        self._enqueue()
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host_names = [n for n in self._outputs if n not in kept]
        for name in host_names:
            nbytes = _nbytes(self._dtypes[name], out_shapes[name])
            cuda_call(
                rt.cudaMemcpyAsync(self._host[name].ptr, self._device[name].ptr, nbytes, d2h, self.stream),
                "cudaMemcpyAsync (device to host)",
            )
        cuda_call(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        host = {n: self._host[n].view(self._dtypes[n], out_shapes[n]).copy() for n in host_names}
        residents = {
            n: Resident(out_shapes[n], str(self._dtypes[n]), tensor, kind) for n, tensor in kept.items()
        }
        return host, residents

    def _bind(self, name: str, ptr: int) -> None:
        if not self.context.set_tensor_address(name, ptr):
            raise BackendUnavailable(f"TensorRT refused the device address for {name!r}.")

    def _set_input_shapes(self, feeds: Mapping[str, Any]) -> None:
        for name in self._inputs:
            value = feeds[name]
            shape = tuple(int(d) for d in (value.shape if hasattr(value, "shape") else value))
            if not self.context.set_input_shape(name, shape):
                raise ArtifactError(
                    f"TensorRT refused shape {shape} for {name!r}, which the manifest's profile allows: the plan "
                    f"was built with another profile. Rebuild it: {self._rebuild} --rebuild"
                )
        missing = self.context.infer_shapes()
        if missing:
            raise ArtifactError(f"TensorRT still lacks the shapes of {missing} after every input was set.")

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for name in self._bound_outputs:
            dims = self.context.get_tensor_shape(name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            if any(d < 0 for d in shape):
                raise ArtifactError(
                    f"output {name!r} has a data-dependent shape {shape}; this runner sizes outputs before "
                    "running and does not handle such outputs."
                )
            shapes[name] = shape
        return shapes

    def _place_buffers(
        self, feeds: Mapping[str, np.ndarray], out_shapes: Mapping[str, tuple[int, ...]]
    ) -> None:
        """Size every buffer and bind every address."""
        moved = False
        sizes = {n: feeds[n].nbytes for n in self._inputs}
        sizes.update({n: _nbytes(self._dtypes[n], s) for n, s in out_shapes.items()})
        for name, nbytes in sizes.items():
            moved |= self._device[name].ensure(nbytes)
            self._host[name].ensure(nbytes)
            self._bind(name, self._device[name].ptr)
        if moved:
            self._drop_graphs()  # a graph replays the addresses it captured

    def _execute(self, shape_key: tuple[tuple[int, ...], ...]) -> None:
        if not self._settings.cuda_graphs:
            self._enqueue()
            return
        graph = self._graphs.get(shape_key)
        if graph is not None:
            self._graphs.move_to_end(shape_key)
            cuda_call(cudart().cudaGraphLaunch(graph, self.stream), "cudaGraphLaunch")
            return
        # First call at these shapes: a plain enqueue (its results are this call's), which also
        # keeps TensorRT's one-time initialisation out of the capture; then capture for next time.
        self._enqueue()
        cuda_call(cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        self._graphs[shape_key] = self._capture()
        while len(self._graphs) > self._settings.graphs_per_context:
            _, oldest = self._graphs.popitem(last=False)
            cuda_call(cudart().cudaGraphExecDestroy(oldest), "cudaGraphExecDestroy")

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(native_handle(self.stream)):
            raise BackendUnavailable("TensorRT's execute_async_v3 failed; see the TensorRT error above.")

    def _capture(self) -> Any:
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(rt.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
        ok = self.context.execute_async_v3(native_handle(self.stream))
        err, graph = rt.cudaStreamEndCapture(self.stream)  # always end the capture, even after a failure
        if not ok or int(err) != 0:
            if graph is not None and int(err) == 0:
                cuda_call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
            raise BackendUnavailable(
                "this plan can't be captured in a CUDA graph (TensorRT refused to enqueue under capture, e.g. "
                "for data-dependent shapes or weight streaming). Open it without cuda_graphs."
            )
        executable = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        cuda_call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
        return executable

    def _drop_graphs(self) -> None:
        while self._graphs:
            _, graph = self._graphs.popitem()
            cuda_call(cudart().cudaGraphExecDestroy(graph), "cudaGraphExecDestroy")

    def close(self) -> None:
        self._drop_graphs()
        for device in self._device.values():
            device.free()
        for host in self._host.values():
            host.free()
        if self.stream is not None:
            cuda_call(cudart().cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self.stream = None
        del self.context


def _nbytes(dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
