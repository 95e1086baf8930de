"""Regressions are caught: a slowed engine or a perturbed one fails its baseline, a fair rerun passes."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trtdeploy.bench import BenchRecord, BenchRow, BenchSettings, EngineFactory, default_engine
from trtdeploy.build import BuildResult
from trtdeploy.cli import main
from trtdeploy.regress import (
    Check,
    Machine,
    NotChecked,
    RegressionResult,
    RegressionRun,
    compare_record,
    find_baselines,
    make_baseline,
    recorded_baselines,
    summarize,
)
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
    # Three runs: the tiny model's millisecond pipeline rows (the warm zero-shot is 5 ms) need the
    # spread of more than two runs for a tolerance a fresh run of the same bundle stays inside.
    path = run.write_baseline(runs=3)
    return run, json.loads(path.read_text())


def test_baseline_records_ratios_spreads_and_tolerances(baseline) -> None:  # type: ignore[no-untyped-def]
    _, data = baseline
    assert set(data["latency"]) == {
        "vision/b1",
        "text/b1",
        "pipeline/zero-shot: 7 images × 10 labels",
        "pipeline/zero-shot: 1 image × 10 labels, label embeddings cold",
        "pipeline/zero-shot: 1 image × 10 labels, label embeddings warm",
    }
    for entry in data["latency"].values():
        assert len(entry["runs"]) == 3 and entry["ratio"] > 0
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
    with pytest.raises(ArtifactError, match="make baseline MODEL=clip PRECISION=fp32 PRESET=tiny"):
        run.compare()


class Perturbed(Engine):
    """The same engine with one output multiplied by (1 + scale · N(0, 1)) per element, seeded."""

    def __init__(self, inner: Engine, output: str, scale: float) -> None:
        super().__init__(inner.component, inner.io)
        self.inner, self.output, self.scale = inner, output, scale
        self.rng = np.random.default_rng(0)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(self.inner.run(feeds))
        if self.output in out:
            value = out[self.output]
            noise = 1 + self.scale * self.rng.standard_normal(value.shape)
            out[self.output] = (value * noise).astype(value.dtype)
        return out

    def close(self) -> None:
        self.inner.close()


def perturbing(output: str, scale: float) -> EngineFactory:
    def factory(bundle: Bundle, component: str, target: str, threads: int) -> Engine:
        return Perturbed(default_engine(bundle, component, target, threads), output, scale)

    return factory


ELSEWHERE = Machine("x86_64-elsewhere-64c", "x86_64", "elsewhere")  # a class no baseline is filed under


def filed_under(machine: str, data: dict[str, Any], root: Path) -> Path:
    """``data`` written as ``machine``'s baseline of its configuration."""
    path = root / machine / f"{data['model']}-{data['preset']}-{data['precision']}-{data['target']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_without_a_latency_baseline_accuracy_is_checked_and_latency_is_named_as_not_checked(  # type: ignore[no-untyped-def]
    baseline, tiny_clip: BuildResult, tmp_path: Path
) -> None:
    _, data = baseline
    reference = filed_under("x86_64-recorded-2c", data, tmp_path)
    run = RegressionRun(
        model="clip",
        precision="fp32",
        settings=QUICK,
        baselines=tmp_path,
        bundle=tiny_clip.bundle,
        machine=ELSEWHERE,
    )
    result = run.compare()
    assert result.passed, result.to_markdown()
    assert [c.name for c in result.checks] == list(data["accuracy"]) and not result.ran("latency")
    for check in result.checks:  # the same bundle on the same host: the recorded figures, to rounding
        assert check.current == pytest.approx(data["accuracy"][check.name]["value"], abs=1e-9)
    assert [n.name for n in result.not_checked] == list(data["latency"])
    assert {n.reason for n in result.not_checked} == {
        "no latency baseline for machine class x86_64-elsewhere-64c"
    }
    text = result.to_markdown()
    assert f"accuracy reference: {reference}" in text
    latency, accuracy = len(data["latency"]), len(data["accuracy"])
    assert (
        latency >= 3 and text.count("| not checked |") == latency and f"PASS ({latency} not checked)" in text
    )
    summary = summarize([result])
    assert f"- accuracy: checked in 1 of 1 configurations, {accuracy} checks, 0 regressions" in summary
    assert "- latency: checked in 0 of 1 configurations, 0 checks, 0 regressions" in summary
    assert "make baseline MODEL=clip PRECISION=fp32 PRESET=tiny" in summary


