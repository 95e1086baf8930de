"""Build TensorRT plans from a bundle, on the device that will run them (runtime side: no torch).

    PlanFromOnnx(options)(onnx, profile)   one ONNX file -> one serialized plan
    EngineFromBundle(options)(bundle)      every component: reuse or build its plan, verify all of
                                           them against the bundle's reference outputs, then commit

The network is strongly typed: precision comes from the graph (typed FP16, Q/DQ INT8), never from
builder flags, which TensorRT 11 removed. One optimization profile per component comes from the
manifest's min/opt/max dims. Every TensorRT call that reports failure by returning False or None
is checked. Written against TensorRT 10.x and 11.x; mypy checks it against the 10.13 API stubs, so
the comments say where 11.x differs from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtdeploy.runtime.atomic import BuildLock, write_atomic
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine_cache import (
    EngineCache,
    Environment,
    PlanKey,
    PlanRecord,
    rebuild_command,
)
from trtdeploy.runtime.errors import ArtifactError, BackendUnavailable, ExportError, TrtDeployError
from trtdeploy.runtime.reports import VerificationReport, raise_if_failed
from trtdeploy.runtime.tensorrt_host import (
    LogCapture,
    current_environment,
    require_tensorrt,
    tensorrt_major,
    tensorrt_unavailable_reason,
    trt_logger,
)
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions
from trtdeploy.runtime.verify import verify_bundle

if TYPE_CHECKING:
    import tensorrt as trt

ProfileShapes = Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class EngineBuildError(TrtDeployError):
    """TensorRT's builder did not produce a plan; the message carries what TensorRT logged."""


class PlanFromOnnx:
    """Stage: one serialized TensorRT plan from one ONNX file and its optimization profile."""

    def __init__(self, options: TrtBuildOptions, timing_cache: Path | None = None) -> None:
        self.options = options
        self.timing_cache = timing_cache if options.timing_cache else None

    def __call__(self, onnx_path: Path, profile: ProfileShapes) -> bytes:
        require_tensorrt()
        import tensorrt as trt

        log = LogCapture()
        logger = trt_logger(log)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags())
        if network is None:  # None on failure, though the stubs don't say so
            raise EngineBuildError(f"TensorRT could not create a network:\n  {log.tail()}")
        parser = trt.OnnxParser(network, logger)
        if self.options.version_compatible or self.options.hardware_compatibility != "none":
            # Compatible plans can't carry the InstanceNormalization plugin; the native layer is
            # the parser's default, set here so a changed default can't break them.
            parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
        parse_onnx(parser, onnx_path)
        config = builder.create_builder_config()
        if config is None:
            raise EngineBuildError(f"TensorRT could not create a builder config:\n  {log.tail()}")
        self._configure(builder, config)
        add_profile(builder, config, network, profile, onnx_path)
        cache = self._load_timing_cache(config)
        plan = builder.build_serialized_network(network, config)
        if plan is None:  # the stubs say IHostMemory; the binding returns None on failure
            raise EngineBuildError(
                f"TensorRT could not build a plan from {onnx_path.name}:\n  {log.tail()}\n"
                "Lower --optimization-level or raise --workspace-mib if it ran out of memory."
            )
        if cache is not None and self.timing_cache is not None:
            write_atomic(self.timing_cache, bytes(cache.serialize()))
        return bytes(plan)

    def _configure(self, builder: trt.Builder, config: trt.IBuilderConfig) -> None:
        import tensorrt as trt

        options = self.options
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
        config.builder_optimization_level = options.optimization_level
        config.profiling_verbosity = {
            "detailed": trt.ProfilingVerbosity.DETAILED,
            "layer_names_only": trt.ProfilingVerbosity.LAYER_NAMES_ONLY,
            "none": trt.ProfilingVerbosity.NONE,
        }[options.profiling_verbosity]
        if options.dla_core is not None:
            configure_dla(builder, config, options.dla_core, options.gpu_fallback)
        if options.version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        config.hardware_compatibility_level = {
            "none": trt.HardwareCompatibilityLevel.NONE,
            "ampere_plus": trt.HardwareCompatibilityLevel.AMPERE_PLUS,
            "same_compute_capability": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
        }[options.hardware_compatibility]

    def _load_timing_cache(self, config: trt.IBuilderConfig) -> trt.ITimingCache | None:
        if self.timing_cache is None:
            return None
        blob = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)  # b"" makes an empty cache
        if cache is None:
            raise ArtifactError(
                f"TensorRT could not read the timing cache {self.timing_cache}; delete it and rebuild."
            )
        # ignore_mismatch=False: a cache from another GPU or TensorRT is refused, not half-used.
        if not config.set_timing_cache(cache, False):
            raise ArtifactError(
                f"TensorRT refused the timing cache {self.timing_cache} (made by another TensorRT or GPU); "
                "delete it and rebuild, or build with --no-timing-cache."
            )
        return cache


