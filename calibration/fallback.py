"""Keep the fewest layers out of INT8 that meet the accuracy budget.

Layers are ranked worst first (calibration/sensitivity.py); the search then bisects on how many of
the worst to keep in FP16, re-evaluating the whole model each time, so it needs about log2(layers)
evaluations instead of one per layer. It assumes that keeping more layers in FP16 never hurts,
which holds in practice; the final verification on held-out data checks the result regardless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trtdeploy.runtime.errors import VerificationError


@dataclass
class FallbackSearch:
    """The outcome: which layers stay in higher precision and every evaluation made on the way."""

    kept_high_precision: list[str]
    evaluations: list[dict[str, object]] = field(default_factory=list)


class BudgetUnreachable(VerificationError):
    """Even with every ranked layer in FP16 the budget is missed (exit 6, like any missed budget)."""


def search_exclusions(
    ranked: Sequence[str],
    passes: Callable[[list[str]], tuple[bool, str]],
    plain: tuple[bool, str] | None = None,
    report: Callable[[dict[str, object]], None] | None = None,
) -> FallbackSearch:
    """Smallest prefix of ``ranked`` (worst layers first) whose exclusion makes ``passes`` true.

    ``passes(excluded)`` evaluates the model with those layers kept out of INT8 and returns
    (met the budget?, a one-line summary for the record); ``plain`` is that result for no
    exclusions when the caller already has it; ``report`` sees each evaluation as it is recorded
    (a search on a large model takes many minutes per evaluation).
    """
    search = FallbackSearch([])

    def record(count: int, ok: bool, summary: str) -> None:
        search.evaluations.append({"kept_out_of_int8": count, "passed": ok, "summary": summary})
        if report is not None:
            report(search.evaluations[-1])

    if plain is not None:
        record(0, *plain)

    def evaluate(count: int) -> bool:
        ok, summary = passes(list(ranked[:count]))
        record(count, ok, summary)
        return ok

    if plain[0] if plain is not None else evaluate(0):
        return search
    if not evaluate(len(ranked)):
        raise BudgetUnreachable(
            f"the budget is missed even with all {len(ranked)} quantized layers kept in FP16: "
            f"{search.evaluations[-1]['summary']}"
        )
    low, high = 0, len(ranked)  # evaluate(low) failed, evaluate(high) passed
    while high - low > 1:
        middle = (low + high) // 2
        if evaluate(middle):
            high = middle
        else:
            low = middle
    search.kept_high_precision = list(ranked[:high])
    return search
