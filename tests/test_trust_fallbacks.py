"""No silent fallbacks: a misspelled budget key, an unknown layer name, an option a plan record does
not know, a provider that is missing, an unreachable budget and an untrusted plan record are each an
error that names them, never something quietly skipped."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from builders import TEST_CALIBRATION, build_tiny

from trtdeploy.build import BuildResult, BuildSettings, BundleFromRecipe, ExportedModel
from trtdeploy.calibration.int8 import Int8Settings
from trtdeploy.cli import main
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.compare import Budget, Tolerance
from trtdeploy.runtime.engine_cache import EngineCache, Environment, HostKey, PlanKey
from trtdeploy.runtime.errors import (
    BackendUnavailable,
    IncompatibleEngine,
    UsageError,
    VerificationError,
)
from trtdeploy.runtime.onnxruntime_backend import OrtSettings, providers_for
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions

pytestmark = pytest.mark.integration
LOOSE = Tolerance(cosine_min=0.9, atol=1.0, rtol=1.0, max_outside=1.0)


def test_a_misspelled_budget_task_is_an_error_before_any_work(
    tiny_clip_export: ExportedModel, tmp_path: Path
) -> None:
    budget = Budget({"*": LOOSE}, {"zero_shot_top_1_agreement": 0.9})  # "top_1": not a task CLIP computes
    with pytest.raises(UsageError, match=r"names task metrics \['zero_shot_top_1_agreement'\]"):
        build_tiny(tiny_clip_export, tmp_path / "b", budget=budget)
    budget = Budget({"*": LOOSE, "vision/image_embedz": LOOSE})
    with pytest.raises(UsageError, match=r"names outputs \['vision/image_embedz'\] that no component has"):
        build_tiny(tiny_clip_export, tmp_path / "b", budget=budget)
    assert not (tmp_path / "b").exists()


def test_unknown_layer_names_are_refused(tiny_clip_export: ExportedModel, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--int8-exclude 'no_such_node'"):
        build_tiny(
            tiny_clip_export,
            tmp_path / "b",
            precision="int8",
            int8=Int8Settings(exclude_nodes=("no_such_node",)),
        )
    with pytest.raises(UsageError, match="no graph of this model has that op type"):
        build_tiny(
            tiny_clip_export,
            tmp_path / "b",
            precision="int8",
            int8=Int8Settings(exclude_op_types=("ConvTranspose",)),
        )


def test_the_cli_refuses_unknown_layer_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = [
        "build",
        "clip",
        "--preset",
        "tiny",
        "--precision",
        "fp16",
        "--fp16-keep",
        "LayerNorm_99",
        "--calib-size",
        "8",
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(argv) == 2
    assert "--fp16-keep 'LayerNorm_99'" in capsys.readouterr().err


def test_an_unreachable_budget_fails_as_a_budget_and_keeps_the_rejected_build(
    tiny_clip_export: ExportedModel, tmp_path: Path
) -> None:
    impossible = Budget({"*": Tolerance(cosine_min=1.5, atol=0.0, rtol=0.0, max_outside=0.0)})
    with pytest.raises(VerificationError, match="missed even with all") as info:
        build_tiny(tiny_clip_export, tmp_path / "b", precision="int8", budget=impossible)
    assert info.value.exit_code == 6
    assert (tmp_path / "b.rejected").is_dir() and not (tmp_path / "b").exists()


def test_a_gpu_target_without_its_providers_is_refused() -> None:
    import onnxruntime

    have = onnxruntime.get_available_providers()
    for target in ("onnxruntime-cuda", "onnxruntime-trt"):
        if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} <= set(have):
            pytest.skip("this ONNX Runtime has the GPU providers")
        with pytest.raises(BackendUnavailable, match="needs ONNX Runtime's"):
            providers_for(OrtSettings(target=target))


def key(bundle: Bundle, **changes: object) -> PlanKey:
    env = Environment("10.3.0", "Orin", "8.7")
    return PlanKey.for_bundle(bundle, "vision", env, TrtBuildOptions())


def test_plan_records_are_trusted_only_when_this_host_wrote_them(
    tiny_clip: BuildResult, tmp_path: Path
) -> None:
    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_clip.bundle, bundle_dir)
    bundle = Bundle.load(bundle_dir)
    env = Environment("10.3.0", "Orin", "8.7")
    here, elsewhere = HostKey(tmp_path / "here"), HostKey(tmp_path / "elsewhere")
    wanted = key(bundle)
    # Built on another host (or forged with another key): its record does not verify here.
    other = EngineCache(bundle_dir, elsewhere)
    other.commit(other.write_plan(wanted, b"plan from elsewhere"))
    cache = EngineCache(bundle_dir, here)
    assert cache.lookup(wanted) is None  # not reused: it will be rebuilt
    with pytest.raises(IncompatibleEngine, match="not written by trtdeploy on this host"):
        cache.select(wanted, env)
    # Written here: trusted; then edited by hand: no longer.
    cache.commit(cache.write_plan(wanted, b"plan made here"))
    record = cache.select(wanted, env)
    assert cache.read_plan(record) == b"plan made here"
    path = bundle_dir / "engines" / f"{wanted.stem}.json"
    data = json.loads(path.read_text())
    data["built_utc"] = "2030-01-01T00:00:00+00:00"  # any change breaks the signature
    path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleEngine, match="record signature"):
        cache.select(wanted, env)
    assert (tmp_path / "here" / HostKey.FILE).stat().st_mode & 0o777 == 0o600


def test_a_host_key_others_can_read_is_refused(tmp_path: Path) -> None:
    from trtdeploy.runtime.errors import ArtifactError

    host = HostKey(tmp_path / "cache")
    key = host.read(create=True)
    assert key is not None and host.read(create=False) == key
    path = tmp_path / "cache" / HostKey.FILE
    path.chmod(0o644)  # readable by anyone: anyone could sign a forged record with it
    with pytest.raises(ArtifactError, match="readable or writable by others"):
        host.read(create=False)


def test_a_plan_record_with_an_unknown_option_is_refused(tiny_clip: BuildResult, tmp_path: Path) -> None:
    from trtdeploy.runtime.errors import ArtifactError

    bundle_dir = tmp_path / "b"
    shutil.copytree(tiny_clip.bundle, bundle_dir)
    cache = EngineCache(bundle_dir, HostKey(tmp_path / "key"))
    wanted = key(Bundle.load(bundle_dir))
    cache.commit(cache.write_plan(wanted, b"plan"))
    path = bundle_dir / "engines" / f"{wanted.stem}.json"
    data = json.loads(path.read_text())
    data["key"]["builder_options"]["sparsity"] = True  # an option this trtdeploy does not know
    canonical = json.dumps(data["key"], sort_keys=True, separators=(",", ":")).encode()
    data["key_sha256"] = hashlib.sha256(
        canonical
    ).hexdigest()  # consistent, as a newer version would write it
    path.write_text(json.dumps(data))
    with pytest.raises(
        ArtifactError, match=r"builder options \['sparsity'\] are not ones this trtdeploy knows"
    ):
        cache.records()


def test_the_ignored_options_of_an_fp32_build_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "clip", "--preset", "tiny", "--calibration", "entropy"]) == 2
    assert "--calibration apply to fp16 and int8 builds" in capsys.readouterr().err


def test_a_build_settings_budget_is_checked_like_the_recipes(tmp_path: Path) -> None:
    settings = BuildSettings(
        model="clip", preset="tiny", out=tmp_path / "b", quiet=True, calibration=TEST_CALIBRATION,
        budget=Budget({"*": LOOSE}, {"mask_iou": 0.5}),  # CLIPSeg's task, not CLIP's
    )  # fmt: skip
    with pytest.raises(UsageError, match="does not compute"):
        BundleFromRecipe(settings)()
