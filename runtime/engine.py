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
        """``run``, split along any dynamic dim whose size in the feeds exceeds the profile's maximum
        (a verification set may be larger than one call admits), outputs concatenated along it.

        A dim is split when every output carries it: inputs that carry it are sliced, the others go
        whole into each call (CLIPSeg's decoder: images split, every prompt in each call; then
        prompts split, every image in each call). Anything else is left to ``run`` to refuse.
        """
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            if spec.name in feeds:
                for axis, dim in enumerate(spec.shape):
                    if isinstance(dim, str) and axis < np.ndim(feeds[spec.name]):
                        sizes.setdefault(dim, int(np.shape(feeds[spec.name])[axis]))
        too_big = [d for d, n in sizes.items() if d in self.io.dims and n > self.io.dims[d].max]
        if not too_big:
            return self.run(feeds)
        dim = too_big[0]
        out_axes = {spec.name: spec.shape.index(dim) for spec in self.outputs if dim in spec.shape}
        if len(out_axes) != len(self.outputs):
            return self.run(feeds)
        in_axes = {spec.name: spec.shape.index(dim) for spec in self.inputs if dim in spec.shape}
        most = self.io.dims[dim].max
        parts = []
        for start in range(0, sizes[dim], most):
            chunk = {
                name: np.take(value, range(start, min(start + most, sizes[dim])), axis=in_axes[name])
                if name in in_axes
                else value
                for name, value in feeds.items()
            }
            parts.append(self.run_in_chunks(chunk))
        return {
            name: np.concatenate([part[name] for part in parts], axis=out_axes[name]) for name in parts[0]
        }

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
