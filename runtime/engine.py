"""One interface for every backend: named numpy arrays in, named numpy arrays out.

ONNX Runtime, TensorRT and the PyTorch reference (which lives with its recipe) all subclass
``Engine``, so the comparator, the pipelines and the benchmark never know which one they hold.
Feeds are validated here, before the backend sees them, so every backend rejects the same bad
input with the same message.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from trtdeploy.runtime.errors import InputValidationError, NumericalError
from trtdeploy.runtime.specs import IOSpec, TensorSpec, validate_feeds


@dataclass(frozen=True)
class Resident:
    """An output an engine keeps for a later call instead of handing it back as numpy (a decoder's
    KV cache): an OrtValue, a TensorRT device buffer, or the array itself where the backend has no
    memory of its own. ``owner`` is the engine family that can read ``handle``."""

    shape: tuple[int, ...]
    dtype: str
    handle: Any
    owner: str


class Engine(abc.ABC):
    """A loaded component, ready to run."""

    # What a Resident made by this engine holds; engines of one backend read each other's.
    resident_kind = "numpy"

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

    def run(self, feeds: Mapping[str, Any], *, check_finite: bool = True) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the input specs, run the backend, return outputs by name.

        Outputs holding NaN or Inf raise NumericalError unless ``check_finite`` is False
        (verification, which reports them in its table instead).
        """
        checked = validate_feeds(self.component, self.io, feeds, allow_non_finite=self.allow_non_finite)
        outputs = self._run(checked)
        if check_finite:
            check_finite_outputs(self.component, outputs, checked)
        return outputs

    def run_resident(
        self,
        feeds: Mapping[str, Any],
        resident: Mapping[str, Resident],
        keep: Collection[str] = (),
    ) -> tuple[dict[str, np.ndarray], dict[str, Resident]]:
        """``run`` for a step of a loop: the inputs in ``resident`` are tensors an engine of this
        backend produced before (their shapes are checked, their values are not scanned again),
        and the outputs named in ``keep`` stay in the backend as Residents for the next step.
        Returns (the other outputs as numpy, the kept outputs)."""
        foreign = sorted(n for n, r in resident.items() if r.owner != self.resident_kind)
        if foreign:
            raise InputValidationError(
                f"{self.component}: inputs {foreign} are held by another backend than this engine's "
                f"({self.resident_kind}); pass them as numpy arrays instead."
            )
        unknown = sorted(set(keep) - set(self.io.output_names))
        if unknown:
            raise InputValidationError(
                f"{self.component}: cannot keep {unknown}; its outputs are {list(self.io.output_names)}."
            )
        wanted = {spec.name: spec.dtype for spec in self.inputs}
        mistyped = sorted(
            f"{n} is {r.dtype}" for n, r in resident.items() if wanted.get(n, r.dtype) != r.dtype
        )
        if mistyped:
            raise InputValidationError(
                f"{self.component}: kept inputs of the wrong type ({', '.join(mistyped)}); the graph takes "
                f"{ {n: wanted[n] for n in resident if n in wanted} }."
            )
        shapes = {name: r.shape for name, r in resident.items()}
        checked = validate_feeds(
            self.component, self.io, feeds, allow_non_finite=self.allow_non_finite, resident=shapes
        )
        return self._run_resident(checked, resident, keep)

    def _run_resident(
        self, feeds: dict[str, np.ndarray], resident: Mapping[str, Resident], keep: Collection[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, Resident]]:
        """Backends without memory of their own: residents are numpy arrays passed straight through."""
        outputs = self._run({**feeds, **{name: r.handle for name, r in resident.items()}})
        check_finite_outputs(self.component, {n: v for n, v in outputs.items() if n not in keep}, feeds)
        kept = {
            name: Resident(
                tuple(outputs[name].shape), str(outputs[name].dtype), outputs[name], self.resident_kind
            )
            for name in keep
        }
        return {n: v for n, v in outputs.items() if n not in kept}, kept

    def keep(self, array: np.ndarray) -> Resident:
        """A host array made resident for this engine's backend (uploaded once, e.g. a cross-attention
        cache expanded over beams), to pass in ``run_resident`` like one it produced."""
        array = np.ascontiguousarray(array)
        return Resident(tuple(array.shape), str(array.dtype), self._upload(array), self.resident_kind)

    def _upload(self, array: np.ndarray) -> Any:
        return array

    def run_in_chunks(self, feeds: Mapping[str, Any], *, check_finite: bool = True) -> dict[str, np.ndarray]:
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
            return self.run(feeds, check_finite=check_finite)
        dim = too_big[0]
        out_axes = {spec.name: spec.shape.index(dim) for spec in self.outputs if dim in spec.shape}
        if len(out_axes) != len(self.outputs):
            return self.run(feeds, check_finite=check_finite)
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
            parts.append(self.run_in_chunks(chunk, check_finite=check_finite))
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


def check_finite_outputs(
    component: str, outputs: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]
) -> None:
    """Raise NumericalError naming every output that holds NaN or Inf, with the inputs' range."""
    bad = {}
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating):
            count = int(value.size - np.count_nonzero(np.isfinite(value)))
            if count:
                bad[name] = count
    if not bad:
        return
    ranges = ", ".join(
        f"{n} in [{float(np.min(v)):.3g}, {float(np.max(v)):.3g}]"
        for n, v in feeds.items()
        if np.issubdtype(v.dtype, np.floating) and v.size
    )
    listed = ", ".join(f"{n} ({c} values)" for n, c in bad.items())
    raise NumericalError(
        f"{component}: the outputs {listed} hold NaN or Inf. The inputs ({ranges or 'integer only'}) drive the "
        "graph out of its number range: check the inputs are preprocessed as the bundle's pipeline does "
        "(e.g. pixels normalised, not raw 0-255 or larger), or verify the bundle (trtdeploy verify)."
    )
