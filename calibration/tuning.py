"""How the INT8 fallback judges a candidate: the bundle's own budget, on calibration data.

The held-out evaluation set decides whether a build passes, so it must not also steer which
layers stay in FP16; candidates are judged on the last calibration samples of every source component
against what the FP32 graphs make of it, run through the pipeline's flow (a chained component is
fed what the FP32 graphs of the components before it give), exactly as verification judges a
bundle against the PyTorch reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from trtdeploy.calibration.data import CalibrationSet
from trtdeploy.runtime.bundle import Manifest
from trtdeploy.runtime.executor import Executor, ReferenceSet
from trtdeploy.runtime.onnxruntime_backend import OrtSettings
from trtdeploy.runtime.pipelines import pipeline_class
from trtdeploy.runtime.verify import verify


class TuningEvaluator:
    """Callable(graphs by component) -> (meets the budget?, one-line summary)."""

    def __init__(
        self,
        manifest: Manifest,
        fp32_graphs: Mapping[str, Path],
        calibration: CalibrationSet,
        target: str,
        threads: int | None = None,
        samples: int | None = None,
    ) -> None:
        """``samples``: how many of the last calibration samples the candidates are judged on (None:
        the last batch)."""
        # The ground truth labels the bundle's reference images, not this calibration batch.
        config = {k: v for k, v in manifest.pipeline_config.items() if k != "ground_truth"}
        self.manifest = dataclasses.replace(manifest, pipeline_config=config)
        self.settings = OrtSettings(target=target, threads=threads)
        self.interfaces = {e.name: e.io for e in manifest.components}
        pipeline = pipeline_class(manifest.pipeline)
        sources = {c: _last(list(calibration.batches(c)), samples) for c in pipeline.sources}
        with Executor.for_graphs(self.interfaces, fp32_graphs, self.settings) as fp32:
            runs = pipeline.flow(fp32, sources, config)
            tasks = pipeline.tuning_tasks(fp32, runs, config)
        self.reference = ReferenceSet(runs.inputs, runs.outputs, tasks)

    def __call__(self, graphs: Mapping[str, Path]) -> tuple[bool, str]:
        with Executor.for_graphs(self.interfaces, graphs, self.settings) as candidate:
            report = verify(self.manifest, candidate, self.reference, self.settings.target, form="tuning")
        parts = []
        if report.comparisons:
            worst = min(report.comparisons, key=lambda c: c.cosine)
            parts.append(f"worst cos {worst.cosine:.5f} ({worst.component}/{worst.output})")
        parts += [f"{t.name} {t.value:.3f}" for t in report.tasks]
        return report.passed, ", ".join(parts)


def _last(batches: list[dict[str, np.ndarray]], samples: int | None) -> dict[str, np.ndarray]:
    """The last ``samples`` samples of the calibration batches (the recipe pads them alike: same
    names and trailing dims), or the last batch."""
    if samples is None:
        return batches[-1]
    kept: list[dict[str, np.ndarray]] = []
    count = 0
    for batch in reversed(batches):
        kept.insert(0, batch)
        count += len(next(iter(batch.values())))
        if count >= samples:
            break
    return {name: np.concatenate([b[name] for b in kept])[-samples:] for name in kept[0]}
