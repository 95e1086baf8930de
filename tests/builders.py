"""Helpers to build tiny-preset bundles in tests (imported by conftest.py and test modules)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
from onnx import numpy_helper

from trtdeploy.build import BuildResult, BuildSettings, BundleFromRecipe, ExportedModel
from trtdeploy.calibration.data import CalibrationSettings
from trtdeploy.models.recipe import COMMITTED_WEIGHTS
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.bundle_writer import BundleWriter
from trtdeploy.runtime.compare import Budget, Tolerance
from trtdeploy.runtime.reports import TaskResult

# Small calibration sets keep the suite fast; the method is the same as for full-size builds.
TEST_CALIBRATION = CalibrationSettings(count=16, batch=8)
# The trained tiny Florence-2: 64 shapes images, of which the INT8 fallback judges on the last 32.
SHAPES_FLORENCE2_CALIBRATION = CalibrationSettings(count=64, batch=8)


# Random tiny CLIP has near-tied zero-shot logits, so INT8 flips argmaxes on calibration images;
# this budget judges the graphs on the embeddings alone, leaving every layer in INT8.
EMBEDDINGS_ONLY_INT8 = Budget({"*": Tolerance(cosine_min=0.99, atol=0.1, rtol=0.1, max_outside=0.05)})


def tiny_clip_build_command(out: Path, *extra: str) -> list[str]:
    """`trtdeploy build clip --preset tiny --out OUT --quiet`, to run in its own process."""
    return [
        sys.executable,
        "-m",
        "trtdeploy",
        "build",
        "clip",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def build_tiny(exported: ExportedModel, out: Path, **changes: object) -> BuildResult:
    settings = BuildSettings(
        model=exported.loaded.recipe.name,
        preset="tiny",
        out=out,
        quiet=True,
        calibration=TEST_CALIBRATION,
        **changes,  # type: ignore[arg-type]
    )
    return BundleFromRecipe(settings, exported)()


def clipseg_tiny_int8_budget() -> Budget:
    """The recipe's INT8 budget with looser bounds on the encoders' outputs.

    Tiny CLIPSeg's text tower is 32 wide with 16-wide embeddings, and the segmentation prompts are
    short ("a cat"), so ONNX Runtime's dynamic INT8 form (activations quantized per tensor, per
    call) leaves its embeddings at cosine 0.96 with about 10% of elements past 0.3 + 0.3·|ref|;
    the full-size tower (512-wide embeddings) keeps cosine 0.999 and 0.4% outside 0.1 + 0.1·|ref|
    under the recipe's budget. The decoder's logits bound and the acceptance mask IoU (0.90), which
    the tiny bundles meet at 0.95 end to end, are the recipe's own.
    """
    from trtdeploy.models.clipseg import BUDGETS

    recipe = BUDGETS["int8"]
    encoders = Tolerance(cosine_min=0.9, atol=0.3, rtol=0.3, max_outside=0.2)
    return Budget({**recipe.outputs, "*": encoders}, recipe.tasks)


def bundle_with_narrowed_int8_ranges(built: Path, graphs: Sequence[str], out: Path) -> Bundle:
    """A consistent copy of an INT8 bundle whose ``graphs`` have activation scales 8x too small (most
    values saturate): a broken calibration, re-hashed so only the verification can reject it."""

    def narrow(model: onnx.ModelProto) -> None:
        for init in model.graph.initializer:
            if init.name.endswith("_qdq_scale"):
                scale = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array((scale / 8).astype(scale.dtype), init.name))

    return bundle_with_changed_graphs(built, graphs, narrow, out)


def bundle_with_changed_graphs(
    built: Path, graphs: Sequence[str], change: Callable[[onnx.ModelProto], None], out: Path
) -> Bundle:
    """A copy of a bundle with ``change`` applied to ``graphs``, re-hashed: a consistent bundle that
    only its numbers can give away."""
    broken = out / "changed"
    shutil.copytree(built, broken)
    for graph in graphs:
        model = onnx.load(str(broken / graph))
        change(model)
        onnx.save(model, str(broken / graph))
    with BundleWriter(out / "rehashed") as writer:
        for path in broken.rglob("*"):
            if path.is_file() and path.name != "manifest.json":
                shutil.copyfile(path, writer.path(path.relative_to(broken).as_posix()))
        writer.commit(Bundle.load(built).manifest)
    shutil.rmtree(broken)
    return Bundle.load(out / "rehashed")


SHAPES_PRECISIONS = ("fp32", "fp16", "int8")


def build_shapes_bundles(model: str, preset: str, root: Path) -> dict[str, BuildResult]:
    """FP32, FP16 and INT8 bundles of a committed shapes model, calibrated on 64 shapes images."""
    return {
        precision: BundleFromRecipe(
            BuildSettings(
                model=model,
                preset=preset,
                precision=precision,
                target="onnxruntime",
                out=root / precision,
                quiet=True,
                calibration=CalibrationSettings(count=64),
            )
        )()
        for precision in SHAPES_PRECISIONS
    }


def task_result(tasks: Sequence[TaskResult], name: str) -> TaskResult:
    found = {t.name: t for t in tasks}
    assert name in found, f"no {name} in the report; got {sorted(found)}"
    return found[name]


def carries_committed_tokenizer(bundle: Path, preset: str) -> bool:
    """Whether the bundle's tokenizer has the committed weights folder's own vocabulary."""
    ours = json.loads((bundle / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    committed = json.loads((COMMITTED_WEIGHTS / preset / "tokenizer.json").read_text(encoding="utf-8"))
    return bool(ours["model"]["vocab"] == committed["model"]["vocab"])
