"""Tensor specs, shape profiles and the input validator every engine runs before its backend.

A component's interface is data: input/output names, dtypes, shapes whose dynamic dims are named
symbols, and one min/opt/max range per symbol. The same spec drives the ONNX export's dynamic
axes, the TensorRT optimization profile and the runtime's input checks, so the three can't drift.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtdeploy.runtime.errors import InputValidationError

Dim = int | str  # a static size, or the name of a dynamic dim ("batch", "sequence")


@dataclass(frozen=True)
class DimRange:
    """The sizes one dynamic dim may take; ``opt`` is what TensorRT tunes for. A dim may be 0 (an
    empty self-attention past before the first generated token); ``opt`` never is, since a
    profile tuned for empty tensors tunes nothing."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (0 <= self.min <= self.opt <= self.max and self.opt >= 1):
            raise ValueError(f"dim range needs 0 <= min <= opt <= max and opt >= 1, got {self}")


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a component's interface.

    ``value_range`` (inclusive) bounds the values of integer inputs such as token ids, so an id
    outside the vocabulary is rejected instead of read out of bounds by a Gather.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    value_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        np.dtype(self.dtype)  # raises TypeError on an unknown dtype name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.value_range is not None:
            out["value_range"] = list(self.value_range)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        value_range = data.get("value_range")
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            shape=tuple(d if isinstance(d, str) else int(d) for d in data["shape"]),
            value_range=(int(value_range[0]), int(value_range[1])) if value_range else None,
        )


