"""Florence-2's decoder calibration data: the decoder steps of real generations.

One decoder call at the start token shows the INT8 calibration a cache of one position, not what a
decoder sees twenty tokens in. The with-past graph is calibrated instead on the inputs it reads
while the PyTorch reference generates on the calibration images: its own tokens, a self-attention
past that grows step by step and the cross-attention K/V of each image, recorded at a few steps
spread over the answer (the whole generation would repeat the same cross-attention K/V per step).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.executor import ComponentRuns, Executor
from trtdeploy.runtime.pipelines.florence2 import (
    DECODER_WITH_PAST,
    EMBED_TOKENS,
    ENCODER,
    VISION_ENCODER,
    Florence2Layout,
    generate_with,
)

Feeds = dict[str, np.ndarray]

# The steps recorded (1 = the first with-past call), spread over a 20-token answer; greedy, with a
# length forced so that a random-weight preset (which would stop at once) decodes them too.
RECORDED_STEPS = (2, 5, 10, 19)
CALIBRATION_GENERATION = {"num_beams": 1, "min_new_tokens": 19, "max_new_tokens": 20}


class _RecordingEngine(Engine):
    """An engine that hands every call to ``inner`` and keeps the full feeds of the chosen calls."""

    def __init__(self, inner: Engine, calls: Collection[int]) -> None:
        super().__init__(inner.component, inner.io)
        self.inner = inner
        self.wanted = set(calls)
        self.calls = 0
        self.recorded: list[Feeds] = []

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls in self.wanted:
            # The cross-attention K/V are the same arrays at every step: recorded once in memory.
            self.recorded.append(dict(feeds))
        return self.inner._run(feeds)


def decoder_steps(reference: Executor, runs: ComponentRuns, config: Mapping[str, Any]) -> list[Feeds]:
    """The with-past decoder's feeds at RECORDED_STEPS of a greedy generation for each image of
    ``runs`` (the pipeline's flow on the reference), with each image's recorded prompt."""
    layout = Florence2Layout.from_json(config)
    recorder = _RecordingEngine(reference[DECODER_WITH_PAST], RECORDED_STEPS)
    engines = {name: reference[name] for name in reference}
    engines[DECODER_WITH_PAST] = recorder
    prompts = {
        "input_ids": runs.inputs[EMBED_TOKENS]["input_ids"],
        "attention_mask": runs.inputs[ENCODER]["attention_mask"],
    }
    features = runs.outputs[VISION_ENCODER]["image_features"]
    rows = reference[DECODER_WITH_PAST].io.dims["rows"].max
    generate_with(Executor(engines), layout, features, prompts, layout.settings(CALIBRATION_GENERATION), rows)
    return recorder.recorded
