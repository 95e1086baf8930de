"""Verification: run engines on a bundle's held-out reference inputs and hold them to its budget.

Per output: cosine, max abs error, fraction outside atol + rtol·|ref|. Then the task metric of the
model's pipeline (zero-shot top-1 agreement for CLIP, mask IoU for CLIPSeg, ...). The report lists
every output and metric; a miss raises VerificationError naming each failing one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.compare import OutputComparison, compare_outputs
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import VerificationError
from trtdeploy.runtime.onnxruntime_backend import OrtEngine, OrtSettings

Outputs = dict[str, dict[str, np.ndarray]]  # component -> output name -> array


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
        out += [f"{t.name}: {t.value:.4f} < {t.minimum}" for t in self.tasks if not t.passed]
        return out

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
            "| component | output | cosine | max abs | outside tol | budget | result |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        for c in self.comparisons:
            t = c.tolerance
            budget = (
                f"cos ≥ {t.cosine_min}, ≤ {t.max_outside:.1%} outside {t.describe_atol()}+{t.rtol:g}·|ref|"
            )
            result = "pass" if c.passed else "FAIL: " + "; ".join(c.failures)
            lines.append(
                f"| {c.component} | {c.output} | {c.cosine:.6f} | {c.max_abs:.3g} | "
                f"{c.outside_fraction:.2%} | {budget} | {result} |"
            )
        if self.tasks:
            lines += ["", "| task metric | value | minimum | result | detail |", "|---|---:|---:|---|---|"]
            for task in self.tasks:
                lines.append(
                    f"| {task.name} | {task.value:.4f} | {task.minimum} | {'pass' if task.passed else 'FAIL'} "
                    f"| {task.detail} |"
                )
        return "\n".join(lines) + "\n"


def run_references(bundle: Bundle, engines: Mapping[str, Engine]) -> tuple[Outputs, Outputs]:
    """(reference outputs, engine outputs) for every component, on the bundle's held-out inputs;
    the engine outputs also hold the chained components run end to end (see run_end_to_end)."""
    reference: Outputs = {}
    actual: Outputs = {}
    for entry in bundle.manifest.components:
        inputs, outputs = bundle.reference(entry.name)
        reference[entry.name] = outputs
        actual[entry.name] = engines[entry.name].run_in_chunks(inputs)
    actual.update(
        run_end_to_end(bundle.manifest, actual, lambda name, feeds: engines[name].run_in_chunks(feeds))
    )
    return reference, actual


def end_to_end_key(component: str) -> str:
    """Where a chained component's end-to-end outputs sit in an Outputs dict."""
    return f"{component} (end to end)"


def run_end_to_end(
    manifest: Manifest, outputs: Outputs, run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]
) -> Outputs:
    """The components a pipeline feeds from other components' outputs (CLIPSeg's decoder), run
    again on the engines' own ``outputs``, keyed by end_to_end_key.

    Each component is also compared alone, on its recorded inputs (the reference outputs of the
    components that feed it); this second run carries the upstream engines' errors into it, as
    the deployed pipeline does, for the task metric.
    """
    from trtdeploy.runtime.pipelines import pipeline_class

    feeds = pipeline_class(manifest.pipeline).chained_feeds(outputs)
    return {end_to_end_key(name): run(name, f) for name, f in feeds.items()}


def build_report(
    manifest: Manifest,
    target: str,
    reference: Outputs,
    actual: Outputs,
    tasks: Sequence[TaskResult],
    form: str = "graph",
) -> VerificationReport:
    comparisons: list[OutputComparison] = []
    for component, ref in reference.items():
        comparisons += compare_outputs(component, ref, actual.get(component, {}), manifest.budget)
    return VerificationReport(
        manifest.model, manifest.precision, target, tuple(comparisons), tuple(tasks), form
    )


def verify_outputs(
    manifest: Manifest, target: str, reference: Outputs, actual: Outputs, form: str = "graph"
) -> VerificationReport:
    """Compare outputs and compute the pipeline's task metrics on them."""
    from trtdeploy.runtime.pipelines import pipeline_class

    tasks = pipeline_class(manifest.pipeline).task_metrics(manifest, reference, actual)
    return build_report(manifest, target, reference, actual, tasks, form)


def verify_bundle(
    bundle: Bundle, engines: Mapping[str, Engine], target: str, form: str = "graph"
) -> VerificationReport:
    """Run every component on its reference inputs, compare, and compute the pipeline's task metrics."""
    reference, actual = run_references(bundle, engines)
    return verify_outputs(bundle.manifest, target, reference, actual, form)


def run_graphs(
    manifest: Manifest,
    graphs: Mapping[str, Path],
    inputs: Outputs,
    reference: Outputs,
    settings: OrtSettings,
    form: str = "graph",
) -> VerificationReport:
    """Verify ONNX files that are not (yet) a committed bundle, on ONNX Runtime."""
    engines: dict[str, OrtEngine] = {}
    try:
        for entry in manifest.components:
            engines[entry.name] = OrtEngine(entry.name, graphs[entry.name], entry.io, settings)
        actual: Outputs = {name: engine.run_in_chunks(inputs[name]) for name, engine in engines.items()}
        actual.update(
            run_end_to_end(manifest, actual, lambda name, feeds: engines[name].run_in_chunks(feeds))
        )
    finally:
        for engine in engines.values():
            engine.close()
    return verify_outputs(manifest, settings.target, reference, actual, form)


def raise_if_failed(report: VerificationReport) -> None:
    if not report.passed:
        lines = "\n  ".join(report.failures())
        raise VerificationError(
            f"{report.model} {report.precision} on {report.target} missed its accuracy budget:\n  {lines}",
            report,
        )
