"""CLIP (transformers CLIPModel): two graphs, `vision` and `text`, each ending in its projection.

Presets: `clip-vit-base-patch32` is openai/clip-vit-base-patch32's architecture (the class defaults
except the checkpoint's legacy bos/eos ids 0/2, which switch text pooling to argmax(input_ids));
`tiny` is the same code at toy sizes for tests. Weights folders load through `--weights DIR`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel

from trtdeploy.calibration.data import RawCalibrationData, batched
from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images
from trtdeploy.calibration.prompts import EVALUATION_PROMPTS
from trtdeploy.models.clip_vocab import MAX_LENGTH, write_clip_tokenizer_json
from trtdeploy.models.recipe import Component, Feeds, LoadedModel, Preset, Recipe
from trtdeploy.runtime.bundle import BundleWriter
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


def random_tokens(sizes: Mapping[str, int], rng: np.random.Generator) -> Feeds:
    """Right-padded rows shaped like tokenizer output: BOS, random tokens, EOS, then padding."""
    batch, length = sizes["batch"], sizes["sequence"]
    ids = np.full((batch, length), EOS_ID, dtype=np.int64)
    mask = np.zeros((batch, length), dtype=np.int64)
    for row in range(batch):
        used = length if row == 0 else int(rng.integers(2, length + 1))  # row 0 fills the length
        ids[row, 0] = BOS_ID
        ids[row, 1 : used - 1] = rng.integers(0, BOS_ID, size=used - 2)
        mask[row, :used] = 1
    return {"input_ids": ids, "attention_mask": mask}


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
            ),
            Component(
                "text",
                text,
                ClipTextExport,
                random_tokens,
                trace_sizes={"batch": 2, "sequence": 7},
                check_sizes={"batch": 3, "sequence": 11},
            ),
        )

    def write_assets(self, loaded: LoadedModel, writer: BundleWriter) -> dict[str, str]:
        write_clip_tokenizer_json(writer.path("tokenizer/tokenizer.json"))
        model: Any = loaded.model
        writer.write_json(
            "pipeline.json",
            {
                "preprocess": preprocess_for(int(model.config.vision_config.image_size)).to_json(),
                "logit_scale": float(model.logit_scale.detach()),  # natural log; logits use exp()
                "max_text_length": MAX_LENGTH,
                "pad_id": EOS_ID,
            },
        )
        return {"tokenizer": "tokenizer/tokenizer.json", "pipeline": "pipeline.json"}

    def reference_inputs(
        self, loaded: LoadedModel, writer: BundleWriter, assets: Mapping[str, str]
    ) -> dict[str, Feeds]:
        config: Any = loaded.model.config
        image_size = int(config.vision_config.image_size)
        pixels = preprocess_for(image_size)(load_images(EVALUATION_IMAGES))
        tokenizer = TextTokenizer(writer.path(assets["tokenizer"]), max_length=MAX_LENGTH, pad_id=EOS_ID)
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
        tokenizer = TextTokenizer(writer.path(assets["tokenizer"]), max_length=MAX_LENGTH, pad_id=EOS_ID)
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
# the element-wise bounds are loose guards against a few wild values, which cosine can hide.
BUDGETS = {
    "fp32": Budget(
        outputs={"*": Tolerance(cosine_min=0.99999, atol=1e-4, rtol=1e-3, max_outside=0.0)},
        tasks={"zero_shot_top1_agreement": 1.0},
    ),
    "fp16": Budget(
        outputs={"*": Tolerance(cosine_min=0.999, atol=2e-2, rtol=2e-2, max_outside=0.01)},
        tasks={"zero_shot_top1_agreement": 0.98},
    ),
    "int8": Budget(
        outputs={"*": Tolerance(cosine_min=0.99, atol=0.1, rtol=0.1, max_outside=0.05)},
        tasks={"zero_shot_top1_agreement": 0.98},
    ),
}

RECIPE = ClipRecipe()
