"""Latency and accuracy regressions against committed baselines.

A baseline (baselines/<machine class>/<model>-<preset>-<precision>-<target>.json) holds, per
component and batch, the engine/eager latency ratio measured in the same run, and the accuracy
figures of the bundle's verification. Ratios, not milliseconds: a slower machine of the same class
slows both sides, a real regression slows only one.

Accuracy is not a property of the machine class, latency is. So every configuration with a
baseline in any machine class has its accuracy checked wherever the regression runs, against this
class's baseline when there is one, else against one recorded on the same architecture and SIMD
level, else against the first machine class in name order (the output names the file and why);
its latency is compared only against this machine class's baseline, and is reported as not
checked, with the command that records one, where there is none.

Tolerances come from measured noise, not guesses: a baseline is recorded from several runs, and
each ratio's tolerance is three times the larger of the spread between runs and the spread between
the alternating blocks inside a run. Accuracy tolerance is a tenth of the headroom the figure had
over its budget when the baseline was recorded. In FP32 that is far above the ~1e-7 rounding
differences between CPU SIMD levels (a cosine moves by the square of such noise); INT8 kernels
differ between SIMD levels by more than rounding, hence the preference for the same SIMD level.
A budget with no headroom (a top-1 agreement of 1.0 with a minimum of 1.0) allows no change at all.
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
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.hostinfo import cpu_facts, gpu_facts, machine_class
from trtdeploy.runtime.verify import verify_bundle

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
class NotChecked:
    """A baseline figure this run could not compare, and why."""

    name: str
    kind: str
    baseline: float
    reason: str
    remedy: str = ""  # what to do so that it is checked next time

    def row(self) -> str:
        return (
            f"| {self.kind} | {self.name} | {self.baseline:.6g} | — | — | — | not checked | {self.reason} |"
        )


@dataclass(frozen=True)
class RegressionResult:
    title: str
    checks: tuple[Check, ...]
    not_checked: tuple[NotChecked, ...] = ()
    sources: tuple[str, ...] = ()  # which baseline file each kind of check was compared with, and why

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def ran(self, kind: str) -> list[Check]:
        return [c for c in self.checks if c.kind == kind]

    def to_markdown(self) -> str:
        verdict = "PASS" if self.passed else "REGRESSION"
        if self.not_checked:
            verdict += f" ({len(self.not_checked)} not checked)"
        lines = [
            f"### Regression check: {self.title} · {verdict}",
            "",
            *(f"- {s}" for s in self.sources),
            "",
            "| kind | check | baseline | now | delta | limit | result | note |",
            "|---|---|---:|---:|---:|---|---|---|",
            *(c.row() for c in self.checks),
            *(n.row() for n in self.not_checked),
        ]
        return "\n".join(lines) + "\n"


def summarize(results: Sequence[RegressionResult]) -> str:
    """Which checks ran in how many configurations, how many failed, and which did not run and why."""
    failed = [r.title for r in results if not r.passed]
    lines = [f"### Regression summary · {'PASS' if not failed else 'REGRESSION'}", ""]
    for kind in ("accuracy", "latency"):
        checked = [r for r in results if r.ran(kind)]
        checks = [c for r in checked for c in r.ran(kind)]
        bad = [c for c in checks if not c.passed]
        lines.append(
            f"- {kind}: checked in {len(checked)} of {len(results)} configurations, {len(checks)} checks, "
            f"{len(bad)} regressions"
        )
        for r in results:
            reasons = sorted({(n.reason, n.remedy) for n in r.not_checked if n.kind == kind})
            lines += [f"  - not checked for {r.title}: {why} ({to_do})" for why, to_do in reasons]
    lines += [f"- regression in {title}" for title in failed]
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
    for name, _, minimum in _accuracy_figures(first.accuracy):
        values = [v for rec in records for n, v, _ in _accuracy_figures(rec.accuracy) if n == name]
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
    return compare_latency(record, baseline) + compare_accuracy(record.accuracy, baseline)


def compare_latency(record: BenchRecord, baseline: dict[str, Any]) -> list[Check]:
    """Every latency ratio of the baseline against the same ratio in a fresh run."""
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
    return checks


def compare_accuracy(accuracy: dict[str, Any], baseline: dict[str, Any]) -> list[Check]:
    """Every accuracy figure of the baseline against a fresh verification report (its JSON form)."""
    checks = []
    figures = {name: value for name, value, _ in _accuracy_figures(accuracy)}
    for name, base in baseline["accuracy"].items():
        limit = base["value"] - base["allowed_drop"]
        value = figures.get(name, float("nan"))
        note = "" if name in figures else "not measured in this run"
        checks.append(Check(name, "accuracy", base["value"], value, limit, bool(value >= limit), note))
    return checks


def _ratios(record: BenchRecord) -> dict[str, tuple[float, tuple[float, ...], str]]:
    """key -> (engine/eager p50 ratio, per-block ratios, a note) for components and pipelines."""
    out = {
        r.key: (r.ratio, r.block_ratios, f"{r.engine.p50:.1f} ms vs eager {r.reference.p50:.1f} ms")
        for r in record.rows
    }
    for p in record.pipeline:
        out[f"pipeline/{p.name}"] = (
            p.ratio,
            p.block_ratios,
            f"{p.engine.p50:.1f} ms vs eager {p.reference.p50:.1f} ms",
        )
    return out


def _accuracy_figures(accuracy: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, value, budget minimum) for every output's cosine and every task metric of a report."""
    out = [
        (f"{o['component']}/{o['output']} cosine", float(o["cosine"]), float(o["tolerance"]["cosine_min"]))
        for o in accuracy["outputs"]
    ]
    out += [(t["name"], float(t["value"]), float(t["minimum"])) for t in accuracy["tasks"]]
    return out


