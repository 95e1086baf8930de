"""Precision in the graph, per component: FP32 as exported, FP16 with FP32 islands, or INT8 Q/DQ
(with its ONNX Runtime CPU fast form), including calibration, its cache and the INT8 fallback."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from trtdeploy.calibration.data import CalibrationSet
from trtdeploy.calibration.fallback import FallbackSearch, search_exclusions
from trtdeploy.calibration.fp16 import Fp16OnnxFromOnnx, Fp16Result, Fp16Settings
from trtdeploy.calibration.int8 import (
    Int8Settings,
    QdqOnnxFromOnnx,
    QuantTarget,
    calibrate,
    describe_targets,
    find_targets,
)
from trtdeploy.calibration.ort_forms import FORM_NAME, FUSED_FORM_NAME, dynamic_int8_form, fused_fp32_form
from trtdeploy.calibration.sensitivity import LayerSensitivity, measure_sensitivity, rank_layers, total_work
from trtdeploy.runtime.atomic import write_atomic
from trtdeploy.runtime.bundle import sha256_file
from trtdeploy.runtime.errors import UsageError
from trtdeploy.runtime.failpoints import failpoint

PRECISIONS = ("fp32", "fp16", "int8")
FP16_STAT_BATCHES = 4  # island detection records every tensor; a few batches show the ranges

# evaluate(graphs by component) -> (met the budget?, one-line summary)
Evaluate = Callable[[Mapping[str, Path]], tuple[bool, str]]
# report(form, evaluation record): each fallback evaluation as it is made
ReportEvaluation = Callable[[str, Mapping[str, object]], None]


@dataclass(frozen=True)
class PrecisionSettings:
    precision: str = "fp32"
    fp16: Fp16Settings = field(default_factory=Fp16Settings)
    int8: Int8Settings = field(default_factory=Int8Settings)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}")


@dataclass
class PrecisionOutcome:
    graphs: dict[str, Path]  # the precision-explicit, TensorRT-bound graph per component
    fast_forms: dict[str, Path] = field(default_factory=dict)  # ONNX Runtime CPU form per component
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)  # calibration record per component
    method: dict[str, Any] = field(default_factory=dict)


class GraphsForPrecision:
    """Stage: FP32 graphs per component -> the graphs of one precision, in ``workdir``."""

    def __init__(
        self,
        settings: PrecisionSettings,
        calibration: CalibrationSet | None,
        weights_sha256: str,
        cache_dir: Path,
        evaluate: Evaluate,
        fusions: Mapping[str, str] | None = None,
        report: ReportEvaluation | None = None,
    ) -> None:
        """``fusions``: component -> ONNX Runtime optimizer model type, for the FP32 fast forms;
        ``report`` hears of each INT8 fallback evaluation when it is made."""
        if settings.precision != "fp32" and calibration is None:
            raise ValueError(f"{settings.precision} needs calibration data")
        self.settings = settings
        self.calibration = calibration
        self.weights_sha256 = weights_sha256
        self.cache_dir = cache_dir
        self.evaluate = evaluate
        self.fusions = dict(fusions or {})
        self.report = report

    def __call__(self, fp32: Mapping[str, Path], workdir: Path) -> PrecisionOutcome:
        precision = self.settings.precision
        if precision == "fp32":
            return self._fp32(fp32, workdir)
        check_named_nodes(fp32, self.settings)
        fp16 = {c: self._fp16(c, path, workdir) for c, path in fp32.items()}
        fp16_method = {
            "islands": {c: r.describe() for c, r in fp16.items()},
            "data_max": self.settings.fp16.data_max,
            "always_fp32_ops": list(self.settings.fp16.keep_fp32_ops),
            "tool": "onnxruntime float16 converter, islands chosen by trtdeploy",
        }
        if precision == "fp16":
            return PrecisionOutcome(
                {c: r.path for c, r in fp16.items()}, method={"kind": "fp16", **fp16_method}
            )
        return self._int8(fp32, {c: r.path for c, r in fp16.items()}, workdir, fp16_method)

    def _fp32(self, fp32: Mapping[str, Path], workdir: Path) -> PrecisionOutcome:
        """The exported graphs, and ONNX Runtime's fused form of those the recipe names."""
        forms, fused = {}, {}
        for component, model_type in self.fusions.items():
            forms[component], fused[component] = fused_fp32_form(
                fp32[component], model_type, workdir / f"{component}.ort-fused.onnx"
            )
        method: dict[str, Any] = {"kind": "fp32"}
        if forms:
            method.update(fast_form=FUSED_FORM_NAME, fused_operators=fused)
        return PrecisionOutcome(dict(fp32), forms, method=method)

    def _fp16(self, component: str, fp32_path: Path, workdir: Path) -> Fp16Result:
        assert self.calibration is not None
        batches = list(self.calibration.batches(component))[:FP16_STAT_BATCHES]
        return Fp16OnnxFromOnnx(self.settings.fp16)(fp32_path, batches, workdir / f"{component}.fp16.onnx")

    def _int8(
        self, fp32: Mapping[str, Path], fp16: Mapping[str, Path], workdir: Path, fp16_method: dict[str, Any]
    ) -> PrecisionOutcome:
        assert self.calibration is not None
        settings = self.settings.int8
        targets = {
            c: find_targets(onnx.load(str(p), load_external_data=False), settings) for c, p in fp32.items()
        }
        ranges = {c: self._thresholds(c, fp32[c], targets[c]) for c in fp32}
        thresholds = {c: r["thresholds"] for c, r in ranges.items()}

        def build(excluded: list[str]) -> dict[str, Path]:
            graphs = {}
            for c in fp32:
                kept = [t for t in targets[c] if f"{c}/{t.node}" not in excluded]
                graphs[c] = QdqOnnxFromOnnx(kept, thresholds[c])(fp16[c], fp32[c], workdir / f"{c}.int8.onnx")
            return graphs

        ranking: list[LayerSensitivity] = []

        def ranked() -> list[LayerSensitivity]:  # costs a pass over every layer: only when needed
            if not ranking:
                ranking.extend(self._ranked(fp32, targets, thresholds))
            return ranking

        def fast(excluded: list[str]) -> dict[str, Path]:
            return {
                c: dynamic_int8_form(
                    fp32[c],
                    [t.node for t in targets[c] if f"{c}/{t.node}" not in excluded],
                    workdir / f"{c}.ort-int8.onnx",
                )
                for c in fp32
            }

        search = self._search(build, ranked, "graph")
        excluded = search.kept_high_precision
        graphs = build(excluded)
        # The fast form quantizes differently (per call, per tensor), so it is held to the budget on
        # its own, starting from the graph's exclusions.
        fast_search = self._search(lambda more: fast(sorted({*excluded, *more})), ranked, FORM_NAME)
        fast_forms = fast(sorted({*excluded, *fast_search.kept_high_precision}))
        method = {
            "kind": "int8",
            "scheme": "INT8 symmetric, zero point 0; weights per output channel; activations per tensor; "
            "inputs of MatMul/Gemm/Conv/ConvTranspose; rest FP16 with FP32 islands",
            "calibration": {
                **self.calibration.describe(),
                "method": settings.method,
                "percentile": settings.percentile,
            },
            "quantized": {
                c: describe_targets([t for t in targets[c] if f"{c}/{t.node}" not in excluded]) for c in fp32
            },
            "excluded_by_user": {
                "nodes": list(settings.exclude_nodes),
                "op_types": list(settings.exclude_op_types),
            },
            "fallback": {
                "kept_in_fp16": excluded,
                "evaluations": search.evaluations,
                "ranked_by": "local INT8 error per share of the model's multiply-accumulates, worst first",
                "sensitivity_top": [_described(layer, total_work(ranking)) for layer in ranking[:10]],
            },
            "fp16_rest": fp16_method,
            "fast_form": FORM_NAME,
            "fast_form_fallback": {
                "kept_in_fp32": sorted({*excluded, *fast_search.kept_high_precision}),
                "evaluations": fast_search.evaluations,
            },
        }
        return PrecisionOutcome(graphs, fast_forms, ranges, method)

    def _search(
        self,
        build: Callable[[list[str]], dict[str, Path]],
        ranked: Callable[[], list[LayerSensitivity]],
        form: str,
    ) -> FallbackSearch:
        """Plain INT8 first; only if it misses the budget, rank the layers and bisect."""
        report = self.report
        plain = self.evaluate(build([]))
        names = [] if plain[0] else [layer.layer for layer in ranked()]
        return search_exclusions(
            names,
            lambda excluded: self.evaluate(build(excluded)),
            plain=plain,
            report=None if report is None else lambda evaluation: report(form, evaluation),
        )

    def _ranked(
        self,
        fp32: Mapping[str, Path],
        targets: Mapping[str, list[QuantTarget]],
        thresholds: Mapping[str, Mapping[str, float]],
    ) -> list[LayerSensitivity]:
        """Every quantized layer of every component, ranked across components (calibration/sensitivity.py)."""
        assert self.calibration is not None
        measured = []
        for c, path in fp32.items():
            if targets[c]:
                batch = next(self.calibration.batches(c))
                measured += measure_sensitivity(c, path, targets[c], thresholds[c], batch)
        return rank_layers(measured)

    def _thresholds(self, component: str, fp32_path: Path, targets: list[QuantTarget]) -> dict[str, Any]:
        """Calibrated thresholds, from the cache when the same weights, graph, data and method
        were calibrated before (same inputs give byte-identical scales either way)."""
        assert self.calibration is not None
        settings = self.settings.int8
        key_fields = {
            "weights_sha256": self.weights_sha256,
            "onnx_sha256": sha256_file(fp32_path),
            "calibration_sha256": self.calibration.sha256(component),
            "method": settings.method,
            "percentile": settings.percentile,
            "tensors": sorted({t.activation for t in targets}),
        }
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
        cache = self.cache_dir / f"{component}-{key[:24]}.json"
        if cache.is_file():
            record = json.loads(cache.read_text(encoding="utf-8"))
            if record.get("key") == key:
                return dict(record, reused=True)
        thresholds = calibrate(fp32_path, targets, self.calibration.batches(component), settings)
        failpoint("calibration")
        record = {"key": key, "key_fields": key_fields, "thresholds": thresholds}
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
        return dict(record, reused=False)


