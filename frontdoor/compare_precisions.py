"""PRECISION=all: one export, three bundles (fp32, fp16, int8), one comparison table.

Accuracy comes from each bundle's verification (held-out inputs); latency is measured here on the
ONNX Runtime CPU target for every component at batch 1, each form in its own block, next to PyTorch
eager FP32 measured in the same run.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from trtdeploy.build import BuildResult, BuildSettings, BundleFromRecipe, ExportedModel, export_model
from trtdeploy.calibration.precision import PRECISIONS
from trtdeploy.models.reference import TorchEngine
from trtdeploy.models.registry import get_recipe
from trtdeploy.progress import Progress
from trtdeploy.runtime.bench import LatencyStats, time_blocks
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.targets import open_engine


@dataclass(frozen=True)
class PrecisionRow:
    precision: str
    form: str
    component: str
    cosine: float
    max_abs: float
    tasks: str
    p50_ms: float
    eager_p50_ms: float


def build_all(settings: BuildSettings) -> tuple[list[BuildResult], list[PrecisionRow]]:
    """Build every precision into ``<out parent>/<precision>`` from one export, then compare."""
    recipe = get_recipe(settings.model)
    exported = export_model(settings, recipe, Progress(total=2, quiet=settings.quiet))
    try:
        results = []
        for precision in PRECISIONS:
            out = (settings.out.parent if settings.out else Path("build") / settings.model) / precision
            results.append(BundleFromRecipe(replace(settings, precision=precision, out=out), exported)())
        return results, compare(results, exported, settings.threads)
    finally:
        exported.close()


def compare(results: list[BuildResult], exported: ExportedModel, threads: int | None) -> list[PrecisionRow]:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    rows = []
    eager: dict[str, float] = {}
    for result in results:
        bundle = Bundle.load(result.bundle)
        for report in result.reports:
            form = "graph" if report.form == "graph" else "auto"
            for component in exported.components:
                feeds = component.random_inputs(
                    {d: (1 if d == "batch" else r.opt) for d, r in component.io.dims.items()},
                    np.random.default_rng(0),
                )
                engine = open_engine(bundle, component.name, "onnxruntime", threads=threads, form=form)
                runners = {"engine": functools.partial(engine.run, feeds)}
                if component.name not in eager:
                    runners["eager"] = functools.partial(
                        TorchEngine(component, exported.loaded.model).run, feeds
                    )
                samples = time_blocks(runners, iterations=10, warmup=2, blocks=2)
                if "eager" in samples:
                    eager[component.name] = LatencyStats.from_seconds(samples["eager"]).p50
                engine.close()
                comparisons = [c for c in report.comparisons if c.component == component.name]
                rows.append(
                    PrecisionRow(
                        precision=result.manifest.precision,
                        form=report.form,
                        component=component.name,
                        cosine=min(c.cosine for c in comparisons),
                        max_abs=max(c.max_abs for c in comparisons),
                        tasks=", ".join(f"{t.name} {t.value:.3f}" for t in report.tasks),
                        p50_ms=LatencyStats.from_seconds(samples["engine"]).p50,
                        eager_p50_ms=eager[component.name],
                    )
                )
    return rows


def rows_to_markdown(rows: list[PrecisionRow], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| precision | form | component | cosine | max abs | task metrics | p50 ms (batch 1) | eager p50 ms | ratio |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.precision} | {r.form} | {r.component} | {r.cosine:.5f} | {r.max_abs:.3g} | {r.tasks} | "
            f"{r.p50_ms:.1f} | {r.eager_p50_ms:.1f} | {r.p50_ms / r.eager_p50_ms:.2f}× |"
        )
    return "\n".join(lines) + "\n"
