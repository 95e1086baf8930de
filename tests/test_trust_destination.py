"""A build never destroys what is at --out, never leaves half a bundle, and cleans up after killed builds.

Kills and full disks are real: a build runs in a subprocess with a failpoint (runtime/failpoints.py)
that SIGKILLs it, or makes a write fail with ENOSPC, at a named step; what is left is then checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders import tiny_clip_build_command

from trtdeploy.build import BuildResult
from trtdeploy.cli import main
from trtdeploy.runtime.bundle import MANIFEST, Bundle, Manifest
from trtdeploy.runtime.bundle_writer import REJECTED_MARK, BundleWriter, OutputClaim, clear_leftovers
from trtdeploy.runtime.errors import ArtifactError, UsageError

pytestmark = pytest.mark.integration


def build(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`trtdeploy build clip --preset tiny --out OUT` in its own process (so a failpoint may kill it)."""
    return subprocess.run(
        tiny_clip_build_command(out, *extra),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def created(bundle: Path) -> str:
    return str(json.loads((bundle / MANIFEST).read_text())["created_utc"]) + str(
        (bundle / MANIFEST).stat().st_mtime_ns
    )


def small_manifest() -> Manifest:
    from trtdeploy.runtime.compare import Budget, Tolerance

    return Manifest(
        model="m", preset="p", weights={}, precision="fp32", precision_method={}, pipeline="clip",
        components=(), budget=Budget({"*": Tolerance(1, 0, 0)}), assets={}, tools={}, created_utc="now",
    )  # fmt: skip


def hidden_leftovers(out: Path) -> list[str]:
    return sorted(
        p.name
        for p in out.parent.iterdir()
        if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")
    )


@pytest.fixture()
def old_bundle(tiny_clip: BuildResult, tmp_path: Path) -> Path:
    """A complete bundle already at the output path, as after an earlier build."""
    out = tmp_path / "out" / "fp32"
    shutil.copytree(tiny_clip.bundle, out)
    return out


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: (d / "notes.txt").write_text("my thesis"), id="user folder"),
        pytest.param(
            lambda d: (d / "sub").mkdir() or (d / "sub" / "x").write_text("x"), id="nested user files"
        ),
        pytest.param(lambda d: (d / MANIFEST).write_text('{"not": "ours"}'), id="foreign manifest.json"),
    ],
)
def test_a_folder_that_is_not_a_bundle_is_refused_and_kept(
    tmp_path: Path, make, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "mine"
    out.mkdir()
    make(out)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert main(["build", "clip", "--preset", "tiny", "--out", str(out), "--quiet"]) == 2
    assert "is a folder that is not a trtdeploy bundle" in capsys.readouterr().err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def test_a_regular_file_and_a_link_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.pdf"
    out.write_bytes(b"%PDF precious")
    assert main(["build", "clip", "--preset", "tiny", "--out", str(out), "--quiet"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and out.read_bytes() == b"%PDF precious"
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    assert main(["build", "clip", "--preset", "tiny", "--out", str(link), "--quiet"]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_the_weights_folder_is_never_an_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trtdeploy.models.registry import get_recipe

    weights = tmp_path / "weights"
    get_recipe("clip").load("tiny").model.save_pretrained(weights)
    files = sorted(p.name for p in weights.iterdir())
    for out in (weights, weights / "bundle", tmp_path):
        assert main(["build", "clip", "--weights", str(weights), "--out", str(out), "--quiet"]) == 2
        assert "overlaps the weights folder" in capsys.readouterr().err
    assert sorted(p.name for p in weights.iterdir()) == files


def test_an_empty_folder_is_filled_and_only_a_bundle_replaced(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with BundleWriter(empty) as writer:
        writer.write_text("x.txt", "1")
        writer.commit(small_manifest())
    assert (empty / "x.txt").read_text() == "1"
    assert hidden_leftovers(empty) == []


def test_a_rejected_folder_of_the_users_is_left_alone(tmp_path: Path) -> None:
    final = tmp_path / "b"
    theirs = tmp_path / "b.rejected"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("mine")
    with BundleWriter(final) as writer:
        writer.write_text("x.txt", "1")
        kept = writer.reject()
    assert (theirs / "keep.txt").read_text() == "mine" and kept != theirs and (kept / REJECTED_MARK).is_file()
    ours = tmp_path / "c"
    for version in ("1", "2"):  # a rejected folder trtdeploy made is replaced by the next one
        with BundleWriter(ours) as writer:
            writer.write_text("x.txt", version)
            again = writer.reject()
    assert again == tmp_path / "c.rejected" and (again / "x.txt").read_text() == "2"


def test_a_second_build_of_the_same_output_waits_its_turn(tmp_path: Path) -> None:
    out = tmp_path / "b"
    with OutputClaim(out), pytest.raises(ArtifactError, match="another trtdeploy build is writing"):
        OutputClaim(out)
    OutputClaim(out).release()  # free again once the first one is done


def test_plans_are_not_built_into_a_bundle_another_build_holds(old_bundle: Path) -> None:
    from trtdeploy.runtime.tensorrt_build import EngineFromBundle

    bundle = Bundle.load(old_bundle)
    with OutputClaim(old_bundle), pytest.raises(ArtifactError, match="another trtdeploy build is writing"):
        EngineFromBundle(note=lambda _: None)(bundle)
    assert not (old_bundle / "engines").exists()


def test_leftovers_of_killed_builds_are_cleared_and_an_aside_bundle_put_back(old_bundle: Path) -> None:
    parent = old_bundle.parent
    aside = parent / ".fp32.old-abc"
    aside.mkdir()
    os.rename(old_bundle, aside / "bundle")  # killed between the two renames of the fallback swap
    for name in (".fp32.partial-1", ".fp32.export-2"):
        (parent / name).mkdir()
        (parent / name / "vision.onnx").write_bytes(b"half")
    (parent / ".other.partial-3").mkdir()  # another output's: not ours to clear
    cleared = clear_leftovers(old_bundle)
    assert len(cleared) == 3 and Bundle.load(old_bundle)
    assert sorted(p.name for p in parent.iterdir()) == [".other.partial-3", "fp32"]


def test_a_build_killed_at_any_step_leaves_the_old_bundle_or_the_new_one(old_bundle: Path) -> None:
    """SIGKILL at each step of a rebuild over an existing bundle: the path always holds a complete
    bundle (the old one until the swap, the new one after it); the next build clears the rest and
    replaces the bundle."""
    before = created(old_bundle)
    for point in ("export", "bundle-write", "bundle-commit", "bundle-swapped"):
        killed = build(old_bundle, env={"TRTDEPLOY_FAILPOINT": point})
        assert killed.returncode == -9, (point, killed.stderr)  # SIGKILL
        assert Bundle.load(old_bundle).manifest.model == "clip", point  # complete, hashes and all
        if point != "bundle-swapped":
            assert created(old_bundle) == before, point
    assert created(old_bundle) != before  # the swap happened in one step before the last kill
    again = build(old_bundle)
    assert again.returncode == 0, again.stderr
    assert hidden_leftovers(old_bundle) == [] and Bundle.load(old_bundle)


def test_a_killed_int8_calibration_leaves_the_old_bundle(old_bundle: Path) -> None:
    before = created(old_bundle)
    killed = build(
        old_bundle, "--precision", "int8", "--calib-size", "8", env={"TRTDEPLOY_FAILPOINT": "calibration"}
    )
    assert killed.returncode == -9
    assert created(old_bundle) == before and Bundle.load(old_bundle)
    assert hidden_leftovers(old_bundle)  # the killed build's partial folders are there, until...
    clear_leftovers(old_bundle)
    assert hidden_leftovers(old_bundle) == []


def test_a_full_disk_is_a_clear_error_and_replaces_nothing(old_bundle: Path) -> None:
    before = created(old_bundle)
    full = build(
        old_bundle, env={"TRTDEPLOY_FAILPOINT": "bundle-write", "TRTDEPLOY_FAILPOINT_ACTION": "enospc"}
    )
    assert full.returncode == 1 and "ran out of disk space" in full.stderr and "Traceback" not in full.stderr
    assert created(old_bundle) == before and Bundle.load(old_bundle)
    assert hidden_leftovers(old_bundle) == []


def test_a_plan_written_but_never_recorded_is_never_used(tiny_clip: BuildResult, tmp_path: Path) -> None:
    """Killed between the plan and its record (the plan cache write): the plan is invisible."""
    bundle = tmp_path / "b"
    shutil.copytree(tiny_clip.bundle, bundle)
    script = f"""
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine_cache import EngineCache, Environment, PlanKey
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions
env = Environment("10.3.0", "Orin", "8.7")
key = PlanKey.for_bundle(Bundle.load({str(bundle)!r}), "vision", env, TrtBuildOptions())
record = EngineCache({str(bundle)!r}).write_plan(key, b"plan bytes")
EngineCache({str(bundle)!r}).commit(record)
"""
    env = {**os.environ, "TRTDEPLOY_FAILPOINT": "plan-write", "TRTDEPLOY_CACHE_DIR": str(tmp_path / "cache")}
    killed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert killed.returncode == -9
    from trtdeploy.runtime.engine_cache import EngineCache

    assert list((bundle / "engines").glob("*.plan")) and EngineCache(bundle).records() == []
    Bundle.load(bundle)  # a stray plan under engines/ does not make the bundle unloadable


def test_usage_mistakes_in_the_build_command(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["build", "resnet"], "unknown model 'resnet'"),
        (["build", "clip", "--preset", "huge"], "has no preset 'huge'"),
        (["build", "clip", "--calib-size", "0"], "expected a number of at least 1"),
        (["build", "clip", "--int8-exclude", "Conv"], "apply to fp16 and int8 builds"),
        (["build", "clip", "--precision", "int3"], "invalid choice"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(UsageError, match="give either a preset or a weights folder"):
        from trtdeploy.models.registry import get_recipe

        get_recipe("clip").load("tiny", Path("."))
