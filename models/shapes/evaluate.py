"""FP32 PyTorch task metrics of the shapes models against ground truth, on any slice of a split.

The models are run as a deployment runs them: the weights folder's tokenizer.json through the
runtime tokenizer, and the runtime's image preprocessing. The numbers come from runtime/metrics.py,
the same functions that judge engines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import CLIPModel, CLIPSegForImageSegmentation, Florence2ForConditionalGeneration

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import configs, vocab
from trtdeploy.models.shapes.common import pixel_values
from trtdeploy.runtime.locations import Detections, parse_location_text
from trtdeploy.runtime.metrics import box_iou, exact_match, mean_average_precision, mean_iou, top1_accuracy
from trtdeploy.runtime.tokenize import TextTokenizer

BATCH = 64


def clip_metrics(model: CLIPModel, folder: Path, samples: Sequence[shapes.ShapesSample]) -> dict[str, float]:
    """Zero-shot top-1 over the 25 class prompts ("a red circle", ...)."""
    tokenizer = clip_text_tokenizer(folder)
    prompts = [shapes.label_prompt(label) for label in shapes.LABELS]
    with torch.inference_mode():
        tokens = {k: torch.from_numpy(v) for k, v in tokenizer(prompts).items()}
        text = _unit(model.get_text_features(**tokens).pooler_output)  # (C, P)
        images = torch.cat(
            [
                _unit(
                    model.get_image_features(
                        pixel_values=pixel_values(chunk, configs.CLIP_PREPROCESS)
                    ).pooler_output
                )
                for chunk in _image_chunks(samples)
            ]
        )  # (N, P)
    scores = (images @ text.t()).numpy()  # (N, C) cosine; the temperature does not change argmax
    targets = [shapes.LABELS.index(s.label) for s in samples]
    return {"zero_shot_top1": top1_accuracy(scores, targets)}


def clipseg_metrics(
    model: CLIPSegForImageSegmentation, folder: Path, samples: Sequence[shapes.ShapesSample]
) -> dict[str, float]:
    """Mean IoU of sigmoid(logits) > 0.5 against the referring expression's ground-truth mask."""
    masks = predict_masks(model, clip_text_tokenizer(folder), samples)
    return {"mean_iou": mean_iou(list(masks), [s.referring_mask for s in samples])}


def predict_masks(
    model: CLIPSegForImageSegmentation, tokenizer: TextTokenizer, samples: Sequence[shapes.ShapesSample]
) -> np.ndarray:
    """(N, H, W) bool masks for each sample's referring expression."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(samples), BATCH):
            chunk = samples[start : start + BATCH]
            tokens = {
                k: torch.from_numpy(v) for k, v in tokenizer([s.referring_expression for s in chunk]).items()
            }
            pixels = pixel_values(np.stack([s.image for s in chunk]), configs.CLIPSEG_PREPROCESS)
            logits = model(pixel_values=pixels, **tokens).logits  # (B, H, W)
            out.append((logits.reshape(len(chunk), *logits.shape[-2:]) > 0).numpy())  # sigmoid > 0.5
    return np.concatenate(out)


def florence2_metrics(
    model: Florence2ForConditionalGeneration, folder: Path, samples: Sequence[shapes.ShapesSample]
) -> dict[str, float]:
    """Caption exact match, OD mAP@0.5 and the mean best IoU of each ground-truth box."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    captions = [tokenizer.decode(ids) for ids in generate(model, tokenizer, "<CAPTION>", samples)]
    od_texts = [
        tokenizer.decode(ids, skip_special_tokens=False)
        for ids in generate(model, tokenizer, "<OD>", samples)
    ]
    size = (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    found = [parse_location_text(text, size) for text in od_texts]
    truth = [Detections(s.boxes.astype(np.float64), s.box_labels) for s in samples]
    return {
        "caption_exact_match": exact_match(captions, [s.caption for s in samples]),
        "od_map50": mean_average_precision(found, truth, iou_threshold=0.5),
        "od_mean_best_iou": mean_best_iou(found, truth),
    }


def generate(
    model: Florence2ForConditionalGeneration,
    tokenizer: Tokenizer,
    task: str,
    samples: Sequence[shapes.ShapesSample],
) -> list[list[int]]:
    """Greedy generation through transformers' own Florence-2 path (placeholder ids + pixels)."""
    prompt = florence2_prompt_ids(tokenizer, task, image_tokens(model))
    out: list[list[int]] = []
    with torch.inference_mode():
        for chunk in _image_chunks(samples):
            ids = torch.tensor([prompt] * len(chunk))  # (B, T)
            pixels = pixel_values(chunk, configs.FLORENCE2_PREPROCESS)
            generated = model.generate(
                input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids)
            )
            out += generated.tolist()
    return out


def florence2_prompt_ids(tokenizer: Tokenizer, task: str, num_image_tokens: int) -> list[int]:
    """<image> x N, then <s> prompt </s>: Florence2Processor's layout for a task without input."""
    if task not in vocab.FLORENCE_TASK_PROMPTS:
        raise ValueError(
            f"the shapes Florence-2 model knows the tasks {sorted(vocab.FLORENCE_TASK_PROMPTS)}; got {task!r}"
        )
    image_id = vocab.token_id(tokenizer, vocab.IMAGE_TOKEN)
    return [image_id] * num_image_tokens + tokenizer.encode(vocab.FLORENCE_TASK_PROMPTS[task]).ids


def image_tokens(model: Florence2ForConditionalGeneration) -> int:
    """How many features the vision tower + projector make of one image at the shapes size."""
    blank = torch.zeros(1, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    with torch.inference_mode():
        return int(model.get_image_features(pixel_values=blank).pooler_output.shape[1])


def mean_best_iou(found: Sequence[Detections], truth: Sequence[Detections]) -> float:
    """Mean over ground-truth boxes of the best IoU with a predicted box of the same label (0 if none)."""
    best: list[float] = []
    for pred, gt in zip(found, truth, strict=True):
        for box, label in zip(gt.boxes, gt.labels, strict=True):
            same = pred.boxes[[lab == label for lab in pred.labels]]
            best.append(float(box_iou(box, same).max()) if len(same) else 0.0)
    return float(np.mean(best))


def clip_text_tokenizer(folder: Path) -> TextTokenizer:
    return TextTokenizer(
        folder / "tokenizer.json", max_length=vocab.CLIP_MAX_LENGTH, pad_id=vocab.CLIP_EOS_ID
    )


def _image_chunks(samples: Sequence[shapes.ShapesSample]) -> Iterator[np.ndarray]:
    for start in range(0, len(samples), BATCH):
        yield np.stack([s.image for s in samples[start : start + BATCH]])  # (B, H, W, 3)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


METRICS: dict[str, Any] = {"clip": clip_metrics, "clipseg": clipseg_metrics, "florence2": florence2_metrics}
