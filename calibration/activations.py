"""Activation statistics of an FP32 ONNX graph on calibration batches, through ONNX Runtime.

Two passes, as TensorRT's calibrators do: the first records |x| maxima of the wanted tensors, the
second builds a fixed-width histogram of |x| over [0, max] per tensor, which the percentile and
entropy methods read. Both passes are deterministic for the same inputs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from trtdeploy.calibration.data import Feeds

HISTOGRAM_BINS = 2048


class ActivationRecorder:
    """An ONNX Runtime session over a copy of the graph that also outputs the named tensors."""

    def __init__(self, onnx_path: Path, names: Sequence[str], threads: int | None = None) -> None:
        if not names:  # ONNX Runtime reads an empty output list as "every output"
            raise ValueError(f"no tensors of {onnx_path.name} to record")
        model = onnx.load(str(onnx_path), load_external_data=False)
        existing = {o.name for o in model.graph.output}
        for name in names:
            if name not in existing:
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
        self.names = list(names)
        options = ort.SessionOptions()
        # Graph optimizations may fuse away the very tensors asked for; keep the graph as exported.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        # Saved next to the original so relative external-data paths still resolve.
        with tempfile.NamedTemporaryFile(suffix=".stats.onnx", dir=onnx_path.parent) as tmp:
            onnx.save(model, tmp.name)
            self.session = ort.InferenceSession(tmp.name, options, providers=["CPUExecutionProvider"])

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(self.names, feeds), strict=True))


def absmax(recorder: ActivationRecorder, batches: Iterable[Feeds]) -> dict[str, float]:
    """max |x| per tensor over all batches."""
    result = dict.fromkeys(recorder.names, 0.0)
    for feeds in batches:
        for name, value in recorder(feeds).items():
            if value.size:
                result[name] = max(result[name], float(np.max(np.abs(value))))
    return result


def histograms(
    recorder: ActivationRecorder,
    batches: Iterable[Feeds],
    maxima: dict[str, float],
    bins: int = HISTOGRAM_BINS,
) -> dict[str, np.ndarray]:
    """Histogram of |x| over [0, max] per tensor (int64 counts, ``bins`` bins)."""
    result = {name: np.zeros(bins, dtype=np.int64) for name in recorder.names}
    for feeds in batches:
        for name, value in recorder(feeds).items():
            top = maxima[name]
            if top > 0 and value.size:
                counts, _ = np.histogram(np.abs(value), bins=bins, range=(0.0, top))
                result[name] += counts
    return result