def test_rounding_noise_passes_and_a_real_accuracy_loss_fails_without_a_latency_baseline(  # type: ignore[no-untyped-def]
    baseline, tiny_clip: BuildResult, tmp_path: Path
) -> None:
    """A few float32 ulps (what another SIMD level changes) pass the headroom rule; 1% noise does not."""
    _, data = baseline
    filed_under("x86_64-recorded-2c", data, tmp_path)
    run = RegressionRun(
        model="clip",
        precision="fp32",
        settings=QUICK,
        baselines=tmp_path,
        bundle=tiny_clip.bundle,
        machine=ELSEWHERE,
        engine_factory=perturbing("text_embeds", 1e-6),
    )
    assert run.compare().passed
    run.engine_factory = perturbing("text_embeds", 0.01)
    result = run.compare()
    failed = {c.name for c in result.checks if not c.passed}
    assert "text/text_embeds cosine" in failed and "vision/image_embeds cosine" not in failed
    text = result.checks[[c.name for c in result.checks].index("text/text_embeds cosine")]
    assert text.current < text.limit < text.baseline
    assert (
        not result.passed
        and f"- accuracy: checked in 1 of 1 configurations, {len(data['accuracy'])} checks"
        in summarize([result])
    )


def test_latency_is_compared_where_the_machine_class_has_a_baseline(  # type: ignore[no-untyped-def]
    baseline, tiny_clip: BuildResult, tmp_path: Path
) -> None:
    _, data = baseline
    own = filed_under("x86_64-here-2c", data, tmp_path)
    worse = dict(data, accuracy={k: dict(v, value=2.0) for k, v in data["accuracy"].items()})
    filed_under("a-first-in-name-order", worse, tmp_path)  # must not be the reference
    run = RegressionRun(
        model="clip",
        precision="fp32",
        settings=QUICK,
        baselines=tmp_path,
        bundle=tiny_clip.bundle,
        machine=Machine("x86_64-here-2c", "x86_64", "elsewhere"),
    )
    result = run.compare()
    assert [c.name for c in result.ran("latency")] == list(data["latency"]) and not result.not_checked
    assert [c.name for c in result.ran("accuracy")] == list(data["accuracy"])
    assert all(c.baseline == data["accuracy"][c.name]["value"] for c in result.ran("accuracy"))
    assert f"latency baseline: {own}" in result.to_markdown()
    assert f"- latency: checked in 1 of 1 configurations, {len(data['latency'])} checks" in summarize(
        [result]
    )


def test_the_accuracy_reference_is_this_class_else_the_same_simd_level_else_name_order(
    tmp_path: Path,
) -> None:
    def recorded(machine: str, simd: str) -> Path:
        data = {
            "model": "m",
            "preset": "p",
            "precision": "int8",
            "target": "onnxruntime",
            "settings": {},
            "latency": {},
            "accuracy": {"x": {"value": 1.0, "budget_minimum": 0.9, "allowed_drop": 0.01}},
            "host": {"cpu": {"arch": "x86_64", "simd": simd}},
        }
        return filed_under(machine, data, tmp_path)

    a, b, c = (
        recorded("x86_64-amx_int8-8c", "amx_int8"),
        recorded("x86_64-avx2-2c", "avx2"),
        recorded("x86_64-avx2-4c", "avx2"),
    )
    name = a.name
    own = find_baselines(tmp_path, name, Machine("x86_64-avx2-4c", "x86_64", "avx2"))
    assert (own.accuracy, own.latency) == (c, c)
    same_simd = find_baselines(tmp_path, name, Machine("x86_64-avx2-16c", "x86_64", "avx2"))
    assert (same_simd.accuracy, same_simd.latency) == (b, None) and "recorded on x86_64 avx2" in same_simd.why
    other = find_baselines(tmp_path, name, Machine("x86_64-avx512f-16c", "x86_64", "avx512f"))
    assert (other.accuracy, other.latency) == (a, None) and "none has this host's x86_64 avx512f" in other.why
    assert [
        d["host"]["cpu"]["simd"] for d in recorded_baselines(tmp_path, Machine("z", "x86_64", "avx2"))
    ] == ["avx2"]


