"""CLIPSeg: segment one image with P prompts, the split engine against PyTorch eager, in the same run.

Ours: ClipSegPipeline.segment, which preprocesses with numpy/PIL, tokenizes with `tokenizers`,
encodes the image once, runs the decoder for all P prompts as one batch, then sigmoid, a resize
back to the image's size and the threshold. Eager: what the transformers documentation shows,
CLIPSegProcessor(text=prompts, images=[image] * P, padding=True) then
CLIPSegForImageSegmentation(**inputs) and a sigmoid of the logits, so the vision tower runs once per
prompt. Both sides start from the same PIL image and prompt strings, run on the same number of
threads, and are timed in their own blocks, alternating (runtime/bench.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trtdeploy.bench import load_reference
from trtdeploy.calibration.images import EVALUATION_IMAGES
from trtdeploy.calibration.prompts import SEGMENTATION_PROMPTS
from trtdeploy.models.clipseg import reference_processor
from trtdeploy.runtime.bench import LatencyStats, time_blocks
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import ArtifactError, InputValidationError
from trtdeploy.runtime.pipelines.clipseg import ClipSegPipeline
from trtdeploy.runtime.preprocess import ImagePreprocess

BENCH_IMAGE = EVALUATION_IMAGES[0]  # chelsea: a 451 x 300 photograph of a cat


@dataclass(frozen=True)
class SegmentRow:
    prompts: int
    engine: LatencyStats
    reference: LatencyStats

    @property
    def ratio(self) -> float:
        """Engine median / PyTorch eager median: below 1 is faster than eager."""
        return self.engine.p50 / self.reference.p50

    def to_json(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "engine": self.engine.to_json(),
            "pytorch_eager": self.reference.to_json(),
            "ratio_p50": self.ratio,
        }


def bench_segment(
    bundle: Bundle,
    prompt_counts: Sequence[int],
    *,
    target: str,
    threads: int | None = None,
    iterations: int = 3,
    warmup: int = 1,
    blocks: int = 2,
    weights: Path | None = None,
) -> list[SegmentRow]:
    """One row per prompt count: segment() against the documented eager forward on one image."""
    if bundle.manifest.pipeline != "clipseg":
        raise ArtifactError(
            f"{bundle.root} is a {bundle.manifest.pipeline!r} bundle; the per-prompt benchmark segments "
            "with CLIPSeg bundles only (drop --prompts to time its components)."
        )
    too_many = [p for p in prompt_counts if not 1 <= p <= len(SEGMENTATION_PROMPTS)]
    if too_many:
        raise InputValidationError(
            f"--prompts takes counts from 1 to {len(SEGMENTATION_PROMPTS)} (the built-in segmentation "
            f"prompts), got {too_many}."
        )
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model: Any = load_reference(bundle, weights).model
    pipeline = ClipSegPipeline.from_bundle(bundle, target, threads=threads)
    config = bundle.read_json(bundle.manifest.assets["pipeline"])
    processor = reference_processor(
        ImagePreprocess.from_json(config["preprocess"]), bundle.asset("tokenizer")
    )
    image = BENCH_IMAGE.load()
    rows = []
    for count in prompt_counts:
        prompts = list(SEGMENTATION_PROMPTS[:count])

        def ours(prompts: list[str] = prompts) -> object:
            return pipeline.segment(image, prompts)

        def eager(prompts: list[str] = prompts) -> object:
            with torch.inference_mode():
                inputs = processor(
                    text=prompts, images=[image] * len(prompts), padding=True, return_tensors="pt"
                )
                return torch.sigmoid(model(**inputs).logits)

        samples = time_blocks(
            {"engine": ours, "reference": eager}, iterations=iterations, warmup=warmup, blocks=blocks
        )
        rows.append(
            SegmentRow(
                count,
                LatencyStats.from_seconds(samples["engine"]),
                LatencyStats.from_seconds(samples["reference"]),
            )
        )
    return rows


def rows_to_markdown(rows: Sequence[SegmentRow], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| prompts | engine p50 ms | engine p90 ms | eager p50 ms | eager p90 ms | ratio (p50) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.prompts} | {r.engine.p50:.1f} | {r.engine.p90:.1f} | {r.reference.p50:.1f} | "
            f"{r.reference.p90:.1f} | {r.ratio:.2f}× |"
        )
    return "\n".join(lines) + "\n"