def network_flags() -> int:
    """The network creation flags: strongly typed, so precision comes from the ONNX graph."""
    require_tensorrt()
    import tensorrt as trt

    if tensorrt_major() < 11:
        # 10.x: strong typing must be asked for. Never a hard-coded bit: the member's value
        # differs between releases (1 in 10.x, as the 10.13 stubs say; 0 in 11.x).
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    # 11.x: every network is strongly typed; STRONGLY_TYPED is deprecated and ignored there, and
    # EXPLICIT_BATCH (still in the 10.13 stubs) no longer exists.
    return 0


def parse_onnx(parser: trt.OnnxParser, onnx_path: Path) -> None:
    """Parse from the file, so external weights resolve next to it; report every parser error."""
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = []
    for i in range(parser.num_errors):
        error: trt.ParserError = parser.get_error(i)
        errors.append(
            f"[{error.code()}] node {error.node()} {error.node_name()!r} ({error.node_operator()}): {error.desc()}"
        )
    listed = "\n  ".join(errors) or "(the parser reported no error detail)"
    raise ExportError(
        f"TensorRT's ONNX parser rejected {onnx_path.name}:\n  {listed}\n"
        "Check the graph with `trtdeploy lint BUNDLE` and re-export the unsupported nodes."
    )


def add_profile(
    builder: trt.Builder,
    config: trt.IBuilderConfig,
    network: trt.INetworkDefinition,
    profile: ProfileShapes,
    onnx_path: Path,
) -> None:
    """One optimization profile with the manifest's min/opt/max shape for every network input."""
    import tensorrt as trt

    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if names != set(profile):
        raise ArtifactError(
            f"{onnx_path.name} has inputs {sorted(names)}, the manifest profiles {sorted(profile)}. "
            "Rebuild the bundle."
        )
    shapes = builder.create_optimization_profile()
    if shapes is None:
        raise EngineBuildError("TensorRT could not create an optimization profile.")
    for name, (lo, opt, hi) in profile.items():
        try:
            shapes.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        except ValueError as exc:
            raise ArtifactError(
                f"{onnx_path.name}: profile {lo}/{opt}/{hi} for {name!r} is invalid: {exc}"
            ) from exc
    if not shapes:  # validates the whole profile
        raise ArtifactError(f"{onnx_path.name}: TensorRT finds the profile {dict(profile)} inconsistent.")
    if config.add_optimization_profile(shapes) < 0:
        raise ArtifactError(f"{onnx_path.name}: TensorRT refused the profile {dict(profile)}.")


def configure_dla(builder: trt.Builder, config: trt.IBuilderConfig, core: int, gpu_fallback: bool) -> None:
    import tensorrt as trt

    # DLA exists on Jetson Orin with TensorRT <= 10.7 (JetPack 6) and again from 11.4.1 (JetPack
    # 7.2.2); elsewhere the builder reports no cores.
    if core >= builder.num_DLA_cores:
        raise BackendUnavailable(
            f"DLA core {core} was asked for; this device's TensorRT reports {builder.num_DLA_cores} DLA cores."
        )
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    if gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


