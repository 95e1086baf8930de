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

    def run_in_chunks(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``run``, split along the batch dim when the feeds hold more rows than the profile's
        maximum (a verification set may be larger than one call admits), outputs concatenated.
        Only a component whose every input and output leads with the same dim is split."""
        leading = {spec.shape[0] for spec in (*self.inputs, *self.outputs) if spec.shape}
        dim = next(iter(leading)) if len(leading) == 1 else None
        if not isinstance(dim, str):
            return self.run(feeds)
        most = self.io.dims[dim].max
        rows = len(next(iter(feeds.values())))
        if rows <= most:
            return self.run(feeds)
        parts = [self.run({k: v[i : i + most] for k, v in feeds.items()}) for i in range(0, rows, most)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

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
