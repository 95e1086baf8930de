"""CLIP end to end on the tiny preset: the bundle's numbers against the PyTorch reference model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

from trtdeploy.build import BuildResult, BuildSettings, BundleFromRecipe
from trtdeploy.calibration.images import EVALUATION_IMAGES
from trtdeploy.models.clip import RECIPE, _tiny
from trtdeploy.models.weights import state_dict_sha256
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.pipelines.clip import ClipPipeline

pytestmark = pytest.mark.integration
LABELS = ["a photo of a cat", "a cup of coffee", "a rocket launch", "a photo of a dog"]


def reference_probs(model: CLIPModel, images: list, labels: list[str], tokenizer_json: Path) -> np.ndarray:  # type: ignore[type-arg]
    """What the transformers documentation does: processor + tokenizer + CLIPModel, softmax."""
    pixels = CLIPImageProcessorPil()(images=images, return_tensors="pt")["pixel_values"]
    text = CLIPTokenizer(tokenizer_file=str(tokenizer_json))(labels, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(pixel_values=pixels, **text).logits_per_image
    return logits.softmax(dim=-1).numpy()


def test_zero_shot_equals_transformers_clipmodel(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    loaded = RECIPE.load("tiny")
    assert loaded.weights["sha256"] == bundle.manifest.weights["sha256"]  # the same model
    pipeline = ClipPipeline.from_bundle(bundle)
    images = [s.load() for s in EVALUATION_IMAGES[:3]]
    expected = reference_probs(loaded.model, images, LABELS, bundle.asset("tokenizer"))
    for image, row in zip(images, expected, strict=True):
        ranked = pipeline.zero_shot(image, LABELS)
        got = np.array([{r.label: r.probability for r in ranked}[label] for label in LABELS])
        np.testing.assert_allclose(got, row, atol=2e-5)
        assert ranked[0].label == LABELS[int(np.argmax(row))]


def test_retrieval_ranks_by_cosine(tiny_clip: BuildResult) -> None:
    pipeline = ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle))
    images = [s.load() for s in EVALUATION_IMAGES]
    hits = pipeline.retrieve("a photo of a cat", images, top_k=3)
    scores = pipeline.image_embeddings(images) @ pipeline.text_embeddings(["a photo of a cat"])[0]
    assert [i for i, _ in hits] == list(np.argsort(-scores)[:3])
    np.testing.assert_allclose([s for _, s in hits], np.sort(scores)[::-1][:3], rtol=1e-6)


def test_batches_beyond_the_profile_are_split(tiny_clip: BuildResult) -> None:
    pipeline = ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle))
    texts = [f"prompt number {i}" for i in range(40)]  # profile max batch is 32
    all_at_once = pipeline.text_embeddings(texts)
    one_by_one = np.concatenate([pipeline.text_embeddings([t]) for t in texts[30:]])
    np.testing.assert_allclose(all_at_once[30:], one_by_one, atol=1e-6)


def test_bundle_from_weights_folder_matches_that_model(tmp_path: Path) -> None:
    torch.manual_seed(7)  # other weights than the tiny preset's
    model = CLIPModel(_tiny()).eval()
    folder = tmp_path / "my-clip"
    model.save_pretrained(folder)
    result = BundleFromRecipe(BuildSettings(model="clip", weights=folder, out=tmp_path / "b", quiet=True))()
    manifest = result.manifest
    assert manifest.weights["source"] == "folder"
    assert manifest.weights["sha256"] == state_dict_sha256(model)
    bundle = Bundle.load(result.bundle)
    pipeline = ClipPipeline.from_bundle(bundle)
    images = [s.load() for s in EVALUATION_IMAGES[:2]]
    pixels = CLIPImageProcessorPil()(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = model.get_image_features(pixel_values=pixels).pooler_output
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(pipeline.image_embeddings(images), expected, atol=1e-5)
    preset_bundle = RECIPE.load("tiny")
    assert preset_bundle.weights["sha256"] != manifest.weights["sha256"]
