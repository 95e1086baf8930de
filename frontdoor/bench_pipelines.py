"""Whole-pipeline figures per model: what a user's call costs end to end, against the way the
transformers documentation runs the same model in PyTorch.

CLIP: zero-shot classification of a batch of real images against a list of labels, images/s.
Our side: numpy/PIL preprocessing, `tokenizers`, both engines. Eager: CLIPImageProcessor (PIL
backend) + CLIPTokenizer + CLIPModel.forward, softmax over the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images
from trtdeploy.calibration.prompts import EVALUATION_PROMPTS
from trtdeploy.models.recipe import LoadedModel
from trtdeploy.runtime.bench import LatencyStats, time_blocks
from trtdeploy.runtime.bundle import Bundle


@dataclass(frozen=True)
class PipelineRow:
    name: str
    items: int  # units of work per call (images, prompts, tokens), for the throughput column
    unit: str
    engine: LatencyStats
    reference: LatencyStats

    @property
    def ratio(self) -> float:
        return self.engine.p50 / self.reference.p50

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "items": self.items,
            "unit": self.unit,
            "engine": self.engine.to_json(),
            "pytorch_eager": self.reference.to_json(),
            "ratio_p50": self.ratio,
            "engine_per_s": 1000 * self.items / self.engine.p50,
            "eager_per_s": 1000 * self.items / self.reference.p50,
        }


def clip_zero_shot(
    bundle: Bundle, loaded: LoadedModel, target: str, threads: int, timing: dict[str, int]
) -> list[PipelineRow]:
    from transformers import CLIPImageProcessorPil, CLIPTokenizer

    from trtdeploy.runtime.pipelines.clip import ClipPipeline, softmax

    images = load_images(EVALUATION_IMAGES)
    labels = list(EVALUATION_PROMPTS)
    pipeline = ClipPipeline.from_bundle(bundle, target, threads=threads)
    processor = CLIPImageProcessorPil()
    tokenizer = CLIPTokenizer(tokenizer_file=str(bundle.asset("tokenizer")))
    model: Any = loaded.model

    def ours() -> object:
        logits = pipeline.logits(images, labels)  # (images, labels)
        return [softmax(row) for row in logits]

    def eager() -> object:
        with torch.inference_mode():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            text = tokenizer(labels, padding=True, return_tensors="pt")
            return model(pixel_values=pixels, **text).logits_per_image.softmax(dim=-1)

    samples = time_blocks({"engine": ours, "reference": eager}, **timing)
    return [
        PipelineRow(
            f"zero-shot: {len(images)} images × {len(labels)} labels",
            len(images),
            "images",
            LatencyStats.from_seconds(samples["engine"]),
            LatencyStats.from_seconds(samples["reference"]),
        )
    ]


PipelineBench = Callable[[Bundle, LoadedModel, str, int, dict[str, int]], list[PipelineRow]]
PIPELINE_BENCHES: dict[str, PipelineBench] = {"clip": clip_zero_shot}


def bench_pipeline(
    bundle: Bundle, loaded: LoadedModel, target: str, threads: int, timing: dict[str, int]
) -> list[PipelineRow]:
    """The pipeline figures of the bundle's model, or none if its pipeline has no benchmark."""
    bench = PIPELINE_BENCHES.get(bundle.manifest.pipeline)
    return bench(bundle, loaded, target, threads, timing) if bench else []
