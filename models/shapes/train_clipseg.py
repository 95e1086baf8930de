"""Tiny CLIPSeg, trained on referring expressions ("the red circle") and their masks.

Its CLIP towers start from the trained tiny CLIP (same layout and tokenizer), so the text side
already tells colours and shapes apart; everything, decoder included, is then trained on
per-pixel binary cross-entropy plus a soft Dice term (Dice weighs a small shape's pixels as much as
a large one's, which is what mean IoU rewards). Every step picks one object of each image at random,
so each training image teaches all of its objects over the epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel, CLIPSegForImageSegmentation

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
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.tokenize import TextTokenizer

SETTINGS = TrainSettings(steps=1200, batch_size=64, learning_rate=1e-3, train_images=12_000)


@dataclass(frozen=True)
class SegData:
    images: np.ndarray  # (N, H, W, 3) uint8
    objects: np.ndarray  # (N, H, W) uint8: 0 background, k + 1 where object k is (objects never overlap)
    names: tuple[tuple[str, ...], ...]  # per image, each object's "colour shape"


def load_data(count: int) -> SegData:
    images, objects, names = [], [], []
    for sample in training_samples(count):
        images.append(sample.image)
        label_map = np.zeros(sample.image.shape[:2], dtype=np.uint8)
        for k, obj in enumerate(sample.objects):
            label_map[obj.mask] = k + 1
        objects.append(label_map)
        names.append(tuple(obj.name for obj in sample.objects))
    return SegData(np.stack(images), np.stack(objects), tuple(names))


def train(folder: Path, clip_folder: Path, settings: TrainSettings = SETTINGS) -> CLIPSegForImageSegmentation:
    """Train the decoder and fine-tune the towers; ``folder`` holds the tokenizer, ``clip_folder`` the tiny CLIP."""
    make_deterministic(settings)
    tokenizer = TextTokenizer(
        folder / "tokenizer.json", max_length=vocab.CLIP_MAX_LENGTH, pad_id=vocab.CLIP_EOS_ID
    )
    data = load_data(settings.train_images)
    check_pixel_values(data.images[:16], configs.CLIPSEG_PREPROCESS)
    model = CLIPSegForImageSegmentation(configs.clipseg_config())
    start_from_clip(model, clip_folder)
    model.train()
    optimizer = optimizer_for(model, settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings))
    rng = np.random.default_rng(settings.seed + 1)
    progress = Progress("clipseg", settings.steps)
    for step, batch in enumerate(index_batches(settings)):
        picks = [int(rng.integers(len(data.names[i]))) for i in batch]
        texts = [f"the {data.names[i][k]}" for i, k in zip(batch, picks, strict=True)]
        target = torch.from_numpy(
            np.stack([data.objects[i] == k + 1 for i, k in zip(batch, picks, strict=True)])
        )
        tokens = {key: torch.from_numpy(v) for key, v in tokenizer(texts).items()}
        pixels = pixel_values(data.images[batch], configs.CLIPSEG_PREPROCESS)
        if step == 0:
            calm_output_head(model, pixels, tokens, float(target.float().mean()))
        logits = model(pixel_values=pixels, **tokens).logits
        loss = segmentation_loss(logits, target.float())  # logits (B, H, W)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.step(step, loss.item())
    model.eval()
    return model


def start_from_clip(model: CLIPSegForImageSegmentation, clip_folder: Path) -> None:
    """Copy the trained tiny CLIP into CLIPSeg's towers; every tensor must match by name and shape."""
    from trtdeploy.models.weights import load_weights_folder

    clip = load_weights_folder(clip_folder, CLIPModel, {"clip"})
    state = clip.state_dict()
    own = model.clip.state_dict()
    mismatched = sorted(k for k in own if k not in state or state[k].shape != own[k].shape)
    if mismatched or set(state) - set(own):
        raise ArtifactError(
            f"the CLIP in {clip_folder} does not have CLIPSeg's tower layout (mismatched: {mismatched[:5]}, "
            f"extra: {sorted(set(state) - set(own))[:5]}); retrain it with the same configs.py"
        )
    model.clip.load_state_dict(state)


def calm_output_head(
    model: CLIPSegForImageSegmentation, pixels: torch.Tensor, tokens: dict[str, torch.Tensor], cover: float
) -> None:
    """Rescale the decoder's last transposed convolution so the first batch's logits have unit spread
    around the log-odds of the pixels' true cover.

    At the class's initialisation the tiny decoder's logits spread by hundreds (measured std 323 on
    the first batch): every pixel starts saturated, the loss starts near 37, and training collapses
    to an all-background mask (mean IoU 0.0 after 1200 steps). Starting unsaturated, at the prior
    that an object covers ``cover`` of the pixels, is the usual cure for a segmentation head.
    """
    last = model.decoder.transposed_convolution[-1]
    if not isinstance(last, torch.nn.ConvTranspose2d) or last.bias is None:
        raise TypeError(f"expected the CLIPSeg decoder to end in a ConvTranspose2d with a bias; got {last!r}")
    with torch.no_grad():
        spread = float(model(pixel_values=pixels, **tokens).logits.std())
        last.weight.div_(spread)
        last.bias.fill_(float(np.log(cover / (1 - cover))))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel BCE plus (1 - soft Dice) per image; logits and target (B, H, W)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    overlap = (prob * target).sum(dim=(1, 2))
    dice = (2 * overlap + 1) / (prob.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + 1)  # (B,)
    return bce + (1 - dice).mean()
