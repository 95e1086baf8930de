"""`trtdeploy debug precision BUNDLE`: where an FP16 or INT8 bundle's graphs first depart from FP32.

The FP32 bundle of the same weights is the reference (``--reference``, else the ``fp32`` bundle
beside this one, accepted only if its manifest says it is that model, those weights and FP32).
A few of the bundle's held-out source samples go through the pipeline's flow on the FP32 graphs,
so every component (a decoder too) gets the inputs it sees in use; then each component's FP32 and
candidate graphs are compared tensor by tensor (calibration/layer_report.py, on Polygraphy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trtdeploy.calibration.layer_report import Feeds, LayerReport, layer_reports
from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.errors import UsageError
from trtdeploy.runtime.executor import Executor
from trtdeploy.runtime.onnxruntime_backend import OrtSettings
from trtdeploy.runtime.pipelines import pipeline_class
from trtdeploy.runtime.verify import bundle_references

FAST_FORM = "onnxruntime"


@dataclass(frozen=True)
class PrecisionDebugSettings:
    bundle: Path
    reference: Path | None = None  # the FP32 bundle; None: the fp32 bundle beside ``bundle``
    samples: int = 2  # held-out source samples (every tensor of every graph is kept for each)
    components: tuple[str, ...] = ()  # empty: every component
    form: str = "graph"  # "graph" (precision-explicit, TensorRT-bound) or "onnxruntime" (fast form)
    cosine_min: float | None = None  # None: the bundle's own output budget


def debug_precision(settings: PrecisionDebugSettings) -> list[LayerReport]:
    bundle = Bundle.load(settings.bundle)
    manifest = bundle.manifest
    if manifest.precision == "fp32":
        raise UsageError(
            f"{settings.bundle} is an FP32 bundle; `debug precision` compares an FP16 or INT8 bundle "
            "with the FP32 one of the same weights."
        )
    reference = Bundle.load(settings.reference or settings.bundle.parent / "fp32")
    _check_reference(manifest, reference.manifest, reference.root)
    names = _components(manifest, settings.components)
    candidate = {name: bundle.path(_graph_file(manifest, name, settings.form)) for name in names}
    fp32 = {e.name: reference.path(e.onnx) for e in reference.manifest.components}
    cosine = (
        settings.cosine_min if settings.cosine_min is not None else manifest.budget.outputs["*"].cosine_min
    )
    label = (
        manifest.precision if settings.form == "graph" else f"{manifest.precision} {settings.form} fast form"
    )
    return reports_on_held_out(
        manifest, fp32, candidate, bundle_references(bundle).inputs, settings.samples, cosine, label
    )


def reports_on_held_out(
    manifest: Manifest,
    fp32: Mapping[str, Path],
    candidate: Mapping[str, Path],
    held_out: Mapping[str, Feeds],
    samples: int,
    cosine_min: float,
    label: str,
) -> list[LayerReport]:
    """Layer reports of ``candidate``'s graphs on the first ``samples`` held-out source samples, each
    component fed what the FP32 graphs' flow gives it (a decoder's cache from these samples)."""
    pipeline = pipeline_class(manifest.pipeline)
    sources = {c: {k: v[:samples] for k, v in held_out[c].items()} for c in pipeline.sources}
    interfaces = {e.name: e.io for e in manifest.components}
    with Executor.for_graphs(interfaces, fp32, OrtSettings()) as run:
        runs = pipeline.flow(run, sources, manifest.pipeline_config)
    return layer_reports(fp32, candidate, {c: runs.inputs[c] for c in candidate}, cosine_min, label)


def _check_reference(manifest: Manifest, reference: Manifest, root: Path) -> None:
    problems = []
    if reference.precision != "fp32":
        problems.append(f"its precision is {reference.precision}")
    if reference.model != manifest.model:
        problems.append(f"it is {reference.model}, not {manifest.model}")
    if reference.weights.get("sha256") != manifest.weights.get("sha256"):
        problems.append("its weights differ (weights sha256)")
    if problems:
        raise UsageError(
            f"{root} is not the FP32 reference of this bundle: {'; '.join(problems)}. Build it with the same "
            f"model and weights at --precision fp32, or pass it with --reference."
        )


def _components(manifest: Manifest, wanted: Sequence[str]) -> list[str]:
    names = [e.name for e in manifest.components]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise UsageError(f"no component {unknown} in this bundle; it has {names}.")
    return [n for n in names if not wanted or n in wanted]


def _graph_file(manifest: Manifest, name: str, form: str) -> str:
    entry = manifest.component(name)
    if form == "graph":
        return entry.onnx
    if form not in entry.forms:
        raise UsageError(f"{name} has no {form} fast form in this bundle; use --form graph.")
    return entry.forms[form]
