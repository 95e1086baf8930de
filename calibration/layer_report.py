"""Where a lower-precision graph first departs from its FP32 source, tensor by tensor (Polygraphy).

Both graphs of a component run on ONNX Runtime through Polygraphy's runners with every tensor they
share marked as an output (the FP16 cast and the Q/DQ insertion keep the FP32 graph's tensor names;
what they add has names of its own), on the same feeds. Polygraphy's comparator gives each tensor's
absolute and relative error; to those the report adds the cosine and the count of values that are
finite in FP32 and Inf/NaN in the candidate (an FP16 overflow). Tensors are listed in the FP32
graph's order, so the first one past the tolerance is where the error starts, and the one whose
error grows most over its inputs' is the layer that adds it.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

Feeds = dict[str, np.ndarray]
FIRST_SHOWN = 5  # diverging tensors listed per component
FP16_MAX = 65504.0
PASS_BYTES = 2 << 30  # tensors held per graph per pass (the candidate's as many again)
FIRST_PASS_TENSORS = 64  # before any tensor's size is known


@dataclass(frozen=True)
class TensorError:
    """One tensor both graphs compute, candidate against FP32."""

    order: int  # position of its producer in the FP32 graph
    tensor: str
    node: str
    op_type: str
    cosine: float
    max_abs: float
    mean_abs: float
    ref_max: float  # max |FP32 value|: the scale the errors are read against
    non_finite: int  # values finite in FP32 that are Inf/NaN in the candidate
    input_cosine: float  # the worst cosine among the node's shared inputs (1.0 for none)
    inputs_overflow: bool = False  # an input already overflowed: this node only carries it on
    # Its Inf values are a constant beyond the candidate's range (a mask's float32 minimum is -inf
    # in FP16), or that carried on: the same answer after a softmax, so not counted as an error.
    saturated: bool = False
    module: str = ""  # the PyTorch module that traced the node (its export metadata), where known

    def diverges(self, cosine_min: float) -> bool:
        return (self.non_finite > 0 and not self.saturated) or not self.cosine >= cosine_min

    @property
    def growth(self) -> float:
        """How much of the cosine this node loses over its inputs (an overflow is the most)."""
        if self.inputs_overflow or self.saturated:
            return 0.0
        if self.non_finite:
            return math.inf
        return self.input_cosine - self.cosine if math.isfinite(self.cosine) else 0.0


@dataclass(frozen=True)
class LayerReport:
    component: str
    precision: str
    cosine_min: float
    samples: int
    tensors: tuple[TensorError, ...]  # every shared tensor, in the FP32 graph's order

    def first_diverging(self, count: int = FIRST_SHOWN) -> list[TensorError]:
        return [t for t in self.tensors if t.diverges(self.cosine_min)][:count]

    def overflows(self) -> list[TensorError]:
        return [t for t in self.tensors if t.non_finite and not t.saturated]

    def largest_growth(self, count: int = FIRST_SHOWN) -> list[TensorError]:
        """The nodes that add the most error of their own, worst first."""
        growing = [t for t in self.tensors if t.growth > 0]
        return sorted(growing, key=lambda t: (-t.growth, t.order))[:count]

    def to_markdown(self) -> str:
        first = self.first_diverging()
        lines = [
            f"### {self.component} · {self.precision} against FP32 · {len(self.tensors)} tensors compared "
            f"on {self.samples} sample(s), tolerance cos ≥ {self.cosine_min}",
            "",
        ]
        if first:
            lines.append(
                f"first diverging: **{first[0].node}** ({first[0].op_type}"
                + (f" in `{first[0].module}`" if first[0].module else "")
                + f") -> `{first[0].tensor}`"
                + (f", {first[0].non_finite} values overflow to Inf/NaN" if first[0].non_finite else "")
            )
        else:
            worst = min(self.tensors, key=lambda t: t.cosine, default=None)
            lines.append(
                "no tensor departs past the tolerance"
                + (
                    f"; the lowest cosine is {worst.cosine:.6f} at {worst.node} ({worst.op_type})"
                    if worst
                    else ""
                )
            )
        shown = {t.tensor: t for t in [*first, *self.largest_growth()]}
        if shown:
            lines += [
                "",
                "| # | node | op | module | tensor | cosine | max abs | mean abs | max |ref| | Inf/NaN | inputs' cosine |",
                "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|",
            ]
            for t in sorted(shown.values(), key=lambda t: t.order):
                lines.append(
                    f"| {t.order} | {t.node} | {t.op_type} | {t.module} | `{t.tensor}` | {t.cosine:.6f} | {t.max_abs:.3g} | "
                    f"{t.mean_abs:.3g} | {t.ref_max:.3g} | {_non_finite_cell(t)} | {t.input_cosine:.6f} |"
                )
            growth = ", ".join(
                f"{t.node} ({t.op_type}{', ' + t.module if t.module else ''})" for t in self.largest_growth(3)
            )
            lines += ["", f"adds the most error: {growth}"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "precision": self.precision,
            "cosine_min": self.cosine_min,
            "samples": self.samples,
            "first_diverging": [_finite_json(asdict(t)) for t in self.first_diverging()],
            "largest_growth": [_finite_json(asdict(t)) for t in self.largest_growth()],
            "overflows": [t.node for t in self.overflows()],
            "saturated_constants": [t.node for t in self.tensors if t.saturated],
            "tensors_compared": len(self.tensors),
        }


@dataclass
class _Statuses:
    """What the tensors compared so far (in graph order) say to the nodes that read them."""

    cosines: dict[str, float] = field(default_factory=dict)
    overflowed: set[str] = field(default_factory=set)
    saturated: set[str] = field(default_factory=set)

    def compare(
        self,
        order: int,
        node: onnx.NodeProto,
        name: str,
        ref_value: np.ndarray,
        cand_value: np.ndarray,
        compared: Any,
    ) -> TensorError:
        """One tensor, FP32 against the candidate; ``compared`` is Polygraphy's statistics of it."""
        ref, cand = np.asarray(ref_value, np.float64), np.asarray(cand_value, np.float64)
        self.cosines[name] = _cosine(ref, cand)
        non_finite = int(np.sum(np.isfinite(ref) & ~np.isfinite(cand)))
        data_inputs = [i for i in node.input if i in self.cosines and i != name]
        if (
            non_finite
            and _out_of_range(ref, cand)
            and (not data_inputs or any(i in self.saturated for i in node.input))
        ):
            self.saturated.add(name)
        elif non_finite:
            self.overflowed.add(name)
        inputs = [self.cosines[i] for i in node.input if i in self.cosines and math.isfinite(self.cosines[i])]
        return TensorError(
            order=order,
            tensor=name,
            node=node.name,
            op_type=node.op_type,
            cosine=self.cosines[name],
            max_abs=float(compared.max_absdiff),
            mean_abs=float(compared.mean_absdiff),
            ref_max=float(np.max(np.abs(ref))) if ref.size else 0.0,
            non_finite=non_finite,
            input_cosine=min(inputs, default=1.0),
            inputs_overflow=any(i in self.overflowed for i in node.input),
            saturated=name in self.saturated,
            module=_module_of(node),
        )


