"""The flow that chains the stages: recipe -> ONNX per component -> precision -> bundle -> engine.

loaded = recipe.load(preset | weights)            models/
OnnxFromComponent -> ExportParity (FP32)          export/        once per build, shared by precisions
assets, held-out reference inputs/outputs         models/ + calibration/
calibration set, FP16 / INT8 graphs, fallback     calibration/   (fp16, int8)
TensorRT op-support lint of every graph           export/trt_lint.py
verify every form on the target, write reports    runtime/
commit the bundle (manifest last, atomic swap)    runtime/bundle.py
TensorRT plans, built and verified (tensorrt)     runtime/tensorrt_build.py, on the device
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trtdeploy.calibration.data import CalibrationSet, CalibrationSettings
from trtdeploy.calibration.fallback import BudgetUnreachable
from trtdeploy.calibration.fp16 import Fp16Settings
from trtdeploy.calibration.int8 import Int8Settings
from trtdeploy.calibration.precision import (
    PRECISIONS,
    GraphsForPrecision,
    PrecisionOutcome,
    PrecisionSettings,
)
from trtdeploy.calibration.tuning import TuningEvaluator
from trtdeploy.export.onnx_export import ExportSettings, OnnxFromComponent
from trtdeploy.export.parity import ExportParity
from trtdeploy.export.trt_lint import LintReport, lint_graph_files
from trtdeploy.models.recipe import Component, LoadedModel, Recipe
from trtdeploy.models.reference import TorchEngine
from trtdeploy.models.registry import get_recipe
from trtdeploy.progress import Progress
from trtdeploy.runtime.bundle import TASK_REFERENCE, Bundle, ComponentEntry, Manifest, budget_problems
from trtdeploy.runtime.bundle_writer import BundleWriter, OutputClaim, leftover_prefix
from trtdeploy.runtime.compare import Budget
from trtdeploy.runtime.errors import BackendUnavailable, ExportError, StorageError, UsageError
from trtdeploy.runtime.executor import Executor, ReferenceSet
from trtdeploy.runtime.failpoints import failpoint
from trtdeploy.runtime.onnxruntime_backend import ORT_TARGETS, OrtSettings
from trtdeploy.runtime.pipelines import pipeline_class
from trtdeploy.runtime.reports import VerificationReport, raise_if_failed
from trtdeploy.runtime.targets import DEFAULT_TARGET
from trtdeploy.runtime.verify import verify

TOOL_PACKAGES = (
    "trtdeploy",
    "torch",
    "transformers",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "numpy",
    "tokenizers",
)
FAST_FORM_TARGET = "onnxruntime"  # the target whose fast form INT8 bundles carry
TASK_REFERENCE_FILE = "reference/tasks.npz"
# A missed budget's layer report runs on one held-out sample: every tensor of every graph is kept.
LAYER_REPORT_SAMPLES = 1


@dataclass(frozen=True)
class BuildSettings:
    model: str
    preset: str | None = None
    weights: Path | None = None
    precision: str = "fp32"
    target: str = DEFAULT_TARGET
    out: Path | None = None
    threads: int | None = None
    quiet: bool = False
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    fp16: Fp16Settings = field(default_factory=Fp16Settings)
    int8: Int8Settings = field(default_factory=Int8Settings)
    budget: Budget | None = None  # replaces the recipe's budget for this precision

    def bundle_dir(self) -> Path:
        return self.out or Path("build") / self.model / self.precision


@dataclass(frozen=True)
class BuildResult:
    """``device_command`` is set when the target's engines must still be built on the device
    (TensorRT without TensorRT or a GPU here); ``engine_report`` verifies the engines built here.
    ``reports`` holds one verification per form (the graph, and a target's fast form if any)."""

    bundle: Path
    manifest: Manifest
    report: VerificationReport
    lint: LintReport | None = None
    device_command: str | None = None
    engine_report: VerificationReport | None = None
    reports: tuple[VerificationReport, ...] = ()


@dataclass
class ExportedModel:
    """The reference model and its FP32 graphs, shared by every precision built from it."""

    loaded: LoadedModel
    components: tuple[Component, ...]
    fp32: dict[str, Path]
    scratch: tempfile.TemporaryDirectory[str]

    def close(self) -> None:
        self.scratch.cleanup()


def export_model(settings: BuildSettings, recipe: Recipe, progress: Progress) -> ExportedModel:
    """Load the reference model and export each component to FP32 ONNX, checked against PyTorch."""
    with progress.step(
        f"loading {settings.model} ({settings.weights or settings.preset or recipe.default_preset})"
    ):
        loaded = recipe.load(settings.preset, settings.weights)
        progress.note(f"weights sha256 {loaded.weights['sha256'][:16]}…")
    components = recipe.components(loaded.model)
    final = settings.bundle_dir().absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    # Named after the output, so the next build of it clears the folder if this one is killed.
    scratch = tempfile.TemporaryDirectory(prefix=leftover_prefix(final, "export"), dir=final.parent)
    fp32 = {}
    with progress.step(f"exporting {len(components)} components to ONNX"):
        for component in components:
            path = OnnxFromComponent(component, loaded.model, ExportSettings())(
                Path(scratch.name) / f"{component.name}.fp32.onnx"
            )
            # Held to the recipe's FP32 budget: the bounds verification applies to the same graph.
            results = ExportParity(component, loaded.model, budget=recipe.budget("fp32"))(path)
            progress.note(
                f"{component.name}: checked at {dict(component.check_sizes)} (traced at "
                f"{dict(component.trace_sizes)}), max abs {max(r.max_abs for r in results):.2g} vs PyTorch"
            )
            fp32[component.name] = path
            failpoint("export")
    return ExportedModel(loaded, components, fp32, scratch)


class BundleFromRecipe:
    """Stage: build, verify and commit the bundle that ``settings`` describes.

    ``exported`` lets several precisions share one export (PRECISION=all); without it the stage
    exports by itself.
    """

    def __init__(self, settings: BuildSettings, exported: ExportedModel | None = None) -> None:
        if settings.precision not in PRECISIONS:
            raise BackendUnavailable(
                f"precision {settings.precision!r} is not available; this trtdeploy builds {list(PRECISIONS)}."
            )
        if settings.target not in (*ORT_TARGETS, "tensorrt"):
            raise BackendUnavailable(
                f"target {settings.target!r} is not one this build knows; choose one of "
                f"{[*sorted(ORT_TARGETS), 'tensorrt']}."
            )
        self.settings = settings
        self.recipe: Recipe = get_recipe(settings.model)
        self.exported = exported

    def __call__(self) -> BuildResult:
        s = self.settings
        steps = 5 + (2 if self.exported is None else 0) + (1 if s.target == "tensorrt" else 0)
        progress = Progress(total=steps, quiet=s.quiet)
        # Claimed before anything is exported: a destination that isn't trtdeploy's is refused at once.
        protected = [s.weights] if s.weights is not None else []
        try:
            shared = [Path(self.exported.scratch.name)] if self.exported is not None else []
            with OutputClaim(s.bundle_dir(), protected, keep=shared), temporary_files_beside(s.bundle_dir()):
                exported = self.exported or export_model(s, self.recipe, progress)
                try:
                    result = self._build(exported, progress)
                finally:
                    if self.exported is None:
                        exported.close()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(
                    f"the build ran out of disk space ({exc}); nothing was replaced at {s.bundle_dir()} and the "
                    "partial files were removed. Free space (a full-size bundle takes about 1-2 GB) and rebuild."
                ) from exc
            raise
        if s.target == "tensorrt":
            with progress.step("building and verifying the TensorRT plans"):
                result = self._tensorrt_plans(result, progress)
        return result

    def _build(self, exported: ExportedModel, progress: Progress) -> BuildResult:
        s = self.settings
        self._check_budget(exported.components)
        with BundleWriter(s.bundle_dir()) as writer:
            with progress.step("recording held-out reference inputs and PyTorch outputs"):
                assets = self.recipe.write_assets(exported.loaded, writer)
                reference = self._write_references(exported, writer, assets)
            manifest = self._manifest(exported, assets, writer)
            with progress.step(f"making the {s.precision} graphs"):
                try:
                    outcome = self._precision(exported, writer, assets, manifest, progress)
                except BudgetUnreachable:  # the INT8 fallback found no layers to keep that meet it
                    rejected = writer.reject()
                    progress.note(
                        f"the budget can't be met; the build so far is kept in {rejected} for inspection"
                    )
                    raise
                entries = self._write_graphs(manifest, writer, outcome)
                manifest = replace(
                    manifest, components=tuple(entries), precision_method=self._method(outcome)
                )
            with progress.step("checking every node against TensorRT's ONNX operator table"):
                lint = self._lint(entries, writer, progress)
            with progress.step(f"verifying the {s.precision} bundle on {self._verify_target()}"):
                reports = self._verify(manifest, writer, reference)
                writer.write_json("verification.json", {"reports": [r.to_json() for r in reports]})
                writer.write_text("verification.md", "\n".join(r.to_markdown() for r in reports))
            failed = [r for r in reports if not r.passed]
            if failed and s.precision != "fp32":
                with progress.step("finding where the graphs first depart from FP32 (layer report)"):
                    self._layer_report(manifest, writer, reference, exported, failed[0], progress)
            if failed:
                rejected = writer.reject()
                progress.note(f"verification failed; the rejected build is kept in {rejected} for inspection")
                raise_if_failed(failed[0])
            with progress.step("writing the bundle"):
                manifest = writer.commit(manifest)
        return BuildResult(s.bundle_dir(), manifest, reports[0], lint, reports=tuple(reports))

    def _precision(
        self,
        exported: ExportedModel,
        writer: BundleWriter,
        assets: dict[str, str],
        manifest: Manifest,
        progress: Progress,
    ) -> PrecisionOutcome:
        s = self.settings
        calibration = None
        evaluator = None
        if s.precision != "fp32":
            raw = self.recipe.raw_calibration(exported.loaded, s.calibration)
            feeds = self.recipe.calibration_feeds(exported.loaded, raw, writer, assets, s.calibration.batch)
            calibration = CalibrationSet(feeds, s.calibration, raw.source)
            progress.note(
                f"calibration set {calibration.sha256()[:16]}…: {s.calibration.count} samples ({raw.source})"
            )
            evaluator = TuningEvaluator(
                manifest,
                exported.fp32,
                calibration,
                self._verify_target(),
                s.threads,
                samples=self.recipe.tuning_samples,
            )
        stage = GraphsForPrecision(
            PrecisionSettings(s.precision, s.fp16, s.int8),
            calibration,
            exported.loaded.weights["sha256"],
            cache_dir=s.bundle_dir().absolute().parent / ".calibration-cache",
            evaluate=evaluator if evaluator is not None else _no_evaluation,
            fusions={c.name: c.ort_fusion for c in exported.components if c.ort_fusion},
            report=lambda form, evaluation: _note_evaluation(progress, form, evaluation),
        )
        outcome = stage(exported.fp32, Path(exported.scratch.name))
        fallback = outcome.method.get("fallback", {})
        kept = fallback.get("kept_in_fp16")
        if kept:
            progress.note(
                f"INT8 fallback: kept {len(kept)} layers in FP16 to meet the budget: {', '.join(kept)}"
            )
        return outcome

    def _write_graphs(
        self, manifest: Manifest, writer: BundleWriter, outcome: PrecisionOutcome
    ) -> list[ComponentEntry]:
        """Copy each component's graph (and fast form, calibration record) into the bundle."""
        entries = []
        for entry in manifest.components:
            name = entry.name
            shutil.copyfile(outcome.graphs[name], writer.path(entry.onnx))
            forms = {}
            if name in outcome.fast_forms:
                forms[FAST_FORM_TARGET] = f"{name}.{FAST_FORM_TARGET}.onnx"
                shutil.copyfile(outcome.fast_forms[name], writer.path(forms[FAST_FORM_TARGET]))
            if name in outcome.ranges:
                writer.write_json(f"calibration/{name}.json", outcome.ranges[name])
            entries.append(replace(entry, forms=forms))
        return entries

    def _method(self, outcome: PrecisionOutcome) -> dict[str, Any]:
        method = dict(outcome.method)
        method.update(exporter="torch.onnx (dynamo)", opset=ExportSettings().opset)
        if outcome.fast_forms:
            method["forms"] = {
                "graph": "<component>.onnx: the precision-explicit graph every target builds (TensorRT included)",
                FAST_FORM_TARGET: f"<component>.{FAST_FORM_TARGET}.onnx: {method.get('fast_form')}",
            }
        return method

    def _lint(self, entries: list[ComponentEntry], writer: BundleWriter, progress: Progress) -> LintReport:
        """Every build lints; only a TensorRT build fails on what TensorRT's parser can't take."""
        lint = lint_graph_files({e.onnx: writer.path(e.onnx) for e in entries})
        progress.note(lint.summary())
        for finding in lint.findings:
            progress.note(f"  {finding}")
        if self.settings.target == "tensorrt" and not lint.passed:
            raise ExportError(
                f"the graphs use {len(lint.errors)} nodes TensorRT's ONNX parser does not take, so no "
                "TensorRT bundle was written:\n  " + "\n  ".join(str(f) for f in lint.errors)
            )
        return lint

    def _tensorrt_plans(self, result: BuildResult, progress: Progress) -> BuildResult:
        """Build and verify the plans where TensorRT and a GPU are here; else say how to on the device."""
        from trtdeploy.runtime.tensorrt_build import EngineFromBundle
        from trtdeploy.runtime.tensorrt_host import tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
        if reason is not None:
            command = f"trtdeploy engine {result.bundle}"
            progress.note(f"not built here: {reason}")
            return replace(result, device_command=command)
        built = EngineFromBundle(note=progress.note)(Bundle.load(result.bundle))
        return replace(result, engine_report=built.report)

    def _write_references(
        self, exported: ExportedModel, writer: BundleWriter, assets: dict[str, str]
    ) -> ReferenceSet:
        """Every component's inputs and PyTorch outputs on the held-out set, written to the bundle.

        The pipeline's flow runs the PyTorch reference from the recorded source inputs, so a
        chained component (CLIPSeg's decoder) is fed what the reference components feed it and its
        reference outputs are also the reference of the whole pipeline. A recipe may add task
        references (whole answers, e.g. transformers' generate() tokens).
        """
        loaded = exported.loaded
        sources = self.recipe.reference_inputs(loaded, writer, assets)
        reference_model = Executor({c.name: TorchEngine(c, loaded.model) for c in exported.components})
        config = json.loads(writer.path(assets["pipeline"]).read_text(encoding="utf-8"))
        runs = pipeline_class(self.recipe.pipeline).flow(reference_model, sources, config)
        for component in exported.components:
            writer.write_npz(f"reference/{component.name}.inputs.npz", runs.inputs[component.name])
            writer.write_npz(f"reference/{component.name}.outputs.npz", runs.outputs[component.name])
        tasks = self.recipe.task_references(loaded, writer, assets, runs)
        if tasks:
            writer.write_npz(
                TASK_REFERENCE_FILE,
                {f"{task}/{name}": v for task, arrays in tasks.items() for name, v in arrays.items()},
            )
            assets[TASK_REFERENCE] = TASK_REFERENCE_FILE
        return ReferenceSet(
            runs.inputs, runs.outputs, tasks, {role: writer.path(rel) for role, rel in assets.items()}
        )

    def _verify(
        self, manifest: Manifest, writer: BundleWriter, reference: ReferenceSet
    ) -> list[VerificationReport]:
        """One report per form: the precision-explicit graph, then the target's fast form if any."""
        target = self._verify_target()
        settings = OrtSettings(target=target, threads=self.settings.threads)
        interfaces = {e.name: e.io for e in manifest.components}
        graphs = {e.name: writer.path(e.onnx) for e in manifest.components}
        forms = {"graph": graphs}
        fast = {e.name: writer.path(e.forms[target]) for e in manifest.components if target in e.forms}
        if fast:
            forms[f"{target} fast form"] = {**graphs, **fast}
        reports = []
        for form, files in forms.items():
            with Executor.for_graphs(interfaces, files, settings) as run:
                reports.append(verify(manifest, run, reference, target, form))
        return reports

    def _layer_report(
        self,
        manifest: Manifest,
        writer: BundleWriter,
        reference: ReferenceSet,
        exported: ExportedModel,
        failed: VerificationReport,
        progress: Progress,
    ) -> None:
        """The layer-by-layer report of the failed form's graphs (those whose outputs missed the
        budget; every graph when only a task metric did), into the rejected build and its log."""
        from trtdeploy.calibration.layer_report import reports_json, reports_markdown
        from trtdeploy.debug_precision import reports_on_held_out

        missed = {c.component for c in failed.comparisons if not c.passed}
        entries = [e for e in manifest.components if not missed or e.name in missed]
        target = self._verify_target()
        fast = failed.form != "graph"
        candidate = {
            e.name: writer.path(e.forms[target] if fast and target in e.forms else e.onnx) for e in entries
        }
        cosine = manifest.budget.outputs["*"].cosine_min
        reports = reports_on_held_out(
            manifest,
            exported.fp32,
            candidate,
            reference.inputs,
            LAYER_REPORT_SAMPLES,
            cosine,
            f"{manifest.precision} ({failed.form})",
        )
        writer.write_text("layer_report.md", reports_markdown(reports))
        writer.write_text("layer_report.json", reports_json(reports))
        for report in reports:
            first = report.first_diverging(1)
            where = f"{first[0].node} ({first[0].op_type})" if first else "no tensor past the tolerance"
            progress.note(f"{report.component}: first diverging {where}")

    def _verify_target(self) -> str:
        # A TensorRT bundle is proven on ONNX Runtime's CPU provider first: the same graphs the
        # device will build, checked before any GPU sees them.
        return "onnxruntime" if self.settings.target == "tensorrt" else self.settings.target

    def _check_budget(self, components: Sequence[Component]) -> None:
        """Before any reference is recorded: a budget naming nothing is a mistake to fix first."""
        budget = self.settings.budget or self.recipe.budget(self.settings.precision)
        outputs = [f"{c.name}/{o}" for c in components for o in c.io.output_names]
        problems = budget_problems(budget, pipeline_class(self.recipe.pipeline).task_names, outputs)
        if problems:
            raise UsageError(f"the {self.settings.precision} budget {'; '.join(problems)}; fix its names.")

    def _manifest(self, exported: ExportedModel, assets: dict[str, str], writer: BundleWriter) -> Manifest:
        precision = self.settings.precision
        config = (
            json.loads(writer.path(assets["pipeline"]).read_text(encoding="utf-8"))
            if "pipeline" in assets
            else {}
        )
        return Manifest(
            model=self.recipe.name,
            preset=exported.loaded.preset,
            weights=exported.loaded.weights,
            precision=precision,
            precision_method={"kind": precision},
            pipeline=self.recipe.pipeline,
            components=tuple(
                ComponentEntry(
                    name=c.name,
                    onnx=f"{c.name}.onnx",
                    io=c.io,
                    reference_inputs=f"reference/{c.name}.inputs.npz",
                    reference_outputs=f"reference/{c.name}.outputs.npz",
                )
                for c in exported.components
            ),
            budget=self.settings.budget or self.recipe.budget(precision),
            assets=assets,
            tools=tool_versions(),
            created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            pipeline_config=config,
        )


@contextlib.contextmanager
def temporary_files_beside(final: Path) -> Iterator[Path]:
    """Everything the libraries write while building goes into a hidden folder beside the bundle,
    removed afterwards (and by the next build if this one is killed): Python's temporary files
    (transformers' save_pretrained, the exporter) and torch's compile cache, which would otherwise
    land in /tmp/torchinductor_<user>. The build writes nothing outside the build folder."""
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=leftover_prefix(final, "tmp"), dir=final.parent))
    saved = {name: os.environ.get(name) for name in ("TMPDIR", "TORCHINDUCTOR_CACHE_DIR")}
    saved_tempdir = tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "torchinductor")
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def _note_evaluation(progress: Progress, form: str, evaluation: Mapping[str, Any]) -> None:
    """One fallback evaluation, printed when it is made."""
    verdict = "meets" if evaluation["passed"] else "misses"
    # The fast form starts from the graph's exclusions; its own search keeps more layers in FP32.
    kept = "layers in FP16" if form == "graph" else "more layers in FP32"
    progress.note(
        f"INT8 {form} with {evaluation['kept_out_of_int8']} {kept} {verdict} the budget on the "
        f"calibration tuning batches: {evaluation['summary']}"
    )


def _no_evaluation(graphs: Any) -> tuple[bool, str]:
    raise AssertionError("FP32 builds evaluate nothing during the precision step")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOL_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
