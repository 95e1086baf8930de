"""The benchmark's picture: what a user's call costs per precision, and accuracy against latency.

The first panels show the call users compare with PyTorch: CLIP's zero-shot of one image against
its labels with the label embeddings cold and warm; CLIPSeg's segmentation of one image against
the number of prompts. A model without such pipeline rows gets the latency distribution of each
component instead. The last panel puts every precision's accuracy against that latency.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trtdeploy.bench import BenchRecord
    from trtdeploy.bench_pipelines import PipelineRow

Panel = Callable[[Any], None]

# One colour per precision in every panel, so a precision reads the same everywhere.
PRECISION_COLOURS = {"fp32": "C0", "fp16": "C1", "int8": "C2"}


def plot_records(records: Sequence[BenchRecord], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    fig = figure(records, plt)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def figure(records: Sequence[BenchRecord], plt: Any) -> Any:
    """The benchmark's figure (not yet saved): call panels, then accuracy against latency."""
    if not records:
        raise ValueError("no bench records to plot")
    headline = _headline_kind(records)
    panels: list[Panel] = [*_call_panels(records), lambda ax: _accuracy_panel(ax, records, headline)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        panel(ax)
    first = records[0]
    cpu = first.host["cpu"]
    fig.suptitle(
        f"{first.model} on {first.target} · {cpu['model']} ({cpu['simd']}, {first.settings['threads']} threads)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _colour(precision: str, index: int) -> str:
    return PRECISION_COLOURS.get(precision, f"C{3 + index}")


def _call_panels(records: Sequence[BenchRecord]) -> list[Panel]:
    if any(_cache_rows(r) for r in records):
        return [lambda ax: _zero_shot_panel(ax, records)]
    if any(_segment_rows(r) for r in records):
        return [lambda ax: _segment_panel(ax, records)]
    components = list(dict.fromkeys(r.component for rec in records for r in rec.rows))
    return [functools.partial(_latency_panel, records=records, component=c) for c in components]


def _cache_rows(record: BenchRecord) -> dict[str, PipelineRow]:
    """CLIP's one-image zero-shot rows by label cache state ("cold", "warm")."""
    return {p.label_cache: p for p in record.pipeline if p.label_cache}


def _segment_rows(record: BenchRecord) -> list[PipelineRow]:
    """CLIPSeg's one-image rows, by prompts per image."""
    return sorted((p for p in record.pipeline if p.unit == "prompts"), key=lambda p: p.items)


def _zero_shot_panel(ax: Any, records: Sequence[BenchRecord]) -> None:
    """Per precision: the engine with label embeddings cold and warm, and PyTorch eager beside them."""
    width = 0.27
    states = ("cold", "warm")
    names = []
    for index, record in enumerate(records):
        rows = _cache_rows(record)
        names.append(record.precision)
        colour = _colour(record.precision, index)
        for offset, state in zip((-width, 0.0), states, strict=True):
            row = rows.get(state)
            if row is None:
                continue
            hatch = "" if state == "cold" else "//"
            bar = ax.bar(index + offset, row.engine.p50, width, color=colour, hatch=hatch, edgecolor="black")
            ax.bar_label(bar, labels=[f"{state}\n{row.ratio:.2f}×"], fontsize=7)
        eager = [rows[s].reference.p50 for s in states if s in rows]
        if eager:
            # Eager computes the labels every call: the same work beside both rows, so its bar is
            # the mean of the two medians measured beside them.
            bar = ax.bar(index + width, sum(eager) / len(eager), width, color="lightgrey", edgecolor="black")
            ax.bar_label(bar, labels=["eager"], fontsize=7)
    call = next(row.name for r in records for row in _cache_rows(r).values()).split(",")[0]
    ax.set_xticks(range(len(names)), names)
    ax.set_title(f"{call}: p50 per call (ratio to eager)", fontsize=9)
    ax.set_ylabel("ms")
    ax.margins(y=0.2)  # room for the bar labels
    ax.set_ylim(bottom=0)


def _segment_panel(ax: Any, records: Sequence[BenchRecord]) -> None:
    """Latency of segmenting one image against prompts per image: engine and eager per precision."""
    counts: set[int] = set()
    for index, record in enumerate(records):
        rows = _segment_rows(record)
        if not rows:
            continue
        colour = _colour(record.precision, index)
        x = [r.items for r in rows]
        counts.update(x)
        ax.plot(x, [r.engine.p50 for r in rows], "o-", color=colour, label=f"{record.precision} engine")
        ax.plot(
            x,
            [r.reference.p50 for r in rows],
            "s--",
            color=colour,
            alpha=0.6,
            label=f"PyTorch eager (beside {record.precision})",
        )
    ax.set_xticks(sorted(counts))
    ax.set_xlabel("prompts per image (P)")
    ax.set_ylabel("p50 ms per call")
    ax.set_title("segment one image with P prompts", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)


def _latency_panel(ax: Any, records: Sequence[BenchRecord], component: str) -> None:
    labels, data = [], []
    eager = None
    for record in records:
        row = min((r for r in record.rows if r.component == component), key=lambda r: r.batch)
        labels.append(record.precision)
        data.append(row.engine_samples_ms)
        eager = eager or row
    if eager is not None:
        # The eager reference has no per-call samples in the record; show its median as a line.
        ax.axhline(
            eager.reference.p50,
            color="grey",
            linestyle="--",
            label=f"PyTorch eager p50 {eager.reference.p50:.0f} ms",
        )
    ax.boxplot(data, tick_labels=labels, showfliers=True)
    ax.set_title(f"{component}, batch {eager.batch if eager else '?'}: latency per call", fontsize=9)
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


@dataclass(frozen=True)
class Headline:
    """Which latency the accuracy panel puts on its x axis: one every record has."""

    label: str
    pick: Callable[[BenchRecord], tuple[float, float]]  # record -> (engine p50, eager p50)


def _headline_kind(records: Sequence[BenchRecord]) -> Headline:
    if all("warm" in _cache_rows(r) for r in records):
        name = _cache_rows(records[0])["warm"].name
        return Headline(f"p50, {name} (ms)", lambda r: _pair(_cache_rows(r)["warm"]))
    if all(_segment_rows(r) for r in records):
        fewest = min(_segment_rows(r)[0].items for r in records)
        if all(any(p.items == fewest for p in _segment_rows(r)) for r in records):
            return Headline(
                f"p50, segment 1 image × {fewest} prompts (ms)",
                lambda r: _pair(next(p for p in _segment_rows(r) if p.items == fewest)),
            )
    return Headline("p50 latency, all components at their smallest batch (ms)", _components)


def _pair(row: PipelineRow) -> tuple[float, float]:
    return row.engine.p50, row.reference.p50


def _components(record: BenchRecord) -> tuple[float, float]:
    smallest: dict[str, Any] = {}
    for row in record.rows:
        if row.component not in smallest or row.batch < smallest[row.component].batch:
            smallest[row.component] = row
    return sum(r.engine.p50 for r in smallest.values()), sum(r.reference.p50 for r in smallest.values())


# Label offsets in points, by the point's rank in latency: above, below, higher above, lower
# below... Each label is centred over its own point, so however close two points with the same
# cosine stand, each label is nearest its own point, and a leader line joins the two.
LABEL_STEP = 14


def _label_offset(rank: int) -> tuple[float, float]:
    level = 1 + rank // 2
    return 0.0, (LABEL_STEP if rank % 2 == 0 else -LABEL_STEP) * level


def _accuracy_panel(ax: Any, records: Sequence[BenchRecord], headline: Headline) -> None:
    points = []
    for index, record in enumerate(records):
        latency, eager = headline.pick(record)
        cosine = min(o["cosine"] for o in record.accuracy["outputs"])
        points.append((latency, cosine, eager, record.precision, _colour(record.precision, index)))
    order = sorted(range(len(points)), key=lambda i: points[i][0])
    for rank, i in enumerate(order):
        latency, cosine, eager, precision, colour = points[i]
        ax.scatter([latency], [cosine], s=60, color=colour, zorder=3)
        ax.annotate(
            f"{precision} ({latency / eager:.2f}× eager)",
            (latency, cosine),
            fontsize=8,
            color=colour,
            textcoords="offset points",
            xytext=_label_offset(rank),
            ha="center",
            va="bottom" if rank % 2 == 0 else "top",
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.8, "shrinkA": 0, "shrinkB": 4},
        )
    right = max(p[0] for p in points)
    ax.set_xlabel(headline.label, fontsize=8)
    ax.set_ylabel("min cosine vs PyTorch FP32 (held-out inputs)")
    ax.set_title("accuracy vs latency", fontsize=9)
    ax.set_xlim(left=0, right=right * 1.25 or None)  # room for the rightmost label
    ax.margins(y=0.4)  # room above and below the points for the labels
    ax.ticklabel_format(axis="y", useOffset=False)  # cosines near 1 read as they are, not as "+1" offsets
