"""From activation statistics to one symmetric INT8 threshold per tensor (scale = threshold / 127).

max: the largest |x| seen. percentile: the |x| below which a given fraction of values lie.
entropy: TensorRT's method, the clipping threshold whose 128-level quantized distribution is
closest (Kullback-Leibler) to the observed one.
"""

from __future__ import annotations

import numpy as np

METHODS = ("max", "percentile", "entropy")


def threshold(method: str, absmax: float, histogram: np.ndarray | None, percentile: float = 99.99) -> float:
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {list(METHODS)}")
    if absmax <= 0 or method == "max":
        return absmax
    if histogram is None or histogram.sum() == 0:
        raise ValueError(f"{method} calibration needs a histogram")
    if method == "percentile":
        return percentile_threshold(histogram, absmax, percentile)
    return entropy_threshold(histogram, absmax)


def percentile_threshold(histogram: np.ndarray, absmax: float, percentile: float) -> float:
    cumulative = np.cumsum(histogram) / histogram.sum()
    index = int(np.searchsorted(cumulative, percentile / 100.0))
    width = absmax / len(histogram)
    return float(min(absmax, (index + 1) * width))


def entropy_threshold(histogram: np.ndarray, absmax: float, levels: int = 128) -> float:
    """The clipping threshold that minimises KL(P || Q), P the clipped histogram, Q its
    ``levels``-level quantization spread back over P's non-empty bins."""
    hist = histogram.astype(np.float64)
    bins = len(hist)
    width = absmax / bins
    best_kl, best_end = np.inf, bins
    for end in range(levels, bins + 1):
        p = hist[:end].copy()
        p[end - 1] += hist[end:].sum()  # values beyond the threshold clip to the last level
        # Quantize the unclipped bins into `levels` groups, then spread each group's mass evenly
        # over the group's non-empty bins (empty bins stay empty, as they would after rounding).
        groups = np.arange(end) * levels // end
        mass = np.bincount(groups, weights=hist[:end], minlength=levels)
        nonzero = np.bincount(groups, weights=(hist[:end] > 0).astype(np.float64), minlength=levels)
        q = np.where(hist[:end] > 0, mass[groups] / np.maximum(nonzero[groups], 1), 0.0)
        kl = _kl(p, q)
        if kl < best_kl:
            best_kl, best_end = kl, end
    return float(best_end * width)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum == 0 or q_sum == 0:
        return np.inf
    p, q = p / p_sum, q / q_sum
    support = p > 0
    if np.any(q[support] == 0):
        # The clipped last bin can be non-empty in P and empty in Q; give it a tiny mass instead of
        # ruling the threshold out.
        q = np.where(support & (q == 0), 1e-12, q)
    return float(np.sum(p[support] * np.log(p[support] / q[support])))
