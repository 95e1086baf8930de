"""Stand-ins for `tensorrt` and `cuda.bindings.runtime`, so the TensorRT runner and builder run here.

They follow the real APIs' shapes (the names and signatures mypy checks against tensorrt-stubs,
cuda-python's `(error, *results)` returns, False/None on failure) with a toy network:
    y = 2 * x          x: float32 (batch, 4)
    n = ids + 1        ids: int64 (batch, seq)   -- int64 in, int64 out
and any other Network a test registers under a plan of its own (a toy decoder with a KV cache).
Device memory is host memory here, so copies are memmoves. They prove the call sequence and the
bookkeeping (shapes, buffers, addresses, streams, graph capture), not TensorRT's numerics; those
are what the `tensorrt`/`gpu` tests check on a device.
"""

from __future__ import annotations

import ctypes
import types
from collections.abc import Callable
from typing import Any

import numpy as np

PLAN = b"fake-plan-v1"


class Network:
    """What a fake plan computes: its I/O tensors (name -> numpy dtype name), the profile of its
    inputs, how output shapes follow from input shapes, and the computation itself."""

    def __init__(
        self,
        inputs: dict[str, str],
        outputs: dict[str, str],
        profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
        output_shapes: Callable[[dict[str, tuple[int, ...]]], dict[str, tuple[int, ...]]],
        compute: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    ) -> None:
        self.inputs, self.outputs, self.profile = inputs, outputs, profile
        self.output_shapes, self.compute = output_shapes, compute


TOY = Network(
    inputs={"x": "float32", "ids": "int64"},
    outputs={"y": "float32", "n": "int64"},
    profile={"x": ((1, 4), (2, 4), (4, 4)), "ids": ((1, 2), (2, 5), (4, 8))},
    output_shapes=lambda shapes: {"y": shapes["x"], "n": shapes["ids"]},
    compute=lambda a: {"y": 2 * a["x"], "n": a["ids"] + 1},
)


class FakeCuda:
    """`cuda.bindings.runtime`: memory is ctypes buffers, streams queue work until synchronised."""

    class cudaError_t(int):
        pass

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking = 1

    def __init__(self) -> None:
        self.buffers: dict[int, Any] = {}
        self.streams: set[int] = set()
        self.capturing: dict[int, list[Any]] = {}
        self.graphs: dict[int, list[Any]] = {}
        self.launches = 0
        self.calls: list[str] = []
        self.copies: list[tuple[int, int]] = []  # (cudaMemcpyKind, bytes) of every async copy

    ok = cudaError_t(0)

    def _alloc(self, nbytes: int) -> int:
        buf = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def cudaGetDeviceCount(self) -> tuple[Any, int]:
        return self.ok, 1

    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, Any]:
        return self.ok, types.SimpleNamespace(name=b"Fake GPU\x00\x00", major=8, minor=7)

    def cudaGetErrorName(self, err: Any) -> tuple[Any, bytes]:
        return self.ok, b"cudaErrorFake"

    def cudaSetDevice(self, device: int) -> tuple[Any]:
        return (self.ok,)

    def cudaMalloc(self, nbytes: int) -> tuple[Any, int]:
        self.calls.append("cudaMalloc")
        return self.ok, self._alloc(nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[Any, int]:
        return self.ok, self._alloc(nbytes)

    def cudaFree(self, ptr: int) -> tuple[Any]:
        del self.buffers[ptr]
        return (self.ok,)

    cudaFreeHost = cudaFree

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[Any, int]:
        assert flags == self.cudaStreamNonBlocking
        handle = 1000 + len(self.streams)
        self.streams.add(handle)
        return self.ok, handle

    def cudaStreamDestroy(self, stream: int) -> tuple[Any]:
        self.streams.remove(stream)
        return (self.ok,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple[Any]:
        assert stream in self.streams, "copies must run on the engine's own stream"
        self.copies.append((kind, nbytes))
        ctypes.memmove(dst, src, nbytes)
        return (self.ok,)

    def cudaMemcpy(self, dst: int, src: int, nbytes: int, kind: int) -> tuple[Any]:
        ctypes.memmove(dst, src, nbytes)
        return (self.ok,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[Any]:
        return (self.ok,)

    def cudaStreamBeginCapture(self, stream: int, mode: int) -> tuple[Any]:
        self.capturing[stream] = []
        return (self.ok,)

    def cudaStreamEndCapture(self, stream: int) -> tuple[Any, int]:
        work = self.capturing.pop(stream)
        handle = 5000 + len(self.graphs)
        self.graphs[handle] = work
        return self.ok, handle

    def cudaGraphInstantiate(self, graph: int, flags: int) -> tuple[Any, int]:
        handle = graph + 100000
        self.graphs[handle] = self.graphs[graph]
        return self.ok, handle

    def cudaGraphDestroy(self, graph: int) -> tuple[Any]:
        del self.graphs[graph]
        return (self.ok,)

    cudaGraphExecDestroy = cudaGraphDestroy

    def cudaGraphLaunch(self, graph: int, stream: int) -> tuple[Any]:
        self.launches += 1
        for work in self.graphs[graph]:
            work()
        return (self.ok,)


class _Enum:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name


class FakeTensorRT(types.ModuleType):
    """`tensorrt` with the toy network above."""

    def __init__(self, cuda: FakeCuda, major: int = 10) -> None:
        super().__init__("tensorrt")
        self.__version__ = f"{major}.3.0.26"
        self.cuda = cuda
        self.built: list[dict[str, Any]] = []
        self.networks: dict[bytes, Network] = {PLAN: TOY}  # plan bytes -> what it computes
        self.parse_ok = True
        self.build_ok = True
        trt = self

        class ILogger:
            class Severity:
                ERROR = _Enum("ERROR", 1)

            def __init__(self) -> None:
                pass

        class TensorIOMode:
            INPUT = _Enum("INPUT", 1)
            OUTPUT = _Enum("OUTPUT", 2)

        self.ILogger = ILogger
        self.TensorIOMode = TensorIOMode
        self.DataType = types.SimpleNamespace(FLOAT=_Enum("FLOAT", 0), INT64=_Enum("INT64", 8))
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=_Enum("STRONGLY_TYPED", 1))
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED", LAYER_NAMES_ONLY="L", NONE="N")
        self.HardwareCompatibilityLevel = types.SimpleNamespace(
            NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME"
        )
        self.BuilderFlag = types.SimpleNamespace(VERSION_COMPATIBLE="VC", GPU_FALLBACK="GF")
        self.DeviceType = types.SimpleNamespace(DLA="DLA")
        self.OnnxParserFlag = types.SimpleNamespace(NATIVE_INSTANCENORM="NI")

        class Dims(list):  # the binding converts to and from lists
            pass

        self.Dims = Dims

        class Runtime:
            def __init__(self, logger: Any) -> None:
                assert isinstance(logger, ILogger)
                self.logger = logger

            def deserialize_cuda_engine(self, plan: bytes) -> Any:
                network = trt.networks.get(bytes(plan))
                if network is None:
                    self.logger.log(ILogger.Severity.ERROR, "Serialization assertion failed: version tag")
                    return None
                return FakeEngine(trt, network)

        self.Runtime = Runtime
        self.Builder = lambda logger: FakeBuilder(trt)
        self.OnnxParser = lambda network, logger: FakeParser(trt)

    def nptype(self, dtype: Any) -> type:
        return {0: np.float32, 8: np.int64}[int(dtype)]


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, network: Network) -> None:
        self.trt = trt
        self.network = network
        self.names = (*network.inputs, *network.outputs)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> Any:
        return self.trt.TensorIOMode.INPUT if name in self.network.inputs else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        dtype = {**self.network.inputs, **self.network.outputs}[name]
        return self.trt.DataType.FLOAT if dtype == "float32" else self.trt.DataType.INT64

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self.trt, self.network)


