"""One interface for every backend: named numpy arrays in, named numpy arrays out.

ONNX Runtime, TensorRT and the PyTorch reference (which lives with its recipe) all subclass
``Engine``, so the comparator, the pipelines and the benchmark never know which one they hold.
Feeds are validated here, before the backend sees them, so every backend rejects the same bad
input with the same message.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np

from trtdeploy.runtime.specs import IOSpec, TensorSpec, validate_feeds


class Engine(abc.ABC):
    """A loaded component, ready to run."""

    def __init__(self, component: str, io: IOSpec, *, allow_non_finite: bool = False) -> None:
        self.component = component
        self.io = io
        self.allow_non_finite = allow_non_finite

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.io.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.io.outputs

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the input specs, run the backend, return outputs by name."""
        checked = validate_feeds(self.component, self.io, feeds, allow_non_finite=self.allow_non_finite)
        return self._run(checked)

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run already-validated, contiguous feeds."""

    def close(self) -> None:  # noqa: B027 - a no-op by default; backends holding resources override it
        """Release backend resources; the engine can't run afterwards."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.component!r}, inputs={list(self.io.input_names)})"
