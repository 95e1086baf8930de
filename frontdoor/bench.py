"""Benchmark a bundle against the PyTorch reference it was built from, in the same run.

Per component and batch size: latency percentiles after warm-up, throughput, and the ratio to
PyTorch eager on the same inputs and the same number of threads. Both sides are timed in their own
blocks, alternating (runtime/bench.py), and the per-block ratios give the run's own noise figure.
First-call costs (session load, first run) are reported apart. The reference is rebuilt from the
manifest's preset (or --weights) and must hash to the manifest's weights, so the ratio compares the
same model. A fresh verification on the target gives the accuracy figures of the same run.
"""

from __future__ import annotations

import datetime
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trtdeploy.bench_pipelines import PipelineBenchContext, PipelineRow, bench_pipeline
from trtdeploy.models.recipe import Component, LoadedModel
from trtdeploy.models.reference import TorchEngine
from trtdeploy.models.registry import get_recipe
from trtdeploy.runtime.bench import LatencyStats, time_blocks
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.hostinfo import host_facts, peak_rss_mib
from trtdeploy.runtime.targets import open_engine, open_engines
from trtdeploy.runtime.verify import verify_bundle

EngineFactory = Callable[[Bundle, str, str, int], Engine]


def default_engine(bundle: Bundle, component: str, target: str, threads: int) -> Engine:
    return open_engine(bundle, component, target, threads=threads)


@dataclass(frozen=True)
class BenchSettings:
    batches: tuple[int, ...] = (1, 8)
    components: tuple[str, ...] | None = None  # None: every component
    target: str = "onnxruntime"
    threads: int | None = None  # None: every core, both sides
    iterations: int = 20  # timed calls per block
    warmup: int = 3  # untimed calls at the start of every block
    blocks: int = 4  # blocks per side, alternating
    sequence: int = 16  # text length for components with a "sequence" dim
    pipeline: bool = True  # also time the model's whole pipeline (preprocessing included)
    prompts: tuple[int, ...] = (1, 3, 8)  # CLIPSeg: segment one image with this many prompts

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class BenchRow:
    """One component at one batch size: the engine and PyTorch eager on the same inputs."""

    component: str
    batch: int
    engine: LatencyStats
    reference: LatencyStats
    block_ratios: tuple[float, ...] = ()  # p50 ratio of each engine/eager block pair
    engine_samples_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def ratio(self) -> float:
        """Engine median / PyTorch eager median: below 1 is faster than the reference."""
        return self.engine.p50 / self.reference.p50

    @property
    def key(self) -> str:
        return f"{self.component}/b{self.batch}"

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "batch": self.batch,
            "engine": self.engine.to_json(),
            "pytorch_eager": self.reference.to_json(),
            "ratio_p50": self.ratio,
            "block_ratios": list(self.block_ratios),
            "engine_items_per_s": 1000 * self.batch / self.engine.p50,
            "eager_items_per_s": 1000 * self.batch / self.reference.p50,
            "engine_samples_ms": list(self.engine_samples_ms),
        }


