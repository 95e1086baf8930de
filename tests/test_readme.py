"""The README's Python example runs (against the tiny bundle instead of the full-size one)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from trtdeploy.build import BuildResult

README = Path(__file__).parent.parent / "README.md"


def python_examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 3, "the README's Python examples moved; update this test"
    return blocks


def test_readme_python_example_runs(tiny_clip: BuildResult, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    exec(python_examples()[0].replace('"build/clip/fp32"', repr(str(tiny_clip.bundle))), namespace)
    ranked = namespace["ranked"]
    assert sum(r.probability for r in ranked) == pytest.approx(1.0)  # type: ignore[attr-defined]
    assert capsys.readouterr().out.split()[0] == ranked[0].label.split()[0]  # type: ignore[index]
    embeddings = namespace["embeddings"]
    assert isinstance(embeddings, np.ndarray) and embeddings.shape == (1, 16)
    assert np.linalg.norm(embeddings) == pytest.approx(1.0, abs=1e-5)


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make engine MODEL=clip" in text and "make test" in text


def test_readme_clipseg_example_runs(tiny_clipseg: BuildResult, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    exec(python_examples()[1].replace('"build/clipseg/fp32"', repr(str(tiny_clipseg.bundle))), namespace)
    result, cats = namespace["result"], namespace["cats"]
    assert result.masks.shape == (3, 240, 320) and result.prompts[2] == "<image 2>"  # type: ignore[attr-defined]
    assert cats.probabilities.shape == (2, 240, 320) and cats.threshold == 0.4  # type: ignore[attr-defined]
    assert capsys.readouterr().out.startswith("(3, 240, 320) [")


def test_readme_florence2_example_runs(
    shapes_florence2: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {}
    exec(
        python_examples()[2].replace('"build/florence2/fp32"', repr(str(shapes_florence2.bundle))), namespace
    )
    caption, boxes = namespace["caption"], namespace["boxes"]
    assert isinstance(caption.parsed, str) and caption.tokens[:2] == (2, 0)  # type: ignore[attr-defined]
    assert set(boxes.parsed) == {"bboxes", "labels"}  # type: ignore[attr-defined]
    assert all(0 <= v <= 320 for box in boxes.parsed["bboxes"] for v in box[::2])  # type: ignore[attr-defined]
    assert capsys.readouterr().out.splitlines()[0] == caption.parsed  # type: ignore[attr-defined]
