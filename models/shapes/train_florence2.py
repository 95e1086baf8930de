"""Tiny Florence-2, trained on <CAPTION> and <OD> answers for every training image.

Inputs are laid out as Florence2Processor lays them out: one placeholder per image feature, then
<s> prompt </s>. The forward pass here builds the same encoder input by concatenation (image
features, then the prompt's embeddings), which is what transformers' masked_scatter produces when
the placeholders lead; it lets one vision pass serve both tasks. Evaluation goes through
transformers' own generate(), so any difference would show up as a bad score.

The vision tower also gets a direct signal: a linear head, used in training only and not saved,
reads each of the 8 x 8 cell features and names the object covering that 16 px cell (one of the
25 colour-shape labels, or background). Without it the tower never learns from the answers alone:
after 1200 steps the encoder's outputs hardly changed between images (spread 0.013 against 0.50
at initialisation) and every image got the same caption; the language prior is learned first and
the gradient through cross-attention is too weak to teach a tower from scratch. With the head, a
caption-only probe read colour and shape words right 44% of the time after 300 steps (chance 19%),
and the full run (1200 steps, 11 min here) reaches caption exact match 0.966 on 500 evaluation
images. Its <OD> boxes are not there yet (mAP@0.5 0.002): they come out the right size, but most
at one of a few stock positions, so the decoder has not learnt to read where an object is; starting
the projector's row/column position embeddings as sinusoids at the features' scale and training
1500 steps left that unchanged (0.002, captions 0.998).

Location tokens are classes, but neighbouring bins are nearly the same answer. Two things tell the
model so: their embeddings (tied to the output layer) start as sinusoids of the bin index, so
nearby bins start out alike; and a location target is a narrow Gaussian over bins (one pixel wide)
instead of a single bin, so being one bin off costs little and being far off costs a lot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import Florence2ForConditionalGeneration
from transformers.models.florence2.modeling_florence2 import shift_tokens_right

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
from trtdeploy.runtime.locations import LOCATION_BINS, location_text

SETTINGS = TrainSettings(steps=1200, batch_size=32, learning_rate=1e-3, train_images=12_000)
IGNORE = -100  # label value the loss skips (padding after </s>)
LOCATION_SIGMA_PX = 1.0  # width of a location target, in pixels of the 128 px image


CELL_PX = 16  # side of one vision feature cell: the tower's total stride (8 x 2)
CELL_COVER = 0.25  # an object names a cell when it covers at least this share of the cell's pixels


@dataclass(frozen=True)
class CaptionOdData:
    images: np.ndarray  # (N, H, W, 3) uint8
    captions: tuple[tuple[int, ...], ...]  # target ids <s> ... </s>
    detections: tuple[tuple[int, ...], ...]
    cells: np.ndarray  # (N, cells) int64: per feature cell, 1 + label index of its object, 0 background


def load_data(count: int, tokenizer: Tokenizer) -> CaptionOdData:
    images, captions, detections, cells = [], [], [], []
    size = (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    for sample in training_samples(count):
        images.append(sample.image)
        captions.append(tuple(tokenizer.encode(sample.caption).ids))
        detections.append(tuple(tokenizer.encode(location_text(sample.box_labels, sample.boxes, size)).ids))
        cells.append(cell_labels(sample))
    return CaptionOdData(np.stack(images), tuple(captions), tuple(detections), np.stack(cells))


def cell_labels(sample: shapes.ShapesSample) -> np.ndarray:
    """(cells,) row-major over the CELL_PX grid: 1 + the label index of the object covering most of
    the cell (at least CELL_COVER of it), else 0; objects never overlap."""
    grid = shapes.IMAGE_SIZE // CELL_PX
    out = np.zeros((grid, grid), dtype=np.int64)
    best = np.zeros((grid, grid))
    for obj in sample.objects:
        cover = obj.mask.reshape(grid, CELL_PX, grid, CELL_PX).mean(axis=(1, 3))  # (grid, grid)
        wins = (cover >= CELL_COVER) & (cover > best)
        out[wins] = 1 + shapes.LABELS.index(obj.name)
        best = np.maximum(best, cover)
    return out.reshape(-1)


def train(folder: Path, settings: TrainSettings = SETTINGS) -> Florence2ForConditionalGeneration:
    """Train from scratch; ``folder`` already holds the tokenizer.json the targets are encoded with."""
    make_deterministic(settings)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    data = load_data(settings.train_images, tokenizer)
    check_pixel_values(data.images[:16], configs.FLORENCE2_PREPROCESS)
    model = Florence2ForConditionalGeneration(configs.florence2_config())
    smooth_location_embeddings(model, tokenizer)
    model.train()
    prompts = {task: torch.tensor(tokenizer.encode(p).ids) for task, p in vocab.FLORENCE_TASK_PROMPTS.items()}
    soft_targets = location_targets(tokenizer, tokenizer.get_vocab_size())
    special = configs.florence2_special_ids()
    pad_id, start_id = special["pad_token_id"], special["decoder_start_token_id"]
    config: Any = model.config
    cell_head = torch.nn.Linear(int(config.text_config.d_model), 1 + len(shapes.LABELS))  # training only
    optimizer = optimizer_for(torch.nn.ModuleList([model, cell_head]), settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings))
    progress = Progress("florence2", settings.steps)
    embed = token_embedding(model)
    for step, batch in enumerate(index_batches(settings)):
        features = model.get_image_features(pixel_values(data.images[batch], configs.FLORENCE2_PREPROCESS))
        image = features.pooler_output  # (B, 1 + cells, D): the pooled token, then the cells row-major
        cells = torch.from_numpy(data.cells[batch])  # (B, cells)
        if image.shape[1] != 1 + cells.shape[1]:
            raise ValueError(
                f"expected 1 + {cells.shape[1]} image tokens (a {CELL_PX} px feature grid); got {image.shape[1]}"
            )
        cell_logits = cell_head(image[:, 1:])  # (B, cells, 1 + labels)
        loss = torch.nn.functional.cross_entropy(cell_logits.flatten(0, 1), cells.flatten())
        for task, answers in (("<CAPTION>", data.captions), ("<OD>", data.detections)):
            labels = padded([answers[i] for i in batch])  # (B, L)
            prompt = embed(prompts[task]).expand(len(batch), -1, -1)  # (B, T, D)
            decoder_inputs = shift_tokens_right(labels, pad_id, start_id)  # (B, L): start, then labels
            embeds = torch.cat([image, prompt], dim=1)  # (B, N + T, D)
            logits = model(inputs_embeds=embeds, decoder_input_ids=decoder_inputs).logits  # (B, L, V)
            loss = loss + answer_loss(logits, labels, soft_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.step(step, loss.item())
    model.eval()
    # Saved as generation_config.json: greedy decoding is the reference a runtime must match.
    model.generation_config = configs.florence2_generation_config()
    return model


def padded(rows: list[tuple[int, ...]]) -> torch.Tensor:
    """(B, L) int64 labels, right-padded with IGNORE."""
    out = torch.full((len(rows), max(len(r) for r in rows)), IGNORE, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against one-hot targets, or the location Gaussian where the target is a location.

    logits (B, L, V); labels (B, L) with IGNORE padding; soft_targets (V, V): row t is the target
    distribution for label t (one-hot except for location tokens).
    """
    keep = labels != IGNORE  # (B, L)
    target = soft_targets[labels[keep]]  # (K, V)
    return -(target * torch.log_softmax(logits[keep], dim=-1)).sum(dim=-1).mean()


