"""Whole-pipeline figures per model: what a user's call costs end to end, against the way the
transformers documentation runs the same model in PyTorch, in the same run.

CLIP: zero-shot classification of a batch of real images against a list of labels (images/s).
Ours: numpy/PIL preprocessing, `tokenizers`, both engines. Eager: CLIPImageProcessor (PIL backend)
+ CLIPTokenizer + CLIPModel.forward, softmax over the labels.

CLIPSeg: one image segmented with P prompts, for each P asked for (prompts/s). Ours:
ClipSegPipeline.segment (the image encoded once, the decoder over all P prompts, sigmoid, resize
back, threshold). Eager: CLIPSegProcessor(text=prompts, images=[image] * P) and
CLIPSegForImageSegmentation, then a sigmoid: the vision tower runs once per prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images
from trtdeploy.calibration.prompts import EVALUATION_PROMPTS, SEGMENTATION_PROMPTS
from trtdeploy.models.recipe import LoadedModel
from trtdeploy.runtime.bench import LatencyStats, time_blocks
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import InputValidationError


@dataclass(frozen=True)
class PipelineBenchContext:
    bundle: Bundle
    loaded: LoadedModel
    target: str
    threads: int
    iterations: int
    warmup: int
    blocks: int
    prompt_counts: tuple[int, ...] = (1, 3, 8)

    def time(
        self, ours: Callable[[], object], eager: Callable[[], object]
    ) -> tuple[LatencyStats, LatencyStats]:
        samples = time_blocks(
            {"engine": ours, "reference": eager},
            iterations=self.iterations,
            warmup=self.warmup,
            blocks=self.blocks,
        )
        return LatencyStats.from_seconds(samples["engine"]), LatencyStats.from_seconds(samples["reference"])


@dataclass(frozen=True)
class PipelineRow:
    name: str
    items: int  # units of work per call (images, prompts), for the throughput columns
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


def clip_zero_shot(ctx: PipelineBenchContext) -> list[PipelineRow]:
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessorPil, CLIPTokenizer, PreTrainedTokenizerFast

    from trtdeploy.runtime.pipelines.clip import ClipPipeline, softmax

    images = load_images(EVALUATION_IMAGES)
    labels = list(EVALUATION_PROMPTS)
    pipeline = ClipPipeline.from_bundle(ctx.bundle, ctx.target, threads=ctx.threads)
    config = ctx.bundle.manifest.pipeline_config
    size = int(config["preprocess"]["size"])
    processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    tokenizer_json = ctx.bundle.asset("tokenizer")
    if json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["type"] == "BPE":
        tokenizer: Any = CLIPTokenizer(tokenizer_file=str(tokenizer_json))
    else:  # a model's own vocabulary (the shapes models): the generic fast tokenizer reads it
        pad = Tokenizer.from_file(str(tokenizer_json)).id_to_token(int(config["pad_id"]))
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), pad_token=pad)
    model: Any = ctx.loaded.model

    def ours() -> object:
        return [softmax(row) for row in pipeline.logits(images, labels)]  # (images, labels)

    def eager() -> object:
        with torch.inference_mode():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            text = tokenizer(labels, padding=True, return_tensors="pt")
            return model(pixel_values=pixels, **text).logits_per_image.softmax(dim=-1)

    engine, reference = ctx.time(ours, eager)
    return [
        PipelineRow(
            f"zero-shot: {len(images)} images × {len(labels)} labels",
            len(images),
            "images",
            engine,
            reference,
        )
    ]


def clipseg_segment(ctx: PipelineBenchContext) -> list[PipelineRow]:
    from trtdeploy.models.clipseg import reference_processor
    from trtdeploy.runtime.pipelines.clipseg import ClipSegPipeline
    from trtdeploy.runtime.preprocess import ImagePreprocess

    too_many = [p for p in ctx.prompt_counts if not 1 <= p <= len(SEGMENTATION_PROMPTS)]
    if too_many:
        raise InputValidationError(
            f"prompt counts run from 1 to {len(SEGMENTATION_PROMPTS)} (the built-in segmentation prompts), "
            f"got {too_many}."
        )
    pipeline = ClipSegPipeline.from_bundle(ctx.bundle, ctx.target, threads=ctx.threads)
    preprocess = ImagePreprocess.from_json(ctx.bundle.manifest.pipeline_config["preprocess"])
    processor = reference_processor(preprocess, ctx.bundle.asset("tokenizer"))
    model: Any = ctx.loaded.model
    image = EVALUATION_IMAGES[0].load()  # chelsea: a 451 x 300 photograph of a cat
    rows = []
    for count in ctx.prompt_counts:
        prompts = list(SEGMENTATION_PROMPTS[:count])

        def ours(prompts: list[str] = prompts) -> object:
            return pipeline.segment(image, prompts)

        def eager(prompts: list[str] = prompts) -> object:
            with torch.inference_mode():
                inputs = processor(
                    text=prompts, images=[image] * len(prompts), padding=True, return_tensors="pt"
                )
                return torch.sigmoid(model(**inputs).logits)

        engine, reference = ctx.time(ours, eager)
        rows.append(PipelineRow(f"segment: 1 image × {count} prompts", count, "prompts", engine, reference))
    return rows


def florence2_generation(ctx: PipelineBenchContext) -> list[PipelineRow]:
    from trtdeploy.bench_florence2 import florence2_generation as rows

    return rows(ctx)


PIPELINE_BENCHES: dict[str, Callable[[PipelineBenchContext], list[PipelineRow]]] = {
    "clip": clip_zero_shot,
    "clipseg": clipseg_segment,
    "florence2": florence2_generation,
}


def bench_pipeline(ctx: PipelineBenchContext) -> list[PipelineRow]:
    """The pipeline figures of the bundle's model, or none if its pipeline has no benchmark."""
    bench = PIPELINE_BENCHES.get(ctx.bundle.manifest.pipeline)
    return bench(ctx) if bench else []
