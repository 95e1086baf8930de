"""Shared fixtures: tiny-preset bundles are built once per session (seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtdeploy.build import BuildResult, BuildSettings, BundleFromRecipe


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    out = tmp_path_factory.mktemp("bundles") / "clip-tiny" / "fp32"
    return BundleFromRecipe(BuildSettings(model="clip", preset="tiny", out=out, quiet=True))()


@pytest.fixture()
def tiny_clip_copy(tiny_clip: BuildResult, tmp_path: Path) -> Path:
    """A private copy of the tiny CLIP bundle that a test may damage."""
    import shutil

    dest = tmp_path / "bundle"
    shutil.copytree(tiny_clip.bundle, dest)
    return dest
