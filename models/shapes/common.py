"""What every shapes training run shares: settings, determinism, data, schedule, progress, saving."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from trtdeploy.calibration import shapes
from trtdeploy.runtime.preprocess import ImagePreprocess


@dataclass(frozen=True)
class TrainSettings:
    """One training run; the card records every field, so the run can be repeated exactly."""

    steps: int
    batch_size: int
    learning_rate: float
    train_images: int  # training samples 0..train_images-1 of the train split, drawn in shuffled epochs
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    # Fixed, because a CPU reduction splits its work by thread: a different count changes float
    # rounding, and over thousands of steps that changes the weights.
    threads: int = 2

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def make_deterministic(settings: TrainSettings) -> torch.Generator:
    """Seed torch, pin the thread count, refuse non-deterministic kernels; return the data generator."""
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(settings.seed)


def index_batches(settings: TrainSettings) -> Iterator[np.ndarray]:
    """``settings.steps`` batches of sample indices: shuffled epochs over the training images."""
    rng = np.random.default_rng(settings.seed)
    order = np.zeros(0, dtype=np.int64)
    for _ in range(settings.steps):
        while len(order) < settings.batch_size:
            order = np.concatenate([order, rng.permutation(settings.train_images)])
        batch, order = order[: settings.batch_size], order[settings.batch_size :]
        yield batch


def training_samples(count: int) -> Iterator[shapes.ShapesSample]:
    """The first ``count`` samples of the train split, with a progress line every 2000."""
    started = time.monotonic()
    for index in range(count):
        if index and index % 2000 == 0:
            say(f"  rendered {index}/{count} training images ({time.monotonic() - started:.0f} s)")
        yield shapes.sample("train", index)


def pixel_values(images: np.ndarray, preprocess: ImagePreprocess) -> torch.Tensor:
    """(B, 3, H, W) float32 model input from (B, H, W, 3) uint8, exactly as the deployed preprocessing.

    At the shapes size the resize is the identity, so this is the preprocessing's arithmetic (in its
    order: float64 rescale, float32 normalise) on whole batches; ``check_pixel_values`` proves the
    two agree before training relies on it.
    """
    if images.shape[1:3] != preprocess.output_hw or preprocess.crop not in (None, preprocess.output_hw):
        raise ValueError(
            f"the batch path needs images already at the model size {preprocess.output_hw}; got {images.shape[1:3]}"
        )
    scaled = torch.from_numpy(images).to(torch.float64) * preprocess.rescale  # (B, H, W, 3)
    scaled = scaled.to(torch.float32)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32)
    std = torch.tensor(preprocess.std, dtype=torch.float32)
    return ((scaled - mean) / std).permute(0, 3, 1, 2).contiguous()


def check_pixel_values(images: np.ndarray, preprocess: ImagePreprocess) -> None:
    """Raise unless the batch path gives the deployed preprocessing's pixels on these images."""
    fast = pixel_values(images, preprocess).numpy()
    slow = preprocess(list(images))
    worst = float(np.max(np.abs(fast - slow)))
    if worst > 1e-6:
        raise AssertionError(
            f"batch preprocessing differs from the deployed ImagePreprocess by {worst:.3g}; "
            "fix common.pixel_values before training on it"
        )


def warmup_cosine(settings: TrainSettings) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to zero at the last step."""

    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def optimizer_for(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW, with no weight decay on biases, norms and embeddings-like 1-D parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.98))


class Progress:
    """Prints the running mean loss every ``every`` steps, with elapsed time."""

    def __init__(self, name: str, total: int, every: int = 100) -> None:
        self.name, self.total, self.every = name, total, every
        self.started = time.monotonic()
        self.losses: list[float] = []

    def step(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{self.name}: loss became {loss} at step {step}; lower the learning rate"
            )
        self.losses.append(loss)
        if (step + 1) % self.every == 0 or step + 1 == self.total:
            mean = sum(self.losses) / len(self.losses)
            say(f"  {self.name} step {step + 1}/{self.total}  loss {mean:.4f}  ({self.elapsed():.0f} s)")
            self.losses = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def replace_folder(staging: Path, final: Path) -> None:
    """Move a completed staging folder into place, so a killed run never leaves half a model."""
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)


def staging_folder(final: Path) -> Path:
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights, like Florence-2's lm_head and embeddings, count once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
