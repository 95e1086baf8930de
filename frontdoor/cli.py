"""The `trtdeploy` command.

    trtdeploy models                         the recipes and their presets
    trtdeploy build MODEL [options]          export, verify and write a bundle
    trtdeploy engine BUNDLE [options]        build a bundle's TensorRT plans here (on the device)
                                             and verify them against its reference outputs
    trtdeploy lint BUNDLE                    check every graph against TensorRT's operator table
    trtdeploy verify BUNDLE [--target T]     check a bundle's engines against its reference outputs
    trtdeploy run BUNDLE --image F --labels  run the model's pipeline (CLIP: zero-shot; CLIPSeg:
                                             --prompts, masks; --out-dir writes them as PNGs)
    trtdeploy info BUNDLE                    what a bundle holds
    trtdeploy bench BUNDLE... [options]      latency against PyTorch eager, measured in the same run
                                             (CLIPSeg --prompts 1,3,8: segment one image with P prompts)
    trtdeploy regress MODEL [options]        rebuild + bench, compared with baselines/ (exit 8 on a regression)

Targets: onnxruntime, onnxruntime-cuda, onnxruntime-trt, tensorrt, or auto (the default): tensorrt
where TensorRT and a CUDA GPU are present, else onnxruntime.

Exit codes: 0 success, 1 unexpected failure, 2 bad input or usage, 3 bad artifact (bundle, weights,
a TensorRT plan built for another TensorRT/GPU), 4 backend unavailable, 5 export failure (including
nodes TensorRT's parser does not take), 6 accuracy budget missed, 7 bundle built and verified but its
TensorRT plans are still to be built on the device (`trtdeploy engine BUNDLE` there), 8 regression
against a committed baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from trtdeploy.runtime.errors import TrtDeployError
from trtdeploy.runtime.targets import AUTO_TARGET, TARGETS, resolve_target

if TYPE_CHECKING:
    from trtdeploy.bench import BenchSettings
    from trtdeploy.build import BuildSettings

# Not an error: the bundle is complete and verified; the TensorRT plans can only be built where
# TensorRT and the GPU that will run them are.
EXIT_FINISH_ON_DEVICE = 7
# A fresh run fell outside a committed baseline's tolerance (latency ratio or accuracy).
EXIT_REGRESSION = 8
TARGET_CHOICES = (*TARGETS, AUTO_TARGET)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return int(args.handler(args))
    except TrtDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file the user named could not be read or written: a message, not a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"error:{where}: {exc.strerror or exc}. Check that the path exists and that this user may "
            "read (or write) it, then run the command again.",
            file=sys.stderr,
        )
        return 1


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised as trtdeploy's UsageError (exit 2, one message)."""

    def error(self, message: str) -> NoReturn:
        from trtdeploy.runtime.errors import UsageError

        raise UsageError(f"{self.prog}: {message}. See `{self.prog} --help`.")


def _writable_report(path: Path | None) -> None:
    """Refuse a --report path that can't be written, before any work is done."""
    from trtdeploy.runtime.errors import UsageError

    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--report {path} is a folder; name a file such as {path / 'report.json'}.")
    if not path.parent.is_dir():
        raise UsageError(
            f"--report {path}: the folder {path.parent} does not exist; create it or name another file."
        )


