"""The bench figure: each panel draws the figures of the records it is given, and every point of
the accuracy panel carries its own label."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Annotation

from trtdeploy.bench import BenchRecord, BenchRow
from trtdeploy.bench_pipelines import PipelineRow
from trtdeploy.plots import figure, plot_records
from trtdeploy.runtime.bench import LatencyStats

HOST = {"cpu": {"model": "Test CPU", "simd": "avx2", "arch": "x86_64", "cores": 2}}


def stats(ms: float) -> LatencyStats:
    return LatencyStats(3, ms, ms, ms, ms, ms, ms)


def record(
    precision: str, cosine: float, pipeline: tuple[PipelineRow, ...] = (), vision_ms: float = 50.0
) -> BenchRecord:
    rows = (BenchRow("vision", 1, stats(vision_ms), stats(100.0), (0.5,), (vision_ms, vision_ms * 1.1)),)
    accuracy = {"outputs": [{"component": "vision", "output": "image_embeds", "cosine": cosine}], "tasks": []}
    return BenchRecord(
        "clip",
        "tiny",
        precision,
        "onnxruntime",
        {"threads": 2},
        HOST,
        rows,
        {},
        accuracy,
        0.0,
        "now",
        pipeline,
    )


def zero_shot(cold_ms: float, warm_ms: float, eager_ms: float = 200.0) -> tuple[PipelineRow, ...]:
    name = "zero-shot: 1 image × 10 labels, label embeddings"
    return (
        PipelineRow(f"{name} cold", 1, "images", stats(cold_ms), stats(eager_ms), label_cache="cold"),
        PipelineRow(f"{name} warm", 1, "images", stats(warm_ms), stats(eager_ms), label_cache="warm"),
    )


def segment(engine_ms: dict[int, float], eager_ms: dict[int, float]) -> tuple[PipelineRow, ...]:
    return tuple(
        PipelineRow(f"segment: 1 image × {p} prompts", p, "prompts", stats(engine_ms[p]), stats(eager_ms[p]))
        for p in engine_ms
    )


@pytest.fixture
def drawn() -> Any:
    figures: list[Any] = []

    def draw(records: list[BenchRecord]) -> Any:
        fig = figure(records, plt)
        fig.canvas.draw()  # text extents exist only after a draw
        figures.append(fig)
        return fig

    yield draw
    for fig in figures:
        plt.close(fig)


def test_each_point_carries_its_own_label_when_cosines_coincide(drawn: Any) -> None:
    """FP32 and FP16 at the same cosine and nearly the same latency: each label is anchored on its
    own point, lies nearest to it, and overlaps no other label (the bug: both labels beside one)."""
    records = [
        record("fp32", 0.999999, zero_shot(120.0, 60.0)),
        record("fp16", 0.999999, zero_shot(118.0, 57.0)),
        record("int8", 0.9990, zero_shot(70.0, 30.0)),
    ]
    ax = drawn(records).axes[-1]
    points = {"fp32": (60.0, 0.999999), "fp16": (57.0, 0.999999), "int8": (30.0, 0.9990)}
    labels = [t for t in ax.texts if isinstance(t, Annotation)]
    assert sorted(t.get_text().split()[0] for t in labels) == sorted(points)
    display = {k: ax.transData.transform(v) for k, v in points.items()}
    boxes = []
    for label in labels:
        precision = label.get_text().split()[0]
        assert label.xy == pytest.approx(points[precision])
        assert label.arrow_patch is not None  # a leader line joins label and point
        box = label.get_window_extent()
        centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
        nearest = min(display, key=lambda k: float(np.linalg.norm(display[k] - centre)))
        assert nearest == precision, f"{precision}'s label stands nearest the {nearest} point"
        boxes.append(box)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    # The x axis is the warm zero-shot call, and the ratio is against the eager run beside it.
    assert "label embeddings warm" in ax.get_xlabel()
    assert any(t.get_text() == "fp16 (0.28× eager)" for t in labels)


def test_clip_panel_shows_zero_shot_cold_and_warm_against_eager(drawn: Any) -> None:
    records = [
        record("fp32", 1.0, zero_shot(120.0, 60.0, 240.0)),
        record("int8", 0.999, zero_shot(70.0, 30.0)),
    ]
    ax = drawn(records).axes[0]
    heights = [[round(b.get_height(), 6) for b in c] for c in ax.containers]
    assert heights == [[120.0], [60.0], [240.0], [70.0], [30.0], [200.0]]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["cold\n0.50×", "warm\n0.25×", "eager", "cold\n0.35×", "warm\n0.15×", "eager"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fp32", "int8"]
    assert ax.get_title().startswith("zero-shot: 1 image × 10 labels")


def test_clipseg_panel_plots_latency_against_prompts_per_precision(drawn: Any) -> None:
    fp32 = segment({1: 700.0, 3: 800.0, 8: 980.0}, {1: 740.0, 3: 2250.0, 8: 6400.0})
    int8 = segment({1: 410.0, 3: 450.0, 8: 540.0}, {1: 630.0, 3: 2000.0, 8: 6200.0})
    records = [record("fp32", 1.0, fp32), record("int8", 0.9995, int8)]
    fig = drawn(records)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {
        "fp32 engine",
        "PyTorch eager (beside fp32)",
        "int8 engine",
        "PyTorch eager (beside int8)",
    }
    assert list(lines["fp32 engine"].get_xdata()) == [1, 3, 8]
    assert list(lines["int8 engine"].get_ydata()) == [410.0, 450.0, 540.0]
    assert list(lines["PyTorch eager (beside fp32)"].get_ydata()) == [740.0, 2250.0, 6400.0]
    assert "prompts per image" in ax.get_xlabel()
    assert len(fig.axes) == 2  # the pipeline, then accuracy: no per-component panel
    assert "segment 1 image × 1 prompts" in fig.axes[-1].get_xlabel()


def test_without_pipeline_rows_each_component_gets_its_panel(drawn: Any) -> None:
    fig = drawn([record("fp32", 1.0), record("int8", 0.999, vision_ms=30.0)])
    assert [ax.get_title() for ax in fig.axes] == ["vision, batch 1: latency per call", "accuracy vs latency"]
    assert "all components" in fig.axes[-1].get_xlabel()


def test_plot_records_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "clip.png"
    plot_records([record("fp32", 1.0, zero_shot(120.0, 60.0))], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
