"""The export check: ONNX Runtime vs PyTorch on fresh inputs at sizes the trace never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trtdeploy.models.recipe import Component
from trtdeploy.models.reference import TorchEngine
from trtdeploy.runtime.compare import Budget, OutputComparison, Tolerance, compare_outputs
from trtdeploy.runtime.errors import ExportError
from trtdeploy.runtime.onnxruntime_backend import OrtEngine

# An FP32 export differs from PyTorch by float rounding only. A recipe whose outputs need other
# element bounds (CLIPSeg's logits reach thousands) passes its FP32 budget instead.
FP32_EXPORT_TOLERANCE = Tolerance(cosine_min=0.99999, atol=1e-4, rtol=1e-3, max_outside=0.0)
FP32_EXPORT_BUDGET = Budget({"*": FP32_EXPORT_TOLERANCE})


class ExportParity:
    """Stage: run the ONNX file and the PyTorch wrapper on the same random inputs at the
    component's ``check_sizes`` and raise ExportError listing every output that differs."""

    def __init__(
        self,
        component: Component,
        model: torch.nn.Module,
        budget: Budget = FP32_EXPORT_BUDGET,
        seed: int = 4321,
    ) -> None:
        self.component = component
        self.model = model
        self.budget = budget
        self.seed = seed

    def __call__(self, onnx_path: Path) -> list[OutputComparison]:
        component = self.component
        feeds = component.random_inputs(component.check_sizes, np.random.default_rng(self.seed))
        reference = TorchEngine(component, self.model).run(feeds)
        with OrtEngine(component.name, onnx_path, component.io) as engine:
            actual = engine.run(feeds)
        results = compare_outputs(component.name, reference, actual, self.budget)
        failed = [r for r in results if not r.passed]
        if failed:
            lines = "\n  ".join(
                f"{r.output}: {'; '.join(r.failures)} (max abs {r.max_abs:.3g})" for r in failed
            )
            raise ExportError(
                f"{component.name}: ONNX Runtime disagrees with PyTorch at sizes {dict(component.check_sizes)} "
                f"(traced at {dict(component.trace_sizes)}):\n  {lines}"
            )
        return results