def _count(text: str) -> int:
    """A whole number >= 1 (iterations, threads, samples, tokens...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trtdeploy", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the models and their presets")
    p.set_defaults(handler=_models)

    p = sub.add_parser("build", help="export a model, verify it and write its bundle")
    p.add_argument("model", help="a model of `trtdeploy models`")
    p.add_argument("--preset", help="architecture preset (random weights from a fixed seed)")
    p.add_argument("--weights", type=Path, help="local Hugging Face folder (config.json + *.safetensors)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8", "all"),
        help="fp32 (default), fp16, int8 or all",
    )
    p.add_argument(
        "--calibration",
        default="percentile",
        choices=("max", "percentile", "entropy"),
        help="INT8 activation calibration method (default percentile, 99.99%%)",
    )
    p.add_argument(
        "--calib-dir", type=Path, help="calibration images + prompts.txt (default: the built-in set)"
    )
    p.add_argument("--calib-size", type=_count, default=128, help="calibration samples (default 128)")
    p.add_argument(
        "--int8-exclude",
        action="append",
        default=[],
        metavar="NODE_OR_OP",
        help="keep a node (by name) or an op type (e.g. Conv) out of INT8 (repeatable)",
    )
    p.add_argument(
        "--fp16-keep", action="append", default=[], metavar="NODE", help="keep a node in FP32 (repeatable)"
    )
    p.add_argument(
        "--target",
        default=AUTO_TARGET,
        choices=TARGET_CHOICES,
        help="where the bundle will run (default auto: tensorrt with TensorRT and a GPU, else onnxruntime)",
    )
    p.add_argument("--out", type=Path, help="bundle folder (default build/<model>/<precision>)")
    p.add_argument("--threads", type=_count, help="CPU threads for verification (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_build)

    p = sub.add_parser("engine", help="build a bundle's TensorRT plans on this device and verify them")
    p.add_argument("bundle", type=Path)
    _add_tensorrt_options(p)
    p.add_argument("--rebuild", action="store_true", help="build even where a plan for this key is cached")
    p.add_argument("--cuda-graphs", action="store_true", help="verify with CUDA graph capture")
    p.add_argument("--report", type=Path, help="also write the verification report as JSON here")
    p.set_defaults(handler=_engine)

    p = sub.add_parser("lint", help="check a bundle's graphs against TensorRT's ONNX operator table")
    p.add_argument("bundle", type=Path)
    p.set_defaults(handler=_lint)

    p = sub.add_parser("verify", help="run a bundle's engines on its reference inputs and check its budget")
    p.add_argument("bundle", type=Path)
    p.add_argument("--target", default=AUTO_TARGET, choices=TARGET_CHOICES)
    p.add_argument("--threads", type=_count)
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    p.add_argument(
        "--form",
        default="auto",
        choices=("auto", "graph"),
        help="auto: the target's fast form where the bundle has one; graph: the precision-explicit graph",
    )
    p.set_defaults(handler=_verify)

    p = sub.add_parser(
        "run",
        help="run the model's pipeline on images (CLIP: zero-shot classification; CLIPSeg: segmentation)",
    )
    p.add_argument("bundle", type=Path)
    images = p.add_mutually_exclusive_group(required=True)
    images.add_argument("--image", type=Path, action="append", help="an image file or folder (repeatable)")
    images.add_argument("--images", dest="image", type=Path, nargs="+", help="image files, folders, 'globs'")
    p.add_argument("--labels", help="CLIP: comma-separated labels, e.g. 'a cat,a dog'")
    p.add_argument("--prompts", help="CLIPSeg: comma-separated prompts, e.g. 'a cat,the sky'")
    p.add_argument(
        "--threshold", type=float, help="CLIPSeg: mask threshold on probabilities (default: the bundle's)"
    )
    p.add_argument("--task", help="Florence-2: the task token, e.g. '<CAPTION>' or '<OD>'")
    p.add_argument("--text", help="Florence-2: the task's input (a phrase, or a <loc_..> region)")
    p.add_argument(
        "--num-beams", type=_count, help="Florence-2: beam search width (default: the checkpoint's)"
    )
    p.add_argument("--max-new-tokens", type=_count, help="Florence-2: most tokens to generate")
    p.add_argument(
        "--out-dir", type=Path, help="CLIPSeg: write each mask as a PNG; Florence-2: the answer drawn"
    )
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    p.add_argument("--target", default=AUTO_TARGET, choices=TARGET_CHOICES)
    p.add_argument("--threads", type=_count, help="CPU threads (default: all cores)")
    p.set_defaults(handler=_run)

    p = sub.add_parser("info", help="show what a bundle holds")
    p.add_argument("bundle", type=Path)
    p.set_defaults(handler=_info)

    p = sub.add_parser("bench", help="latency of bundles' components vs PyTorch eager, in the same run")
    p.add_argument("bundles", type=Path, nargs="+", help="bundles of one model (e.g. its fp32, fp16, int8)")
    _add_bench_options(p)
    p.add_argument(
        "--prompts",
        help="CLIPSeg: comma-separated prompt counts, e.g. 1,3,8: segment one image with that many prompts",
    )
    p.add_argument(
        "--out-dir", type=Path, default=Path("build/bench"), help="JSON, Markdown, PNG (default build/bench)"
    )
    p.set_defaults(handler=_bench)

    p = sub.add_parser("regress", help="rebuild, benchmark and compare with the committed baseline")
    p.add_argument("model", nargs="?", help="default: every baselined configuration, any machine class")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    p.add_argument("--preset", help="architecture preset (default: the model's full-size one)")
    _add_bench_options(p)
    p.add_argument(
        "--baselines", type=Path, default=Path("baselines"), help="baseline folder (default baselines)"
    )
    p.add_argument("--bundle", type=Path, help="use this bundle instead of rebuilding one")
    p.add_argument(
        "--prompts",
        help="CLIPSeg, with --write-baseline: prompt counts of the segment rows (compare replays the baseline's)",
    )
    p.add_argument("--runs", type=_count, default=3, help="with --write-baseline: benchmark runs (default 3)")
    p.add_argument("--write-baseline", action="store_true", help="record a new baseline instead of comparing")
    p.set_defaults(handler=_regress)

    p = sub.add_parser("debug", help="diagnose a bundle")
    debug = p.add_subparsers(dest="what", required=True)
    p = debug.add_parser(
        "precision",
        help="where an FP16/INT8 bundle's graphs first depart from FP32, tensor by tensor (Polygraphy)",
    )
    p.add_argument("bundle", type=Path)
    p.add_argument(
        "--reference", type=Path, help="the FP32 bundle of the same weights (default: BUNDLE/../fp32)"
    )
    p.add_argument("--samples", type=_count, default=2, help="held-out samples to compare on (default 2)")
    p.add_argument("--component", action="append", default=[], help="only this component (repeatable)")
    p.add_argument(
        "--form",
        default="graph",
        choices=("graph", "onnxruntime"),
        help="graph or the ONNX Runtime fast form",
    )
    p.add_argument("--cosine", type=float, help="tolerance per tensor (default: the bundle's output budget)")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    p.set_defaults(handler=_debug_precision)
    return parser


def _models(args: argparse.Namespace) -> int:
    from trtdeploy.models.registry import RECIPES

    for name, recipe in RECIPES.items():
        print(f"{name}  (default preset: {recipe.default_preset})")
        for preset in recipe.presets.values():
            print(f"    {preset.name:24s} {preset.description}")
    return 0


def _build(args: argparse.Namespace) -> int:
    _torch_cache_beside(args.out or Path("build") / args.model / args.precision)
    from trtdeploy.build import BuildSettings, BundleFromRecipe
    from trtdeploy.calibration.data import CalibrationSettings
    from trtdeploy.calibration.fp16 import Fp16Settings
    from trtdeploy.calibration.int8 import QUANTIZABLE, Int8Settings
    from trtdeploy.runtime.errors import UsageError

    if args.precision == "fp32":
        given = [
            name
            for name, value in (
                ("--int8-exclude", args.int8_exclude),
                ("--fp16-keep", args.fp16_keep),
                ("--calib-dir", args.calib_dir),
                ("--calibration", args.calibration != "percentile"),
            )
            if value
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} apply to fp16 and int8 builds; this is an fp32 build (--precision fp32). "
                "Drop them, or build --precision int8."
            )
    settings = BuildSettings(
        model=args.model,
        preset=args.preset,
        weights=args.weights,
        precision=args.precision,
        target=resolve_target(args.target),
        out=args.out,
        threads=args.threads,
        quiet=args.quiet,
        calibration=CalibrationSettings(count=args.calib_size, folder=args.calib_dir),
        fp16=Fp16Settings(keep_fp32_nodes=tuple(args.fp16_keep)),
        int8=Int8Settings(
            method=args.calibration,
            exclude_nodes=tuple(x for x in args.int8_exclude if x not in QUANTIZABLE),
            exclude_op_types=tuple(x for x in args.int8_exclude if x in QUANTIZABLE),
        ),
    )
    if args.precision == "all":
        return _build_all(settings)
    try:
        result = BundleFromRecipe(settings)()
    except TrtDeployError as exc:
        report = getattr(exc, "report", None)
        if report is not None:
            print(report.to_markdown())
        raise
    for report in result.reports or (result.report,):
        print(report.to_markdown())
    if result.engine_report is not None:
        print(result.engine_report.to_markdown())
    print(
        f"bundle: {result.bundle}  ({result.manifest.model} {result.manifest.preset}, {result.manifest.precision})"
    )
    if result.device_command is not None:
        print(
            f"TensorRT plans: not built here (no TensorRT or no GPU). The bundle is verified on ONNX Runtime "
            f"and lint-clean; copy it to the device and finish there with:\n  {result.device_command}"
        )
        return EXIT_FINISH_ON_DEVICE
    return 0


def _torch_cache_beside(out: Path) -> None:
    """Before torch is imported: its compile cache, which torch._dynamo creates at import
    (/tmp/torchinductor_<user> by default), goes into a hidden folder beside the bundle, which
    the build clears (see build.temporary_files_beside). Nothing is written outside the build folder."""
    import os

    out = Path(out).absolute()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(out.parent / f".{out.name}.tmp-torch"))


def _build_all(settings: BuildSettings) -> int:
    from trtdeploy.compare_precisions import build_all, rows_to_markdown

    results, rows = build_all(settings)
    for result in results:
        for report in result.reports:
            print(report.to_markdown())
        print(f"bundle: {result.bundle}")
    print(rows_to_markdown(rows, f"{results[0].manifest.model}: precisions on ONNX Runtime CPU"))
    return 0


def _add_tensorrt_options(p: argparse.ArgumentParser) -> None:
    from trtdeploy.runtime.tensorrt_options import (
        HARDWARE_COMPATIBILITY,
        PROFILING_VERBOSITIES,
        TrtBuildOptions,
    )

    d = TrtBuildOptions()
    p.add_argument(
        "--workspace-mib", type=_count, default=d.workspace_mib, help="builder workspace limit (MiB)"
    )
    p.add_argument(
        "--optimization-level", type=int, choices=range(6), default=d.optimization_level, help="TensorRT 0-5"
    )
    p.add_argument("--profiling-verbosity", choices=PROFILING_VERBOSITIES, default=d.profiling_verbosity)
    p.add_argument("--dla-core", type=int, help="run on this DLA core (Jetson)")
    p.add_argument(
        "--gpu-fallback", action="store_true", help="with --dla-core: layers the DLA can't run go to the GPU"
    )
    p.add_argument(
        "--version-compatible", action="store_true", help="plan loads on newer TensorRT of its major"
    )
    p.add_argument(
        "--hardware-compatibility", choices=HARDWARE_COMPATIBILITY, default=d.hardware_compatibility
    )
    p.add_argument("--no-timing-cache", action="store_true", help="don't read or write the timing cache")


def _engine(args: argparse.Namespace) -> int:
    from trtdeploy.runtime.bundle import Bundle
    from trtdeploy.runtime.errors import InputValidationError
    from trtdeploy.runtime.tensorrt_build import EngineFromBundle
    from trtdeploy.runtime.tensorrt_options import TrtBuildOptions

    try:
        options = TrtBuildOptions(
            workspace_mib=args.workspace_mib,
            optimization_level=args.optimization_level,
            profiling_verbosity=args.profiling_verbosity,
            dla_core=args.dla_core,
            gpu_fallback=args.gpu_fallback,
            version_compatible=args.version_compatible,
            hardware_compatibility=args.hardware_compatibility,
            timing_cache=not args.no_timing_cache,
        )
    except ValueError as exc:
        raise InputValidationError(f"engine options: {exc}") from exc
    _writable_report(args.report)
    bundle = Bundle.load(args.bundle)
    stage = EngineFromBundle(options, rebuild=args.rebuild, cuda_graphs=args.cuda_graphs)
    try:
        built = stage(bundle)
    except TrtDeployError as exc:
        report = getattr(exc, "report", None)
        if report is not None:
            print(report.to_markdown())
        raise
    print(built.report.to_markdown())
    if args.report:
        args.report.write_text(json.dumps(built.report.to_json(), indent=2) + "\n", encoding="utf-8")
    for name, record in built.records.items():
        state = "reused" if name in built.reused else "built"
        print(
            f"{name}: {bundle.root / 'engines' / record.plan} ({state}, TensorRT {record.key.tensorrt_version})"
        )
    return 0


def _lint(args: argparse.Namespace) -> int:
    from trtdeploy.runtime.errors import BackendUnavailable, ExportError

    try:
        from trtdeploy.export.trt_lint import lint_bundle
    except ImportError as exc:  # onnx is a workstation dependency; a device may not have it
        raise BackendUnavailable(
            f"`trtdeploy lint` reads graphs with onnx ({exc}): pip install 'trtdeploy[export]'."
        ) from exc
    report = lint_bundle(args.bundle)
    print("\n".join(report.lines()))
    if not report.passed:
        raise ExportError(
            f"{len(report.errors)} nodes in {args.bundle} are not ones TensorRT's ONNX parser takes."
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from trtdeploy.runtime.bundle import Bundle
    from trtdeploy.runtime.reports import raise_if_failed
    from trtdeploy.runtime.targets import open_engines
    from trtdeploy.runtime.verify import verify_bundle

    _writable_report(args.report)
    bundle = Bundle.load(args.bundle)
    target = resolve_target(args.target)
    engines = open_engines(bundle, target, threads=args.threads, form=args.form)
    report = verify_bundle(bundle, engines, target, form=args.form)
    print(report.to_markdown())
    if args.report:
        args.report.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    raise_if_failed(report)
    return 0


def _run(args: argparse.Namespace) -> int:
    """The bundle's pipeline answers for each image; which options apply is the pipeline's call."""
    from trtdeploy.runtime.bundle import Bundle
    from trtdeploy.runtime.pipelines import RunRequest, pipeline_class

    bundle = Bundle.load(args.bundle)
    options = {option: getattr(args, dest) for option, dest in RUN_OPTIONS.items()}
    request = RunRequest(
        images=tuple(args.image),
        options={k: v for k, v in options.items() if v is not None},
        target=resolve_target(args.target),
        threads=args.threads,
        out_dir=args.out_dir,
        as_json=args.json,
    )
    for line in pipeline_class(bundle.manifest.pipeline).run_cli(bundle, request):
        print(line)
    return 0


# `trtdeploy run` options a pipeline may read, by the name it knows them by -> argparse dest.
RUN_OPTIONS = {
    "--labels": "labels",
    "--prompts": "prompts",
    "--threshold": "threshold",
    "--task": "task",
    "--text": "text",
    "--num-beams": "num_beams",
    "--max-new-tokens": "max_new_tokens",
}


def _info(args: argparse.Namespace) -> int:
    from trtdeploy.runtime.bundle import Bundle

    bundle = Bundle.load(args.bundle)
    m = bundle.manifest
    print(f"{bundle.root}: {m.model} preset {m.preset}, {m.precision}, pipeline {m.pipeline}")
    print(f"  weights: {dict(m.weights)}")
    print(f"  built {m.created_utc} with {', '.join(f'{k} {v}' for k, v in m.tools.items())}")
    for entry in m.components:
        print(f"  component {entry.name} ({entry.onnx}):")
        for spec in entry.io.inputs:
            print(f"    in  {spec.name:16s} {spec.dtype:8s} {tuple(spec.shape)}")
        for spec in entry.io.outputs:
            print(f"    out {spec.name:16s} {spec.dtype:8s} {tuple(spec.shape)}")
        for dim, r in entry.io.dims.items():
            print(f"    dim {dim}: min {r.min}, opt {r.opt}, max {r.max}")
    print(f"  {len(m.files)} files, all matching their sha256")
    return 0


def _add_bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--component", action="append", help="component to time (repeatable; default: all)")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--target", default=AUTO_TARGET, choices=TARGET_CHOICES)
    p.add_argument("--threads", type=_count, help="threads for both sides (default: all cores)")
    p.add_argument(
        "--iterations", type=_count, help="timed component calls per block (default 20; pipelines: a quarter)"
    )
    p.add_argument("--blocks", type=_count, help="alternating blocks per side (default 4)")
    p.add_argument("--weights", type=Path, help="the weights folder the bundle was built from, if any")


def _bench_settings(args: argparse.Namespace) -> BenchSettings:
    from trtdeploy.bench import BenchSettings
    from trtdeploy.runtime.errors import InputValidationError

    try:
        batches = tuple(_count(b) for b in args.batch.split(","))
        prompts = (
            tuple(_count(p) for p in args.prompts.split(",")) if getattr(args, "prompts", None) else (1, 3, 8)
        )
    except argparse.ArgumentTypeError as exc:
        raise InputValidationError(
            f"--batch and --prompts take comma-separated whole numbers of at least 1 ({exc}); got "
            f"{args.batch!r} and {getattr(args, 'prompts', None)!r}."
        ) from None
    return BenchSettings(
        batches=batches,
        components=tuple(args.component) if args.component else None,
        target=resolve_target(args.target),
        threads=args.threads,
        iterations=args.iterations if args.iterations is not None else BenchSettings.iterations,
        blocks=args.blocks if args.blocks is not None else BenchSettings.blocks,
        prompts=prompts,
    )


def _bench(args: argparse.Namespace) -> int:
    from trtdeploy.bench import bench_bundle, write_outputs
    from trtdeploy.runtime.bundle import Bundle

    settings = _bench_settings(args)
    records = [bench_bundle(Bundle.load(path), settings, weights=args.weights) for path in args.bundles]
    for record in records:
        print(record.to_markdown())
    for path in write_outputs(records, args.out_dir).values():
        print(f"wrote {path}")
    return 0


def _debug_precision(args: argparse.Namespace) -> int:
    from trtdeploy.calibration.layer_report import reports_json, reports_markdown
    from trtdeploy.debug_precision import PrecisionDebugSettings, debug_precision

    if args.json is not None:
        _writable_report(args.json)
    settings = PrecisionDebugSettings(
        bundle=args.bundle,
        reference=args.reference,
        samples=args.samples,
        components=tuple(args.component),
        form=args.form,
        cosine_min=args.cosine,
    )
    reports = debug_precision(settings)
    print(reports_markdown(reports))
    if args.json is not None:
        args.json.write_text(reports_json(reports) + "\n", encoding="utf-8")
    return 0


def _regress(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from trtdeploy.regress import RegressionRun, recorded_baselines, summarize
    from trtdeploy.runtime.errors import ArtifactError

    settings = _bench_settings(args)
    if args.model is None:
        if args.write_baseline:
            raise ArtifactError(
                "name the model to record a baseline for: trtdeploy regress MODEL --write-baseline"
            )
        runs = [
            RegressionRun(
                model=b["model"],
                precision=b["precision"],
                preset=b["preset"],
                baselines=args.baselines,
                settings=replace(settings, target=b["target"]),
            )
            for b in recorded_baselines(args.baselines)
        ]
    else:
        runs = [
            RegressionRun(
                model=args.model,
                precision=args.precision,
                preset=args.preset,
                settings=settings,
                baselines=args.baselines,
                bundle=args.bundle,
                weights=args.weights,
            )
        ]
    if args.write_baseline:
        print(f"baseline written: {runs[0].write_baseline(runs=args.runs)}")
        return 0
    results = []
    for run in runs:
        results.append(run.compare())
        print(results[-1].to_markdown())
    print(summarize(results))
    return 0 if all(r.passed for r in results) else EXIT_REGRESSION
