"""Block timing: alternating blocks, warm-up untimed, percentiles computed right."""

from __future__ import annotations

import pytest

from trtdeploy.runtime.bench import LatencyStats, time_blocks


def test_blocks_alternate_and_warmup_is_not_timed() -> None:
    calls: list[str] = []
    samples = time_blocks(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, iterations=2, warmup=1, blocks=3
    )
    assert calls == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3 + ["a"] * 3 + ["b"] * 3
    assert len(samples["a"]) == len(samples["b"]) == 6


def test_stats_from_known_samples() -> None:
    stats = LatencyStats.from_seconds([0.001 * i for i in range(1, 101)])
    assert stats.n == 100 and stats.min == pytest.approx(1.0) and stats.p50 == pytest.approx(50.5)
    assert stats.p99 == pytest.approx(99.01)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        time_blocks({"a": lambda: None}, iterations=0, warmup=0, blocks=1)
    with pytest.raises(ValueError):
        LatencyStats.from_seconds([])


def test_clip_zero_shot_rows_time_cold_and_warm_label_embeddings(tiny_clip, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The batch row and the cold row encode the labels in every timed call; the warm row never
    does (its cache is filled before timing), so it runs the vision engine only."""
    from trtdeploy.bench import load_reference
    from trtdeploy.bench_pipelines import PipelineBenchContext, clip_zero_shot
    from trtdeploy.runtime.bundle import Bundle
    from trtdeploy.runtime.pipelines.clip import ClipPipeline

    encoded: list[int] = []
    encode = ClipPipeline._encode_texts

    def counting(self: ClipPipeline, texts: list[str]) -> object:
        encoded.append(len(texts))
        return encode(self, texts)

    monkeypatch.setattr(ClipPipeline, "_encode_texts", counting)
    bundle = Bundle.load(tiny_clip.bundle)
    context = PipelineBenchContext(
        bundle, load_reference(bundle, None), "onnxruntime", 1, iterations=2, warmup=0, blocks=1
    )
    rows = clip_zero_shot(context)
    assert [(r.name, r.items, r.label_cache) for r in rows] == [
        ("zero-shot: 7 images × 10 labels", 7, ""),
        ("zero-shot: 1 image × 10 labels, label embeddings cold", 1, "cold"),
        ("zero-shot: 1 image × 10 labels, label embeddings warm", 1, "warm"),
    ]
    # 2 timed batch calls, 1 untimed + 2 timed cold calls, all 10 labels each; none for warm.
    assert encoded == [10] * 5
    assert all(r.engine.n == r.reference.n == 2 and r.ratio > 0 for r in rows)
    assert rows[2].to_json()["label_cache"] == "warm"
