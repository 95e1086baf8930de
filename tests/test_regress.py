"""Regressions are caught: a slowed engine or a perturbed one fails its baseline, a fair rerun passes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from trtdeploy.bench import BenchRecord, BenchRow, BenchSettings, default_engine
from trtdeploy.build import BuildResult
from trtdeploy.regress import RegressionRun, compare_record, make_baseline
from trtdeploy.runtime.bench import LatencyStats
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine import Engine

pytestmark = pytest.mark.regression

QUICK = BenchSettings(batches=(1,), iterations=3, warmup=1, blocks=2, threads=1)


class Slowed(Engine):
    """The same engine made slower: sleeps for `factor` times its own run time after each call."""

    def __init__(self, inner: Engine, factor: float) -> None:
        super().__init__(inner.component, inner.io)
        self.inner, self.factor = inner, factor

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.inner.run(feeds)
        time.sleep(self.factor * (time.perf_counter() - start))
        return out


@pytest.fixture(scope="module")
def baseline(tiny_clip: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[RegressionRun, dict]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("baselines")
    run = RegressionRun(
        model="clip", precision="fp32", settings=QUICK, baselines=root, bundle=tiny_clip.bundle
    )
    path = run.write_baseline(runs=2)
    return run, json.loads(path.read_text())


def test_baseline_records_ratios_spreads_and_tolerances(baseline) -> None:  # type: ignore[no-untyped-def]
    _, data = baseline
    assert set(data["latency"]) == {"vision/b1", "text/b1", "pipeline/zero-shot: 7 images × 10 labels"}
    for entry in data["latency"].values():
        assert len(entry["runs"]) == 2 and entry["ratio"] > 0
        assert entry["tolerance"] == pytest.approx(
            3 * max(entry["spread_between_runs"], entry["spread_within_run"])
        )
    cos = data["accuracy"]["vision/image_embeds cosine"]
    assert cos["value"] > 0.99999 and cos["allowed_drop"] == pytest.approx(0.1 * (cos["value"] - 0.99999))


def test_a_slowed_engine_is_a_latency_regression(baseline) -> None:  # type: ignore[no-untyped-def]
    run, _ = baseline

    def slowed(bundle: Bundle, component: str, target: str, threads: int) -> Engine:
        engine = default_engine(bundle, component, target, threads)
        return Slowed(engine, factor=4.0) if component == "vision" else engine

    run.engine_factory = slowed
    result = run.compare()
    failed = {c.name for c in result.checks if not c.passed}
    assert "vision/b1" in failed and not result.passed
    assert "REGRESSION" in result.to_markdown()


def test_a_perturbed_accuracy_is_an_accuracy_regression(baseline, tiny_clip: BuildResult) -> None:  # type: ignore[no-untyped-def]
    _, data = baseline
    from trtdeploy.bench import bench_bundle

    record = bench_bundle(Bundle.load(tiny_clip.bundle), QUICK)
    worse = dict(record.accuracy)
    worse["outputs"] = [
        dict(o, cosine=o["cosine"] - 0.01) if o["output"] == "text_embeds" else o
        for o in record.accuracy["outputs"]
    ]
    from dataclasses import replace

    checks = compare_record(replace(record, accuracy=worse), data)
    failed = {c.name for c in checks if not c.passed}
    assert "text/text_embeds cosine" in failed and "vision/image_embeds cosine" not in failed


def record_with(ratio: float, blocks: tuple[float, ...]) -> BenchRecord:
    """A bench record whose only figure is one latency ratio (the baseline rule's arithmetic)."""
    eager = LatencyStats(1, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0)
    engine = LatencyStats(1, 10 * ratio, 10 * ratio, 10 * ratio, 10 * ratio, 10 * ratio, 10 * ratio)
    row = BenchRow("vision", 1, engine, eager, blocks)
    host = {"machine_class": "test", "cpu": {"model": "x", "arch": "x", "simd": "x", "cores": 1}}
    accuracy = {"outputs": [], "tasks": []}
    return BenchRecord(
        "clip", "tiny", "fp32", "onnxruntime", {"batches": [1]}, host, (row,), {}, accuracy, 0.0, "now"
    )


def test_a_fresh_run_within_the_measured_noise_passes_and_one_past_it_fails() -> None:
    """Limits come from the baseline's own runs; runs it was not made from are what they judge."""
    baseline = make_baseline([record_with(1.0, (1.0, 1.05)), record_with(1.1, (1.1, 1.12))])
    entry = baseline["latency"]["vision/b1"]
    assert entry["ratio"] == pytest.approx(1.05) and entry["tolerance"] == pytest.approx(3 * 0.1 / 1.05)
    inside, outside = record_with(1.3, (1.3, 1.3)), record_with(1.45, (1.45, 1.45))  # limit 1.35
    assert all(c.passed for c in compare_record(inside, baseline))
    failed = [c for c in compare_record(outside, baseline) if not c.passed]
    assert [c.name for c in failed] == ["vision/b1"]


def test_a_fresh_measured_run_passes_its_baseline(baseline) -> None:  # type: ignore[no-untyped-def]
    """A new bench of the same bundle, not one the baseline was recorded from, passes."""
    run, _ = baseline
    run.engine_factory = default_engine
    result = run.compare()
    assert result.passed, result.to_markdown()


def test_missing_baseline_says_how_to_record_one(tiny_clip: BuildResult, tmp_path: Path) -> None:
    from trtdeploy.runtime.errors import ArtifactError

    run = RegressionRun(
        model="clip", precision="fp32", settings=QUICK, baselines=tmp_path, bundle=tiny_clip.bundle
    )
    with pytest.raises(ArtifactError, match="make baseline MODEL=clip PRECISION=fp32"):
        run.compare()
