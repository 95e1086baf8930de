"""The TensorRT runner and plan builder against stand-ins for tensorrt and cuda-python.

They run the real trtdeploy code paths on this CPU machine: shapes set per call, outputs sized
from the context, buffers that grow and re-bind, int64 kept, the non-default stream, the CUDA
graph capture/replay bookkeeping, the context pool under threads, every False/None checked, and
the builder's flags, profile, timing cache and error reports. The numerics of real TensorRT are
the device tests' job (tests/test_tensorrt.py, `tensorrt`/`gpu` markers).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import PLAN, FakeCuda, FakeTensorRT

from trtdeploy.runtime.engine_cache import EngineCache, Environment, PlanKey
from trtdeploy.runtime.errors import ArtifactError, ExportError, IncompatibleEngine, InputValidationError
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec, validate_feeds
from trtdeploy.runtime.tensorrt_host import tensorrt_unavailable_reason
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions

IO = IOSpec(
    inputs=(TensorSpec("x", "float32", ("batch", 4)), TensorSpec("ids", "int64", ("batch", "seq"))),
    outputs=(TensorSpec("y", "float32", ("batch", 4)), TensorSpec("n", "int64", ("batch", "seq"))),
    dims={"batch": DimRange(1, 2, 4), "seq": DimRange(2, 5, 8)},
)


def record_for(cache: EngineCache, plan: bytes = PLAN, **key_changes: str):  # type: ignore[no-untyped-def]
    key = PlanKey(
        component="toy",
        onnx_sha256="0" * 64,
        weights_sha256="1" * 64,
        profiles={n: [list(s) for s in v] for n, v in IO.profile_shapes().items()},
        builder_options=TrtBuildOptions().key_json(),
        tensorrt_version=key_changes.get("tensorrt_version", "10.3.0.26"),
        gpu_name="Fake GPU",
        compute_capability="8.7",
    )
    record = cache.write_plan(key, plan)
    cache.commit(record)
    return record


def engine(tmp_path: Path, **settings: object):  # type: ignore[no-untyped-def]
    from trtdeploy.runtime.tensorrt_backend import TrtEngine, TrtEngineSettings

    return TrtEngine("toy", IO, PLAN, record_for(EngineCache(tmp_path)), TrtEngineSettings(**settings))  # type: ignore[arg-type]


def feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 4)).astype(np.float32),
        "ids": rng.integers(0, 1000, (batch, seq), dtype=np.int64),
    }


def test_host_with_the_fakes_counts_as_tensorrt_ready(fakes: tuple[FakeTensorRT, FakeCuda]) -> None:
    from trtdeploy.runtime.targets import detect_target
    from trtdeploy.runtime.tensorrt_host import current_environment

    assert tensorrt_unavailable_reason() is None and detect_target() == "tensorrt"
    assert current_environment() == Environment("10.3.0.26", "Fake GPU", "8.7")


def test_runner_handles_dynamic_shapes_and_keeps_int64(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    _, cuda = fakes
    toy = engine(tmp_path)
    for batch, seq in [(2, 5), (4, 8), (1, 2), (3, 7)]:
        f = feeds(batch, seq, seed=batch)
        out = toy.run(f)
        assert out["n"].dtype == np.int64 and out["n"].shape == (batch, seq)
        np.testing.assert_array_equal(out["n"], f["ids"] + 1)
        np.testing.assert_array_equal(out["y"], 2 * f["x"])
    # Grow-only device buffers: 4 tensors at (2, 5), again at the larger (4, 8), none after.
    assert cuda.calls.count("cudaMalloc") == 8
    toy.close()
    assert not cuda.buffers and not cuda.streams  # everything released


def test_runner_rejects_bad_feeds_with_the_shared_messages(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    toy = engine(tmp_path)
    bad_dtype = {**feeds(2, 5), "ids": feeds(2, 5)["ids"].astype(np.int32)}
    too_long = feeds(2, 9)
    for bad in (bad_dtype, too_long):
        with pytest.raises(InputValidationError) as got:
            toy.run(bad)
        with pytest.raises(InputValidationError) as want:
            validate_feeds("toy", IO, bad)  # exactly what the ONNX Runtime engine says
        assert str(got.value) == str(want.value)


def test_cuda_graph_is_captured_once_per_shape_and_replayed(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    _, cuda = fakes
    toy = engine(tmp_path, cuda_graphs=True)

    def check(batch: int, seq: int, seed: int) -> None:
        f = feeds(batch, seq, seed)
        out = toy.run(f)  # new data every call: a replay must read the current inputs
        np.testing.assert_array_equal(out["y"], 2 * f["x"])
        np.testing.assert_array_equal(out["n"], f["ids"] + 1)

    for seed, (batch, seq) in enumerate([(3, 5), (2, 5), (2, 5), (3, 5), (2, 5)]):
        check(batch, seq, seed)
    # (3,5) and (2,5) each: a plain enqueue, then a capture; then three replays.
    assert cuda.launches == 3
    check(4, 8, 10)  # larger: the buffers move, so every captured graph is dropped
    check(2, 5, 11)
    assert cuda.launches == 3  # captured again, not replayed at stale addresses
    check(2, 5, 12)
    assert cuda.launches == 4


def test_context_pool_serves_threads_with_at_most_max_contexts(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    _, cuda = fakes
    toy = engine(tmp_path, max_contexts=2)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(20):
                f = feeds(1 + (seed + i) % 4, 2 + i % 6, seed * 100 + i)
                out = toy.run(f)
                assert np.array_equal(out["n"], f["ids"] + 1) and np.array_equal(out["y"], 2 * f["x"])
        except BaseException as exc:  # collected: an assertion in a thread would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(cuda.streams) <= 2  # one stream per context, at most two contexts


def test_undeserializable_plan_is_refused_with_tensorrt_s_reason(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    from trtdeploy.runtime.tensorrt_backend import TrtEngine

    with pytest.raises(IncompatibleEngine, match="Serialization assertion failed: version tag"):
        TrtEngine("toy", IO, b"plan from elsewhere", record_for(EngineCache(tmp_path)))


def test_from_bundle_refuses_foreign_and_tampered_plans_before_tensorrt_reads_them(
    fakes: tuple[FakeTensorRT, FakeCuda], tiny_clip_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trtdeploy.runtime.bundle import Bundle
    from trtdeploy.runtime.tensorrt_backend import TrtEngine

    trt, _ = fakes
    read: list[bytes] = []
    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", lambda self, plan: read.append(plan))
    bundle = Bundle.load(tiny_clip_copy)
    env = Environment("10.2.0.19", "Fake GPU", "8.7")  # built by an older TensorRT
    cache = EngineCache(tiny_clip_copy)
    cache.commit(cache.write_plan(PlanKey.for_bundle(bundle, "vision", env, TrtBuildOptions()), b"old plan"))
    with pytest.raises(IncompatibleEngine, match=r"tensorrt_version: built 10.2.0.19, here 10.3.0.26"):
        TrtEngine.from_bundle(bundle, "vision")
    here = Environment("10.3.0.26", "Fake GPU", "8.7")
    record = cache.write_plan(PlanKey.for_bundle(bundle, "vision", here, TrtBuildOptions()), b"good plan")
    cache.commit(record)
    (cache.dir / record.plan).write_bytes(b"evil plan")
    with pytest.raises(ArtifactError, match="changed after the build"):
        TrtEngine.from_bundle(bundle, "vision")
    assert read == []  # TensorRT never saw either plan


@pytest.mark.parametrize(("major", "flags"), [(10, 1 << 1), (11, 0)])
def test_plan_builder_is_strongly_typed_and_configured(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path, major: int, flags: int
) -> None:
    from trtdeploy.runtime.tensorrt_build import PlanFromOnnx

    trt, _ = fakes
    trt.__version__ = f"{major}.1.0.0"
    timing = tmp_path / "timing.cache"
    options = TrtBuildOptions(workspace_mib=512, optimization_level=2, version_compatible=True)
    profile = IO.profile_shapes()
    assert PlanFromOnnx(options, timing)(tmp_path / "toy.onnx", profile) == PLAN
    built = trt.built[-1]
    assert built["flags"] == flags  # 10.x asks for strong typing; 11.x always is
    assert built["profiles"] == [dict(profile)]
    assert built["workspace"] == 512 << 20
    assert built["config"].builder_optimization_level == 2
    assert built["config"].profiling_verbosity == "DETAILED"
    assert built["config"].flags == ["VC"]
    assert built["ignore_mismatch"] is False
    assert timing.read_bytes() == b"timings"
    PlanFromOnnx(options, timing)(tmp_path / "toy.onnx", profile)
    assert trt.built[-1]["timing_cache_in"] == b"timings"  # the saved timings are read back


def test_plan_builder_reports_every_parser_error(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    from trtdeploy.runtime.tensorrt_build import PlanFromOnnx

    trt, _ = fakes
    trt.parse_ok = False
    with pytest.raises(ExportError) as info:
        PlanFromOnnx(TrtBuildOptions())(tmp_path / "text.onnx", IO.profile_shapes())
    message = str(info.value)
    for part in ("kUNSUPPORTED_NODE", "node 7", "'/text/Unique_3'", "(Unique)", "No importer registered"):
        assert part in message


def test_plan_builder_turns_none_into_an_error(fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path) -> None:
    from trtdeploy.runtime.tensorrt_build import EngineBuildError, PlanFromOnnx

    trt, _ = fakes
    trt.build_ok = False
    with pytest.raises(EngineBuildError, match="could not build a plan from toy.onnx"):
        PlanFromOnnx(TrtBuildOptions(timing_cache=False))(tmp_path / "toy.onnx", IO.profile_shapes())


def test_plan_builder_refuses_a_profile_that_does_not_match_the_graph(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    from trtdeploy.runtime.tensorrt_build import PlanFromOnnx

    profile = {"x": IO.profile_shapes()["x"]}  # the graph also has "ids"
    with pytest.raises(ArtifactError, match=r"has inputs \['ids', 'x'\], the manifest profiles \['x'\]"):
        PlanFromOnnx(TrtBuildOptions())(tmp_path / "toy.onnx", profile)


def test_dla_core_the_device_lacks_is_unavailable(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path
) -> None:
    from trtdeploy.runtime.errors import BackendUnavailable
    from trtdeploy.runtime.tensorrt_build import PlanFromOnnx

    with pytest.raises(
        BackendUnavailable, match="DLA core 0 was asked for; this device's TensorRT reports 0"
    ):
        PlanFromOnnx(TrtBuildOptions(dla_core=0))(tmp_path / "toy.onnx", IO.profile_shapes())


def test_kept_outputs_stay_on_the_device_between_calls(fakes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A decoder's loop: an output kept on the device feeds the next call by its address (no host
    copy of it either way), its own allocation survives the next call, and it is checked by shape."""
    from trtdeploy.runtime.engine import Resident

    _, cuda = fakes
    toy = engine(tmp_path)
    first = feeds(2, 5)
    host, kept = toy.run_resident(first, {}, keep=["y"])
    assert set(host) == {"n"} and set(kept) == {"y"} and kept["y"].shape == (2, 4)
    assert kept["y"].owner == "tensorrt"
    np.testing.assert_array_equal(host["n"], first["ids"] + 1)
    copies_before = len([c for c in cuda.calls if c == "cudaMalloc"])
    host, again = toy.run_resident({"ids": first["ids"]}, {"x": kept["y"]}, keep=["y"])  # x <- the kept y
    plain = toy.run({"x": 2 * first["x"], "ids": first["ids"]})
    from fake_tensorrt import _array

    np.testing.assert_array_equal(_array(again["y"].handle.ptr, np.float32, (2, 4)), plain["y"])  # 4 x
    np.testing.assert_array_equal(
        _array(kept["y"].handle.ptr, np.float32, (2, 4)), 2 * first["x"]
    )  # untouched
    assert len([c for c in cuda.calls if c == "cudaMalloc"]) > copies_before  # a fresh buffer per kept output
    buffers = len(cuda.buffers)
    del kept
    assert len(cuda.buffers) == buffers - 1  # freed with its last reference
    wrong = Resident((2, 5), "float32", again["y"].handle, "tensorrt")
    with pytest.raises(InputValidationError, match="axis 1 must be 4"):
        toy.run_resident({"ids": first["ids"]}, {"x": wrong})
    with pytest.raises(InputValidationError, match="held by another backend"):
        toy.run_resident({"ids": first["ids"]}, {"x": Resident((2, 4), "float32", first["x"], "numpy")})
    uploaded = toy.keep(3 * first["x"])  # a host array made resident (e.g. a cache repeated over beams)
    host, out = toy.run_resident({"ids": first["ids"]}, {"x": uploaded}, keep=["y"])
    np.testing.assert_array_equal(_array(out["y"].handle.ptr, np.float32, (2, 4)), 6 * first["x"])
    toy.close()
