"""The TensorRT target: plan cache keys and refusals (pure Python, run everywhere), what a host
without TensorRT says, the type check against tensorrt-stubs, and the device tests (`tensorrt`,
`gpu`: they build and run real plans and skip with the reason where TensorRT or a GPU is absent)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from trtdeploy.build import BuildResult
from trtdeploy.cli import main
from trtdeploy.runtime.atomic import write_atomic
from trtdeploy.runtime.bundle import MANIFEST, Bundle
from trtdeploy.runtime.engine_cache import EngineCache, Environment, PlanKey
from trtdeploy.runtime.errors import ArtifactError, BackendUnavailable, IncompatibleEngine
from trtdeploy.runtime.targets import detect_target, open_engine
from trtdeploy.runtime.tensorrt_host import tensorrt_unavailable_reason
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions

REPO = Path(__file__).resolve().parents[1]
ENV = Environment(tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7")


def base_key(**changes: object) -> PlanKey:
    key = PlanKey(
        component="vision",
        onnx_sha256="a" * 64,
        weights_sha256="b" * 64,
        profiles={"pixel_values": [[1, 3, 224, 224], [4, 3, 224, 224], [8, 3, 224, 224]]},
        builder_options=TrtBuildOptions().key_json(),
        tensorrt_version=ENV.tensorrt_version,
        gpu_name=ENV.gpu_name,
        compute_capability=ENV.compute_capability,
    )
    return dataclasses.replace(key, **changes)  # type: ignore[arg-type]


KEY_CHANGES = {
    "onnx_sha256": "c" * 64,
    "weights_sha256": "d" * 64,
    "profiles": {"pixel_values": [[1, 3, 224, 224], [4, 3, 224, 224], [16, 3, 224, 224]]},
    "tensorrt_version": "10.3.0.31",
    "gpu_name": "Orin NX",
    "compute_capability": "8.6",
    "component": "text",
}
OPTION_CHANGES = {
    "workspace_mib": 1024,
    "optimization_level": 5,
    "profiling_verbosity": "none",
    "dla_core": 0,
    "version_compatible": True,
    "hardware_compatibility": "ampere_plus",
}


def store(cache: EngineCache, key: PlanKey, plan: bytes = b"plan bytes") -> None:
    cache.commit(cache.write_plan(key, plan))


# ---- the cache key: every field counts ----------------------------------------------------------


@pytest.mark.parametrize("field", sorted(KEY_CHANGES))
def test_each_key_field_changed_alone_misses(field: str, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key())
    assert cache.lookup(base_key()) is not None
    changed = base_key(**{field: KEY_CHANGES[field]})
    assert changed.digest() != base_key().digest()
    assert cache.lookup(changed) is None


@pytest.mark.parametrize("option", sorted(OPTION_CHANGES))
def test_each_builder_option_changed_alone_misses(option: str, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key())
    options = dataclasses.replace(TrtBuildOptions(), **{option: OPTION_CHANGES[option]})
    changed = base_key(builder_options=options.key_json())
    assert cache.lookup(changed) is None
    with pytest.raises(IncompatibleEngine, match=f"builder option {option}"):
        cache.select(base_key(), ENV, options)


def test_timing_cache_setting_is_not_part_of_the_key() -> None:
    """It changes how long a build takes, not what the plan is."""
    assert TrtBuildOptions(timing_cache=False).key_json() == TrtBuildOptions().key_json()


# ---- refusing a plan built elsewhere -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "current"),
    [
        ("tensorrt_version", Environment("10.13.0.35", "Orin", "8.7")),
        ("gpu_name", Environment("10.3.0.30", "NVIDIA H100 80GB HBM3", "8.7")),
        ("compute_capability", Environment("10.3.0.30", "Orin", "9.0")),
    ],
)
def test_foreign_plan_is_refused_naming_what_differs(
    field: str, current: Environment, tmp_path: Path
) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key())
    expected = dataclasses.replace(
        base_key(),
        tensorrt_version=current.tensorrt_version,
        gpu_name=current.gpu_name,
        compute_capability=current.compute_capability,
    )
    with pytest.raises(IncompatibleEngine) as info:
        cache.select(expected, current)
    message = str(info.value)
    assert f"{field}: built" in message
    built, here = str(getattr(ENV, field)), str(getattr(current, field))
    assert built in message and here in message
    assert f"trtdeploy engine {tmp_path}" in message
    assert info.value.exit_code == 3


@pytest.mark.parametrize("field", ["onnx_sha256", "weights_sha256", "profiles"])
def test_plan_of_another_graph_is_refused(field: str, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key(**{field: KEY_CHANGES[field]}))
    with pytest.raises(IncompatibleEngine, match=f"{field}: built"):
        cache.select(base_key(), ENV)


def test_matching_plan_is_selected_and_the_newest_wins(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key(tensorrt_version="10.2.0.1"))  # another host's plan stays in the folder
    store(cache, base_key())
    assert cache.select(base_key(), ENV).key == base_key()


def test_version_compatible_plan_runs_on_newer_releases_only(tmp_path: Path) -> None:
    options = TrtBuildOptions(version_compatible=True)
    cache = EngineCache(tmp_path)
    store(cache, base_key(builder_options=options.key_json()))
    for version in ("10.3.0.30", "10.13.0.35", "11.1.0.1"):
        env = dataclasses.replace(ENV, tensorrt_version=version)
        assert cache.select(base_key(tensorrt_version=version), env).key.tensorrt_version == "10.3.0.30"
    older = dataclasses.replace(ENV, tensorrt_version="10.2.0.19")
    with pytest.raises(IncompatibleEngine, match="tensorrt_version: built 10.3.0.30, here 10.2.0.19"):
        cache.select(base_key(tensorrt_version="10.2.0.19"), older)


def test_ampere_plus_plan_runs_on_other_ampere_gpus_only(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key(builder_options=TrtBuildOptions(hardware_compatibility="ampere_plus").key_json()))
    ada = Environment(ENV.tensorrt_version, "NVIDIA L4", "8.9")
    assert cache.select(base_key(), ada) is not None
    turing = Environment(ENV.tensorrt_version, "Tesla T4", "7.5")
    with pytest.raises(IncompatibleEngine, match="compute_capability: built 8.7, here 7.5"):
        cache.select(base_key(), turing)


def test_no_plan_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactError, match=f"has no TensorRT plan. Build it on this device: trtdeploy engine {tmp_path}"
    ):
        EngineCache(tmp_path).select(base_key(), ENV)


def test_rebuild_command_keeps_the_plan_options(tmp_path: Path) -> None:
    options = TrtBuildOptions(workspace_mib=512, dla_core=1, gpu_fallback=True)
    cache = EngineCache(tmp_path)
    store(cache, base_key(builder_options=options.key_json()))
    with pytest.raises(IncompatibleEngine) as info:
        cache.select(
            base_key(tensorrt_version="10.4.0.1"), dataclasses.replace(ENV, tensorrt_version="10.4.0.1")
        )
    assert f"trtdeploy engine {tmp_path} --workspace-mib 512 --dla-core 1 --gpu-fallback" in str(info.value)


# ---- the plan's bytes: checked before TensorRT reads them ---------------------------------------


def test_tampered_plan_is_refused_before_anyone_reads_it(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key(), b"\x00" * 64)
    record = cache.select(base_key(), ENV)
    assert cache.read_plan(record) == b"\x00" * 64
    (cache.dir / record.plan).write_bytes(b"\x00" * 63 + b"\x01")  # same size, one bit
    with pytest.raises(ArtifactError, match="it was changed after the build. A plan is executable code"):
        cache.read_plan(record)


def test_edited_record_is_refused(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    store(cache, base_key())
    path = next(cache.dir.glob("*.json"))
    data = json.loads(path.read_text())
    data["key"]["tensorrt_version"] = ENV.tensorrt_version + "-edited"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="not a valid plan record .*the record was edited"):
        cache.records()


def test_uncommitted_plan_is_invisible_and_writes_leave_no_temporaries(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    record = cache.write_plan(base_key(), b"plan")
    assert cache.lookup(base_key()) is None  # the record is the commit point
    cache.commit(record)
    found = cache.lookup(base_key())
    assert found is not None and (found.key, found.plan, found.plan_sha256) == (
        record.key,
        record.plan,
        record.plan_sha256,
    )
    assert found.signature  # signed with this host's key when committed
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted([record.plan, f"{base_key().stem}.json"])
    write_atomic(tmp_path / "x.bin", b"1")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_plans_live_in_the_bundle_and_leave_its_manifest_alone(tiny_clip_copy: Path) -> None:
    bundle = Bundle.load(tiny_clip_copy)
    before = (tiny_clip_copy / MANIFEST).read_bytes()
    key = PlanKey.for_bundle(bundle, "text", ENV, TrtBuildOptions())
    assert key.onnx_sha256 == bundle.manifest.files["text.onnx"]["sha256"]
    assert key.weights_sha256 == bundle.manifest.weights["sha256"]
    assert key.profiles == {
        n: [list(s) for s in v] for n, v in bundle.manifest.component("text").io.profile_shapes().items()
    }
    store(EngineCache(tiny_clip_copy), key)
    assert (tiny_clip_copy / MANIFEST).read_bytes() == before
    Bundle.load(tiny_clip_copy)  # still loads: it ignores files its manifest does not list
    assert EngineCache(tiny_clip_copy).select(key, ENV).key == key


# ---- hosts without TensorRT or a GPU ------------------------------------------------------------

no_tensorrt_here = pytest.mark.skipif(
    tensorrt_unavailable_reason() is None,
    reason="TensorRT and a GPU are present; this covers hosts without them",
)


@no_tensorrt_here
def test_default_target_is_onnxruntime_without_tensorrt() -> None:
    assert detect_target() == "onnxruntime"


@no_tensorrt_here
def test_asking_for_tensorrt_without_it_says_what_to_install(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    with pytest.raises(BackendUnavailable, match=r"pip install 'trtdeploy\[tensorrt\]'"):
        open_engine(bundle, "vision", "tensorrt")
    assert main(["engine", str(tiny_clip.bundle)]) == 4


@no_tensorrt_here
@pytest.mark.integration
def test_tensorrt_build_stops_with_the_device_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clip-trt"
    code = main(
        ["build", "clip", "--preset", "tiny", "--target", "tensorrt", "--out", str(out), "--threads", "1"]
    )
    captured = capsys.readouterr()
    assert code == 7, captured.err
    assert f"finish there with:\n  trtdeploy engine {out}" in captured.out
    assert re.search(r"Verification: clip · fp32 · onnxruntime\b[^\n]*· PASS", captured.out)  # on ORT CPU
    assert "0 unsupported" in captured.err  # and linted
    Bundle.load(out)


def test_tensorrt_build_fails_on_an_unsupported_node(tiny_clip: BuildResult, tmp_path: Path) -> None:
    import onnx

    from trtdeploy.build import BuildSettings, BundleFromRecipe
    from trtdeploy.progress import Progress
    from trtdeploy.runtime.errors import ExportError

    text = onnx.load(str(tiny_clip.bundle / "text.onnx"))
    next(n for n in text.graph.node if n.op_type == "Softmax").op_type = "Unique"
    onnx.save(text, str(tmp_path / "text.onnx"))
    shutil.copy(tiny_clip.bundle / "vision.onnx", tmp_path / "vision.onnx")
    entries = list(Bundle.load(tiny_clip.bundle).manifest.components)

    class Writer:
        def path(self, rel: str) -> Path:
            return tmp_path / rel

    quiet = Progress(total=1, quiet=True)
    ort_build = BundleFromRecipe(BuildSettings(model="clip", target="onnxruntime"))
    assert len(ort_build._lint(entries, Writer(), quiet).errors) == 1  # reported, not fatal
    trt_build = BundleFromRecipe(BuildSettings(model="clip", target="tensorrt"))
    with pytest.raises(ExportError, match=r"(?s)TensorRT.s ONNX parser does not take.*\(Unique\)"):
        trt_build._lint(entries, Writer(), quiet)


# ---- the type check against tensorrt-stubs ------------------------------------------------------

STUBS = REPO / ".typecheck" / "tensorrt_bindings" / "tensorrt.pyi"


@pytest.mark.skipif(
    not STUBS.is_file(), reason="the TensorRT stubs are set up by `make lint` (typecheck-stubs)"
)
def test_mypy_catches_a_wrong_tensorrt_call(tmp_path: Path) -> None:
    good = tmp_path / "good_trt.py"
    good.write_text(
        textwrap.dedent(
            """
            import tensorrt as trt

            def flags() -> int:
                return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

            def configure(config: trt.IBuilderConfig) -> None:
                config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
            """
        )
    )
    bad = tmp_path / "bad_trt.py"
    bad.write_text(
        textwrap.dedent(
            """
            import tensorrt as trt

            def build(builder: trt.Builder, config: trt.IBuilderConfig) -> None:
                network = builder.create_netwrk(0)
                config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, "2G")
                builder.build_engine(network, config)
            """
        )
    )

    def mypy(path: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), str(path)]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)

    assert mypy(good).returncode == 0, mypy(good).stdout
    done = mypy(bad)
    assert done.returncode == 1
    assert '"Builder" has no attribute "create_netwrk"; maybe "create_network"?' in done.stdout
    assert (
        'Argument 2 to "set_memory_pool_limit" of "IBuilderConfig" has incompatible type "str"' in done.stdout
    )
    assert '"Builder" has no attribute "build_engine"' in done.stdout


# ---- on a device: real TensorRT, real GPU -------------------------------------------------------


@pytest.fixture(scope="module")
def device_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_clip: BuildResult) -> Path:
    """The tiny CLIP bundle with its TensorRT plans built and verified here."""
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed here: pip install 'trtdeploy[tensorrt]'"
    )
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from trtdeploy.runtime.tensorrt_build import EngineFromBundle

    root = tmp_path_factory.mktemp("device") / "bundle"
    shutil.copytree(tiny_clip.bundle, root)
    built = EngineFromBundle(TrtBuildOptions(optimization_level=1), note=lambda _: None)(Bundle.load(root))
    assert built.report.passed and built.reused == ()
    return root


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_device_build_is_cached_by_key(device_bundle: Path) -> None:
    from trtdeploy.runtime.tensorrt_build import EngineFromBundle

    again = EngineFromBundle(TrtBuildOptions(optimization_level=1), note=lambda _: None)(
        Bundle.load(device_bundle)
    )
    assert again.reused == ("text", "vision")
    other = EngineFromBundle(TrtBuildOptions(optimization_level=2), note=lambda _: None)(
        Bundle.load(device_bundle)
    )
    assert other.reused == ()
    assert len(EngineCache(device_bundle).records()) == 4


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_device_refuses_a_foreign_plan(device_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(device_bundle, root)
    for path in (root / "engines").glob("*.json"):
        path.unlink()
    cache = EngineCache(root)
    for record in EngineCache(device_bundle).records():
        foreign = dataclasses.replace(record.key, tensorrt_version="9.9.9.9")
        cache.commit(
            dataclasses.replace(cache.write_plan(foreign, EngineCache(device_bundle).read_plan(record)))
        )
    with pytest.raises(IncompatibleEngine, match="tensorrt_version: built 9.9.9.9"):
        open_engine(Bundle.load(root), "vision", "tensorrt")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_device_runner_on_dynamic_shapes_matches_onnxruntime(device_bundle: Path) -> None:
    bundle = Bundle.load(device_bundle)
    with (
        open_engine(bundle, "text", "tensorrt") as trt_engine,
        open_engine(bundle, "text", "onnxruntime") as ort,
    ):
        rng = np.random.default_rng(0)
        vocab = bundle.manifest.component("text").io.inputs[0].value_range
        assert vocab is not None
        for batch, length in [(1, 3), (3, 11), (2, 5)]:
            ids = rng.integers(vocab[0], vocab[1] + 1, (batch, length), dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones((batch, length), np.int64)}
            got, want = trt_engine.run(feeds), ort.run(feeds)
            for name in want:
                assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype
                np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-3)
        with pytest.raises(Exception, match="expected dtype int64, got int32"):
            trt_engine.run({k: v.astype(np.int32) for k, v in feeds.items()})


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_device_cuda_graph_path_replays_correctly(device_bundle: Path) -> None:
    from trtdeploy.runtime.tensorrt_backend import TrtEngine, TrtEngineSettings

    bundle = Bundle.load(device_bundle)
    plain = TrtEngine.from_bundle(bundle, "vision")
    graphed = TrtEngine.from_bundle(bundle, "vision", TrtEngineSettings(cuda_graphs=True))
    rng = np.random.default_rng(1)
    image = tuple(int(d) for d in bundle.manifest.component("vision").io.inputs[0].shape[1:])
    for batch in (2, 2, 3, 2):  # capture, replay, new shape, replay the first graph
        x = rng.standard_normal((batch, *image)).astype(np.float32)
        got, want = graphed.run({"pixel_values": x}), plain.run({"pixel_values": x})
        np.testing.assert_allclose(got["image_embeds"], want["image_embeds"], rtol=1e-4, atol=1e-5)
    plain.close()
    graphed.close()
