"""The benchmark's picture: latency distribution per precision, and accuracy against latency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trtdeploy.bench import BenchRecord


def plot_records(records: Sequence[BenchRecord], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    components = list(dict.fromkeys(r.component for rec in records for r in rec.rows))
    fig, axes = plt.subplots(1, len(components) + 1, figsize=(5 * (len(components) + 1), 4.5))
    for ax, component in zip(axes, components, strict=False):
        _latency_panel(ax, records, component)
    _accuracy_panel(axes[-1], records)
    first = records[0]
    cpu = first.host["cpu"]
    fig.suptitle(
        f"{first.model} on {first.target} · {cpu['model']} ({cpu['simd']}, {first.settings['threads']} threads) "
        "· smallest batch",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


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
    ax.set_title(f"{component}, batch {eager.batch if eager else '?'}: latency per call")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


def _accuracy_panel(ax: Any, records: Sequence[BenchRecord]) -> None:
    right = 0.0
    for index, record in enumerate(records):
        smallest: dict[str, Any] = {}
        for row in record.rows:
            if row.component not in smallest or row.batch < smallest[row.component].batch:
                smallest[row.component] = row
        latency = sum(r.engine.p50 for r in smallest.values())
        eager = sum(r.reference.p50 for r in smallest.values())
        cosine = min(o["cosine"] for o in record.accuracy["outputs"])
        right = max(right, latency)
        ax.scatter([latency], [cosine], s=60)
        # Precisions often land on the same cosine: stagger the labels so they do not overprint.
        ax.annotate(
            f"{record.precision} ({latency / eager:.2f}× eager)",
            (latency, cosine),
            fontsize=8,
            textcoords="offset points",
            xytext=(-10, 8 + 12 * (index % 3)),
            ha="right",
        )
    ax.set_xlabel("p50 latency, all components (ms)")
    ax.set_ylabel("min cosine vs PyTorch FP32 (held-out inputs)")
    ax.set_title("accuracy vs latency")
    ax.set_xlim(left=0, right=right * 1.1 or None)
    ax.margins(y=0.3)  # room above the points for the staggered labels
