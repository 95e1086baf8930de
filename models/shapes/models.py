"""The three shapes models as data: folder name, class, tokenizer, preprocessing, trainer, metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel, CLIPSegForImageSegmentation, Florence2ForConditionalGeneration

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import configs, evaluate, vocab
from trtdeploy.runtime.preprocess import ImagePreprocess

Metrics = Callable[[Any, Path, Sequence[shapes.ShapesSample]], dict[str, float]]


@dataclass(frozen=True)
class ShapesModel:
    key: str  # the recipe it deploys with
    folder_name: str  # its folder under models/weights/
    model_class: type
    model_type: str  # config.json's model_type
    about: str  # first paragraph of the card
    preprocess: ImagePreprocess
    processor: str  # transformers image processor class that does the same preprocessing
    metrics: Metrics
    clip_tokenizer: bool  # CLIP's vocabulary (CLIP, CLIPSeg) or Florence-2's

    def write_tokenizer(self, folder: Path) -> None:
        if self.clip_tokenizer:
            vocab.save_tokenizer(
                vocab.clip_tokenizer(),
                folder,
                specials={
                    "bos_token": vocab.CLIP_BOS,
                    "eos_token": vocab.CLIP_EOS,
                    "pad_token": vocab.CLIP_EOS,
                    "unk_token": vocab.CLIP_UNK,
                },
                max_length=vocab.CLIP_MAX_LENGTH,
            )
        else:
            vocab.save_tokenizer(
                vocab.florence2_tokenizer(),
                folder,
                specials={
                    "bos_token": vocab.BART_BOS,
                    "eos_token": vocab.BART_EOS,
                    "pad_token": vocab.BART_PAD,
                    "unk_token": vocab.BART_UNK,
                },
                max_length=vocab.FLORENCE_MAX_LENGTH,
            )

    def preprocessor_config(self, model: torch.nn.Module) -> dict[str, Any]:
        extra = {}
        if self.model_class is Florence2ForConditionalGeneration:
            extra["image_seq_length"] = evaluate.image_tokens(model)  # type: ignore[arg-type]
        return configs.preprocessor_config(self.preprocess, self.processor, **extra)


MODELS: dict[str, ShapesModel] = {
    m.key: m
    for m in (
        ShapesModel(
            "clip",
            "clip-shapes-tiny",
            CLIPModel,
            "clip",
            "A tiny CLIP (transformers `CLIPModel`) trained contrastively on shapes images and captions. "
            "Zero-shot classification over the 25 colour-shape classes with the prompts `a <colour> <shape>`; "
            "the class of an image is its largest object.",
            configs.CLIP_PREPROCESS,
            "CLIPImageProcessor",
            evaluate.clip_metrics,
            clip_tokenizer=True,
        ),
        ShapesModel(
            "clipseg",
            "clipseg-shapes-tiny",
            CLIPSegForImageSegmentation,
            "clipseg",
            "A tiny CLIPSeg (transformers `CLIPSegForImageSegmentation`) trained on referring expressions "
            "(`the <colour> <shape>`) and their masks, its towers started from clip-shapes-tiny. "
            "A pixel belongs to the mask where sigmoid(logits) > 0.5.",
            configs.CLIPSEG_PREPROCESS,
            "ViTImageProcessor",
            evaluate.clipseg_metrics,
            clip_tokenizer=True,
        ),
        ShapesModel(
            "florence2",
            "florence2-shapes-tiny",
            Florence2ForConditionalGeneration,
            "florence2",
            "A tiny Florence-2 (transformers `Florence2ForConditionalGeneration`) trained on the `<CAPTION>` "
            "and `<OD>` tasks. Prompts are Florence2Processor's task prompts; answers are captions and "
            "`<shape><loc_x1><loc_y1><loc_x2><loc_y2>...` boxes in 1000 bins, largest object first. "
            "Greedy decoding (generation_config.json).",
            configs.FLORENCE2_PREPROCESS,
            "CLIPImageProcessor",
            evaluate.florence2_metrics,
            clip_tokenizer=False,
        ),
    )
}


# The models whose trained folders ship in models/weights/ (and that `make tiny-models` retrains).
COMMITTED = ("clip", "clipseg", "florence2")


def get(key: str) -> ShapesModel:
    if key not in MODELS:
        raise KeyError(f"no shapes model {key!r}; the shapes models are {sorted(MODELS)}")
    return MODELS[key]
