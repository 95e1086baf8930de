"""Bundles: atomic writes, hash checks before anything parses a file, hostile manifests refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from builders import tiny_clip_build_command

from trtdeploy.models.clip import preprocess_for
from trtdeploy.runtime.bundle import MANIFEST, Bundle, Manifest
from trtdeploy.runtime.bundle_writer import BundleWriter
from trtdeploy.runtime.compare import Budget, Tolerance
from trtdeploy.runtime.errors import ArtifactError

# A CLIP pipeline config the loader accepts (it checks pipeline.json against the pipeline's ranges).
PIPELINE = {
    "preprocess": preprocess_for(224).to_json(),
    "logit_scale": 4.6,
    "max_text_length": 77,
    "pad_id": 1,
}


def small_manifest(version: int = 1) -> Manifest:
    return Manifest(
        model="m",
        preset="p",
        weights={"source": "preset", "sha256": "0"},
        precision="fp32",
        precision_method={},
        pipeline="clip",
        components=(),
        budget=Budget({"*": Tolerance(1, 0, 0)}),
        assets={"pipeline": "pipeline.json"},
        tools={},
        created_utc="now",
        pipeline_config={**PIPELINE, "version": version},
    )


def write_pipeline(writer: BundleWriter, version: int = 1) -> None:
    writer.write_json("pipeline.json", {**PIPELINE, "version": version})


def test_commit_writes_manifest_last_and_loads(tmp_path: Path) -> None:
    final = tmp_path / "b"
    with BundleWriter(final) as writer:
        write_pipeline(writer)
        writer.write_npz("reference/x.npz", {"x": np.arange(3)})
        assert not final.exists()  # nothing at the final path until commit
        manifest = writer.commit(small_manifest())
    assert sorted(manifest.files) == ["pipeline.json", "reference/x.npz"]
    bundle = Bundle.load(final)
    assert bundle.read_json("pipeline.json")["version"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_failed_build_leaves_previous_bundle_untouched(tmp_path: Path) -> None:
    final = tmp_path / "b"
    with BundleWriter(final) as writer:
        write_pipeline(writer, 1)
        writer.commit(small_manifest(1))
    with pytest.raises(RuntimeError), BundleWriter(final) as writer:
        write_pipeline(writer, 2)
        raise RuntimeError("build step failed")
    assert Bundle.load(final).read_json("pipeline.json")["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_rebuild_replaces_the_bundle(tmp_path: Path) -> None:
    final = tmp_path / "b"
    for version in (1, 2):
        with BundleWriter(final) as writer:
            write_pipeline(writer, version)
            writer.commit(small_manifest(version))
    assert Bundle.load(final).read_json("pipeline.json")["version"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


@pytest.mark.integration
def test_killed_build_leaves_no_bundle(tmp_path: Path) -> None:
    """kill -9 in the middle of a build: no bundle at the final path, and the partial folder it
    leaves behind is refused by the loader."""
    out = tmp_path / "clip" / "fp32"
    proc = subprocess.Popen(
        tiny_clip_build_command(out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    partial: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = (
            [p for p in out.parent.glob(".fp32.partial-*") if any(p.glob("*.onnx"))]
            if out.parent.exists()
            else []
        )
        if partial:
            break
        time.sleep(0.05)
    assert partial, "the build never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        Bundle.load(partial[0])


def test_tampered_file_is_refused(tiny_clip_copy: Path) -> None:
    onnx = tiny_clip_copy / "vision.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    onnx.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"vision.onnx has sha256 .* it was changed after the build"):
        Bundle.load(tiny_clip_copy)


def test_truncated_file_is_refused(tiny_clip_copy: Path) -> None:
    onnx = tiny_clip_copy / "text.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="text.onnx has .* bytes, the manifest says"):
        Bundle.load(tiny_clip_copy)


def test_missing_file_is_refused(tiny_clip_copy: Path) -> None:
    (tiny_clip_copy / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer/tokenizer.json is missing"):
        Bundle.load(tiny_clip_copy)


def test_missing_manifest_and_missing_folder_are_refused(tiny_clip_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        Bundle.load(tmp_path / "nowhere")
    (tiny_clip_copy / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        Bundle.load(tiny_clip_copy)


def edit_manifest(bundle: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = bundle / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "a/../../x", "..\\x.onnx"])
def test_paths_escaping_the_bundle_are_refused(tiny_clip_copy: Path, bad: str) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["files"][bad] = {"sha256": "0" * 64, "size": 1}

    edit_manifest(tiny_clip_copy, edit)
    with pytest.raises(ArtifactError, match="not a plain path inside the bundle"):
        Bundle.load(tiny_clip_copy)


def test_symlinked_file_is_refused(tiny_clip_copy: Path, tmp_path: Path) -> None:
    target = tiny_clip_copy / "pipeline.json"
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(ArtifactError, match="symbolic link"):
        Bundle.load(tiny_clip_copy)


def test_unlisted_reference_and_wrong_format_are_refused(tiny_clip_copy: Path) -> None:
    edit_manifest(tiny_clip_copy, lambda d: d["files"].pop("vision.onnx"))
    with pytest.raises(ArtifactError, match="does not list with a hash: \\['vision.onnx'\\]"):
        Bundle.load(tiny_clip_copy)


def test_other_format_version_and_garbage_manifest_are_refused(tiny_clip_copy: Path) -> None:
    edit_manifest(tiny_clip_copy, lambda d: d.update(format_version=99))
    with pytest.raises(ArtifactError, match="format version 99"):
        Bundle.load(tiny_clip_copy)
    (tiny_clip_copy / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        Bundle.load(tiny_clip_copy)