def test_every_configuration_of_every_class_is_planned_once(tmp_path: Path) -> None:
    base = {
        "preset": "p",
        "target": "onnxruntime",
        "settings": {},
        "latency": {},
        "accuracy": {"x": {"value": 1.0, "budget_minimum": 0.9, "allowed_drop": 0.01}},
    }
    filed_under("class-a", dict(base, model="m", precision="fp32", host={"cpu": {"simd": "a"}}), tmp_path)
    filed_under("class-b", dict(base, model="m", precision="fp32", host={"cpu": {"simd": "b"}}), tmp_path)
    filed_under("class-b", dict(base, model="m", precision="int8", host={"cpu": {"simd": "b"}}), tmp_path)
    planned = recorded_baselines(tmp_path, Machine("class-b", "x86_64", "b"))
    assert [(d["precision"], d["host"]["cpu"]["simd"]) for d in planned] == [("fp32", "b"), ("int8", "b")]


def test_no_baselines_at_all_is_an_error_that_says_how_to_record_one(tmp_path: Path) -> None:
    from trtdeploy.runtime.errors import ArtifactError

    with pytest.raises(ArtifactError, match="no baselines in .*make baseline MODEL=<model>"):
        recorded_baselines(tmp_path, ELSEWHERE)


def test_the_summary_counts_what_ran_and_names_what_did_not() -> None:
    skipped = NotChecked(
        "vision/b1", "latency", 0.5, "no latency baseline for machine class c", "record one with `x`"
    )
    ok = RegressionResult("a", (Check("cos", "accuracy", 1.0, 1.0, 0.99, True),), (skipped,))
    bad = RegressionResult(
        "b",
        (
            Check("cos", "accuracy", 1.0, 0.9, 0.99, False),
            Check("vision/b1", "latency", 0.5, 0.6, 0.55, False),
        ),
    )
    summary = summarize([ok, bad])
    assert summary.startswith("### Regression summary · REGRESSION")
    assert "- accuracy: checked in 2 of 2 configurations, 2 checks, 1 regressions" in summary
    assert "- latency: checked in 1 of 2 configurations, 1 checks, 1 regressions" in summary
    assert "  - not checked for a: no latency baseline for machine class c (record one with `x`)" in summary
    assert "- regression in b" in summary and "regression in a" not in summary
    assert summarize([ok]).startswith("### Regression summary · PASS")


def test_cli_exits_0_on_a_class_without_latency_baselines_and_8_on_an_accuracy_regression(  # type: ignore[no-untyped-def]
    baseline, tiny_clip: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """This host's class has no baseline under tmp_path: accuracy alone decides the exit code."""
    _, data = baseline
    argv = [
        "regress",
        "clip",
        "--precision",
        "fp32",
        "--bundle",
        str(tiny_clip.bundle),
        "--target",
        "onnxruntime",
        "--threads",
        "1",
        "--baselines",
        str(tmp_path),
    ]
    path = filed_under("no-such-machine-class", data, tmp_path)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "- latency: checked in 0 of 1 configurations, 0 checks, 0 regressions" in out
    assert "no latency baseline for machine class" in out and out.count("| not checked |") == len(
        data["latency"]
    )
    unreachable = dict(data, accuracy=dict(data["accuracy"]))
    unreachable["accuracy"]["text/text_embeds cosine"] = {
        "value": 2.0,
        "budget_minimum": 1.0,
        "allowed_drop": 0.1,
    }
    path.write_text(json.dumps(unreachable), encoding="utf-8")
    assert main(argv) == 8
    out = capsys.readouterr().out
    assert "| accuracy | text/text_embeds cosine | 2 |" in out and "REGRESSION" in out


def test_a_clipseg_baseline_is_compared_at_the_prompt_counts_it_recorded(
    tiny_clipseg: BuildResult, tmp_path: Path
) -> None:
    """A baseline recorded at P = 1 and 2 is replayed at P = 1 and 2, whatever prompts the comparing
    run was given: every recorded row is checked, none is missing for want of a measurement."""
    machine = Machine("x86_64-here-2c", "x86_64", "here")
    common = {"model": "clipseg", "precision": "fp32", "baselines": tmp_path, "bundle": tiny_clipseg.bundle}
    quick = replace(QUICK, components=("text_encoder",))  # the pipeline rows are what this is about
    recorder = RegressionRun(settings=replace(quick, prompts=(1, 2)), machine=machine, **common)  # type: ignore[arg-type]
    data = json.loads(recorder.write_baseline(runs=2).read_text())
    assert {k for k in data["latency"] if k.startswith("pipeline/")} == {
        "pipeline/segment: 1 image × 1 prompts",
        "pipeline/segment: 1 image × 2 prompts",
    }
    result = RegressionRun(settings=replace(quick, prompts=(1, 3, 8)), machine=machine, **common).compare()  # type: ignore[arg-type]
    assert [c.name for c in result.ran("latency")] == list(data["latency"])
