"""`python -m trtdeploy.peers`: `save` writes exactly the bundle's weights and refuses others; `compare`
outside its own environment says how to get there. (The comparison itself needs optimum-onnx, which
cannot live beside this project's transformers 5: `make peers` runs it.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from trtdeploy.build import BuildResult
from trtdeploy.models.registry import get_recipe
from trtdeploy.peers import IMAGE_FILE, main, quantization_config
from trtdeploy.runtime.bundle import MANIFEST, Bundle
from trtdeploy.runtime.errors import BackendUnavailable

pytestmark = pytest.mark.integration


def test_save_writes_the_weights_the_bundle_was_built_from(tiny_clip: BuildResult, tmp_path: Path) -> None:
    out = tmp_path / "weights"
    assert main(["save", str(tiny_clip.bundle), "--out", str(out)]) == 0
    reloaded = get_recipe("clip").load(weights=out)
    assert reloaded.weights["sha256"] == Bundle.load(tiny_clip.bundle).manifest.weights["sha256"]
    assert (out / IMAGE_FILE).is_file()
    assert main(["save", str(tiny_clip.bundle), "--out", str(out)]) == 0  # an earlier save is replaced


def test_save_refuses_a_bundle_built_from_other_weights(
    tiny_clip_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((tiny_clip_copy / MANIFEST).read_text())
    manifest["weights"]["sha256"] = "0" * 64
    (tiny_clip_copy / MANIFEST).write_text(json.dumps(manifest))
    out = tmp_path / "weights"
    assert main(["save", str(tiny_clip_copy), "--out", str(out)]) == 3
    assert "was built from weights with sha256 000" in capsys.readouterr().err
    assert not out.exists()


def test_save_refuses_a_folder_it_did_not_write(
    tiny_clip: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["save", str(tiny_clip.bundle), "--out", str(tmp_path)]) == 2
    assert "holds files `save` did not write" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_compare_without_optimum_names_make_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optimum", None)  # absent, even where someone installed it
    assert main(["compare", str(tmp_path), str(tmp_path), str(tmp_path)]) == BackendUnavailable.exit_code
    err = capsys.readouterr().err
    assert "run `make peers`" in err and ".venv-peers" in err


def test_quantization_config_follows_the_cpu() -> None:
    assert quantization_config("avx512_vnni") == "avx512_vnni"
    assert quantization_config("amx_int8") == "avx512_vnni"
    assert quantization_config("avx2") == "avx2"
    with pytest.raises(BackendUnavailable, match="x86 CPU with AVX2"):
        quantization_config("neon")
