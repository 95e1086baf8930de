"""The `trtdeploy` command.

    trtdeploy models                         the recipes and their presets
    trtdeploy build MODEL [options]          export, verify and write a bundle
    trtdeploy verify BUNDLE [--target T]     check a bundle's engines against its reference outputs
    trtdeploy run BUNDLE --image F --labels  run the model's pipeline (CLIP: zero-shot)
    trtdeploy info BUNDLE                    what a bundle holds
    trtdeploy bench BUNDLE [options]         latency against PyTorch eager, measured in the same run

Exit codes: 0 success, 1 unexpected failure, 2 bad input or usage, 3 bad artifact (bundle, weights),
4 backend unavailable, 5 export failure, 6 accuracy budget missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trtdeploy.runtime.errors import TrtDeployError
from trtdeploy.runtime.targets import DEFAULT_TARGET, TARGETS


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
    p.add_argument("--precision", default="fp32", help="fp32 (default)")
    p.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        choices=TARGETS,
        help=f"where to verify (default {DEFAULT_TARGET})",
    )
    p.add_argument("--out", type=Path, help="bundle folder (default build/<model>/<precision>)")
    p.add_argument("--threads", type=int, help="CPU threads for verification (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_build)

    p = sub.add_parser("verify", help="run a bundle's engines on its reference inputs and check its budget")
    p.add_argument("bundle", type=Path)
    p.add_argument("--target", default=DEFAULT_TARGET, choices=TARGETS)
    p.add_argument("--threads", type=int)
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    p.set_defaults(handler=_verify)

    p = sub.add_parser("run", help="run the model's pipeline on images (CLIP: zero-shot classification)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--image", type=Path, action="append", required=True, help="an image file (repeatable)")
    p.add_argument("--labels", required=True, help="comma-separated labels, e.g. 'a cat,a dog'")
    p.add_argument("--target", default=DEFAULT_TARGET, choices=TARGETS)
    p.set_defaults(handler=_run)

    p = sub.add_parser("info", help="show what a bundle holds")
    p.add_argument("bundle", type=Path)
    p.set_defaults(handler=_info)

    p = sub.add_parser("bench", help="latency of a bundle's components vs PyTorch eager, in the same run")
    p.add_argument("bundle", type=Path)
    p.add_argument("--component", action="append", help="component to time (repeatable; default: all)")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--target", default=DEFAULT_TARGET, choices=TARGETS)
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

    settings = BuildSettings(
        model=args.model,
        preset=args.preset,
        weights=args.weights,
        precision=args.precision,
        target=args.target,
        out=args.out,
        threads=args.threads,
        quiet=args.quiet,
    )
    try:
        result = BundleFromRecipe(settings)()
    except TrtDeployError as exc:
        report = getattr(exc, "report", None)
        if report is not None:
            print(report.to_markdown())
        raise
    print(result.report.to_markdown())
    print(
        f"bundle: {result.bundle}  ({result.manifest.model} {result.manifest.preset}, {result.manifest.precision})"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from trtdeploy.runtime.bundle import Bundle
    from trtdeploy.runtime.targets import open_engines
    from trtdeploy.runtime.verify import raise_if_failed, verify_bundle

    bundle = Bundle.load(args.bundle)
    engines = open_engines(bundle, args.target, threads=args.threads)
    report = verify_bundle(bundle, engines, args.target)
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
    pipeline = ClipPipeline.from_bundle(bundle, args.target)
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
    rows = bench_bundle(
        bundle,
        components=components,
        batches=batches,
        target=args.target,
        threads=args.threads,
        iterations=args.iterations,
        blocks=args.blocks,
        weights=args.weights,
    )
    title = f"{bundle.manifest.model} {bundle.manifest.precision} on {args.target} vs PyTorch eager FP32"
    print(rows_to_markdown(rows, title))
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n", encoding="utf-8")
    return 0
