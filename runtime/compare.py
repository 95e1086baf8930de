"""Compare engine outputs with reference outputs, per output, the same way for every backend.

Three numbers per output (cosine similarity, max abs error, fraction of elements outside
atol + rtol·|ref|) against a per-output tolerance, taken over the whole output and again over
each sample in it (each image, each image × prompt pair): a flattened tensor lets one wrong sample
hide among many right ones (one unrelated embedding in 128 still reads cosine 0.992), so every
sample's cosine must meet the tolerance too. NaN or Inf anywhere fails, whatever the tolerance. Budgets are
plain data so a bundle carries them to the device; they name outputs exactly or by pattern
(``decoder/present.*``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
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
        """The tolerance of the most specific key that matches ``component/output``: the exact name,
        then patterns (fnmatch) by how many literal characters they pin, "*" last."""
        name = f"{component}/{output}"
        matching = [key for key in self.outputs if fnmatch.fnmatchcase(name, key)]
        if not matching:
            raise KeyError(f"budget has no tolerance for {name} and no '*' default")
        return self.outputs[max(matching, key=_literal_length)]

    def unmatched_keys(self, names: Iterable[str]) -> list[str]:
        """Output keys that match none of ``names`` ("component/output"): a misspelled key would
        otherwise leave the output it meant at the default tolerance without a word."""
        names = list(names)
        return [k for k in self.outputs if k != "*" and not any(fnmatch.fnmatchcase(n, k) for n in names)]

    def to_json(self) -> dict[str, Any]:
        return {"outputs": {k: t.to_json() for k, t in self.outputs.items()}, "tasks": dict(self.tasks)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Budget:
        return cls(
            outputs={k: Tolerance.from_json(v) for k, v in data["outputs"].items()},
            tasks={k: float(v) for k, v in data.get("tasks", {}).items()},
        )


def _literal_length(pattern: str) -> int:
    return len(pattern) - sum(pattern.count(c) for c in "*?[]")


@dataclass(frozen=True)
class SampleFigures:
    """The worst sample of an output and how many samples miss the tolerance."""

    count: int  # samples in the output (1 when the output is judged whole)
    failed: int
    worst: int  # flat index of the sample with the lowest cosine (or any failing one)
    worst_cosine: float
    worst_max_abs: float
    worst_outside: float

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "failed": self.failed,
            "worst": self.worst,
            "worst_cosine": self.worst_cosine,
            "worst_max_abs": self.worst_max_abs,
            "worst_outside_fraction": self.worst_outside,
        }


NO_SAMPLES = SampleFigures(0, 0, -1, 1.0, 0.0, 0.0)


@dataclass(frozen=True)
class OutputComparison:
    """How one output of one component compares with its reference, whole and per sample."""

    component: str
    output: str
    tolerance: Tolerance
    cosine: float
    max_abs: float
    mean_abs: float
    outside_fraction: float
    nonfinite: int
    shape_error: str | None = None
    samples: SampleFigures = NO_SAMPLES

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
        s = self.samples
        if s.failed:
            out.append(
                f"{s.failed} of {s.count} samples miss the tolerance (worst: sample {s.worst}, cosine "
                f"{s.worst_cosine:.6f}, max abs {s.worst_max_abs:.3g}, {s.worst_outside:.2%} outside)"
            )
        return out

    def describe_worst_sample(self) -> str:
        s = self.samples
        if s.count <= 1:
            return "(whole output)"
        return f"#{s.worst} cos {s.worst_cosine:.6f}, {s.failed}/{s.count} miss"

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
            "samples": self.samples.to_json(),
            "tolerance": self.tolerance.to_json(),
            "passed": self.passed,
            "failures": self.failures,
        }


def compare_output(
    component: str,
    output: str,
    reference: np.ndarray,
    actual: np.ndarray,
    tol: Tolerance,
    sample_axes: int = 0,
) -> OutputComparison:
    """Compare one output, whole and per sample (its first ``sample_axes`` axes index the samples;
    0 judges it whole); never raises on a mismatch, the result says what went wrong."""
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
    atol = tol.absolute_atol(ref)
    # NaN compares False in `outside`; count it as outside explicitly.
    outside = (diff > atol + tol.rtol * np.abs(ref)) | ~np.isfinite(diff)
    axes = min(max(sample_axes, 0), reference.ndim)
    count = int(np.prod(reference.shape[:axes], dtype=np.int64))
    return OutputComparison(
        component=component,
        output=output,
        tolerance=tol,
        cosine=_whole_cosine(ref, got),
        max_abs=float(np.max(diff)),
        mean_abs=float(np.mean(diff)),
        outside_fraction=float(np.count_nonzero(outside) / ref.size),
        nonfinite=nonfinite,
        samples=_sample_figures(
            ref.reshape(count, -1),
            got.reshape(count, -1),
            diff.reshape(count, -1),
            outside.reshape(count, -1),
            tol,
        ),
    )


def _whole_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    norm = float(np.linalg.norm(ref) * np.linalg.norm(got))
    # Two all-zero vectors are identical; one all-zero vector against a non-zero one is not.
    return float(np.dot(ref, got) / norm) if norm > 0 else float(np.array_equal(ref, got))


def _cosine(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """(N,) cosine of each row pair of two (N, K) arrays; two all-zero rows are identical, one
    all-zero row against a non-zero one is not."""
    with np.errstate(invalid="ignore", over="ignore"):
        norm = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        dot = np.einsum("nk,nk->n", ref, got)
        same = np.all(ref == got, axis=1).astype(np.float64)
        return np.where(norm > 0, dot / np.where(norm > 0, norm, 1.0), same)


def _sample_figures(
    ref: np.ndarray, got: np.ndarray, diff: np.ndarray, outside: np.ndarray, tol: Tolerance
) -> SampleFigures:
    """Per-sample figures of (N, K) rows: a sample misses when its cosine is below the tolerance or
    it holds NaN/Inf. Its share of elements outside the bounds is reported, not gated: on a short
    vector (a 64-wide embedding) a few rounded elements are a large share, while the element bounds
    guard the whole output against scattered wild values, which the aggregate fraction catches."""
    if ref.shape[1] == 0:
        return SampleFigures(ref.shape[0], 0, 0, 1.0, 0.0, 0.0)
    cosine = _cosine(ref, got)  # (N,)
    share = outside.mean(axis=1)  # (N,)
    bad = ~(cosine >= tol.cosine_min) | ~np.all(np.isfinite(got), axis=1)
    ranked = np.where(np.isfinite(cosine), cosine, -np.inf)
    pool = np.flatnonzero(bad) if bad.any() else np.arange(len(bad))  # the worst failing sample, if any
    worst = int(pool[np.argmin(ranked[pool])])
    return SampleFigures(
        count=ref.shape[0],
        failed=int(np.count_nonzero(bad)),
        worst=worst,
        worst_cosine=float(cosine[worst]),
        worst_max_abs=float(np.max(diff[worst])),
        worst_outside=float(share[worst]),
    )


def compare_outputs(
    component: str,
    reference: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    budget: Budget,
    sample_axes: Mapping[str, int] | None = None,
) -> list[OutputComparison]:
    """Compare every output of a component with its reference; an output missing on either side is
    a failure (a reference short of an output would leave that output unjudged).
    ``sample_axes`` gives, per output, how many leading axes index its samples (default 1)."""
    nan = float("nan")
    results = [
        OutputComparison(
            component,
            name,
            budget.tolerance_for(component, name),
            nan,
            nan,
            nan,
            1.0,
            0,
            shape_error="no reference recorded for it",
        )
        for name in actual
        if name not in reference
    ]
    for name, ref in reference.items():
        tol = budget.tolerance_for(component, name)
        if name not in actual:
            results.append(
                OutputComparison(component, name, tol, nan, nan, nan, 1.0, 0, shape_error="output missing")
            )
            continue
        axes = (sample_axes or {}).get(name, 1)
        results.append(compare_output(component, name, ref, actual[name], tol, axes))
    return results
