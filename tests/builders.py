"""Helpers to build tiny-preset bundles in tests (imported by conftest.py and test modules)."""

from __future__ import annotations

from pathlib import Path

from trtdeploy.build import BuildResult, BuildSettings, BundleFromRecipe, ExportedModel
from trtdeploy.calibration.data import CalibrationSettings
from trtdeploy.runtime.compare import Budget, Tolerance

# Small calibration sets keep the suite fast; the method is the same as for full-size builds.
TEST_CALIBRATION = CalibrationSettings(count=16, batch=8)


# Random tiny CLIP has near-tied zero-shot logits, so INT8 flips argmaxes on calibration images;
# this budget judges the graphs on the embeddings alone, leaving every layer in INT8.
EMBEDDINGS_ONLY_INT8 = Budget({"*": Tolerance(cosine_min=0.99, atol=0.1, rtol=0.1, max_outside=0.05)})


def build_tiny(exported: ExportedModel, out: Path, **changes: object) -> BuildResult:
    settings = BuildSettings(
        model="clip",
        preset="tiny",
        out=out,
        quiet=True,
        calibration=TEST_CALIBRATION,
        **changes,  # type: ignore[arg-type]
    )
    return BundleFromRecipe(settings, exported)()