def _relative_spread(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    array = np.asarray(values)
    return float((array.max() - array.min()) / np.median(array))


@dataclass(frozen=True)
class Machine:
    """Where a regression runs: its machine class, and the CPU facts that decide which kernels run."""

    name: str  # machine class, e.g. "x86_64-avx2-2c"
    arch: str
    simd: str

    @classmethod
    def this_host(cls) -> Machine:
        cpu = cpu_facts()
        return cls(machine_class(cpu, gpu_facts()), cpu["arch"], cpu["simd"])


def recorded_baselines(root: Path, machine: Machine | None = None) -> list[dict[str, Any]]:
    """One baseline per configuration recorded for any machine class (the accuracy reference
    find_baselines chooses); an error if there is none at all."""
    names = sorted({p.name for p in root.glob("*/*.json")}) if root.is_dir() else []
    if not names:
        raise ArtifactError(
            f"no baselines in {root}: expected {root}/<machine class>/<model>-<preset>-<precision>-"
            "<target>.json. Record one with: make baseline MODEL=<model> PRECISION=<precision>"
        )
    machine = machine or Machine.this_host()
    return [_load_baseline(find_baselines(root, name, machine).accuracy) for name in names]


@dataclass(frozen=True)
class BaselineFiles:
    """The committed baseline files of one configuration, as seen from one machine."""

    accuracy: Path  # whose accuracy figures are the reference
    latency: Path | None  # this machine class's baseline, if any: the only one latency is compared with
    why: str  # why that accuracy reference


def find_baselines(root: Path, name: str, machine: Machine, hint: str | None = None) -> BaselineFiles:
    """The baselines called ``name`` (``<model>-<preset>-<precision>-<target>.json``) under ``root``.

    The accuracy reference is this machine class's baseline; else the first, in class name order,
    recorded on the same architecture and SIMD level (INT8 kernels differ between SIMD levels by far
    more than rounding); else the first in class name order.
    """
    found = sorted(root.glob(f"*/{name}")) if root.is_dir() else []
    if not found:
        known = sorted(p.name for p in root.glob("*")) if root.is_dir() else []
        raise ArtifactError(
            f"no baseline {name} for any machine class in {root} (machine classes there: "
            f"{known or 'none'}). Record one with: {hint or 'make baseline MODEL=<model> PRECISION=<precision>'}"
        )
    own = root / machine.name / name
    if own.is_file():
        return BaselineFiles(own, own, f"this machine class, {machine.name}")
    cpus = {p: _recorded_cpu(p) for p in found}
    same = [p for p in found if cpus[p] == (machine.arch, machine.simd)]
    chosen = (same or found)[0]
    classes = ", ".join(p.parent.name for p in found)
    rule = "the first in name order with this host's" if same else "none has this host's"
    arch, simd = cpus[chosen]
    return BaselineFiles(
        chosen,
        None,
        f"no baseline for this machine class, {machine.name}; of the classes that have one ({classes}), "
        f"{rule} {machine.arch} {machine.simd}; this one was recorded on {arch} {simd}",
    )


def _recorded_cpu(path: Path) -> tuple[str, str]:
    cpu = _load_baseline(path).get("host", {}).get("cpu", {})
    return str(cpu.get("arch", "unknown arch")), str(cpu.get("simd", "unknown SIMD level"))


def baseline_path(root: Path, machine: str, model: str, preset: str, precision: str, target: str) -> Path:
    return root / machine / f"{model}-{preset}-{precision}-{target}.json"


def record_command(model: str, preset: str, precision: str, target: str) -> str:
    """The command that records this configuration's baseline on this machine."""
    from trtdeploy.runtime.targets import AUTO_TARGET, resolve_target

    # `make baseline` benchmarks the target `auto` resolves to here.
    if resolve_target(AUTO_TARGET) == target:
        return f"make baseline MODEL={model} PRECISION={precision} PRESET={preset}"
    return f"trtdeploy regress {model} --preset {preset} --precision {precision} --target {target} --write-baseline"


def _load_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path} is not a readable baseline ({exc}); re-record it with make baseline."
        ) from None
    missing = [
        k
        for k in ("model", "preset", "precision", "target", "settings", "latency", "accuracy")
        if k not in data
    ]
    if missing or not data.get("accuracy"):
        raise ArtifactError(
            f"{path} lacks {missing or ['any accuracy figure']}: a baseline has the keys of make_baseline "
            "and at least one accuracy figure. Re-record it with make baseline."
        )
    return dict(data)


