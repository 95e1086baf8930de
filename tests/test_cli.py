"""The trtdeploy command: each subcommand, and exit codes that say what kind of failure happened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trtdeploy.build import BuildResult
from trtdeploy.calibration.images import EVALUATION_IMAGES
from trtdeploy.cli import main


def test_models_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "clip-vit-base-patch32" in out and "tiny" in out


def test_info_and_verify(tiny_clip: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiny_clip.bundle)]) == 0
    assert "pixel_values" in capsys.readouterr().out
    report = tmp_path / "report.json"
    assert main(["verify", str(tiny_clip.bundle), "--report", str(report)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert json.loads(report.read_text())["passed"] is True


def test_run_zero_shot(tiny_clip: BuildResult, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(EVALUATION_IMAGES[0].path())
    assert main(["run", str(tiny_clip.bundle), "--image", image, "--labels", "a cat, a dog,a car"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    probs = [float(line.split("%")[0]) for line in lines]
    assert len(probs) == 3 and abs(sum(probs) - 100) < 0.1 and probs == sorted(probs, reverse=True)


def test_exit_codes(tiny_clip_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "missing")]) == 3
    assert main(["build", "resnet"]) == 2  # an unknown model is a usage mistake
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert main(["verify", str(tiny_clip_copy), "--target", "onnxruntime-cuda"]) == 4
    (tiny_clip_copy / "vision.onnx").write_bytes(b"not onnx")
    assert main(["info", str(tiny_clip_copy)]) == 3
    assert "changed after the build" in capsys.readouterr().err
    for usage in (["build"], ["build", "clip", "--precision", "int3"]):
        assert main(usage) == 2
        assert "See `trtdeploy" in capsys.readouterr().err


def test_bench_writes_json_markdown_and_png(
    tiny_clip: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "bench",
        str(tiny_clip.bundle),
        "--batch",
        "1,2",
        "--iterations",
        "2",
        "--blocks",
        "2",
        "--threads",
        "1",
        "--out-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| vision | 1 |" in text and "| text | 2 |" in text and "×" in text
    record = json.loads((tmp_path / "clip-fp32-onnxruntime.json").read_text())
    assert [(r["component"], r["batch"]) for r in record["rows"]] == [
        ("vision", 1),
        ("vision", 2),
        ("text", 1),
        ("text", 2),
    ]
    for row in record["rows"]:
        assert row["engine"]["n"] == 4 and row["pytorch_eager"]["n"] == 4 and len(row["block_ratios"]) == 2
        assert row["ratio_p50"] == pytest.approx(row["engine"]["p50_ms"] / row["pytorch_eager"]["p50_ms"])
    assert record["host"]["machine_class"] and record["accuracy"]["passed"] is True
    assert set(record["first_call"]) == {"vision", "text"}
    assert (tmp_path / "clip-fp32-onnxruntime.md").is_file()
    png = (tmp_path / "clip-onnxruntime.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
