"""runtime/ deploys without torch, transformers or onnx: prove it by blocking them."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("torch", "transformers", "onnx", "onnxscript")

SCRIPT = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of these now raises ImportError
import trtdeploy.runtime
import trtdeploy.runtime.bench
import trtdeploy.runtime.pipelines
import trtdeploy.runtime.pipelines.clip
import trtdeploy.runtime.pipelines.clipseg
import trtdeploy.runtime.pipelines.florence2
import trtdeploy.runtime.generation
import trtdeploy.runtime.florence2_answers
import trtdeploy.runtime.florence2_decoder
import trtdeploy.runtime.florence2_draw
import trtdeploy.runtime.executor
import trtdeploy.runtime.reports
import trtdeploy.runtime.images
import trtdeploy.runtime.bundle_writer
import trtdeploy.runtime.verify
import trtdeploy.runtime.engine_cache
import trtdeploy.runtime.tensorrt_build
import trtdeploy.runtime.tensorrt_backend
import trtdeploy.cli
leaked = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r} and sys.modules[m] is not None)
assert not leaked, leaked
print("ok")
"""


def test_runtime_imports_with_torch_transformers_and_onnx_blocked() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_blocking_really_blocks() -> None:
    """The check above could pass vacuously if blocking did nothing; importing torch must fail."""
    script = (
        "import sys; sys.modules['torch'] = None\ntry:\n import torch\nexcept ImportError:\n print('blocked')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "blocked"


def test_verify_and_info_run_with_torch_blocked(tiny_clip) -> None:  # type: ignore[no-untyped-def]
    """The device-side commands work on a bundle with torch, transformers and onnx blocked."""
    script = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
from trtdeploy.cli import main
assert main(["info", {str(tiny_clip.bundle)!r}]) == 0
assert main(["verify", {str(tiny_clip.bundle)!r}]) == 0
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "PASS" in done.stdout


def test_clipseg_verify_and_run_with_torch_blocked(tiny_clipseg) -> None:  # type: ignore[no-untyped-def]
    """CLIPSeg's pipeline (mask IoU, chained decoder, segmentation) needs none of them either."""
    from trtdeploy.calibration.images import EVALUATION_IMAGES

    image = EVALUATION_IMAGES[0].path()
    script = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
from trtdeploy.cli import main
assert main(["verify", {str(tiny_clipseg.bundle)!r}]) == 0
assert main(["run", {str(tiny_clipseg.bundle)!r}, "--image", {str(image)!r}, "--prompts", "a cat,the sky"]) == 0
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "mask_iou" in done.stdout and "PASS" in done.stdout and "the sky" in done.stdout


def test_florence2_verify_and_run_with_torch_blocked(shapes_florence2, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Florence-2's generation loop, processor and answer parsing need none of them either."""
    from PIL import Image

    from trtdeploy.calibration import shapes

    image = tmp_path / "shapes.png"
    Image.fromarray(shapes.sample("evaluation", 0).image).save(image)
    script = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
from trtdeploy.cli import main
assert main(["verify", {str(shapes_florence2.bundle)!r}]) == 0
assert main(["run", {str(shapes_florence2.bundle)!r}, "--image", {str(image)!r}, "--task", "<OD>", "--json"]) == 0
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "generation_exact_match" in done.stdout and '"labels"' in done.stdout
