"""How the INT8 fallback judges a candidate: the bundle's own budget, on calibration data.

The held-out evaluation set decides whether a build passes, so it must not also steer which
layers stay in FP16; candidates are judged on the last calibration batch of every component
against the FP32 graph's outputs on that batch (a chained component, fed by others, on what the
FP32 graphs of those give).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from trtdeploy.calibration.data import CalibrationSet
from trtdeploy.runtime.bundle import Manifest
from trtdeploy.runtime.onnxruntime_backend import OrtEngine, OrtSettings
from trtdeploy.runtime.pipelines import pipeline_class
from trtdeploy.runtime.verify import Outputs, run_graphs


class TuningEvaluator:
    """Callable(graphs by component) -> (meets the budget?, one-line summary)."""

    def __init__(
        self,
        manifest: Manifest,
        fp32_graphs: Mapping[str, Path],
        calibration: CalibrationSet,
        target: str,
        threads: int | None = None,
    ) -> None:
        # The ground truth labels the bundle's reference images, not this calibration batch.
        config = {k: v for k, v in manifest.pipeline_config.items() if k != "ground_truth"}
        self.manifest = dataclasses.replace(manifest, pipeline_config=config)
        self.settings = OrtSettings(target=target, threads=threads)
        pipeline = pipeline_class(manifest.pipeline)
        recorded = [c for c in fp32_graphs if c not in pipeline.chained]
        self.inputs: Outputs = {c: list(calibration.batches(c))[-1] for c in recorded}
        self.reference: Outputs = {c: self._fp32(c, fp32_graphs[c]) for c in recorded}
        # A chained component (CLIPSeg's decoder) is fed the FP32 outputs of the components that
        # feed it, as verification feeds it the reference's, so its reference is end to end too.
        chained = pipeline.chained_feeds(self.reference)
        for component in pipeline.chained:
            self.inputs[component] = chained[component]
            self.reference[component] = self._fp32(component, fp32_graphs[component])

    def _fp32(self, component: str, path: Path) -> dict[str, np.ndarray]:
        with OrtEngine(component, path, self.manifest.component(component).io, self.settings) as engine:
            return engine.run_in_chunks(self.inputs[component])

    def __call__(self, graphs: Mapping[str, Path]) -> tuple[bool, str]:
        report = run_graphs(self.manifest, graphs, self.inputs, self.reference, self.settings, form="tuning")
        parts = [f"{c.component}/{c.output} cos {c.cosine:.5f}" for c in report.comparisons]
        parts += [f"{t.name} {t.value:.3f}" for t in report.tasks]
        return report.passed, ", ".join(parts)
