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

    reported: list[dict[str, object]] = []
    search = search_exclusions(ranked, passes, report=reported.append)
    assert search.kept_high_precision == ranked[:7]
    assert len(calls) <= 2 + 5  # 0 and all, then log2(20) bisection steps
    # every evaluation is reported when it is made, in order, as the record keeps it
    assert reported == search.evaluations and [r["kept_out_of_int8"] for r in reported] == calls


def test_unreachable_budget_says_so() -> None:
    with pytest.raises(BudgetUnreachable, match="even with all 3 quantized layers"):
        search_exclusions(["a", "b", "c"], lambda excluded: (False, "nope"))


def test_zero_shot_agreement_counts_probability_ties_but_not_flips() -> None:
    from trtdeploy.runtime.pipelines.clip import zero_shot_agreement

    text = np.eye(3, dtype=np.float32)  # prompt j scores image i by its j-th coordinate

    def outputs(rows: list[list[float]]) -> dict[str, dict[str, np.ndarray]]:
        return {"vision": {"image_embeds": np.array(rows, np.float32)}, "text": {"text_embeds": text}}

    # Image 0: prompts 0 and 1 score 1.0 and 0.98, which at scale 100 is a clear choice (88% vs 12%).
    reference = outputs([[1.0, 0.98, 0.0], [1.0, 0.5, 0.0]])
    flipped = outputs([[0.98, 1.0, 0.0], [1.0, 0.5, 0.0]])
    assert zero_shot_agreement(reference, flipped, scale=100.0)[:2] == (0.5, 0.5)
    # At scale 1 the same scores are near-uniform probabilities: the flip is between tied prompts.
    assert zero_shot_agreement(reference, flipped, scale=1.0)[:2] == (1.0, 0.5)


def test_ranking_spends_the_least_work_for_the_error_it_removes() -> None:
    from trtdeploy.calibration.sensitivity import LayerSensitivity, rank_layers

    layers = [
        LayerSensitivity("vision/heavy", local_error=4e-3, work=1e9),  # worst alone, most of the work
        LayerSensitivity("decoder/light", local_error=1e-3, work=1e6),
        LayerSensitivity("decoder/clean", local_error=0.0, work=1e3),
        LayerSensitivity("vision/medium", local_error=4e-3, work=1e8),
    ]
    order = [layer.layer for layer in rank_layers(layers)]
    # Error per share of work: light 1e-3/1e6, medium 4e-3/1e8, heavy 4e-3/1e9; an exact layer last.
    assert order == ["decoder/light", "vision/medium", "vision/heavy", "decoder/clean"]
    # Equal work: local error alone decides, worst first.
    same = [LayerSensitivity(f"l{i}", e, 1.0) for i, e in enumerate([1e-4, 3e-4, 2e-4])]
    assert [layer.layer for layer in rank_layers(same)] == ["l1", "l2", "l0"]
