"""Tiny CLIP, trained contrastively on shapes images and their captions.

Each image is paired with its full caption ("a red circle and a blue square") or, half of the time,
with its headline: the caption of its largest object alone ("a red circle"), which is also the
zero-shot prompt of its class. Every batch also holds the 25 class prompts as texts, so each step
contrasts every image with every class, not only with the few classes its batch happens to hold.
A text is a positive for every image it truly describes (several images share a headline), so the
loss is cross-entropy against the normalised positive set in both directions, rather than CLIP's
one-hot diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import configs, vocab
from trtdeploy.models.shapes.common import (
    Progress,
    TrainSettings,
    check_pixel_values,
    index_batches,
    make_deterministic,
    optimizer_for,
    pixel_values,
    training_samples,
    warmup_cosine,
)
from trtdeploy.runtime.tokenize import TextTokenizer

SETTINGS = TrainSettings(steps=1500, batch_size=64, learning_rate=1e-3, train_images=12_000)
CLASS_PROMPTS = tuple(shapes.label_prompt(label) for label in shapes.LABELS)
MAX_LOGIT_SCALE = float(np.log(100.0))  # CLIP's clamp on the learned temperature


@dataclass(frozen=True)
class ClipData:
    images: np.ndarray  # (N, H, W, 3) uint8
    captions: tuple[str, ...]
    headlines: tuple[str, ...]  # label prompt of each image's class


def load_data(count: int) -> ClipData:
    images, captions, headlines = [], [], []
    for sample in training_samples(count):
        images.append(sample.image)
        captions.append(sample.caption)
        headlines.append(shapes.label_prompt(sample.label))
    return ClipData(np.stack(images), tuple(captions), tuple(headlines))


def train(folder: Path, settings: TrainSettings = SETTINGS) -> CLIPModel:
    """Train from scratch; ``folder`` already holds the tokenizer the texts are encoded with."""
    make_deterministic(settings)
    tokenizer = TextTokenizer(
        folder / "tokenizer.json", max_length=vocab.CLIP_MAX_LENGTH, pad_id=vocab.CLIP_EOS_ID
    )
    data = load_data(settings.train_images)
    check_pixel_values(data.images[:16], configs.CLIP_PREPROCESS)
    model = CLIPModel(configs.clip_config())
    model.train()
    optimizer = optimizer_for(model, settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings))
    rng = np.random.default_rng(settings.seed + 1)
    progress = Progress("clip", settings.steps)
    for step, batch in enumerate(index_batches(settings)):
        texts = [data.headlines[i] if rng.random() < 0.5 else data.captions[i] for i in batch]
        texts += CLASS_PROMPTS
        loss = contrastive_loss(model, data, batch, texts, tokenizer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        progress.step(step, loss.item())
    model.eval()
    return model


def contrastive_loss(
    model: CLIPModel, data: ClipData, batch: np.ndarray, texts: list[str], tokenizer: TextTokenizer
) -> torch.Tensor:
    tokens = {k: torch.from_numpy(v) for k, v in tokenizer(texts).items()}
    pixels = pixel_values(data.images[batch], configs.CLIP_PREPROCESS)
    logits = model(pixel_values=pixels, **tokens).logits_per_image  # (B_img, B_txt), scaled cosine
    positive = torch.from_numpy(positives(data, batch, texts))  # (B_img, B_txt)
    image_to_text = _soft_cross_entropy(logits, positive)
    described = positive.sum(dim=0) > 0  # (B_txt,): class prompts with no image in the batch drop out
    text_to_image = _soft_cross_entropy(logits.t()[described], positive.t()[described])
    return (image_to_text + text_to_image) / 2


def positives(data: ClipData, batch: np.ndarray, texts: list[str]) -> np.ndarray:
    """(B_img, B_txt) float32: 1 where text j describes image i (its caption or its headline)."""
    return np.array(
        [[text in (data.captions[i], data.headlines[i]) for text in texts] for i in batch], dtype=np.float32
    )


def _soft_cross_entropy(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    target = positive / positive.sum(dim=1, keepdim=True)  # callers pass rows with a positive
    return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
