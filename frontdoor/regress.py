"""Latency and accuracy regressions against committed baselines.

A baseline (baselines/<machine class>/<model>-<preset>-<precision>-<target>.json) holds, per
component and batch, the engine/eager latency ratio measured in the same run, and the accuracy
figures of the bundle's verification. Ratios, not milliseconds: a slower machine of the same class
slows both sides, a real regression slows only one.

Tolerances come from measured noise, not guesses: a baseline is recorded from several runs, and
each ratio's tolerance is three times the larger of the spread between runs and the spread between
the alternating blocks inside a run. Accuracy is deterministic on one machine; its tolerance is a
tenth of the headroom the figure had over its budget when the baseline was recorded.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from trtdeploy.bench import BenchRecord, BenchSettings, EngineFactory, bench_bundle, default_engine
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.hostinfo import machine_class

NOISE_MULTIPLE = 3.0  # a ratio may drift this many measured spreads before it counts as a regression
HEADROOM_SHARE = 0.1  # accuracy may lose this share of its headroom over the budget


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # "latency" or "accuracy"
    baseline: float
    current: float
    limit: float
    passed: bool
    note: str = ""

    def row(self) -> str:
        delta = self.current - self.baseline
        bound = f"≤ {self.limit:.4g}" if self.kind == "latency" else f"≥ {self.limit:.6g}"
        return (
            f"| {self.kind} | {self.name} | {self.baseline:.6g} | {self.current:.6g} | {delta:+.3g} | {bound} | "
            f"{'pass' if self.passed else 'REGRESSION'} | {self.note} |"
        )


@dataclass(frozen=True)
class RegressionResult:
    title: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_markdown(self) -> str:
        lines = [
            f"### Regression check: {self.title} · {'PASS' if self.passed else 'REGRESSION'}",
            "",
            "| kind | check | baseline | now | delta | limit | result | note |",
            "|---|---|---:|---:|---:|---|---|---|",
            *(c.row() for c in self.checks),
        ]
        return "\n".join(lines) + "\n"


def make_baseline(records: Sequence[BenchRecord]) -> dict[str, Any]:
    """A baseline from repeated runs of the same bundle and settings."""
    if not records:
        raise ValueError("a baseline needs at least one run")
    first = records[0]
    latency = {}
    for key in _ratios(first):
        ratios = np.array([_ratios(rec)[key][0] for rec in records])
        median = float(np.median(ratios))
        between = float((ratios.max() - ratios.min()) / median)
        within = max(_relative_spread(_ratios(rec)[key][1]) for rec in records)
        latency[key] = {
            "ratio": median,
            "runs": ratios.tolist(),
            "spread_between_runs": between,
            "spread_within_run": within,
            "tolerance": NOISE_MULTIPLE * max(between, within),
        }
    accuracy = {}
    for name, _, minimum in _accuracy_figures(first):
        values = [v for rec in records for n, v, _ in _accuracy_figures(rec) if n == name]
        worst = min(values)
        accuracy[name] = {
            "value": worst,
            "budget_minimum": minimum,
            "allowed_drop": HEADROOM_SHARE * (worst - minimum),
        }
    return {
        "model": first.model,
        "preset": first.preset,
        "precision": first.precision,
        "target": first.target,
        "machine_class": first.host["machine_class"],
        "host": first.host,
        "settings": first.settings,
        "runs": len(records),
        "latency": latency,
        "accuracy": accuracy,
        "rule": f"latency: ratio ≤ baseline × (1 + {NOISE_MULTIPLE:g} × max(spread between runs, within a run)); "
        f"accuracy: value ≥ baseline − {HEADROOM_SHARE:g} × (baseline − budget minimum)",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def compare_record(record: BenchRecord, baseline: dict[str, Any]) -> list[Check]:
    """Every latency ratio and accuracy figure of a fresh run against the baseline."""
    checks = []
    ratios = _ratios(record)
    for key, base in baseline["latency"].items():
        limit = base["ratio"] * (1 + base["tolerance"])
        if key not in ratios:
            checks.append(
                Check(key, "latency", base["ratio"], float("nan"), limit, False, "not measured in this run")
            )
            continue
        ratio, _, note = ratios[key]
        note += f"; tolerance {base['tolerance']:.1%}"
        checks.append(Check(key, "latency", base["ratio"], ratio, limit, ratio <= limit, note))
    figures = {name: value for name, value, _ in _accuracy_figures(record)}
    for name, base in baseline["accuracy"].items():
        limit = base["value"] - base["allowed_drop"]
        value = figures.get(name, float("nan"))
        checks.append(Check(name, "accuracy", base["value"], value, limit, bool(value >= limit)))
    return checks


def _ratios(record: BenchRecord) -> dict[str, tuple[float, tuple[float, ...], str]]:
    """key -> (engine/eager p50 ratio, per-block ratios, a note) for components and pipelines."""
    out = {
        r.key: (r.ratio, r.block_ratios, f"{r.engine.p50:.1f} ms vs eager {r.reference.p50:.1f} ms")
        for r in record.rows
    }
    for p in record.pipeline:
        out[f"pipeline/{p.name}"] = (p.ratio, (), f"{p.engine.p50:.1f} ms vs eager {p.reference.p50:.1f} ms")
    return out


def _accuracy_figures(record: BenchRecord) -> list[tuple[str, float, float]]:
    """(name, value, budget minimum) for every output's cosine and every task metric."""
    out = [
        (f"{o['component']}/{o['output']} cosine", float(o["cosine"]), float(o["tolerance"]["cosine_min"]))
        for o in record.accuracy["outputs"]
    ]
    out += [(t["name"], float(t["value"]), float(t["minimum"])) for t in record.accuracy["tasks"]]
    return out