@dataclass
class RegressionRun:
    """Rebuild (or take) a bundle, then compare it with or record its baseline.

    Accuracy is compared with the configuration's baseline from any machine class; latency is
    benchmarked and compared only where ``machine`` (default: this host's class) has a baseline.
    """

    model: str
    precision: str
    settings: BenchSettings
    baselines: Path
    preset: str | None = None
    bundle: Path | None = None
    weights: Path | None = None
    engine_factory: EngineFactory = default_engine
    machine: Machine | None = None  # None: this host

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
        m, machine, target = bundle.manifest, self._machine(), self.settings.target
        record = record_command(m.model, m.preset, m.precision, target)
        files = find_baselines(self.baselines, self._path(bundle).name, machine, record)
        baseline = _load_baseline(files.accuracy)
        title = f"{m.model} {m.preset} {m.precision} on {target}"
        sources = [f"accuracy reference: {files.accuracy} ({files.why})"]
        if files.latency is None:
            reason = f"no latency baseline for machine class {machine.name}"
            remedy = f"record one with `{record}`"
            sources.append(f"latency: not checked: {reason} ({remedy})")
            skipped = tuple(
                NotChecked(key, "latency", entry["ratio"], reason, remedy)
                for key, entry in baseline["latency"].items()
            )
            checks = compare_accuracy(self._verify(bundle), baseline)
            return RegressionResult(title, tuple(checks), skipped, tuple(sources))
        # Measure what the baseline measured (CLIPSeg's pipeline rows: the same prompt counts).
        recorded = baseline["settings"]
        self.settings = replace(
            self.settings,
            batches=tuple(recorded["batches"]),
            iterations=recorded["iterations"],
            blocks=recorded["blocks"],
            prompts=tuple(recorded.get("prompts", self.settings.prompts)),
        )
        sources.append(f"latency baseline: {files.latency}")
        checks = compare_record(self._bench(bundle), baseline)
        return RegressionResult(title, tuple(checks), (), tuple(sources))

    def _verify(self, bundle: Bundle) -> dict[str, Any]:
        """A fresh verification of every component on the target, without timing anything."""
        threads = self.settings.resolved_threads()
        engines: dict[str, Engine] = {}
        try:
            for c in bundle.manifest.components:
                engines[c.name] = self.engine_factory(bundle, c.name, self.settings.target, threads)
            report = verify_bundle(bundle, engines, self.settings.target)
        finally:
            for engine in engines.values():
                engine.close()
        return dict(report.to_json())

    def _bench(self, bundle: Bundle) -> BenchRecord:
        return bench_bundle(bundle, self.settings, weights=self.weights, engine_factory=self.engine_factory)

    def _machine(self) -> Machine:
        if self.machine is None:
            self.machine = Machine.this_host()
        return self.machine

    def _path(self, bundle: Bundle) -> Path:
        m = bundle.manifest
        return baseline_path(
            self.baselines, self._machine().name, m.model, m.preset, m.precision, self.settings.target
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
