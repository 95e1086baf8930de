"""The committed tiny shapes models still load as checkpoints and still score what their cards say.

Each folder's metrics.json records the FP32 figures on a small slice of the evaluation split; here
the slice is re-scored. A damaged weight file, a changed dataset or a changed model class fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import card
from trtdeploy.models.shapes.__main__ import SLICE_COUNT, WEIGHTS_ROOT, evaluate_folder
from trtdeploy.models.shapes.models import COMMITTED, MODELS, ShapesModel
from trtdeploy.models.weights import check_weights_folder

SPECS = [MODELS[key] for key in COMMITTED]
# What each committed model must have reached on the 500 evaluation images: the targets it was
# trained to (an untrained CLIP scores 1/25 top-1, an untrained CLIPSeg about 0 IoU, an untrained
# Florence-2 0 on both). The figures themselves are in each CARD.md and the README.
TRAINED_FLOOR = {
    "zero_shot_top1": 0.90,
    "mean_iou": 0.60,
    "caption_exact_match": 0.80,
    "od_map50": 0.60,
}


def folder(spec: ShapesModel) -> Path:
    return WEIGHTS_ROOT / spec.folder_name


@pytest.mark.parametrize("spec", SPECS, ids=lambda m: m.folder_name)
def test_folder_is_a_plain_checkpoint_within_size(spec: ShapesModel) -> None:
    # The checks `--weights DIR` runs: config.json of the right type, safetensors, no code.
    config = check_weights_folder(folder(spec), {spec.model_type})
    assert "auto_map" not in config
    files = {p.name for p in folder(spec).iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
        "CARD.md",
    } <= files
    assert (folder(spec) / "model.safetensors").stat().st_size <= 5_500_000


def test_the_committed_folders_are_the_listed_ones() -> None:
    present = sorted(p.name for p in WEIGHTS_ROOT.iterdir() if p.is_dir())
    assert present == sorted(MODELS[key].folder_name for key in COMMITTED)


@pytest.mark.parametrize("spec", SPECS, ids=lambda m: m.folder_name)
def test_card_figures_are_those_of_a_trained_model(spec: ShapesModel) -> None:
    record = card.read_metrics(folder(spec))
    assert record["dataset_version"] == shapes.DATASET_VERSION, "the dataset changed since training: retrain"
    for name, value in record["evaluation"]["metrics"].items():
        if name in TRAINED_FLOOR:
            assert value >= TRAINED_FLOOR[name], (
                f"{spec.folder_name} {name} {value:.3f} < {TRAINED_FLOOR[name]}"
            )
    card_text = (folder(spec) / "CARD.md").read_text(encoding="utf-8")
    for value in record["evaluation"]["metrics"].values():
        assert f"{value:.4f}" in card_text, "CARD.md does not show metrics.json's figures"


@pytest.mark.parametrize("spec", SPECS, ids=lambda m: m.folder_name)
def test_evaluation_slice_is_the_data_the_card_was_measured_on(spec: ShapesModel) -> None:
    recorded = card.read_metrics(folder(spec))["slice"]
    samples = shapes.samples("evaluation", recorded["start"], recorded["count"])
    assert card.evaluation_fingerprint(samples) == recorded["fingerprint"], (
        "the shapes generator no longer renders the evaluation images the card was measured on; "
        "if the change is intended, bump DATASET_VERSION and retrain (make tiny-models TINY_OUT=models/weights)"
    )


@pytest.mark.integration
@pytest.mark.parametrize("spec", SPECS, ids=lambda m: m.folder_name)
def test_fp32_metrics_on_the_slice_match_the_card(spec: ShapesModel) -> None:
    recorded = card.read_metrics(folder(spec))["slice"]
    assert recorded["count"] == SLICE_COUNT
    measured = evaluate_folder(spec, folder(spec), recorded["start"], recorded["count"])
    for name, value in recorded["metrics"].items():
        got = measured["metrics"][name]
        assert abs(got - value) <= card.SLICE_TOLERANCE[name], (
            f"{spec.folder_name} {name}: {got:.4f} now, {value:.4f} in metrics.json "
            f"(tolerance {card.SLICE_TOLERANCE[name]:.3f}); measured {json.dumps(measured['metrics'])}"
        )


@pytest.mark.integration
def test_a_damaged_weight_file_is_caught(tmp_path: Path) -> None:
    """The slice check can fail: zeroing CLIP's patch embedding destroys zero-shot accuracy."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    spec = MODELS["clip"]
    damaged = tmp_path / spec.folder_name
    shutil.copytree(folder(spec), damaged)
    tensors = load_file(str(damaged / "model.safetensors"))
    key = "vision_model.embeddings.patch_embedding.weight"
    tensors[key] = torch.zeros_like(tensors[key])
    save_file(tensors, str(damaged / "model.safetensors"), metadata={"format": "pt"})
    recorded = card.read_metrics(folder(spec))["slice"]["metrics"]["zero_shot_top1"]
    measured = evaluate_folder(spec, damaged, 0, SLICE_COUNT)["metrics"]["zero_shot_top1"]
    assert recorded - measured > card.SLICE_TOLERANCE["zero_shot_top1"]
