"""metrics.json and CARD.md for a trained shapes model: what was trained, how, and how well."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from trtdeploy.calibration import shapes

# How far a retrain may land from the committed figures and still count as reproducing them.
# Same machine, thread count and library versions: the run is bit-for-bit repeatable, so the
# figures match exactly. A different CPU (another SIMD width picks other kernels) or library version
# rounds differently, and over a thousand optimiser steps that gives different weights of the same
# quality; these bounds are a few times the spread measured between such runs.
REPRODUCE_TOLERANCE = {
    "zero_shot_top1": 0.02,
    "mean_iou": 0.03,
    "caption_exact_match": 0.05,
    "od_map50": 0.06,
    "od_mean_best_iou": 0.03,
}
# What a committed model's test slice must still score: the slice figure recorded at training time,
# within float noise of a re-run on another machine (a flipped borderline sample at most).
SLICE_TOLERANCE = {
    "zero_shot_top1": 1 / 32 + 1e-9,
    "mean_iou": 0.01,
    "caption_exact_match": 1 / 32 + 1e-9,
    "od_map50": 0.03,
    "od_mean_best_iou": 0.01,
}


def evaluation_fingerprint(samples: list[shapes.ShapesSample]) -> str:
    """sha256 of the images and ground truth of these samples: names the data a figure was measured on."""
    import hashlib

    digest = hashlib.sha256()
    for s in samples:
        digest.update(s.image.tobytes())
        digest.update(np.packbits(s.referring_mask).tobytes())
        digest.update(
            f"{s.caption}|{s.label}|{s.referring_expression}|{s.boxes.tolist()}|{s.box_labels}".encode()
        )
    return digest.hexdigest()


def write_metrics(folder: Path, record: dict[str, Any]) -> None:
    (folder / "metrics.json").write_text(
        json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def read_metrics(folder: Path) -> dict[str, Any]:
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no metrics.json; train it with `python -m trtdeploy.models.shapes train`"
        )
    return dict(json.loads(path.read_text(encoding="utf-8")))


def trained_on_shapes(folder: Path) -> bool:
    """Whether a weights folder is a shapes model: its metrics.json names the dataset version."""
    path = folder / "metrics.json"
    return path.is_file() and "dataset_version" in json.loads(path.read_text(encoding="utf-8"))


def environment() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def write_card(folder: Path, record: dict[str, Any], about: str) -> None:
    """CARD.md: a reader's summary of metrics.json."""
    settings, full, part = record["settings"], record["evaluation"], record["slice"]
    lines = [
        f"# {record['name']}",
        "",
        about,
        "",
        f"- Architecture: `{record['architecture']}`, {record['parameters']:,} parameters "
        f"({record['weights_bytes'] / 1e6:.2f} MB of float32 safetensors).",
        f"- Data: the shapes dataset v{record['dataset_version']} (calibration/shapes.py), "
        f"{shapes.IMAGE_SIZE} x {shapes.IMAGE_SIZE} px. Trained on train-split samples 0..{settings['train_images'] - 1}; "
        f"evaluated on evaluation-split samples {full['start']}..{full['start'] + full['count'] - 1} "
        "(backgrounds from photographs training never used).",
        f"- Training: {settings['steps']} steps of batch {settings['batch_size']}, AdamW lr {settings['learning_rate']} "
        f"(warm-up {settings['warmup_steps']} steps, cosine decay), weight decay {settings['weight_decay']}, "
        f"seed {settings['seed']}, {settings['threads']} torch threads, deterministic algorithms; "
        f"{record['train_seconds']:.0f} s on this run's machine.",
        f"- Command: `{record['command']}` (`make tiny-models` retrains every committed shapes model).",
        f"- Environment: {', '.join(f'{k} {v}' for k, v in record['environment'].items())}.",
        "",
        "## FP32 PyTorch metrics against ground truth",
        "",
        "| metric | evaluation split | test slice | reproduce within |",
        "|---|---:|---:|---:|",
    ]
    for name, value in full["metrics"].items():
        lines.append(f"| {name} | {value:.4f} | {part['metrics'][name]:.4f} | ±{REPRODUCE_TOLERANCE[name]} |")
    lines += [
        "",
        f"Evaluation split: {full['count']} images. Test slice: evaluation samples {part['start']}.."
        f"{part['start'] + part['count'] - 1}, which tests/test_shapes_models.py re-scores on every run "
        f"(data fingerprint `{part['fingerprint'][:16]}…`).",
        "",
        "Reproduction: on the same machine, thread count and library versions a retrain is bit-for-bit "
        "identical. Elsewhere, float rounding differs (other SIMD kernels, other library versions) and "
        "the weights drift apart over the run; a retrain counts as reproducing these figures when each "
        "is within the tolerance above.",
        "",
    ]
    (folder / "CARD.md").write_text("\n".join(lines), encoding="utf-8")