@dataclass(frozen=True)
class EngineBuild:
    """What EngineFromBundle did: the committed plan records and the verification report."""

    records: Mapping[str, PlanRecord]
    reused: tuple[str, ...]
    report: VerificationReport


class EngineFromBundle:
    """Stage: the TensorRT plan of every component of a bundle, verified and in its cache.

    A component whose plan is cached for this exact key is reused (its sha256 checked); the others
    are built. All plans are then run on the bundle's reference inputs; only when they meet the
    accuracy budget are their records committed, so a plan that missed it is never served.
    """

    def __init__(
        self,
        options: TrtBuildOptions | None = None,
        *,
        rebuild: bool = False,
        cuda_graphs: bool = False,
        note: Callable[[str], None] = print,
    ) -> None:
        self.options = options or TrtBuildOptions()
        self.rebuild = rebuild
        self.cuda_graphs = cuda_graphs
        self.note = note

    def __call__(self, bundle: Bundle) -> EngineBuild:
        # The build's lock: two plan builds into one engines/ folder, or a plan build while the bundle
        # is being replaced, would commit records for plans the other one wrote.
        with BuildLock(bundle.root):
            return self._build_all(bundle)

    def _build_all(self, bundle: Bundle) -> EngineBuild:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"building TensorRT plans needs TensorRT and a CUDA GPU: {reason}")
        env = current_environment()
        cache = EngineCache(bundle.root)
        pending: dict[str, PlanRecord] = {}
        plans: dict[str, tuple[PlanRecord, bytes]] = {}
        for entry in bundle.manifest.components:
            key = PlanKey.for_bundle(bundle, entry.name, env, self.options)
            cached = None if self.rebuild else cache.lookup(key)
            if cached is not None:
                plans[entry.name] = (cached, cache.read_plan(cached))
                self.note(f"{entry.name}: reusing {cached.plan} (same graph, options, TensorRT and GPU)")
                continue
            record, plan = self._build(bundle, entry.name, key, env, cache)
            pending[entry.name] = record
            plans[entry.name] = (record, plan)
        try:
            report = self._verify(bundle, plans)
            raise_if_failed(report)
        except BaseException:
            for record in pending.values():
                cache.discard(record)
            raise
        for record in pending.values():
            cache.commit(record)
        reused = tuple(sorted(set(plans) - set(pending)))
        return EngineBuild({name: r for name, (r, _) in plans.items()}, reused, report)

    def _build(
        self, bundle: Bundle, component: str, key: PlanKey, env: Environment, cache: EngineCache
    ) -> tuple[PlanRecord, bytes]:
        entry = bundle.manifest.component(component)
        self.note(f"{component}: building a plan with TensorRT {env.tensorrt_version} on {env.gpu_name}")
        stage = PlanFromOnnx(self.options, cache.timing_cache_path(env))
        plan = stage(bundle.path(entry.onnx), entry.io.profile_shapes())
        record = cache.write_plan(key, plan)
        self.note(f"{component}: {record.plan} ({len(plan) / 1e6:.1f} MB)")
        return record, plan

    def _verify(self, bundle: Bundle, plans: Mapping[str, tuple[PlanRecord, bytes]]) -> VerificationReport:
        from trtdeploy.runtime.tensorrt_backend import TrtEngine, TrtEngineSettings

        settings = TrtEngineSettings(cuda_graphs=self.cuda_graphs)
        engines = {}
        try:
            for name, (record, plan) in plans.items():
                io = bundle.manifest.component(name).io
                rebuild = rebuild_command(bundle.root, self.options)
                engines[name] = TrtEngine(name, io, plan, record, settings, rebuild)
            return verify_bundle(bundle, engines, "tensorrt")
        finally:
            for engine in engines.values():
                engine.close()
