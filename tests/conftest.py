"""Shared fixtures: tiny-preset bundles are built once per session (seconds each) from one export."""

from __future__ import annotations

import os
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import (
    EMBEDDINGS_ONLY_INT8,
    SHAPES_FLORENCE2_CALIBRATION,
    build_tiny,
    clipseg_tiny_int8_budget,
)
from fake_tensorrt import FakeCuda, FakeTensorRT

from trtdeploy.build import BuildResult, BuildSettings, ExportedModel, export_model
from trtdeploy.models.registry import get_recipe
from trtdeploy.progress import Progress
from trtdeploy.runtime.tensorrt_host import tensorrt_unavailable_reason


@pytest.fixture(scope="session", autouse=True)
def host_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plan-record key and anything else trtdeploy keeps per host go to a test folder, never ~/.cache."""
    folder = tmp_path_factory.mktemp("trtdeploy-cache")
    os.environ["TRTDEPLOY_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def tiny_clip_export(bundles_dir: Path) -> Iterator[ExportedModel]:
    settings = BuildSettings(model="clip", preset="tiny", out=bundles_dir / "clip-tiny" / "fp32", quiet=True)
    exported = export_model(settings, get_recipe("clip"), Progress(total=2, quiet=True))
    yield exported
    exported.close()


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    return build_tiny(tiny_clip_export, bundles_dir / "clip-tiny" / "fp32")


@pytest.fixture(scope="session")
def tiny_clip_int8(tiny_clip_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    return build_tiny(
        tiny_clip_export, bundles_dir / "clip-tiny" / "int8", precision="int8", budget=EMBEDDINGS_ONLY_INT8
    )


@pytest.fixture(scope="session")
def tiny_clip_fp16(tiny_clip_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    return build_tiny(tiny_clip_export, bundles_dir / "clip-tiny" / "fp16", precision="fp16")


@pytest.fixture(scope="session")
def tiny_clipseg_export(bundles_dir: Path) -> Iterator[ExportedModel]:
    out = bundles_dir / "clipseg-tiny" / "fp32"
    settings = BuildSettings(model="clipseg", preset="tiny", out=out, quiet=True)
    exported = export_model(settings, get_recipe("clipseg"), Progress(total=2, quiet=True))
    yield exported
    exported.close()


@pytest.fixture(scope="session")
def tiny_clipseg(tiny_clipseg_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    return build_tiny(tiny_clipseg_export, bundles_dir / "clipseg-tiny" / "fp32")


@pytest.fixture(scope="session")
def tiny_clipseg_fp16(tiny_clipseg_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    return build_tiny(tiny_clipseg_export, bundles_dir / "clipseg-tiny" / "fp16", precision="fp16")


@pytest.fixture(scope="session")
def tiny_clipseg_int8(tiny_clipseg_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    return build_tiny(
        tiny_clipseg_export,
        bundles_dir / "clipseg-tiny" / "int8",
        precision="int8",
        budget=clipseg_tiny_int8_budget(),
    )


@pytest.fixture()
def tiny_clip_copy(tiny_clip: BuildResult, tmp_path: Path) -> Path:
    """A private copy of the tiny CLIP bundle that a test may damage."""
    dest = tmp_path / "bundle"
    shutil.copytree(tiny_clip.bundle, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_florence2(bundles_dir: Path) -> BuildResult:
    """The random tiny Florence-2 (768 px, 577 image features, BART-layout tokenizer), FP32."""
    from trtdeploy.build import BundleFromRecipe

    settings = BuildSettings(
        model="florence2", preset="tiny", out=bundles_dir / "florence2-tiny" / "fp32", quiet=True
    )
    return BundleFromRecipe(settings)()


def _shapes_florence2_settings(bundles_dir: Path, precision: str) -> BuildSettings:
    out = bundles_dir / "florence2-shapes" / precision
    return BuildSettings(
        model="florence2",
        preset="florence2-shapes-tiny",
        precision=precision,
        out=out,
        quiet=True,
        calibration=SHAPES_FLORENCE2_CALIBRATION,
    )


@pytest.fixture(scope="session")
def shapes_florence2_export(bundles_dir: Path) -> Iterator[ExportedModel]:
    settings = _shapes_florence2_settings(bundles_dir, "fp32")
    exported = export_model(settings, get_recipe("florence2"), Progress(total=2, quiet=True))
    yield exported
    exported.close()


@pytest.fixture(scope="session")
def shapes_florence2(shapes_florence2_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    """The committed trained tiny Florence-2, FP32: gated on tokens and on the ground truth."""
    from trtdeploy.build import BundleFromRecipe

    return BundleFromRecipe(_shapes_florence2_settings(bundles_dir, "fp32"), shapes_florence2_export)()


@pytest.fixture(scope="session")
def shapes_florence2_fp16(shapes_florence2_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    from trtdeploy.build import BundleFromRecipe

    return BundleFromRecipe(_shapes_florence2_settings(bundles_dir, "fp16"), shapes_florence2_export)()


@pytest.fixture(scope="session")
def shapes_florence2_int8(shapes_florence2_export: ExportedModel, bundles_dir: Path) -> BuildResult:
    from trtdeploy.build import BundleFromRecipe

    return BundleFromRecipe(_shapes_florence2_settings(bundles_dir, "int8"), shapes_florence2_export)()


@pytest.fixture()
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeTensorRT, FakeCuda]]:
    """tensorrt and cuda.bindings.runtime replaced by the stand-ins of tests/fake_tensorrt.py."""
    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cuda  # type: ignore[attr-defined]
    package = types.ModuleType("cuda")
    package.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    tensorrt_unavailable_reason.cache_clear()
    yield trt, cuda
    tensorrt_unavailable_reason.cache_clear()
