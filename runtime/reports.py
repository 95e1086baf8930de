"""What verification produces: per-output comparisons and task metrics, and the report that holds them.

Plain data, apart from the code that computes it (runtime/verify.py runs the graphs, the pipelines
compute their task metrics), so the pipelines, verification, the build and the CLI all import
these types without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trtdeploy.runtime.compare import OutputComparison
from trtdeploy.runtime.errors import VerificationError

Feeds = dict[str, np.ndarray]  # tensor name -> array: what one component reads or writes
Outputs = dict[str, Feeds]  # component -> tensor name -> array


@dataclass(frozen=True)
class TaskResult:
    """A task-level metric (e.g. zero-shot top-1 agreement) and the minimum it must reach."""

    name: str
    value: float
    minimum: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.value >= self.minimum

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "minimum": self.minimum,
            "detail": self.detail,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class VerificationReport:
    model: str
    precision: str
    target: str
    comparisons: tuple[OutputComparison, ...]
    tasks: tuple[TaskResult, ...]
    form: str = "graph"  # which file ran: the precision-explicit graph or a target's fast form

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons) and all(t.passed for t in self.tasks)

    def failures(self) -> list[str]:
        out = [f"{c.component}/{c.output}: {'; '.join(c.failures)}" for c in self.comparisons if not c.passed]
        out += [
            f"{t.name}: {t.value:.4f} < {t.minimum}" + (f" ({t.detail})" if t.detail else "")
            for t in self.tasks
            if not t.passed
        ]
        return out

    def task(self, name: str) -> TaskResult:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"the report has no task metric {name!r}; it has {[t.name for t in self.tasks]}")

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "precision": self.precision,
            "target": self.target,
            "form": self.form,
            "passed": self.passed,
            "outputs": [c.to_json() for c in self.comparisons],
            "tasks": [t.to_json() for t in self.tasks],
        }

    def to_markdown(self) -> str:
        lines = [
            f"### Verification: {self.model} · {self.precision} · {self.target} ({self.form}) · "
            f"{'PASS' if self.passed else 'FAIL'}",
            "",
            "| component | output | cosine | max abs | outside tol | worst sample | budget | result |",
            "|---|---|---:|---:|---:|---|---|---|",
        ]
        for c in self.comparisons:
            t = c.tolerance
            budget = (
                f"cos ≥ {t.cosine_min}, ≤ {t.max_outside:.1%} outside {t.describe_atol()}+{t.rtol:g}·|ref|"
            )
            result = "pass" if c.passed else "FAIL: " + "; ".join(c.failures)
            lines.append(
                f"| {c.component} | {c.output} | {c.cosine:.6f} | {c.max_abs:.3g} | "
                f"{c.outside_fraction:.2%} | {c.describe_worst_sample()} | {budget} | {result} |"
            )
        if self.tasks:
            lines += ["", "| task metric | value | minimum | result | detail |", "|---|---:|---:|---|---|"]
            for task in self.tasks:
                lines.append(
                    f"| {task.name} | {task.value:.4f} | {task.minimum} | {'pass' if task.passed else 'FAIL'} "
                    f"| {task.detail} |"
                )
        return "\n".join(lines) + "\n"


def raise_if_failed(report: VerificationReport) -> None:
    if not report.passed:
        lines = "\n  ".join(report.failures())
        raise VerificationError(
            f"{report.model} {report.precision} on {report.target} missed its accuracy budget:\n  {lines}",
            report,
        )