class LayerReportFromGraphs:
    """Stage: (FP32 graph, candidate graph, feeds) -> LayerReport, both graphs on ONNX Runtime's CPU
    provider through Polygraphy.

    Every tensor of a large graph at once does not fit in memory (Florence-2's DaViT tower at
    768 px holds tens of GB of them per image, twice over), so the tensors are compared in passes:
    each pass marks the next group as outputs and runs both graphs again, and a group is sized
    from the bytes the previous ones took, to about ``pass_bytes`` per graph.
    """

    def __init__(self, cosine_min: float, precision: str, pass_bytes: int = PASS_BYTES) -> None:
        self.cosine_min = cosine_min
        self.precision = precision
        self.pass_bytes = pass_bytes

    def __call__(self, component: str, fp32_path: Path, candidate_path: Path, feeds: Feeds) -> LayerReport:
        reference = onnx.load(str(fp32_path), load_external_data=False)
        candidate = onnx.load(str(candidate_path), load_external_data=False)
        producers = _producers(reference)
        floating = _float_tensors(candidate) & _float_tensors(reference)  # shape inference once per graph
        shared = [name for name in producers if name in floating]
        statuses = _Statuses()
        tensors = []
        done, group, seen_bytes = 0, FIRST_PASS_TENSORS, 0
        while done < len(shared):
            names = shared[done : done + group]
            ref_out, cand_out, stats = self._run_pair(fp32_path, candidate_path, names, feeds)
            for name in names:
                order, node = producers[name]
                seen_bytes += ref_out[name].nbytes
                tensors.append(
                    statuses.compare(order, node, name, ref_out[name], cand_out[name], stats[name])
                )
            done += len(names)
            del ref_out, cand_out, stats
            group = max(1, int(self.pass_bytes / max(seen_bytes / done, 1.0)))
        samples = len(next(iter(feeds.values())))
        return LayerReport(component, self.precision, self.cosine_min, samples, tuple(tensors))

    def _run_pair(
        self, fp32_path: Path, candidate_path: Path, names: list[str], feeds: Feeds
    ) -> tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray], Mapping[str, Any]]:
        """Both graphs with ``names`` as their outputs, on the same feeds: each one's values and
        Polygraphy's per-tensor statistics of the pair."""
        from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
        from polygraphy.comparator import Comparator
        from polygraphy.comparator.compare import SimpleCompareFunc
        from polygraphy.logger import G_LOGGER

        runners = [
            OnnxrtRunner(
                SessionFromOnnx(
                    BytesFromOnnx(
                        ModifyOutputs(OnnxFromPath(str(path), external_data_dir=str(path.parent)), names)
                    )
                ),
                name=name,
            )
            for name, path in (("fp32", fp32_path), (self.precision, candidate_path))
        ]
        # Its per-tensor log would bury the report; its statistics over masks' -inf warn in numpy.
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL), np.errstate(all="ignore"):
            results = Comparator.run(runners, data_loader=[feeds])
            accuracy = Comparator.compare_accuracy(
                results, compare_func=SimpleCompareFunc(check_error_stat="max")
            )
        stats = accuracy[0][("fp32", self.precision)][0]  # one compare function, one pair, one iteration
        return results[0][1][0], results[1][1][0], stats


