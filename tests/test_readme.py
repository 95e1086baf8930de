"""The README's Python example runs (against the tiny bundle instead of the full-size one)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from trtdeploy.build import BuildResult

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_example_runs(tiny_clip: BuildResult, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, "the README's Python example moved; update this test"
    namespace: dict[str, object] = {}
    exec(blocks[0].replace('"build/clip/fp32"', repr(str(tiny_clip.bundle))), namespace)
    ranked = namespace["ranked"]
    assert sum(r.probability for r in ranked) == pytest.approx(1.0)  # type: ignore[attr-defined]
    assert capsys.readouterr().out.split()[0] == ranked[0].label.split()[0]  # type: ignore[index]
    embeddings = namespace["embeddings"]
    assert isinstance(embeddings, np.ndarray) and embeddings.shape == (1, 16)
    assert np.linalg.norm(embeddings) == pytest.approx(1.0, abs=1e-5)


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make engine MODEL=clip" in text and "make test" in text
