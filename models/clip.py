"""CLIP (transformers CLIPModel): two graphs, `vision` and `text`, each ending in its projection.

Presets: `clip-vit-base-patch32` is openai/clip-vit-base-patch32's architecture (the class defaults
except the checkpoint's legacy bos/eos ids 0/2, which switch text pooling to argmax(input_ids));
`tiny` is the same code at toy sizes for tests. Weights folders load through `--weights DIR`.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from trtdeploy.calibration import shapes
from trtdeploy.calibration.data import RawCalibrationData, batched
from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images
from trtdeploy.calibration.prompts import EVALUATION_PROMPTS
from trtdeploy.models.attention import eager_attention
from trtdeploy.models.clip_vocab import MAX_LENGTH, write_clip_tokenizer_json
from trtdeploy.models.recipe import Component, Feeds, LoadedModel, Preset, Recipe
from trtdeploy.runtime.bundle_writer import BundleWriter
from trtdeploy.runtime.compare import Budget, Tolerance
from trtdeploy.runtime.preprocess import ImagePreprocess
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec
from trtdeploy.runtime.tokenize import TextTokenizer

# The CLIP tokenizer's special ids (its vocabulary is fixed: 49,408 entries).
VOCAB_SIZE, BOS_ID, EOS_ID = 49408, 49406, 49407
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The checkpoint's config keeps the legacy ids; transformers then pools text at argmax(input_ids).
LEGACY_TEXT_IDS = {"bos_token_id": 0, "eos_token_id": 2}


def _vit_b32() -> CLIPConfig:
    return CLIPConfig(text_config=dict(LEGACY_TEXT_IDS), projection_dim=512, logit_scale_init_value=2.6592)


def _tiny() -> CLIPConfig:
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    return CLIPConfig(
        text_config={**small, **LEGACY_TEXT_IDS, "vocab_size": VOCAB_SIZE},
        vision_config={**small, "image_size": 224, "patch_size": 32},
        projection_dim=16,
    )


class ClipVisionExport(torch.nn.Module):
    """Export wrapper for the `vision` graph: pixel_values -> projected image_embeds (not normalised).

    Exists for export only; get_image_features returns a ModelOutput in transformers 5.x, whose
    ``pooler_output`` is the projected embedding.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a CLIPModel

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output  # (B, P)


class ClipTextExport(torch.nn.Module):
    """Export wrapper for the `text` graph: (input_ids, attention_mask) -> projected text_embeds."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a CLIPModel

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return out.pooler_output  # (B, P)


def random_pixels(sizes: Mapping[str, int], rng: np.random.Generator, image_size: int) -> Feeds:
    shape = (sizes["batch"], 3, image_size, image_size)
    return {"pixel_values": rng.standard_normal(shape).astype(np.float32)}


@dataclass(frozen=True)
class TextIds:
    """The token ids a CLIP text tower reads: vocabulary size, start id and end id (also padding)."""

    vocab_size: int
    bos: int
    eos: int

    @classmethod
    def of(cls, text_config: Any) -> TextIds:
        """From the text config; the legacy ids (0, 2) of OpenAI's checkpoints mean its BPE tokenizer."""
        vocab = int(text_config.vocab_size)
        if text_config.eos_token_id == LEGACY_TEXT_IDS["eos_token_id"]:
            return cls(vocab, BOS_ID, EOS_ID)
        return cls(vocab, int(text_config.bos_token_id), int(text_config.eos_token_id))

    def random_tokens(self, sizes: Mapping[str, int], rng: np.random.Generator) -> Feeds:
        """Right-padded rows shaped like tokenizer output: start, random tokens, end, then padding."""
        batch, length = sizes["batch"], sizes["sequence"]
        ids = np.full((batch, length), self.eos, dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.int64)
        ordinary = np.setdiff1d(np.arange(self.vocab_size), [self.bos, self.eos])
        for row in range(batch):
            used = length if row == 0 else int(rng.integers(2, length + 1))  # row 0 fills the length
            ids[row, 0] = self.bos
            ids[row, 1 : used - 1] = rng.choice(ordinary, size=used - 2)
            ids[row, used - 1] = self.eos
            mask[row, :used] = 1
        return {"input_ids": ids, "attention_mask": mask}


OPENAI_TEXT_IDS = TextIds(VOCAB_SIZE, BOS_ID, EOS_ID)
# A shapes model's bundle is verified on this many evaluation-split images against its 25 labels:
# enough that one flipped image moves top-1 by under 1 pt, few enough to build in seconds.
SHAPES_REFERENCE_COUNT = 128


