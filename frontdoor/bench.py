"""Benchmark a bundle's components against the PyTorch reference they were built from.

Both sides run the same inputs on the same number of threads, timed in alternating blocks
(runtime/bench.py). The reference is rebuilt from the manifest's preset (or --weights) and must hash
to the manifest's weights, so the ratio compares the same model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trtdeploy.models.recipe import Component, LoadedModel
from trtdeploy.models.reference import TorchEngine
from trtdeploy.models.registry import get_recipe
from trtdeploy.runtime.bench import LatencyStats, time_blocks
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.targets import open_engine


@dataclass(frozen=True)
class BenchRow:
    component: str
    batch: int
    engine: LatencyStats
    reference: LatencyStats

    @property
    def ratio(self) -> float:
        """Engine median / PyTorch eager median: below 1 is faster than the reference."""
        return self.engine.p50 / self.reference.p50

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "batch": self.batch,
            "engine": self.engine.to_json(),
            "pytorch_eager": self.reference.to_json(),
            "ratio_p50": self.ratio,
        }


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
    *,
    components: Sequence[str],
    batches: Sequence[int],
    target: str,
    threads: int | None = None,
    iterations: int = 20,
    warmup: int = 3,
    blocks: int = 4,
    weights: Path | None = None,
    sequence: int = 16,
) -> list[BenchRow]:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    loaded = load_reference(bundle, weights)
    by_name = {c.name: c for c in loaded.recipe.components(loaded.model)}
    rows = []
    for name in components:
        if name not in by_name:
            raise ArtifactError(
                f"{manifest_name(bundle)} has no component {name!r}; it has {sorted(by_name)}."
            )
        component = by_name[name]
        engine = open_engine(bundle, name, target, threads=threads)
        reference = TorchEngine(component, loaded.model)
        for batch in batches:
            feeds = _feeds(component, batch, sequence)
            samples = time_blocks(
                {
                    "engine": functools.partial(engine.run, feeds),
                    "reference": functools.partial(reference.run, feeds),
                },
                iterations=iterations,
                warmup=warmup,
                blocks=blocks,
            )
            rows.append(
                BenchRow(
                    name,
                    batch,
                    LatencyStats.from_seconds(samples["engine"]),
                    LatencyStats.from_seconds(samples["reference"]),
                )
            )
        engine.close()
    return rows


def manifest_name(bundle: Bundle) -> str:
    return f"{bundle.manifest.model} ({bundle.manifest.precision})"


def _feeds(component: Component, batch: int, sequence: int) -> dict[str, np.ndarray]:
    sizes = {dim: r.opt for dim, r in component.io.dims.items()}
    sizes["batch"] = batch
    if "sequence" in sizes:
        sizes["sequence"] = min(sequence, component.io.dims["sequence"].max)
    return component.random_inputs(sizes, np.random.default_rng(0))


def rows_to_markdown(rows: Sequence[BenchRow], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| component | batch | engine p50 ms | engine p90 ms | eager p50 ms | eager p90 ms | ratio (p50) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.component} | {r.batch} | {r.engine.p50:.1f} | {r.engine.p90:.1f} | {r.reference.p50:.1f} | "
            f"{r.reference.p90:.1f} | {r.ratio:.2f}× |"
        )
    return "\n".join(lines) + "\n"
