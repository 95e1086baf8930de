"""Verification: run engines on a bundle's held-out reference inputs and hold them to its budget.

Per component, on the inputs recorded for it: every output against the PyTorch reference (cosine,
max abs error, fraction outside atol + rtol·|ref|, whole and per sample). Then the task, which is
the pipeline's: it may run the engines again end to end (CLIPSeg's decoder on the engines' own
encoder outputs; Florence-2's generation loop, compared by the tokens it generates). The report
lists every output and metric; raise_if_failed names each failing one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from trtdeploy.runtime.bundle import TASK_REFERENCE, Bundle, Manifest, read_npz
from trtdeploy.runtime.compare import compare_outputs
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.executor import Executor, ReferenceSet
from trtdeploy.runtime.pipelines import pipeline_class
from trtdeploy.runtime.reports import Outputs, VerificationReport


def verify(
    manifest: Manifest, run: Executor, reference: ReferenceSet, target: str, form: str = "graph"
) -> VerificationReport:
    """Every component alone on its recorded inputs, then the pipeline's task metrics."""
    actual: Outputs = {}
    comparisons = []
    for entry in manifest.components:
        actual[entry.name] = run.run(entry.name, reference.inputs[entry.name])
        comparisons += compare_outputs(
            entry.name,
            reference.outputs[entry.name],
            actual[entry.name],
            manifest.budget,
            entry.io.sample_axes(),
        )
    tasks = pipeline_class(manifest.pipeline).task_metrics(manifest, run, reference, actual)
    return VerificationReport(
        manifest.model, manifest.precision, target, tuple(comparisons), tuple(tasks), form
    )


def verify_bundle(
    bundle: Bundle, engines: Mapping[str, Engine], target: str, form: str = "graph"
) -> VerificationReport:
    """Verify ``engines`` against a committed bundle's reference data."""
    run = engines if isinstance(engines, Executor) else Executor(engines)
    return verify(bundle.manifest, run, bundle_references(bundle), target, form)


def bundle_references(bundle: Bundle) -> ReferenceSet:
    """The held-out inputs and reference outputs of every component, and the task references."""
    inputs: Outputs = {}
    outputs: Outputs = {}
    for entry in bundle.manifest.components:
        inputs[entry.name], outputs[entry.name] = bundle.reference(entry.name)
    tasks = {}
    if TASK_REFERENCE in bundle.manifest.assets:
        tasks = _split_task_reference(read_npz(bundle.asset(TASK_REFERENCE)))
    assets = {role: bundle.asset(role) for role in bundle.manifest.assets}
    return ReferenceSet(inputs, outputs, tasks, assets)


def _split_task_reference(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """npz keys "task/name" -> {task: {name: array}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        task, _, name = key.partition("/")
        out.setdefault(task, {})[name] = value
    return out