@functools.cache
def shapes_reference_samples() -> tuple[shapes.ShapesSample, ...]:
    return tuple(shapes.samples("evaluation", 0, SHAPES_REFERENCE_COUNT))


def random_tokens(sizes: Mapping[str, int], rng: np.random.Generator) -> Feeds:
    """Random rows in OpenAI CLIP's BPE ids."""
    return OPENAI_TEXT_IDS.random_tokens(sizes, rng)


@dataclass(frozen=True)
class TokenizerAsset:
    """The bundle's tokenizer.json and how the pipeline pads and truncates with it."""

    path: str
    pad_id: int
    max_length: int


def write_text_tokenizer(loaded: LoadedModel, writer: BundleWriter, text_config: Any) -> TokenizerAsset:
    """The checkpoint folder's own tokenizer.json when it has one (a model trained on its own
    vocabulary), else OpenAI CLIP's BPE tokenizer; padded with the end id, up to the position table."""
    path = "tokenizer/tokenizer.json"
    own = loaded.folder / "tokenizer.json" if loaded.folder is not None else None
    if own is not None and own.is_file():
        shutil.copyfile(own, writer.path(path))  # writer.path makes the folder
    else:
        write_clip_tokenizer_json(writer.path(path))
    ids = TextIds.of(text_config)
    return TokenizerAsset(path, ids.eos, min(MAX_LENGTH, int(text_config.max_position_embeddings)))


def bundle_text_tokenizer(writer: BundleWriter, assets: Mapping[str, str]) -> TextTokenizer:
    """The tokenizer a bundle being written will run with: its tokenizer asset, padded and truncated
    as its pipeline.json says (what write_text_tokenizer recorded)."""
    config = json.loads(writer.path(assets["pipeline"]).read_text(encoding="utf-8"))
    return TextTokenizer(
        writer.path(assets["tokenizer"]), max_length=config["max_text_length"], pad_id=config["pad_id"]
    )


