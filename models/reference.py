"""The PyTorch reference behind the same Engine interface as ONNX Runtime and TensorRT."""

from __future__ import annotations

import numpy as np
import torch

from trtdeploy.models.recipe import Component
from trtdeploy.runtime.engine import Engine


class TorchEngine(Engine):
    """Runs a component's export wrapper in eager PyTorch (FP32), in inference mode."""

    def __init__(self, component: Component, model: torch.nn.Module) -> None:
        super().__init__(component.name, component.io)
        self.module = component.wrapper(model).eval()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():  # wrappers take their inputs positionally, in the spec's order
            result = self.module(*(torch.from_numpy(feeds[name]) for name in self.io.input_names))
        values = result if isinstance(result, tuple) else (result,)
        return {name: v.numpy() for name, v in zip(self.io.output_names, values, strict=True)}