def location_targets(tokenizer: Tokenizer, vocab_size: int) -> torch.Tensor:
    """(V, V) target rows: identity, with each location row a Gaussian over the location tokens."""
    targets = torch.eye(vocab_size)
    ids = torch.tensor([vocab.location_token_id(tokenizer, b) for b in range(LOCATION_BINS)])
    if not torch.equal(ids, ids[0] + torch.arange(LOCATION_BINS)):
        raise ValueError("the location tokens must have consecutive ids <loc_0>..<loc_999>")
    sigma = LOCATION_SIGMA_PX * LOCATION_BINS / shapes.IMAGE_SIZE  # in bins
    bins = torch.arange(LOCATION_BINS, dtype=torch.float32)
    gauss = torch.exp(-0.5 * ((bins[:, None] - bins[None, :]) / sigma) ** 2)  # (bins, bins)
    targets[ids[0] : ids[-1] + 1] = 0.0
    targets[ids[0] : ids[-1] + 1, ids[0] : ids[-1] + 1] = gauss / gauss.sum(dim=1, keepdim=True)
    return targets


def smooth_location_embeddings(model: Florence2ForConditionalGeneration, tokenizer: Tokenizer) -> None:
    """Start <loc_i> embeddings as sinusoids of i (periods 4 bins to 4000 bins), at the init's scale."""
    embeddings = token_embedding(model).weight  # (V, D), tied to the output layer
    dim = embeddings.shape[1]
    bins = torch.arange(LOCATION_BINS, dtype=torch.float32)[:, None]  # (bins, 1)
    periods = 4.0 * 1000.0 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2 - 1))  # (D/2,)
    angles = 2 * torch.pi * bins / periods  # (bins, D/2)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (bins, D), each row norm sqrt(D/2)
    scale = float(embeddings.detach().std()) * (dim**0.5) / (dim / 2) ** 0.5  # match the random rows' norm
    first = vocab.location_token_id(tokenizer, 0)
    with torch.no_grad():
        embeddings[first : first + LOCATION_BINS] = table * scale


def token_embedding(model: Florence2ForConditionalGeneration) -> torch.nn.Embedding:
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, torch.nn.Embedding):
        raise TypeError(
            f"expected Florence-2's token embedding to be an nn.Embedding, got {type(embedding).__name__}"
        )
    return embedding
