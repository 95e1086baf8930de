"""Latency measurement that is fair to both sides on a noisy machine.

Each runner is timed in its own block after a warm-up, and blocks alternate (A B A B ...):
interleaving two frameworks call by call makes each pay for the other's spinning thread pool, and
alternating blocks cancels slow drift of the machine. Figures are medians and percentiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds."""

    n: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def from_seconds(cls, samples: list[float]) -> LatencyStats:
        if not samples:
            raise ValueError("no latency samples")
        ms = np.asarray(samples) * 1e3
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        return cls(len(ms), float(ms.min()), float(ms.mean()), float(p50), float(p90), float(p95), float(p99))

    def to_json(self) -> dict[str, float]:
        return {
            "n": self.n,
            "min_ms": self.min,
            "mean_ms": self.mean,
            "p50_ms": self.p50,
            "p90_ms": self.p90,
            "p95_ms": self.p95,
            "p99_ms": self.p99,
        }


# Pause between blocks: a framework's thread pool keeps spinning for a while after its last call
# (OpenMP's default block time is 200 ms), stealing cores from the other side's next block; short
# calls (a tiny model's tens of ms) would otherwise be timed against a busy machine.
SETTLE_SECONDS = 0.3


def time_blocks(
    runners: Mapping[str, Callable[[], object]],
    *,
    iterations: int,
    warmup: int,
    blocks: int,
    settle: float = SETTLE_SECONDS,
) -> dict[str, list[float]]:
    """Per-call seconds for each runner, measured in ``blocks`` alternating blocks of
    ``iterations`` timed calls, each block after ``settle`` seconds of rest and ``warmup``
    untimed calls."""
    if iterations < 1 or blocks < 1 or warmup < 0:
        raise ValueError("iterations and blocks must be >= 1, warmup >= 0")
    samples: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for block in range(blocks):
        # Reverse the order every other block, so neither runner always goes first.
        for name in order if block % 2 == 0 else reversed(order):
            call = runners[name]
            time.sleep(settle)
            for _ in range(warmup):
                call()
            for _ in range(iterations):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return samples