class ClipRecipe(Recipe):
    name = "clip"
    pipeline = "clip"
    presets: ClassVar[Mapping[str, Preset]] = {
        "clip-vit-base-patch32": Preset(
            "clip-vit-base-patch32",
            "openai/clip-vit-base-patch32 architecture (151.3 M parameters)",
            _vit_b32,
        ),
        "tiny": Preset("tiny", "two-layer, 32-wide CLIP for tests", _tiny),
        "clip-shapes-tiny": Preset(
            "clip-shapes-tiny",
            "a tiny CLIP trained on the shapes dataset (models/weights/clip-shapes-tiny): "
            "verified on zero-shot top-1 against ground truth",
            None,
            weights="clip-shapes-tiny",
        ),
    }
    default_preset = "clip-vit-base-patch32"

    def model_class(self) -> type:
        return CLIPModel

    def config_model_types(self) -> set[str]:
        return {"clip"}

    def components(self, model: torch.nn.Module) -> tuple[Component, ...]:
        config: Any = model.config
        image_size = int(config.vision_config.image_size)
        embed = int(config.projection_dim)
        batch = {"batch": DimRange(1, 8, 32)}
        vision = IOSpec(
            inputs=(TensorSpec("pixel_values", "float32", ("batch", 3, image_size, image_size)),),
            outputs=(TensorSpec("image_embeds", "float32", ("batch", embed)),),
            dims=batch,
        )
        max_len = int(config.text_config.max_position_embeddings)
        vocab = int(config.text_config.vocab_size)
        text = IOSpec(
            inputs=(
                TensorSpec("input_ids", "int64", ("batch", "sequence"), value_range=(0, vocab - 1)),
                TensorSpec("attention_mask", "int64", ("batch", "sequence"), value_range=(0, 1)),
            ),
            outputs=(TensorSpec("text_embeds", "float32", ("batch", embed)),),
            dims={**batch, "sequence": DimRange(1, 16, max_len)},
        )
        return (
            Component(
                "vision",
                vision,
                ClipVisionExport,
                lambda sizes, rng: random_pixels(sizes, rng, image_size),
                trace_sizes={"batch": 2},
                check_sizes={"batch": 3},
                traced_under=eager_attention,  # models/attention.py: the references run the model's own
            ),
            Component(
                "text",
                text,
                ClipTextExport,
                TextIds.of(config.text_config).random_tokens,
                trace_sizes={"batch": 2, "sequence": 7},
                check_sizes={"batch": 3, "sequence": 11},
                traced_under=eager_attention,
            ),
        )

    def write_assets(self, loaded: LoadedModel, writer: BundleWriter) -> dict[str, str]:
        model: Any = loaded.model
        tokenizer = write_text_tokenizer(loaded, writer, model.config.text_config)
        config: dict[str, Any] = {
            "preprocess": preprocess_for(int(model.config.vision_config.image_size)).to_json(),
            "logit_scale": float(model.logit_scale.detach()),  # natural log; logits use exp()
            "max_text_length": tokenizer.max_length,
            "pad_id": tokenizer.pad_id,
        }
        if loaded.trained_on_shapes:
            # The reference images' true classes, indices into the reference prompts (the labels).
            config["ground_truth"] = {
                "zero_shot_labels": [shapes.LABELS.index(s.label) for s in shapes_reference_samples()]
            }
        writer.write_json("pipeline.json", config)
        return {"tokenizer": tokenizer.path, "pipeline": "pipeline.json"}

    def reference_inputs(
        self, loaded: LoadedModel, writer: BundleWriter, assets: Mapping[str, str]
    ) -> dict[str, Feeds]:
        config: Any = loaded.model.config
        preprocess = preprocess_for(int(config.vision_config.image_size))
        tokenizer = bundle_text_tokenizer(writer, assets)
        if loaded.trained_on_shapes:
            images = [Image.fromarray(s.image) for s in shapes_reference_samples()]
            prompts = [shapes.label_prompt(label) for label in shapes.LABELS]
            return {"vision": {"pixel_values": preprocess(images)}, "text": tokenizer(prompts)}
        pixels = preprocess(load_images(EVALUATION_IMAGES))
        return {"vision": {"pixel_values": pixels}, "text": tokenizer(list(EVALUATION_PROMPTS))}

    def calibration_feeds(
        self,
        loaded: LoadedModel,
        raw: RawCalibrationData,
        writer: BundleWriter,
        assets: Mapping[str, str],
        batch: int,
    ) -> dict[str, tuple[Feeds, ...]]:
        config: Any = loaded.model.config
        pixels = preprocess_for(int(config.vision_config.image_size))(list(raw.images))
        tokenizer = bundle_text_tokenizer(writer, assets)
        return {
            "vision": batched({"pixel_values": pixels}, batch),
            "text": batched(tokenizer(list(raw.prompts)), batch),
        }

    def budget(self, precision: str) -> Budget:
        return BUDGETS[precision]


def preprocess_for(image_size: int) -> ImagePreprocess:
    """CLIPImageProcessor: shortest edge to the model's size (bicubic), centre crop, normalise."""
    return ImagePreprocess(
        resize="shortest_edge",
        size=image_size,
        crop=(image_size, image_size),
        resample="bicubic",
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
    )


# FP32 ONNX on ONNX Runtime differs from PyTorch by float rounding only (measured ~2e-6 max abs on
# ViT-B/32), so its budget is tight: any real export bug shows up as a miss. FP16 and INT8 hold
# the embeddings' cosine to 0.999 and 0.99 and zero-shot top-1 to the FP32 reference's choice;
# the element-wise bounds are loose guards against a few wild values, which cosine can hide. A
# model with labelled reference images (the shapes models) also holds its top-1 against the truth
# to within zero_shot_top1_drop of the PyTorch FP32 figure: 1 pt (one image in 128 may flip at a
# near-tie) for FP32 and FP16, 2 pt for INT8.
BUDGETS = {
    "fp32": Budget(
        outputs={"*": Tolerance(cosine_min=0.99999, atol=1e-4, rtol=1e-3, max_outside=0.0)},
        tasks={"zero_shot_top1_agreement": 1.0, "zero_shot_top1_drop": 0.01},
    ),
    "fp16": Budget(
        outputs={"*": Tolerance(cosine_min=0.999, atol=2e-2, rtol=2e-2, max_outside=0.01)},
        tasks={"zero_shot_top1_agreement": 0.98, "zero_shot_top1_drop": 0.01},
    ),
    "int8": Budget(
        outputs={"*": Tolerance(cosine_min=0.99, atol=0.1, rtol=0.1, max_outside=0.05)},
        tasks={"zero_shot_top1_agreement": 0.98, "zero_shot_top1_drop": 0.02},
    ),
}

RECIPE = ClipRecipe()
