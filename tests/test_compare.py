"""The comparator: numbers per output, NaN and shape mismatches always fail."""

from __future__ import annotations

import numpy as np

from trtdeploy.runtime.compare import Budget, Tolerance, compare_output, compare_outputs

TOL = Tolerance(cosine_min=0.999, atol=1e-3, rtol=1e-2, max_outside=0.0)


def test_identical_outputs_pass_with_exact_figures() -> None:
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    r = compare_output("c", "o", x, x.copy(), TOL)
    assert r.passed and r.cosine == 1.0 and r.max_abs == 0.0 and r.outside_fraction == 0.0


def test_outside_fraction_counts_atol_plus_rtol() -> None:
    ref = np.ones(10, np.float32)
    got = ref.copy()
    got[:3] += 0.02  # beyond 1e-3 + 1e-2 * 1
    got[3] += 0.005  # within
    r = compare_output("c", "o", ref, got, TOL)
    assert r.outside_fraction == 0.3
    assert not r.passed and "30.00% of elements outside" in r.failures[0]
    assert abs(r.max_abs - 0.02) < 1e-6


def test_atol_of_max_scales_with_the_reference() -> None:
    """The same rounding error, a fixed share of the output's scale, passes at any scale."""
    scaled = Tolerance(cosine_min=0.999, atol=1e-4, rtol=0.0, max_outside=0.0, atol_of_max=True)
    for scale in (1.0, 3000.0):
        ref = np.linspace(-scale, scale, 101, dtype=np.float64)  # crosses zero
        got = ref + 5e-5 * scale
        assert compare_output("c", "o", ref, got, scaled).passed
        assert not compare_output("c", "o", ref, ref + 2e-4 * scale, scaled).passed
    fixed = Tolerance(cosine_min=0.999, atol=1e-4, rtol=0.0, max_outside=0.0)
    assert not compare_output("c", "o", ref, ref + 5e-5 * 3000.0, fixed).passed
    failure = compare_output("c", "o", ref, ref + 1.0, scaled).failures[0]
    assert "atol 0.0001·max|ref|" in failure
    assert Tolerance.from_json(scaled.to_json()) == scaled
    legacy = {k: v for k, v in fixed.to_json().items() if k != "atol_of_max"}  # a bundle written before
    assert Tolerance.from_json(legacy) == fixed


def test_nan_fails_even_with_loose_tolerance() -> None:
    ref = np.ones(4, np.float32)
    got = np.array([1, 1, np.nan, 1], np.float32)
    loose = Tolerance(cosine_min=-1.0, atol=1e9, rtol=1e9, max_outside=1.0)
    r = compare_output("c", "o", ref, got, loose)
    assert not r.passed and "1 NaN/Inf values" in r.failures


def test_shape_mismatch_and_missing_output_fail() -> None:
    budget = Budget({"*": TOL})
    results = compare_outputs("c", {"a": np.ones(3), "b": np.ones(2)}, {"a": np.ones(4)}, budget)
    assert [r.passed for r in results] == [False, False]
    assert "shape (4,) != reference shape (3,)" in results[0].failures[0]
    assert results[1].failures == ["output missing"]


def test_an_output_without_a_reference_fails_rather_than_going_unjudged() -> None:
    budget = Budget({"*": TOL})
    results = compare_outputs("c", {"a": np.ones(3)}, {"a": np.ones(3), "extra": np.ones(2)}, budget)
    by_name = {r.output: r for r in results}
    assert by_name["a"].passed
    assert not by_name["extra"].passed
    assert by_name["extra"].failures == ["no reference recorded for it"]


def test_budget_lookup_prefers_the_specific_key_and_round_trips() -> None:
    special = Tolerance(0.5, 1.0, 1.0, 0.5)
    budget = Budget({"*": TOL, "text/embeds": special}, {"top1": 0.9})
    assert budget.tolerance_for("text", "embeds") == special
    assert budget.tolerance_for("vision", "embeds") == TOL
    assert Budget.from_json(budget.to_json()) == budget
