"""Compare engine outputs with reference outputs, per output, the same way for every backend.

Three numbers per output (cosine similarity, max abs error, fraction of elements outside
atol + rtol·|ref|) against a per-output tolerance; NaN or Inf anywhere fails, whatever the
tolerance. Budgets are plain data so a bundle carries them to the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """What one output must meet. ``max_outside`` is a fraction in [0, 1].

    ``atol_of_max`` reads ``atol`` as a fraction of the reference's largest |value|: for outputs
    whose scale depends on the weights (random-weight CLIPSeg logits reach thousands, trained ones
    tens), where float rounding near zero is a share of that scale, not a fixed amount.
    """

    cosine_min: float
    atol: float
    rtol: float
    max_outside: float = 0.0
    atol_of_max: bool = False

    def absolute_atol(self, reference: np.ndarray) -> float:
        if not self.atol_of_max:
            return self.atol
        return self.atol * float(np.max(np.abs(reference))) if reference.size else 0.0

    def describe_atol(self) -> str:
        return f"{self.atol:g}·max|ref|" if self.atol_of_max else f"{self.atol:g}"

    def to_json(self) -> dict[str, float | bool]:
        return {
            "cosine_min": self.cosine_min,
            "atol": self.atol,
            "rtol": self.rtol,
            "max_outside": self.max_outside,
            "atol_of_max": self.atol_of_max,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tolerance:
        return cls(
            float(data["cosine_min"]),
            float(data["atol"]),
            float(data["rtol"]),
            float(data["max_outside"]),
            bool(data.get("atol_of_max", False)),  # bundles written before the field: absolute
        )


@dataclass(frozen=True)
class Budget:
    """The accuracy budget of one model at one precision.

    ``outputs`` maps "component/output" (or "*" as the default) to a tolerance; ``tasks`` maps a
    task metric's name to the minimum it must reach.
    """

    outputs: Mapping[str, Tolerance]
    tasks: Mapping[str, float] = field(default_factory=dict)

    def tolerance_for(self, component: str, output: str) -> Tolerance:
        for key in (f"{component}/{output}", f"{component}/*", "*"):
            if key in self.outputs:
                return self.outputs[key]
        raise KeyError(f"budget has no tolerance for {component}/{output} and no '*' default")

    def to_json(self) -> dict[str, Any]:
        return {"outputs": {k: t.to_json() for k, t in self.outputs.items()}, "tasks": dict(self.tasks)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Budget:
        return cls(
            outputs={k: Tolerance.from_json(v) for k, v in data["outputs"].items()},
            tasks={k: float(v) for k, v in data.get("tasks", {}).items()},
        )


@dataclass(frozen=True)
class OutputComparison:
    """How one output of one component compares with its reference."""

    component: str
    output: str
    tolerance: Tolerance
    cosine: float
    max_abs: float
    mean_abs: float
    outside_fraction: float
    nonfinite: int
    shape_error: str | None = None

    @property
    def failures(self) -> list[str]:
        """Why the output misses its tolerance; empty when it passes."""
        if self.shape_error:
            return [self.shape_error]
        tol, out = self.tolerance, []
        if self.nonfinite:
            out.append(f"{self.nonfinite} NaN/Inf values")
        if not self.cosine >= tol.cosine_min:
            out.append(f"cosine {self.cosine:.6f} < {tol.cosine_min}")
        if not self.outside_fraction <= tol.max_outside:
            out.append(
                f"{self.outside_fraction:.2%} of elements outside atol {tol.describe_atol()} + rtol {tol.rtol:g}·|ref| "
                f"(allowed {tol.max_outside:.2%})"
            )
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "output": self.output,
            "cosine": self.cosine,
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "outside_fraction": self.outside_fraction,
            "nonfinite": self.nonfinite,
            "tolerance": self.tolerance.to_json(),
            "passed": self.passed,
            "failures": self.failures,
        }


def compare_output(
    component: str, output: str, reference: np.ndarray, actual: np.ndarray, tol: Tolerance
) -> OutputComparison:
    """Compare one output; never raises on a mismatch, the result says what went wrong."""
    if reference.shape != actual.shape:
        nan = float("nan")
        return OutputComparison(
            component,
            output,
            tol,
            nan,
            nan,
            nan,
            1.0,
            0,
            shape_error=f"shape {tuple(actual.shape)} != reference shape {tuple(reference.shape)}",
        )
    ref = reference.astype(np.float64).ravel()
    got = actual.astype(np.float64).ravel()
    nonfinite = int(np.count_nonzero(~np.isfinite(got)))
    if ref.size == 0:
        return OutputComparison(component, output, tol, 1.0, 0.0, 0.0, 0.0, nonfinite)
    diff = np.abs(got - ref)
    norm = float(np.linalg.norm(ref) * np.linalg.norm(got))
    # Two all-zero vectors are identical; one all-zero vector against a non-zero one is not.
    cosine = float(np.dot(ref, got) / norm) if norm > 0 else float(np.array_equal(ref, got))
    outside = diff > tol.absolute_atol(ref) + tol.rtol * np.abs(ref)
    return OutputComparison(
        component=component,
        output=output,
        tolerance=tol,
        cosine=cosine,
        max_abs=float(np.max(diff)),
        mean_abs=float(np.mean(diff)),
        # NaN compares False in `outside`; count it as outside explicitly.
        outside_fraction=float(np.count_nonzero(outside | ~np.isfinite(diff)) / ref.size),
        nonfinite=nonfinite,
    )


def compare_outputs(
    component: str,
    reference: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    budget: Budget,
) -> list[OutputComparison]:
    """Compare every reference output of a component; a missing actual output is a failure."""
    results = []
    for name, ref in reference.items():
        tol = budget.tolerance_for(component, name)
        if name not in actual:
            nan = float("nan")
            results.append(
                OutputComparison(component, name, tol, nan, nan, nan, 1.0, 0, shape_error="output missing")
            )
            continue
        results.append(compare_output(component, name, ref, actual[name], tol))
    return results