class FakeContext:
    def __init__(self, trt: FakeTensorRT, network: Network) -> None:
        self.trt = trt
        self.network = network
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.enqueues = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.network.profile[name]
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def infer_shapes(self) -> list[str]:
        return [n for n in self.network.inputs if n not in self.shapes]

    def get_tensor_shape(self, name: str) -> list[int]:
        if name in self.network.inputs:
            return list(self.shapes[name])
        return list(self.network.output_shapes(self.shapes)[name])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return ptr in self.trt.cuda.buffers

    def execute_async_v3(self, stream: int) -> bool:
        if not isinstance(stream, int) or stream not in self.trt.cuda.streams:
            return False
        work = self._work()
        if stream in self.trt.cuda.capturing:
            self.trt.cuda.capturing[stream].append(work)
        else:
            work()
        return True

    def _work(self) -> Any:
        addresses, shapes, network = dict(self.addresses), dict(self.shapes), self.network

        def run() -> None:
            self.enqueues += 1
            arrays = {n: _array(addresses[n], np.dtype(d), shapes[n]) for n, d in network.inputs.items()}
            results = network.compute({n: a.copy() for n, a in arrays.items()})
            for name, shape in network.output_shapes(shapes).items():
                _array(addresses[name], np.dtype(network.outputs[name]), shape)[...] = results[name]

        return run


def _array(ptr: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    raw = (ctypes.c_uint8 * (count * np.dtype(dtype).itemsize)).from_address(ptr)
    return np.frombuffer(memoryview(raw), dtype=dtype).reshape(shape)


class FakeBuilder:
    num_DLA_cores = 0

    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt
        self.record: dict[str, Any] = {"profiles": []}
        trt.built.append(self.record)

    def create_network(self, flags: int) -> Any:
        self.record["flags"] = flags
        return types.SimpleNamespace(
            num_inputs=2, get_input=lambda i: types.SimpleNamespace(name=("x", "ids")[i])
        )

    def create_builder_config(self) -> Any:
        return FakeConfig(self.record)

    def create_optimization_profile(self) -> Any:
        profile: dict[str, Any] = {}
        self.record["profiles"].append(profile)

        class Profile:
            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                if not all(isinstance(d, list) for d in (lo, opt, hi)):
                    raise TypeError("set_shape takes Dims")
                profile[name] = (tuple(lo), tuple(opt), tuple(hi))

            def __bool__(self) -> bool:
                return True

        return Profile()

    def build_serialized_network(self, network: Any, config: Any) -> Any:
        return memoryview(PLAN) if self.trt.build_ok else None


class FakeConfig:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.flags: list[str] = []
        record["config"] = self

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.record["workspace"] = size

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def add_optimization_profile(self, profile: Any) -> int:
        return 0

    def create_timing_cache(self, blob: bytes) -> Any:
        self.record["timing_cache_in"] = bytes(blob)
        return types.SimpleNamespace(serialize=lambda: memoryview(b"timings"))

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        self.record["ignore_mismatch"] = ignore_mismatch
        return True


class FakeParser:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.flags: list[str] = []
        self._ok = trt.parse_ok
        self.num_errors = 0 if self._ok else 1

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def parse_from_file(self, path: str) -> bool:
        return self._ok

    def get_error(self, i: int) -> Any:
        return types.SimpleNamespace(
            code=lambda: "ErrorCode.kUNSUPPORTED_NODE",
            node=lambda: 7,
            node_name=lambda: "/text/Unique_3",
            node_operator=lambda: "Unique",
            desc=lambda: "No importer registered for op: Unique",
        )
