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
