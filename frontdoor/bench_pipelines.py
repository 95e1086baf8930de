"""Whole-pipeline figures per model: what a user's call costs end to end, against the way the
transformers documentation runs the same model in PyTorch, in the same run.

CLIP: zero-shot classification against a list of labels. Ours: numpy/PIL preprocessing,
`tokenizers`, both engines. Eager: CLIPProcessor (CLIPImageProcessor, PIL backend, + CLIPTokenizer)
and CLIPModel.forward on the image(s) and every label, softmax over the labels, each call. Rows:
a batch of real images with the label embeddings computed in every call (images/s), and one image
with the label embeddings cold (the pipeline's text cache cleared before each call: both engines
run) and warm (cached by the warm-up: only the vision engine runs), which is what a service that
classifies against a fixed label set pays per request.

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

import numpy as np
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
        engine, reference, _ = self.timed(ours, eager)
        return engine, reference

    def timed(
        self, ours: Callable[[], object], eager: Callable[[], object]
    ) -> tuple[LatencyStats, LatencyStats, tuple[float, ...]]:
        """Both sides' latency and the p50 ratio of each block pair (the run's own noise, which a
        regression baseline's tolerance is made from)."""
        samples = time_blocks(
            {"engine": ours, "reference": eager},
            iterations=self.iterations,
            warmup=self.warmup,
            blocks=self.blocks,
        )
        engine, reference = samples["engine"], samples["reference"]
        n = self.iterations
        ratios = tuple(
            float(np.median(engine[i : i + n]) / np.median(reference[i : i + n]))
            for i in range(0, len(engine), n)
        )
        return LatencyStats.from_seconds(engine), LatencyStats.from_seconds(reference), ratios


@dataclass(frozen=True)
class PipelineRow:
    name: str
    items: int  # units of work per call (images, prompts), for the throughput columns
    unit: str
    engine: LatencyStats
    reference: LatencyStats
    # CLIP zero-shot: "cold" (label embeddings computed in the timed call) or "warm" (cached
    # before it); "" where the row involves no label cache.
    label_cache: str = ""
    block_ratios: tuple[float, ...] = ()  # p50 ratio of each engine/eager block pair
    # Generation: the share of eager FP32's tokens ours reproduce position by position (1.0 for an
    # FP32 bundle, which must give the very tokens); None where the row generates nothing.
    token_agreement: float | None = None

    @property
    def ratio(self) -> float:
        return self.engine.p50 / self.reference.p50

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "items": self.items,
            "unit": self.unit,
            "label_cache": self.label_cache,
            "block_ratios": list(self.block_ratios),
            "token_agreement": self.token_agreement,
            "engine": self.engine.to_json(),
            "pytorch_eager": self.reference.to_json(),
            "ratio_p50": self.ratio,
            "engine_per_s": 1000 * self.items / self.engine.p50,
            "eager_per_s": 1000 * self.items / self.reference.p50,
        }


def clip_zero_shot(ctx: PipelineBenchContext) -> list[PipelineRow]:
    from trtdeploy.runtime.pipelines.clip import ClipPipeline, softmax

    images = load_images(EVALUATION_IMAGES)
    labels = list(EVALUATION_PROMPTS)
    processor = clip_reference_processor(ctx.bundle)
    model: Any = ctx.loaded.model
    # One pipeline (one set of sessions) for every row; its text cache is what the rows vary.
    with ClipPipeline.from_bundle(ctx.bundle, ctx.target, threads=ctx.threads) as pipeline:

        def batch_ours() -> object:
            pipeline.clear_text_cache()  # every call encodes the labels, as eager does
            return [softmax(row) for row in pipeline.logits(images, labels)]  # (images, labels)

        def eager(batch: list[Any]) -> object:
            with torch.inference_mode():
                inputs = processor(text=labels, images=batch, padding=True, return_tensors="pt")
                return model(**inputs).logits_per_image.softmax(dim=-1)  # (images, labels)

        engine, reference, blocks = ctx.timed(batch_ours, lambda: eager(images))
        rows = [
            PipelineRow(
                f"zero-shot: {len(images)} images × {len(labels)} labels",
                len(images),
                "images",
                engine,
                reference,
                block_ratios=blocks,
            )
        ]
        image = images[0]

        def cold() -> object:
            pipeline.clear_text_cache()
            return pipeline.zero_shot(image, labels)

        def warm() -> object:
            return pipeline.zero_shot(image, labels)

        for state, ours in (("cold", cold), ("warm", warm)):
            ours()  # warm: fills the cache even if a block has no warm-up call
            engine, reference, blocks = ctx.timed(ours, lambda: eager([image]))
            name = f"zero-shot: 1 image × {len(labels)} labels, label embeddings {state}"
            rows.append(
                PipelineRow(name, 1, "images", engine, reference, label_cache=state, block_ratios=blocks)
            )
    return rows


def clip_reference_processor(bundle: Bundle) -> Any:
    """The transformers CLIPProcessor for a bundle: its preprocessing constants and tokenizer."""
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessorPil, CLIPProcessor, CLIPTokenizer, PreTrainedTokenizerFast

    config = bundle.manifest.pipeline_config
    size = int(config["preprocess"]["size"])
    images = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    tokenizer_json = bundle.asset("tokenizer")
    if json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["type"] == "BPE":
        tokenizer: Any = CLIPTokenizer(tokenizer_file=str(tokenizer_json))
    else:  # a model's own vocabulary (the shapes models): the generic fast tokenizer reads it
        pad = Tokenizer.from_file(str(tokenizer_json)).id_to_token(int(config["pad_id"]))
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), pad_token=pad)
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


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

        engine, reference, blocks = ctx.timed(ours, eager)
        name = f"segment: 1 image × {count} prompts"
        rows.append(PipelineRow(name, count, "prompts", engine, reference, block_ratios=blocks))
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
