"""Weights folders: safetensors only, no remote code, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from trtdeploy.models.clip import RECIPE, _tiny
from trtdeploy.runtime.errors import ArtifactError, UsageError


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("w") / "ckpt"
    CLIPModel(_tiny()).save_pretrained(folder)
    return folder


def copy_config(saved: Path, dest: Path, **changes: object) -> Path:
    dest.mkdir()
    config = json.loads((saved / "config.json").read_text())
    config.update(changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_loads_and_hashes_like_the_model(saved: Path) -> None:
    loaded = RECIPE.load(weights=saved)
    again = RECIPE.load(weights=saved)
    assert loaded.weights["source"] == "folder" and loaded.weights["sha256"] == again.weights["sha256"]
    assert not loaded.model.training


def test_pickle_only_checkpoint_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = copy_config(saved, tmp_path / "pickled")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ArtifactError, match="only pickle checkpoints \\(pytorch_model.bin\\)"):
        RECIPE.load(weights=folder)


def test_remote_code_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = copy_config(saved, tmp_path / "remote", auto_map={"AutoModel": "modeling_x.XModel"})
    with pytest.raises(ArtifactError, match="remote code"):
        RECIPE.load(weights=folder)
    folder2 = copy_config(saved, tmp_path / "withpy")
    (folder2 / "modeling_x.py").write_text("import os\n")
    with pytest.raises(ArtifactError, match=r"remote code \(modeling_x.py\)"):
        RECIPE.load(weights=folder2)


def test_wrong_model_type_missing_config_and_no_weights(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="model_type 'bert'"):
        RECIPE.load(weights=copy_config(saved, tmp_path / "bert", model_type="bert"))
    with pytest.raises(ArtifactError, match="no config.json"):
        (tmp_path / "empty").mkdir()
        RECIPE.load(weights=tmp_path / "empty")
    with pytest.raises(ArtifactError, match="holds no \\*.safetensors"):
        RECIPE.load(weights=copy_config(saved, tmp_path / "noweights"))
    with pytest.raises(ArtifactError, match="does not exist"):
        RECIPE.load(weights=tmp_path / "missing")


def test_preset_and_weights_together_are_refused(saved: Path) -> None:
    with pytest.raises(UsageError, match="either a preset or a weights folder"):
        RECIPE.load("tiny", saved)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(
        UsageError,
        match="no preset 'huge'; choose one of \\['clip-shapes-tiny', 'clip-vit-base-patch32', 'tiny'\\]",
    ):
        RECIPE.load("huge")
