"""What a Florence-2 bundle is verified on: the held-out images, the generation cases asked of
them, and transformers' own generate() answers to each case (the task references).

A random-weight preset answers every task on the held-out photographs with its lengths forced (its
answers mean nothing; the loop is compared over many steps). The trained shapes model answers
<CAPTION> and <OD> on its card's 32-image test slice, greedy as its generation config says (scored
against the ground truth) and with beam search.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trtdeploy.calibration import shapes
from trtdeploy.models.recipe import LoadedModel
from trtdeploy.runtime.florence2_tasks import build_prompt
from trtdeploy.runtime.pipelines.florence2 import Florence2Layout

# Every task once, on the held-out photographs of a random-weight preset (which generates nothing
# meaningful: lengths are forced below). Region tasks ask about a box in the middle of the image.
REGION = "<loc_250><loc_250><loc_750><loc_750>"
GENERATION_TASKS: tuple[tuple[str, str | None], ...] = (
    ("<CAPTION>", None),
    ("<DETAILED_CAPTION>", None),
    ("<MORE_DETAILED_CAPTION>", None),
    ("<OD>", None),
    ("<DENSE_REGION_CAPTION>", None),
    ("<REGION_PROPOSAL>", None),
    ("<OCR>", None),
    ("<OCR_WITH_REGION>", None),
    ("<CAPTION_TO_PHRASE_GROUNDING>", "a cat sitting on a sofa"),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", "the cat"),
    ("<REGION_TO_SEGMENTATION>", REGION),
    ("<OPEN_VOCABULARY_DETECTION>", "a cat"),
    ("<REGION_TO_CATEGORY>", REGION),
    ("<REGION_TO_DESCRIPTION>", REGION),
    ("<REGION_TO_OCR>", REGION),
)
# Random weights end generation at once; these force a length, so the loop is compared over many
# steps (min < max: EOS may still come at the last steps).
FORCED_LENGTH = {"min_new_tokens": 8, "max_new_tokens": 10}
# A greedy run of a few cases too, beside the checkpoint's beam search.
GREEDY = {"num_beams": 1, **FORCED_LENGTH}
# The trained shapes model: the card's 32-image test slice, each image asked <CAPTION> and <OD>,
# with its own (greedy) generation config, which is scored against the truth, and with beam search.
SHAPES_REFERENCE_IMAGES = 32
SHAPES_TASKS = ("<CAPTION>", "<OD>")
SHAPES_BEAMS = {"num_beams": 3, "no_repeat_ngram_size": 3}


@dataclass(frozen=True)
class GenerationCase:
    image: int  # index into the reference images
    task: str
    text: str | None
    settings: Mapping[str, Any]  # overrides of the checkpoint's generation config
    scored: bool = False  # counts for the ground-truth metrics


def generation_cases(loaded: LoadedModel, images: int) -> list[GenerationCase]:
    if loaded.trained_on_shapes:
        return [
            GenerationCase(i, task, None, settings, scored=not settings)
            for settings in ({}, SHAPES_BEAMS)
            for task in SHAPES_TASKS
            for i in range(images)
        ]
    cases = [
        GenerationCase(k % images, task, text, FORCED_LENGTH)
        for k, (task, text) in enumerate(GENERATION_TASKS)
    ]
    cases += [
        GenerationCase(k % images, task, text, GREEDY) for k, (task, text) in enumerate(GENERATION_TASKS[:3])
    ]
    return cases


@functools.cache
def shapes_reference_samples() -> tuple[shapes.ShapesSample, ...]:
    return tuple(shapes.samples("evaluation", 0, SHAPES_REFERENCE_IMAGES))


def build_case_prompt(case: GenerationCase) -> str:
    return build_prompt(case.task, case.text)


def reference_generations(
    model: Any,
    layout: Florence2Layout,
    pixels: np.ndarray,
    prompts: Mapping[str, np.ndarray],
    cases: Sequence[GenerationCase],
) -> list[np.ndarray]:
    """transformers' generate() per case, as the documentation runs Florence-2: the processor's
    layout (N image placeholders, then <s> prompt </s>) with the pixels, and the bundle's generation
    settings (its padding rows suppressed, as the runtime suppresses them). Cases with the same
    prompt and settings run as one batch."""
    from transformers import GenerationConfig

    image_id = int(model.config.image_token_id)
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for k, case in enumerate(cases):
        ids = tuple(int(i) for i in prompts["input_ids"][k][prompts["attention_mask"][k].astype(bool)])
        groups.setdefault((json.dumps(dict(case.settings), sort_keys=True), ids), []).append(k)
    out: list[np.ndarray | None] = [None] * len(cases)
    with torch.inference_mode():
        for (setting, ids), members in groups.items():
            settings = layout.settings(json.loads(setting))
            config = GenerationConfig(**generate_kwargs(layout, json.loads(setting), settings))
            input_ids = torch.tensor([[image_id] * layout.image_tokens + list(ids)] * len(members))
            generated = model.generate(
                input_ids=input_ids,
                pixel_values=torch.from_numpy(pixels[[cases[k].image for k in members]]),
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
            )
            for k, row in zip(members, generated.numpy(), strict=True):
                out[k] = trim_generated(row, settings.eos_token_ids, settings.pad_token_id)
    return [row for row in out if row is not None]


def generate_kwargs(layout: Florence2Layout, overrides: Mapping[str, Any], settings: Any) -> dict[str, Any]:
    kwargs = {**layout.generation_config, **overrides}
    if settings.suppress_tokens:
        kwargs["suppress_tokens"] = list(settings.suppress_tokens)
    return kwargs


def trim_generated(row: np.ndarray, eos: Sequence[int], pad: int | None) -> np.ndarray:
    """generate()'s row without the padding after EOS (the start token and EOS kept)."""
    for k in range(1, len(row)):
        if int(row[k]) in eos:
            return row[: k + 1].astype(np.int64)
    return row.astype(np.int64)


def shapes_ground_truth() -> dict[str, Any]:
    samples = shapes_reference_samples()
    return {
        "image_size": [shapes.IMAGE_SIZE, shapes.IMAGE_SIZE],
        "captions": [s.caption for s in samples],
        "boxes": [s.boxes.astype(float).tolist() for s in samples],
        "box_labels": [list(s.box_labels) for s in samples],
    }