def _relative_spread(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    array = np.asarray(values)
    return float((array.max() - array.min()) / np.median(array))


def recorded_baselines(root: Path) -> list[dict[str, Any]]:
    """Every baseline recorded for this machine class; an error if there is none."""
    folder = root / machine_class()
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not found:
        raise ArtifactError(
            f"no baselines for this machine class ({machine_class()}) in {root}; record them with "
            "make baseline MODEL=<model> PRECISION=<precision>."
        )
    return [json.loads(p.read_text(encoding="utf-8")) for p in found]


def baseline_path(root: Path, machine: str, model: str, preset: str, precision: str, target: str) -> Path:
    return root / machine / f"{model}-{preset}-{precision}-{target}.json"


@dataclass
class RegressionRun:
    """Rebuild (or take) a bundle, benchmark it, and compare with or record its baseline."""

    model: str
    precision: str
    settings: BenchSettings
    baselines: Path
    preset: str | None = None
    bundle: Path | None = None
    weights: Path | None = None
    engine_factory: EngineFactory = default_engine

    def write_baseline(self, runs: int = 3) -> Path:
        if runs < 2:
            raise ArtifactError(
                "a baseline needs at least 2 runs, so that the noise it tolerates is measured."
            )
        bundle = self._bundle()
        records = [self._bench(bundle) for _ in range(runs)]
        baseline = make_baseline(records)
        path = self._path(bundle)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(baseline, indent=1) + "\n", encoding="utf-8")
        return path

    def compare(self) -> RegressionResult:
        bundle = self._bundle()
        path = self._path(bundle)
        if not path.is_file():
            known = sorted(p.name for p in self.baselines.glob("*")) if self.baselines.is_dir() else []
            raise ArtifactError(
                f"no baseline {path} for this machine class; baselines exist for {known or 'no machine'}. "
                f"Record one here with: make baseline MODEL={self.model} PRECISION={self.precision}"
            )
        baseline = json.loads(path.read_text(encoding="utf-8"))
        # Measure what the baseline measured.
        self.settings = replace(
            self.settings,
            batches=tuple(baseline["settings"]["batches"]),
            iterations=baseline["settings"]["iterations"],
            blocks=baseline["settings"]["blocks"],
        )
        record = self._bench(bundle)
        title = f"{self.model} {bundle.manifest.preset} {self.precision} on {self.settings.target} ({path.parent.name})"
        return RegressionResult(title, tuple(compare_record(record, baseline)))

    def _bench(self, bundle: Bundle) -> BenchRecord:
        return bench_bundle(bundle, self.settings, weights=self.weights, engine_factory=self.engine_factory)

    def _path(self, bundle: Bundle) -> Path:
        m = bundle.manifest
        return baseline_path(
            self.baselines, machine_class(), m.model, m.preset, m.precision, self.settings.target
        )

    def _bundle(self) -> Bundle:
        if self.bundle is not None:
            bundle = Bundle.load(self.bundle)
            if (bundle.manifest.model, bundle.manifest.precision) != (self.model, self.precision):
                raise ArtifactError(
                    f"{self.bundle} is {bundle.manifest.model} {bundle.manifest.precision}, "
                    f"not {self.model} {self.precision}."
                )
            return bundle
        from trtdeploy.build import BuildSettings, BundleFromRecipe

        # One folder per configuration: two presets of one model must not rebuild over each other.
        out = Path("build") / "regress" / self.model / (self.preset or "default") / self.precision
        target = "onnxruntime" if self.settings.target == "tensorrt" else self.settings.target
        BundleFromRecipe(
            BuildSettings(
                model=self.model,
                preset=self.preset,
                weights=self.weights,
                precision=self.precision,
                target=target,
                out=out,
            )
        )()
        return Bundle.load(out)