def _described(layer: LayerSensitivity, total: float) -> dict[str, object]:
    return {
        "layer": layer.layer,
        "local_error": round(layer.local_error, 6),
        "share_of_work": round(layer.work / total, 6),
    }


def check_named_nodes(fp32: Mapping[str, Path], settings: PrecisionSettings) -> None:
    """Every node a user named (--int8-exclude, --fp16-keep) exists in some graph, and every op type
    named is one INT8 quantizes: a misspelled name would leave that layer as it was, without a word."""
    nodes, ops = set(), set()
    for path in fp32.values():
        graph = onnx.load(str(path), load_external_data=False).graph
        nodes |= {n.name for n in graph.node}
        ops |= {n.op_type for n in graph.node}
    named = {
        "--int8-exclude": [*settings.int8.exclude_nodes],
        "--fp16-keep": [*settings.fp16.keep_fp32_nodes],
    }
    problems = []
    for option, names in named.items():
        for name in names:
            if name not in nodes:
                hint = difflib.get_close_matches(name, sorted(nodes | ops), n=1)
                problems.append(f"{option} {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    for op in settings.int8.exclude_op_types:
        if op not in ops:
            problems.append(f"--int8-exclude {op!r}: no graph of this model has that op type")
    if problems:
        raise UsageError(
            f"these names match no node of the model's graphs: {'; '.join(problems)}. Node names are as "
            "`trtdeploy lint` and the manifest's fallback record print them; op types as ONNX spells them (MatMul)."
        )