@dataclass(frozen=True)
class BenchRecord:
    """Everything one `trtdeploy bench` run measured, with the machine it ran on."""

    model: str
    preset: str
    precision: str
    target: str
    settings: dict[str, Any]
    host: dict[str, Any]
    rows: tuple[BenchRow, ...]
    first_call: dict[str, dict[str, float]]
    accuracy: dict[str, Any]
    peak_rss_mib: float
    created_utc: str
    pipeline: tuple[PipelineRow, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "preset": self.preset,
            "precision": self.precision,
            "target": self.target,
            "settings": self.settings,
            "host": self.host,
            "rows": [r.to_json() for r in self.rows],
            "pipeline": [p.to_json() for p in self.pipeline],
            "first_call": self.first_call,
            "accuracy": self.accuracy,
            "peak_rss_mib": self.peak_rss_mib,
            "created_utc": self.created_utc,
        }

    def to_markdown(self) -> str:
        cpu = self.host["cpu"]
        gpu = self.host.get("gpu")
        machine = f"{cpu['model']} ({cpu['arch']}, {cpu['simd']}, {cpu['cores']} cores)"
        if gpu:
            machine += f", GPU {gpu.get('name')}"
        lines = [
            f"### {self.model} {self.precision} on {self.target} vs PyTorch eager FP32",
            "",
            f"{machine}; {self.settings['threads']} threads each side; {self.settings['blocks']} alternating "
            f"blocks of {self.settings['iterations']} calls after {self.settings['warmup']} warm-up calls.",
            "",
            "| component | batch | p50 ms | p90 ms | p99 ms | min ms | items/s | eager p50 ms | eager p90 ms "
            "| ratio (p50) | block ratios |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            blocks = " ".join(f"{b:.2f}" for b in r.block_ratios)
            lines.append(
                f"| {r.component} | {r.batch} | {r.engine.p50:.1f} | {r.engine.p90:.1f} | {r.engine.p99:.1f} | "
                f"{r.engine.min:.1f} | {1000 * r.batch / r.engine.p50:.1f} | {r.reference.p50:.1f} | "
                f"{r.reference.p90:.1f} | {r.ratio:.2f}× | {blocks} |"
            )
        if self.pipeline:
            lines += [
                "",
                "| pipeline | p50 ms | throughput | eager p50 ms | eager throughput | ratio (p50) |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for p in self.pipeline:
                agreement = "" if p.token_agreement is None else f" (token agreement {p.token_agreement:.3f})"
                lines.append(
                    f"| {p.name}{agreement} | {p.engine.p50:.1f} | {1000 * p.items / p.engine.p50:.1f} {p.unit}/s | "
                    f"{p.reference.p50:.1f} | {1000 * p.items / p.reference.p50:.1f} {p.unit}/s | {p.ratio:.2f}× |"
                )
        lines += [
            "",
            "| component | engine load s | engine first call ms | eager first call ms |",
            "|---|---:|---:|---:|",
        ]
        for name, first in self.first_call.items():
            lines.append(
                f"| {name} | {first['engine_load_s']:.2f} | {first['engine_first_ms']:.1f} | {first['eager_first_ms']:.1f} |"
            )
        tasks = ", ".join(f"{t['name']} {t['value']:.4f}" for t in self.accuracy.get("tasks", []))
        cosines = ", ".join(
            f"{o['component']}/{o['output']} cos {o['cosine']:.6f}" for o in self.accuracy.get("outputs", [])
        )
        lines += [
            "",
            f"Accuracy on the bundle's held-out inputs ({self.target}): {cosines}; {tasks}.",
            f"Peak host memory {self.peak_rss_mib:.0f} MiB.",
        ]
        return "\n".join(lines) + "\n"


def load_reference(bundle: Bundle, weights: Path | None) -> LoadedModel:
    """The PyTorch model the bundle was built from, checked by weights hash."""
    manifest = bundle.manifest
    recipe = get_recipe(manifest.model)
    if manifest.weights.get("source") == "folder" and weights is None:
        raise ArtifactError(
            f"{bundle.root} was built from a weights folder ({manifest.weights.get('folder')}); "
            "pass the same folder with --weights to benchmark against it."
        )
    loaded = recipe.load(None if weights else manifest.preset, weights)
    if loaded.weights["sha256"] != manifest.weights["sha256"]:
        raise ArtifactError(
            f"the reference weights hash to {loaded.weights['sha256'][:16]}…, the bundle was built from "
            f"{manifest.weights['sha256'][:16]}…: they are different models. Pass the right --weights."
        )
    return loaded


def bench_bundle(
    bundle: Bundle,
    settings: BenchSettings,
    *,
    weights: Path | None = None,
    engine_factory: EngineFactory = default_engine,
) -> BenchRecord:
    """Time every requested component at every batch size against PyTorch eager."""
    threads = settings.resolved_threads()
    torch.set_num_threads(threads)
    loaded = load_reference(bundle, weights)
    by_name = {c.name: c for c in loaded.recipe.components(loaded.model)}
    names = settings.components or tuple(c.name for c in bundle.manifest.components)
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise ArtifactError(f"{bundle.root} has no component {unknown}; it has {sorted(by_name)}.")
    rows: list[BenchRow] = []
    first_call: dict[str, dict[str, float]] = {}
    for name in names:
        component = by_name[name]
        start = time.perf_counter()
        engine = engine_factory(bundle, name, settings.target, threads)
        load_s = time.perf_counter() - start
        reference = TorchEngine(component, loaded.model)
        feeds = _feeds(component, settings.batches[0], settings.sequence)
        first_call[name] = {
            "engine_load_s": load_s,
            "engine_first_ms": _once_ms(functools.partial(engine.run, feeds)),
            "eager_first_ms": _once_ms(functools.partial(reference.run, feeds)),
        }
        for batch in settings.batches:
            rows.append(_bench_one(component, engine, reference, batch, settings))
        engine.close()
    # A pipeline call costs as much as several component calls: fewer calls per block.
    context = PipelineBenchContext(
        bundle,
        loaded,
        settings.target,
        threads,
        iterations=max(2, settings.iterations // 4),
        warmup=1,
        blocks=settings.blocks,
        prompt_counts=settings.prompts,
    )
    pipeline = bench_pipeline(context) if settings.pipeline else []
    report = verify_bundle(bundle, open_engines(bundle, settings.target, threads=threads), settings.target)
    return BenchRecord(
        model=bundle.manifest.model,
        preset=bundle.manifest.preset,
        precision=bundle.manifest.precision,
        target=settings.target,
        settings={**settings.__dict__, "threads": threads, "batches": list(settings.batches)},
        host=host_facts(),
        rows=tuple(rows),
        first_call=first_call,
        accuracy=report.to_json(),
        peak_rss_mib=peak_rss_mib(),
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        pipeline=tuple(pipeline),
    )


def _bench_one(
    component: Component, engine: Engine, reference: Engine, batch: int, settings: BenchSettings
) -> BenchRow:
    feeds = _feeds(component, batch, settings.sequence)
    samples = time_blocks(
        {
            "engine": functools.partial(engine.run, feeds),
            "reference": functools.partial(reference.run, feeds),
        },
        iterations=settings.iterations,
        warmup=settings.warmup,
        blocks=settings.blocks,
    )
    per_block = [
        float(
            np.median(samples["engine"][i : i + settings.iterations])
            / np.median(samples["reference"][i : i + settings.iterations])
        )
        for i in range(0, len(samples["engine"]), settings.iterations)
    ]
    return BenchRow(
        component.name,
        batch,
        LatencyStats.from_seconds(samples["engine"]),
        LatencyStats.from_seconds(samples["reference"]),
        tuple(per_block),
        tuple(s * 1e3 for s in samples["engine"]),
    )


def _once_ms(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def _feeds(component: Component, batch: int, sequence: int) -> dict[str, np.ndarray]:
    """Inputs with the first input's leading dim at ``batch`` (images, prompts: whatever it is
    called), every other dynamic dim at its optimization size."""
    sizes = {dim: r.opt for dim, r in component.io.dims.items()}
    leading = component.io.inputs[0].shape[0]
    if isinstance(leading, str):
        sizes[leading] = batch
    if "sequence" in sizes:
        sizes["sequence"] = min(sequence, component.io.dims["sequence"].max)
    return component.random_inputs(sizes, np.random.default_rng(0))


def write_outputs(records: Sequence[BenchRecord], out_dir: Path) -> dict[str, Path]:
    """JSON and Markdown per record, and one PNG for all of them; returns what it wrote."""
    import json

    from trtdeploy.plots import plot_records

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for record in records:
        stem = f"{record.model}-{record.precision}-{record.target}"
        (out_dir / f"{stem}.json").write_text(json.dumps(record.to_json(), indent=1) + "\n", encoding="utf-8")
        (out_dir / f"{stem}.md").write_text(record.to_markdown(), encoding="utf-8")
        written[f"{stem}.json"] = out_dir / f"{stem}.json"
        written[f"{stem}.md"] = out_dir / f"{stem}.md"
    png = out_dir / f"{records[0].model}-{records[0].target}.png"
    plot_records(records, png)
    written[png.name] = png
    return written