def layer_reports(
    fp32: Mapping[str, Path],
    candidate: Mapping[str, Path],
    feeds: Mapping[str, Feeds],
    cosine_min: float,
    precision: str,
) -> list[LayerReport]:
    stage = LayerReportFromGraphs(cosine_min, precision)
    return [stage(c, fp32[c], candidate[c], feeds[c]) for c in candidate if c in feeds]


def reports_markdown(reports: Sequence[LayerReport]) -> str:
    return "\n\n".join(r.to_markdown() for r in reports)


def reports_json(reports: Sequence[LayerReport]) -> str:
    return json.dumps([r.to_json() for r in reports], indent=1)


def _producers(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    """Each node output -> (node position, node), in graph order (ONNX keeps nodes topological)."""
    return {out: (k, node) for k, node in enumerate(model.graph.node) for out in node.output if out}


def _non_finite_cell(t: TensorError) -> str:
    if t.saturated:  # a mask's float32 minimum is -inf in FP16: the same answer, not an overflow
        return f"{t.non_finite} (constant past FP16's range)"
    return (
        f"{t.non_finite} (carried from an input)" if t.non_finite and t.inputs_overflow else str(t.non_finite)
    )


def _module_of(node: onnx.NodeProto) -> str:
    """The innermost module scope torch.onnx recorded for the node ("" if it recorded none): the
    name a user finds in the PyTorch model (vision_model.encoder.layers.6.self_attn)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ""
            modules = [s for s in scopes[:-1] if isinstance(s, str) and s]  # the last is the traced op
            return modules[-1].removeprefix("model.") if modules else ""
    return ""


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Node outputs of a floating type (shape inference where value_info is missing)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    floating = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
    typed = {
        v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]
    }
    return {name for name in _producers(model) if typed.get(name) in floating}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine over the values finite on both sides (Inf/NaN are counted apart, as non_finite)."""
    if a.shape != b.shape:
        return float("nan")
    a, b = a.ravel(), b.ravel()
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not np.any(a) and not np.any(b) else 0.0
    return float(np.dot(a, b) / norms)


def _out_of_range(ref: np.ndarray, cand: np.ndarray) -> bool:
    """Every value finite in FP32 and not in the candidate is an infinity of the same sign where
    FP32 holds a value past FP16's range: what converting that value gives, not an error."""
    lost = np.isfinite(ref) & ~np.isfinite(cand)
    return bool(
        np.all(np.isinf(cand[lost]))
        and np.all(np.sign(cand[lost]) == np.sign(ref[lost]))
        and np.all(np.abs(ref[lost]) > FP16_MAX)
    )


def _finite_json(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