@dataclass(frozen=True)
class IOSpec:
    """The whole interface of one component (one graph).

    ``sample_dims`` name the dims whose indices are independent samples (images, image × prompt
    pairs): verification judges each sample of an output along its leading axes of these dims. By
    default an output's first axis is its sample axis when that axis is dynamic.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: Mapping[str, DimRange] = field(default_factory=dict)
    sample_dims: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for spec in (*self.inputs, *self.outputs):
            for dim in spec.shape:
                if isinstance(dim, str) and dim not in self.dims:
                    raise ValueError(f"{spec.name}: dim {dim!r} has no range in {sorted(self.dims)}")
        unknown = [d for d in self.sample_dims if d not in self.dims]
        if unknown:
            raise ValueError(f"sample dims {unknown} have no range in {sorted(self.dims)}")

    def sample_axes(self) -> dict[str, int]:
        """Per output, how many of its leading axes index samples."""
        out = {}
        for spec in self.outputs:
            if self.sample_dims:
                axes = 0
                while axes < len(spec.shape) and spec.shape[axes] in self.sample_dims:
                    axes += 1
            else:
                axes = 1 if spec.shape and isinstance(spec.shape[0], str) else 0
            out[spec.name] = axes
        return out

    @property
    def input_dims(self) -> tuple[str, ...]:
        """The dynamic dims the inputs carry (an output may carry others, derived from these)."""
        return tuple(dict.fromkeys(d for s in self.inputs for d in s.shape if isinstance(d, str)))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def shape_for(self, spec: TensorSpec, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape of ``spec`` when each dynamic dim takes its size from ``sizes``."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)

    def profile_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """min/opt/max shape per input, as a TensorRT optimization profile wants them."""
        lo = {k: r.min for k, r in self.dims.items()}
        opt = {k: r.opt for k, r in self.dims.items()}
        hi = {k: r.max for k, r in self.dims.items()}
        return {
            s.name: (self.shape_for(s, lo), self.shape_for(s, opt), self.shape_for(s, hi))
            for s in self.inputs
        }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "dims": {k: {"min": r.min, "opt": r.opt, "max": r.max} for k, r in self.dims.items()},
        }
        if self.sample_dims:
            out["sample_dims"] = list(self.sample_dims)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IOSpec:
        return cls(
            inputs=tuple(TensorSpec.from_json(s) for s in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(s) for s in data["outputs"]),
            dims={k: DimRange(int(v["min"]), int(v["opt"]), int(v["max"])) for k, v in data["dims"].items()},
            sample_dims=tuple(str(d) for d in data.get("sample_dims", ())),
        )


def validate_feeds(
    component: str,
    io: IOSpec,
    feeds: Mapping[str, Any],
    *,
    allow_non_finite: bool = False,
    resident: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Check ``feeds`` against ``io`` and return them as C-contiguous arrays.

    Everything a backend might let through is checked here, identically for every backend:
    names, types, dtypes, ranks, static dims, dynamic dims against their range and against each
    other, integer value ranges, and NaN/Inf in floating inputs.

    ``resident`` names inputs the engine itself produced on an earlier call and still holds (a
    decoder's KV cache), with their shapes: their dims are checked against the profile and the
    other inputs, but their values are not scanned again, and they are not in the result.
    """
    where = f"{component}: input"
    if not isinstance(feeds, Mapping):
        raise InputValidationError(
            f"{component}: expected a mapping of input name to numpy array, got {type(feeds).__name__}."
        )
    resident = resident or {}
    expected = io.input_names
    missing = [n for n in expected if n not in feeds and n not in resident]
    extra = [n for n in [*feeds, *resident] if n not in expected]
    extra += [n for n in feeds if n in resident]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        for name in extra:
            hint = difflib.get_close_matches(str(name), expected, n=1)
            parts.append(f"unexpected {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        raise InputValidationError(f"{component}: expected inputs {list(expected)}; {'; '.join(parts)}.")

    seen: dict[str, tuple[int, str]] = {}  # dim symbol -> (size, the input that fixed it)
    checked: dict[str, np.ndarray] = {}
    for spec in io.inputs:
        if spec.name in resident:
            _check_dims(where, io, spec, tuple(resident[spec.name]), seen)
            continue
        array = feeds[spec.name]
        if not isinstance(array, np.ndarray):
            raise InputValidationError(
                f"{where} {spec.name!r}: expected a numpy.ndarray of {spec.dtype}, got "
                f"{type(array).__name__}. Wrap it with np.asarray(value, dtype=np.{spec.dtype})."
            )
        if array.dtype != np.dtype(spec.dtype):
            raise InputValidationError(
                f"{where} {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype}. "
                f"Convert it with .astype(np.{spec.dtype}); the engine never casts silently."
            )
        _check_dims(where, io, spec, tuple(array.shape), seen)
        if np.issubdtype(array.dtype, np.floating) and not allow_non_finite:
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                raise InputValidationError(
                    f"{where} {spec.name!r}: {bad} of {array.size} values are NaN or Inf; "
                    "the engine only accepts finite inputs."
                )
        if spec.value_range is not None and array.size:
            lo, hi = spec.value_range
            amin, amax = int(array.min()), int(array.max())
            if amin < lo or amax > hi:
                raise InputValidationError(
                    f"{where} {spec.name!r}: values must lie in [{lo}, {hi}], got values in [{amin}, {amax}]."
                )
        checked[spec.name] = np.ascontiguousarray(array)
    return checked


def _check_dims(
    where: str, io: IOSpec, spec: TensorSpec, shape: tuple[int, ...], seen: dict[str, tuple[int, str]]
) -> None:
    """Rank, static dims, dynamic dims against their range and against the inputs seen before."""
    if len(shape) != len(spec.shape):
        raise InputValidationError(
            f"{where} {spec.name!r}: expected rank {len(spec.shape)} with shape "
            f"{_shape_text(spec.shape)}, got rank {len(shape)} with shape {shape}."
        )
    for axis, (dim, size) in enumerate(zip(spec.shape, shape, strict=True)):
        if isinstance(dim, int):
            if size != dim:
                raise InputValidationError(
                    f"{where} {spec.name!r}: axis {axis} must be {dim} (shape {_shape_text(spec.shape)}), "
                    f"got {size} in shape {shape}."
                )
            continue
        bounds = io.dims[dim]
        if not bounds.min <= size <= bounds.max:
            raise InputValidationError(
                f"{where} {spec.name!r}: axis {axis} ({dim}) must be between {bounds.min} and "
                f"{bounds.max}, got {size}. The engine's profile covers {dim} in "
                f"[{bounds.min}, {bounds.max}]; split the batch or rebuild with a wider range."
            )
        if dim in seen and seen[dim][0] != size:
            size0, owner = seen[dim]
            raise InputValidationError(
                f"{where} {spec.name!r}: axis {axis} ({dim}) is {size}, but {owner!r} has {dim}={size0}; "
                f"inputs sharing the dim {dim!r} must agree."
            )
        seen.setdefault(dim, (size, spec.name))


def _shape_text(shape: tuple[Dim, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
