"""The `trtdeploy` command.

    trtdeploy models                         the recipes and their presets
    trtdeploy build MODEL [options]          export, verify and write a bundle
    trtdeploy engine BUNDLE [options]        build a bundle's TensorRT plans here (on the device)
                                             and verify them against its reference outputs
    trtdeploy lint BUNDLE                    check every graph against TensorRT's operator table
    trtdeploy verify BUNDLE [--target T]     check a bundle's engines against its reference outputs
    trtdeploy run BUNDLE --image F --labels  run the model's pipeline (CLIP: zero-shot)
    trtdeploy info BUNDLE                    what a bundle holds
    trtdeploy bench BUNDLE [options]         latency against PyTorch eager, measured in the same run

Targets: onnxruntime, onnxruntime-cuda, onnxruntime-trt, tensorrt, or auto (the default): tensorrt
where TensorRT and a CUDA GPU are present, else onnxruntime.

Exit codes: 0 success, 1 unexpected failure, 2 bad input or usage, 3 bad artifact (bundle, weights,
a TensorRT plan built for another TensorRT/GPU), 4 backend unavailable, 5 export failure (including
nodes TensorRT's parser does not take), 6 accuracy budget missed, 7 bundle built and verified but its
TensorRT plans are still to be built on the device (`trtdeploy engine BUNDLE` there).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trtdeploy.runtime.errors import TrtDeployError
from trtdeploy.runtime.targets import AUTO_TARGET, TARGETS, resolve_target

# Not an error: the bundle is complete and verified; the TensorRT plans can only be built where
# TensorRT and the GPU that will run them are.
EXIT_FINISH_ON_DEVICE = 7
TARGET_CHOICES = (*TARGETS, AUTO_TARGET)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except TrtDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trtdeploy", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
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
    p.add_argument("--calib-size", type=int, default=128, help="calibration samples (default 128)")
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
    p.add_argument("--threads", type=int, help="CPU threads for verification (default: all cores)")
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
    p.add_argument("--threads", type=int)
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    p.set_defaults(handler=_verify)

    p = sub.add_parser("run", help="run the model's pipeline on images (CLIP: zero-shot classification)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--image", type=Path, action="append", required=True, help="an image file (repeatable)")
    p.add_argument("--labels", required=True, help="comma-separated labels, e.g. 'a cat,a dog'")
    p.add_argument("--target", default=AUTO_TARGET, choices=TARGET_CHOICES)
    p.set_defaults(handler=_run)

    p = sub.add_parser("info", help="show what a bundle holds")
    p.add_argument("bundle", type=Path)
    p.set_defaults(handler=_info)

    p = sub.add_parser("bench", help="latency of a bundle's components vs PyTorch eager, in the same run")
    p.add_argument("bundle", type=Path)
    p.add_argument("--component", action="append", help="component to time (repeatable; default: all)")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--target", default=AUTO_TARGET, choices=TARGET_CHOICES)
    p.add_argument("--threads", type=int, help="threads for both sides (default: all cores)")
    p.add_argument("--iterations", type=int, default=20, help="timed calls per block (default 20)")
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks per side (default 4)")
    p.add_argument("--weights", type=Path, help="the weights folder the bundle was built from, if any")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.set_defaults(handler=_bench)
    return parser


def _models(args: argparse.Namespace) -> int:
    from trtdeploy.models.registry import RECIPES

    for name, recipe in RECIPES.items():
        print(f"{name}  (default preset: {recipe.default_preset})")
        for preset in recipe.presets.values():
            print(f"    {preset.name:24s} {preset.description}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from trtdeploy.build import BuildSettings, BundleFromRecipe
    from trtdeploy.calibration.data import CalibrationSettings
    from trtdeploy.calibration.fp16 import Fp16Settings
    from trtdeploy.calibration.int8 import QUANTIZABLE, Int8Settings

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


def _build_all(settings: object) -> int:
    from trtdeploy.compare_precisions import build_all, rows_to_markdown

    results, rows = build_all(settings)  # type: ignore[arg-type]
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
    p.add_argument("--workspace-mib", type=int, default=d.workspace_mib, help="builder workspace limit (MiB)")
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
    from trtdeploy.runtime.targets import open_engines
    from trtdeploy.runtime.verify import raise_if_failed, verify_bundle

    bundle = Bundle.load(args.bundle)
    target = resolve_target(args.target)
    engines = open_engines(bundle, target, threads=args.threads)
    report = verify_bundle(bundle, engines, target)
    print(report.to_markdown())
    if args.report:
        args.report.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    raise_if_failed(report)
    return 0


def _run(args: argparse.Namespace) -> int:
    from PIL import Image

    from trtdeploy.runtime.bundle import Bundle
    from trtdeploy.runtime.errors import ArtifactError
    from trtdeploy.runtime.pipelines.clip import ClipPipeline

    bundle = Bundle.load(args.bundle)
    if bundle.manifest.pipeline != "clip":
        raise ArtifactError(f"`trtdeploy run` does not handle the {bundle.manifest.pipeline!r} pipeline yet.")
    pipeline = ClipPipeline.from_bundle(bundle, resolve_target(args.target))
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    for path in args.image:
        with Image.open(path) as image:
            ranked = pipeline.zero_shot(image.convert("RGB"), labels)
        print(f"{path}:")
        for item in ranked:
            print(f"  {item.probability:7.2%}  {item.label}")
    return 0


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


def _bench(args: argparse.Namespace) -> int:
    from trtdeploy.bench import bench_bundle, rows_to_markdown
    from trtdeploy.runtime.bundle import Bundle

    bundle = Bundle.load(args.bundle)
    batches = [int(b) for b in args.batch.split(",")]
    components = args.component or [c.name for c in bundle.manifest.components]
    target = resolve_target(args.target)
    rows = bench_bundle(
        bundle,
        components=components,
        batches=batches,
        target=target,
        threads=args.threads,
        iterations=args.iterations,
        blocks=args.blocks,
        weights=args.weights,
    )
    title = f"{bundle.manifest.model} {bundle.manifest.precision} on {target} vs PyTorch eager FP32"
    print(rows_to_markdown(rows, title))
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n", encoding="utf-8")
    return 0
