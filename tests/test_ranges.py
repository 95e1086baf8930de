"""Calibration thresholds from known histograms."""

from __future__ import annotations

import numpy as np
import pytest

from trtdeploy.calibration.fallback import BudgetUnreachable, search_exclusions
from trtdeploy.calibration.ranges import entropy_threshold, percentile_threshold, threshold


def gaussian_histogram(outlier: float = 0.0) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(0)
    values = np.abs(rng.standard_normal(200_000))
    if outlier:
        values = np.append(values, outlier)
    top = float(values.max())
    hist, _ = np.histogram(values, bins=2048, range=(0, top))
    return hist, top


def test_max_is_the_largest_value() -> None:
    hist, top = gaussian_histogram(outlier=50.0)
    assert threshold("max", top, hist) == top == 50.0


def test_percentile_ignores_a_lone_outlier() -> None:
    hist, top = gaussian_histogram(outlier=50.0)
    t = percentile_threshold(hist, top, 99.99)
    assert 3.5 < t < 4.5  # |N(0,1)| 99.99th percentile is about 3.9


def test_entropy_clips_a_long_tail_but_keeps_the_bulk() -> None:
    hist, top = gaussian_histogram(outlier=50.0)
    t = entropy_threshold(hist, top)
    assert 2.0 < t < 8.0
    assert threshold("entropy", top, hist) == t


def test_unknown_method_and_missing_histogram() -> None:
    with pytest.raises(ValueError, match="unknown calibration method"):
        threshold("kl", 1.0, None)
    with pytest.raises(ValueError, match="needs a histogram"):
        threshold("percentile", 1.0, None)


def test_bisection_finds_the_fewest_exclusions() -> None:
    ranked = [f"layer{i}" for i in range(20)]
    calls: list[int] = []

    def passes(excluded: list[str]) -> tuple[bool, str]:
        calls.append(len(excluded))
        return len(excluded) >= 7, f"{len(excluded)} excluded"

    search = search_exclusions(ranked, passes)
    assert search.kept_high_precision == ranked[:7]
    assert len(calls) <= 2 + 5  # 0 and all, then log2(20) bisection steps


def test_unreachable_budget_says_so() -> None:
    with pytest.raises(BudgetUnreachable, match="even with all 3 quantized layers"):
        search_exclusions(["a", "b", "c"], lambda excluded: (False, "nope"))


def test_zero_shot_agreement_counts_near_ties_but_not_flips() -> None:
    from trtdeploy.runtime.pipelines.clip import zero_shot_agreement

    text = np.eye(3, dtype=np.float32)  # prompt j scores image i by its j-th coordinate
    reference = {
        "vision": {"image_embeds": np.array([[1.0, 0.9995, 0.0], [1.0, 0.5, 0.0]], np.float32)},
        "text": {"text_embeds": text},
    }
    near_tie = {
        "vision": {"image_embeds": np.array([[0.9995, 1.0, 0.0], [1.0, 0.5, 0.0]], np.float32)},
        "text": {"text_embeds": text},
    }
    flipped = {
        "vision": {"image_embeds": np.array([[1.0, 0.9995, 0.0], [0.5, 1.0, 0.0]], np.float32)},
        "text": {"text_embeds": text},
    }
    assert zero_shot_agreement(reference, near_tie)[:2] == (1.0, 0.5)  # tie within 1% of the range
    assert zero_shot_agreement(reference, flipped)[:2] == (0.5, 0.5)
