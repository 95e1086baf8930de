"""CLIPSeg and CLIP checkpoints whose configs no preset has: every knob CLIPSeg's users tune
(extract_layers of any length and order, conditional_layer, reduce_dim, the plain or the refined
transposed convolution, image and patch sizes, the text window) and CLIP's image, patch and text
sizes. Each is saved as a weights folder, built into an FP32 bundle, and the bundle's engines are
held to the model's own transformers forward on the same inputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPSegConfig, CLIPSegForImageSegmentation

from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images
from trtdeploy.cli import main
from trtdeploy.models.clip import LEGACY_TEXT_IDS, VOCAB_SIZE
from trtdeploy.models.clipseg import logits_side
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.pipelines.clipseg import (
    CONDITIONAL_EMBEDDINGS,
    DECODER,
    IMAGE_ENCODER,
    IMAGE_TAIL,
    POOLED_OUTPUT,
    TAIL_INPUT,
    TEXT_ENCODER,
    activation_names,
    deepest_activation_name,
)
from trtdeploy.runtime.preprocess import ImagePreprocess
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.tokenize import TextTokenizer

pytestmark = pytest.mark.integration
PROMPTS = ["a cat on a sofa", "the sky", "a red bicycle leaning on a wall"]
COSINE_MIN = 0.9999


def small(width: int, layers: int, heads: int = 2) -> dict[str, int]:
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }


# Each differs from the presets (extract (0, 1, 2) / (3, 6, 9), FiLM at 0, refined head, patch 16 at
# 352, 77-token text) in every field item by item; ids: what the case is about.
CLIPSEG_CASES: dict[str, tuple[dict[str, Any], int]] = {
    "last-layer-only-plain-head-patch32-224-text32": (
        {
            "text_config": {
                **small(24, 2),
                **LEGACY_TEXT_IDS,
                "vocab_size": VOCAB_SIZE,
                "max_position_embeddings": 32,
            },
            "vision_config": {**small(24, 2), "image_size": 64, "patch_size": 32},
            "projection_dim": 8,
            "extract_layers": [1],
            "conditional_layer": 0,
            "reduce_dim": 8,
            "decoder_num_attention_heads": 2,
            "decoder_intermediate_size": 16,
            "use_complex_transposed_convolution": False,
        },
        224,
    ),
    "four-unsorted-layers-film-last-refined-patch8-96": (
        {
            "text_config": {**small(16, 1), "vocab_size": VOCAB_SIZE, "max_position_embeddings": 20},
            "vision_config": {**small(32, 5, 4), "image_size": 64, "patch_size": 8},
            "projection_dim": 12,
            "extract_layers": [2, 0, 3, 1],
            "conditional_layer": 3,
            "reduce_dim": 24,
            "decoder_num_attention_heads": 3,
            "decoder_intermediate_size": 20,
            "use_complex_transposed_convolution": True,
        },
        96,
    ),
}

CLIP_CASES: dict[str, tuple[dict[str, Any], int | None]] = {
    "patch14-at-112-text24": (
        {
            "text_config": {
                **small(16, 2),
                **LEGACY_TEXT_IDS,
                "vocab_size": VOCAB_SIZE,
                "max_position_embeddings": 24,
            },
            "vision_config": {**small(32, 2, 4), "image_size": 112, "patch_size": 14},
            "projection_dim": 8,
        },
        None,
    ),
}


def save_folder(model: torch.nn.Module, folder: Path, size: int | None) -> Path:
    model.save_pretrained(folder)
    if size is not None:  # the processor's size; the position table is interpolated to it
        processor = {
            "size": {"height": size, "width": size},
            "resample": 2,
            "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3,
        }
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def build(model: str, folder: Path, out: Path) -> Bundle:
    assert main(["build", model, "--weights", str(folder), "--out", str(out), "--quiet"]) == 0
    return Bundle.load(out)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def bundle_inputs(
    bundle: Bundle, images: list[Any], prompts: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    config = bundle.manifest.pipeline_config
    pixels = ImagePreprocess.from_json(config["preprocess"])(images)
    tokenizer = TextTokenizer(
        bundle.asset("tokenizer"), max_length=config["max_text_length"], pad_id=config["pad_id"]
    )
    return pixels, tokenizer(prompts)


@pytest.mark.parametrize("case", sorted(CLIPSEG_CASES))
def test_clipseg_config_builds_and_equals_its_model(case: str, tmp_path: Path) -> None:
    fields, size = CLIPSEG_CASES[case]
    torch.manual_seed(11)
    model = CLIPSegForImageSegmentation(CLIPSegConfig(**fields)).eval()
    bundle = build("clipseg", save_folder(model, tmp_path / "weights", size), tmp_path / "bundle")
    layers = [int(i) for i in fields["extract_layers"]]
    assert bundle.manifest.pipeline_config["extract_layers"] == layers
    query, support = load_images(EVALUATION_IMAGES[:2])
    pixels, tokens = bundle_inputs(bundle, [query, support], PROMPTS)
    run = open_engines(bundle)
    try:
        activations = run[IMAGE_ENCODER].run({"pixel_values": pixels[:1]})
        assert list(activations) == list(activation_names(len(layers)))
        deepest = activations[deepest_activation_name(layers)]
        conditional = run[TEXT_ENCODER].run(tokens)[CONDITIONAL_EMBEDDINGS]
        logits = run[DECODER].run({**activations, CONDITIONAL_EMBEDDINGS: conditional})["logits"][
            0
        ]  # (P, L, L)
        support_hidden = run[IMAGE_ENCODER].run({"pixel_values": pixels[1:]})
        pooled = run[IMAGE_TAIL].run({TAIL_INPUT: support_hidden[deepest_activation_name(layers)]})
        visual = run[DECODER].run({**activations, CONDITIONAL_EMBEDDINGS: pooled[POOLED_OUTPUT]})["logits"][
            0, 0
        ]
    finally:
        for engine in run.values():
            engine.close()
    assert deepest.shape[0] == 1
    side = logits_side(model.config, pixels.shape[-1])
    with torch.inference_mode():
        want = model(
            pixel_values=torch.from_numpy(pixels[:1]).expand(len(PROMPTS), -1, -1, -1),
            input_ids=torch.from_numpy(tokens["input_ids"]),
            attention_mask=torch.from_numpy(tokens["attention_mask"]),
        ).logits.numpy()  # (P, L, L)
        want_visual = model(
            pixel_values=torch.from_numpy(pixels[:1]), conditional_pixel_values=torch.from_numpy(pixels[1:])
        ).logits.numpy()
    assert logits.shape == want.shape == (len(PROMPTS), side, side)
    for k in range(len(PROMPTS)):
        assert cosine(logits[k], want[k]) >= COSINE_MIN, (case, PROMPTS[k])
    assert cosine(visual, want_visual.reshape(visual.shape)) >= COSINE_MIN, case


@pytest.mark.parametrize("case", sorted(CLIP_CASES))
def test_clip_config_builds_and_equals_its_model(case: str, tmp_path: Path) -> None:
    fields, size = CLIP_CASES[case]
    torch.manual_seed(12)
    model = CLIPModel(CLIPConfig(**fields)).eval()
    bundle = build("clip", save_folder(model, tmp_path / "weights", size), tmp_path / "bundle")
    pixels, tokens = bundle_inputs(bundle, load_images(EVALUATION_IMAGES[:3]), PROMPTS)
    assert pixels.shape[-1] == fields["vision_config"]["image_size"]
    assert tokens["input_ids"].shape[1] <= fields["text_config"].get("max_position_embeddings", 77)
    run = open_engines(bundle)
    try:
        image_embeds = run["vision"].run({"pixel_values": pixels})["image_embeds"]
        text_embeds = run["text"].run(tokens)["text_embeds"]
    finally:
        for engine in run.values():
            engine.close()
    with torch.inference_mode():
        want: Mapping[str, torch.Tensor] = model(
            pixel_values=torch.from_numpy(pixels),
            input_ids=torch.from_numpy(tokens["input_ids"]),
            attention_mask=torch.from_numpy(tokens["attention_mask"]),
        )
    ours = {"image_embeds": image_embeds, "text_embeds": text_embeds}
    for name, got in ours.items():
        reference = want[name].numpy()  # unit-norm in transformers' output; ours are projected, unnormalised
        got = got / np.linalg.norm(got, axis=-1, keepdims=True)
        assert got.shape == reference.shape
        for row in range(len(got)):
            assert cosine(got[row], reference[row]) >= COSINE_MIN, (case, name, row)
