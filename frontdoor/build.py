"""The flow that chains the stages: recipe -> ONNX per component -> bundle -> verified engine.

loaded = recipe.load(preset | weights)          models/
OnnxFromComponent -> ExportParity               export/   (per component)
assets, held-out reference inputs/outputs       models/ + calibration/
verify on the target, write the report          runtime/
commit the bundle (manifest last, atomic swap)  runtime/bundle.py
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path

from trtdeploy.export.onnx_export import ExportSettings, OnnxFromComponent
from trtdeploy.export.parity import ExportParity
from trtdeploy.models.recipe import Component, LoadedModel, Recipe
from trtdeploy.models.reference import TorchEngine
from trtdeploy.models.registry import get_recipe
from trtdeploy.progress import Progress
from trtdeploy.runtime.bundle import BundleWriter, ComponentEntry, Manifest
from trtdeploy.runtime.errors import BackendUnavailable
from trtdeploy.runtime.onnxruntime_backend import ORT_TARGETS, OrtEngine, OrtSettings
from trtdeploy.runtime.pipelines import pipeline_class
from trtdeploy.runtime.targets import DEFAULT_TARGET
from trtdeploy.runtime.verify import Outputs, VerificationReport, build_report, raise_if_failed

PRECISIONS = ("fp32",)
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

    def bundle_dir(self) -> Path:
        return self.out or Path("build") / self.model / self.precision


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    manifest: Manifest
    report: VerificationReport


class BundleFromRecipe:
    """Stage: build, verify and commit the bundle that ``settings`` describes."""

    def __init__(self, settings: BuildSettings) -> None:
        if settings.precision not in PRECISIONS:
            raise BackendUnavailable(
                f"precision {settings.precision!r} is not available; this trtdeploy builds {list(PRECISIONS)}."
            )
        if settings.target not in ORT_TARGETS:
            raise BackendUnavailable(
                f"target {settings.target!r} is not available here; the bundle verifies on {sorted(ORT_TARGETS)}."
            )
        self.settings = settings
        self.recipe: Recipe = get_recipe(settings.model)

    def __call__(self) -> BuildResult:
        s = self.settings
        progress = Progress(total=5, quiet=s.quiet)
        with progress.step(f"loading {s.model} ({s.weights or s.preset or self.recipe.default_preset})"):
            loaded = self.recipe.load(s.preset, s.weights)
            progress.note(f"weights sha256 {loaded.weights['sha256'][:16]}…")
        components = self.recipe.components(loaded.model)
        with BundleWriter(s.bundle_dir()) as writer:
            with progress.step(f"exporting {len(components)} components to ONNX"):
                entries = [self._export(c, loaded, writer, progress) for c in components]
            with progress.step("recording held-out reference inputs and PyTorch outputs"):
                assets = self.recipe.write_assets(loaded, writer)
                inputs, reference = self._write_references(components, loaded, writer, assets)
            manifest = self._manifest(loaded, entries, assets)
            with progress.step(f"verifying the {s.precision} graphs on {s.target}"):
                report = self._verify(manifest, writer, inputs, reference)
                writer.write_json("verification.json", report.to_json())
                writer.write_text("verification.md", report.to_markdown())
            if not report.passed:
                rejected = writer.reject()
                progress.note(f"verification failed; the rejected build is kept in {rejected} for inspection")
                raise_if_failed(report)
            with progress.step("writing the bundle"):
                manifest = writer.commit(manifest)
        return BuildResult(s.bundle_dir(), manifest, report)

    def _export(
        self, component: Component, loaded: LoadedModel, writer: BundleWriter, progress: Progress
    ) -> ComponentEntry:
        path = OnnxFromComponent(component, loaded.model, ExportSettings())(
            writer.path(f"{component.name}.onnx")
        )
        results = ExportParity(component, loaded.model)(path)
        worst = max(r.max_abs for r in results)
        progress.note(
            f"{component.name}: checked at {dict(component.check_sizes)} (traced at "
            f"{dict(component.trace_sizes)}), max abs {worst:.2g} vs PyTorch"
        )
        return ComponentEntry(
            name=component.name,
            onnx=f"{component.name}.onnx",
            io=component.io,
            reference_inputs=f"reference/{component.name}.inputs.npz",
            reference_outputs=f"reference/{component.name}.outputs.npz",
        )

    def _write_references(
        self,
        components: tuple[Component, ...],
        loaded: LoadedModel,
        writer: BundleWriter,
        assets: dict[str, str],
    ) -> tuple[Outputs, Outputs]:
        """(inputs, PyTorch outputs) per component on the held-out set, also written to the bundle."""
        inputs = self.recipe.reference_inputs(loaded, writer, assets)
        outputs: Outputs = {}
        for component in components:
            outputs[component.name] = TorchEngine(component, loaded.model).run(inputs[component.name])
            writer.write_npz(f"reference/{component.name}.inputs.npz", inputs[component.name])
            writer.write_npz(f"reference/{component.name}.outputs.npz", outputs[component.name])
        return inputs, outputs

    def _verify(
        self, manifest: Manifest, writer: BundleWriter, inputs: Outputs, reference: Outputs
    ) -> VerificationReport:
        settings = OrtSettings(target=self.settings.target, threads=self.settings.threads)
        actual: Outputs = {}
        for entry in manifest.components:
            with OrtEngine(entry.name, writer.path(entry.onnx), entry.io, settings) as engine:
                actual[entry.name] = engine.run(inputs[entry.name])
        tasks = pipeline_class(manifest.pipeline).task_metrics(manifest, reference, actual)
        return build_report(manifest, self.settings.target, reference, actual, tasks)

    def _manifest(
        self, loaded: LoadedModel, entries: list[ComponentEntry], assets: dict[str, str]
    ) -> Manifest:
        precision = self.settings.precision
        return Manifest(
            model=self.recipe.name,
            preset=loaded.preset,
            weights=loaded.weights,
            precision=precision,
            precision_method={
                "kind": "fp32",
                "exporter": "torch.onnx (dynamo)",
                "opset": ExportSettings().opset,
            },
            pipeline=self.recipe.pipeline,
            components=tuple(entries),
            budget=self.recipe.budget(precision),
            assets=assets,
            tools=tool_versions(),
            created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOL_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
