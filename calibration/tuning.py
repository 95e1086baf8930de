"""How the INT8 fallback judges a candidate: the bundle's own budget, on calibration data.

The held-out evaluation set decides whether a build passes, so it must not also steer which
layers stay in FP16; candidates are judged on the last calibration batch of every component
against the FP32 graph's outputs on that batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trtdeploy.calibration.data import CalibrationSet
from trtdeploy.runtime.bundle import Manifest
from trtdeploy.runtime.onnxruntime_backend import OrtEngine, OrtSettings
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
        self.manifest = manifest
        self.settings = OrtSettings(target=target, threads=threads)
        self.inputs: Outputs = {c: list(calibration.batches(c))[-1] for c in fp32_graphs}
        self.reference: Outputs = {}
        for component, path in fp32_graphs.items():
            with OrtEngine(component, path, manifest.component(component).io, self.settings) as engine:
                self.reference[component] = engine.run(self.inputs[component])

    def __call__(self, graphs: Mapping[str, Path]) -> tuple[bool, str]:
        report = run_graphs(self.manifest, graphs, self.inputs, self.reference, self.settings, form="tuning")
        parts = [f"{c.component}/{c.output} cos {c.cosine:.5f}" for c in report.comparisons]
        parts += [f"{t.name} {t.value:.3f}" for t in report.tasks]
        return report.passed, ", ".join(parts)
