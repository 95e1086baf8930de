"""`python -m trtdeploy.peers`: CLIP zero-shot beside Hugging Face Optimum's ONNX export, in one run.

    python -m trtdeploy.peers save FP32_BUNDLE --out DIR                        # project .venv
    python -m trtdeploy.peers compare DIR FP32_BUNDLE INT8_BUNDLE [--threads 1]  # .venv-peers

Optimum's ONNX export (optimum-onnx 0.1.0) pins transformers < 4.58 and this project needs
transformers 5, so the comparison spans two environments (`make peers` runs both steps). `save`
writes the bundle's reference model as a save_pretrained folder, after checking that its weights
hash to the ones the bundle was built from, with the photograph the sides classify. `compare`
exports that folder with Optimum (task zero-shot-image-classification), quantizes the export with
ORTQuantizer's dynamic config for this CPU, and times five sides on the photograph against the 10
evaluation labels, in alternating blocks, the same number of threads each:

- PyTorch eager FP32: CLIPProcessor + CLIPModel, softmax of logits_per_image (the transformers docs);
- Optimum FP32 and INT8: the same processor + ORTModelForZeroShotImageClassification, whose one graph
  encodes the image and every label on every call;
- trtdeploy FP32 and INT8: ClipPipeline.zero_shot with the label embeddings warm (cached), which is
  what a classifier asking with a fixed label set pays per image.

It prints one Markdown table: p50 per call, the ratio to eager's p50 in the same run, and whether
each side's top-1 label is eager's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtdeploy.calibration.prompts import EVALUATION_PROMPTS
from trtdeploy.runtime.bench import LatencyStats, time_blocks
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import ArtifactError, BackendUnavailable, TrtDeployError, UsageError
from trtdeploy.runtime.hostinfo import cpu_facts

IMAGE_FILE = "image.png"  # the photograph, next to the weights `save` writes
TASK = "zero-shot-image-classification"
# ORTQuantizer's dynamic config per SIMD level runtime/hostinfo.py reports (best level first):
# AMX-INT8 CPUs also have AVX-512 VNNI; anything short of VNNI takes the AVX2 config.
QUANTIZATION_CONFIGS = {
    "amx_int8": "avx512_vnni",
    "avx512_vnni": "avx512_vnni",
    "avx512f": "avx2",
    "avx_vnni": "avx2",
    "avx2": "avx2",
}
PEER_LIBRARIES = ("optimum", "optimum-onnx", "transformers", "torch", "onnxruntime")
NOT_PEERS_VENV = (
    "`compare` runs in .venv-peers, which holds optimum-onnx 0.1.0 with transformers < 4.58 and "
    "torch beside trtdeploy's runtime (this project's .venv has transformers 5, which optimum-onnx "
    "refuses); run `make peers`, which builds that environment and runs both steps"
)


# -- save (project .venv) ---------------------------------------------------------------------------


def save_reference(bundle_path: Path, out: Path) -> Path:
    """Write the CLIP bundle's reference model to ``out`` (save_pretrained) with the photograph,
    refusing a bundle whose recorded weights are not the ones its preset loads now."""
    try:
        from trtdeploy.calibration.images import EVALUATION_IMAGES
        from trtdeploy.models.registry import get_recipe
    except ImportError as exc:
        raise BackendUnavailable(
            f"`save` runs in this project's .venv (torch, transformers 5): {exc}. Run `make peers`."
        ) from exc
    manifest = Bundle.load(bundle_path).manifest
    if manifest.pipeline != "clip":
        raise UsageError(
            f"{bundle_path} is a {manifest.pipeline!r} bundle; the Optimum comparison runs CLIP bundles: "
            "make engine MODEL=clip."
        )
    if manifest.weights.get("source") == "folder":
        raise UsageError(
            f"{bundle_path} was built from the weights folder {manifest.weights.get('folder')!r}; `save` "
            "re-creates a preset's weights only. Compare bundles built from a preset: make engine MODEL=clip."
        )
    loaded = get_recipe(manifest.model).load(manifest.preset)
    if loaded.weights["sha256"] != manifest.weights.get("sha256"):
        raise ArtifactError(
            f"{bundle_path} was built from weights with sha256 {manifest.weights.get('sha256')}, but preset "
            f"{manifest.preset!r} loads {loaded.weights['sha256']} here (another torch, or a changed "
            f"recipe); the peers would run other weights. Rebuild it: make engine MODEL={manifest.model}."
        )
    _refuse_foreign_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")  # written whole, then renamed into place
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted save left
    staging.mkdir()
    try:
        model: Any = loaded.model  # a transformers CLIPModel
        model.save_pretrained(staging)
        EVALUATION_IMAGES[0].load().save(staging / IMAGE_FILE)  # PNG: the same pixels on every side
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _refuse_foreign_folder(out: Path) -> None:
    """``out`` may be missing, empty, or an earlier `save` (replaced); anything else is someone's."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out} is not a folder; name a folder for the weights.")
    if out.is_dir() and any(out.iterdir()) and not (out / IMAGE_FILE).is_file():
        raise UsageError(
            f"--out {out} holds files `save` did not write (no {IMAGE_FILE}); name an empty or new folder."
        )


# -- compare (.venv-peers) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    name: str
    call: Callable[[], str]  # one zero-shot call, returning the top-1 label


@dataclass(frozen=True)
class Settings:
    threads: int
    iterations: int = 5
    warmup: int = 1
    blocks: int = 4


def compare(weights: Path, fp32: Path, int8: Path, settings: Settings) -> str:
    """The Markdown table of the five sides on ``weights``'s photograph × the evaluation labels."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder never needs the hub
    try:
        import torch
        import transformers
        from optimum.exporters.onnx import main_export  # type: ignore[import-not-found]
        from optimum.onnxruntime import (  # type: ignore[import-not-found]
            AutoQuantizationConfig,
            ORTModelForZeroShotImageClassification,
            ORTQuantizer,
        )
    except ImportError as exc:
        raise BackendUnavailable(f"{NOT_PEERS_VENV} ({exc}).") from exc
    from PIL import Image

    from trtdeploy.models.weights import state_dict_sha256
    from trtdeploy.runtime.pipelines.clip import ClipPipeline

    bundles = {"FP32": Bundle.load(fp32), "INT8": Bundle.load(int8)}
    _check_precisions(bundles)
    image_path = weights / IMAGE_FILE
    if not image_path.is_file():
        raise ArtifactError(f"{weights} has no {IMAGE_FILE}; write the folder with `peers save` first.")
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    labels = list(EVALUATION_PROMPTS)
    model = transformers.CLIPModel.from_pretrained(weights).eval()
    _check_weights(state_dict_sha256(model), bundles, weights)
    processor = clip_processor(bundles["FP32"], transformers)
    config = quantization_config(cpu_facts()["simd"])
    torch.set_num_threads(settings.threads)

    def probabilities(run: Callable[..., Any]) -> Callable[[], str]:
        def call() -> str:
            with torch.inference_mode():
                inputs = processor(text=labels, images=image, padding=True, return_tensors="pt")
                probs = run(**inputs).logits_per_image.softmax(dim=-1)  # (1, labels)
            return labels[int(probs[0].argmax())]

        return call

    with tempfile.TemporaryDirectory(prefix="optimum-clip-") as scratch:
        exported, quantized = Path(scratch) / "fp32", Path(scratch) / "int8"
        print(f"exporting {weights} with Optimum ({TASK}) ...", file=sys.stderr)
        main_export(str(weights), exported, task=TASK)
        print(f"quantizing with ORTQuantizer, {config} dynamic ...", file=sys.stderr)
        ORTQuantizer.from_pretrained(exported).quantize(
            getattr(AutoQuantizationConfig, config)(is_static=False), save_dir=quantized
        )
        optimum = {
            "FP32": _ort_model(ORTModelForZeroShotImageClassification, exported, "model.onnx", settings),
            "INT8": _ort_model(
                ORTModelForZeroShotImageClassification, quantized, "model_quantized.onnx", settings
            ),
        }
        with (
            ClipPipeline.from_bundle(bundles["FP32"], threads=settings.threads) as ours_fp32,
            ClipPipeline.from_bundle(bundles["INT8"], threads=settings.threads) as ours_int8,
        ):
            sides = [
                Side("PyTorch eager FP32 (CLIPProcessor + CLIPModel)", probabilities(model)),
                Side("Optimum FP32 (ORTModelForZeroShotImageClassification)", probabilities(optimum["FP32"])),
                Side(f"Optimum INT8 (ORTQuantizer, {config} dynamic)", probabilities(optimum["INT8"])),
                Side("trtdeploy FP32 bundle, label embeddings warm", _warm(ours_fp32, image, labels)),
                Side("trtdeploy INT8 bundle, label embeddings warm", _warm(ours_int8, image, labels)),
            ]
            top1 = {side.name: side.call() for side in sides}  # also fills the trtdeploy label caches
            print("timing ...", file=sys.stderr)
            samples = time_blocks(
                {side.name: side.call for side in sides},
                iterations=settings.iterations,
                warmup=settings.warmup,
                blocks=settings.blocks,
            )
    stats = {name: LatencyStats.from_seconds(seconds) for name, seconds in samples.items()}
    return markdown_table(stats, top1, settings, len(labels))


def clip_processor(bundle: Bundle, transformers: Any) -> Any:
    """transformers' CLIPProcessor with the bundle's preprocessing constants and tokenizer."""
    from PIL import Image

    preprocess = bundle.manifest.pipeline_config["preprocess"]
    if preprocess["resize"] != "shortest_edge":
        raise ArtifactError(
            f"{bundle.root}: resize {preprocess['resize']!r}; CLIPImageProcessor resizes the shortest edge. "
            "Compare a CLIP bundle built by `make engine MODEL=clip`."
        )
    height, width = preprocess["crop"]
    images = transformers.CLIPImageProcessor(
        size={"shortest_edge": int(preprocess["size"])},
        crop_size={"height": int(height), "width": int(width)},
        resample=Image.Resampling[str(preprocess["resample"]).upper()],
        rescale_factor=float(preprocess["rescale"]),
        image_mean=list(preprocess["mean"]),
        image_std=list(preprocess["std"]),
    )
    tokenizer = transformers.CLIPTokenizerFast(tokenizer_file=str(bundle.asset("tokenizer")))
    return transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def quantization_config(simd: str) -> str:
    """The AutoQuantizationConfig method for this CPU's SIMD level."""
    if simd not in QUANTIZATION_CONFIGS:
        raise BackendUnavailable(
            f"this CPU's best SIMD level is {simd!r}; the comparison quantizes with ORTQuantizer's x86 "
            f"dynamic configs, which need one of {sorted(QUANTIZATION_CONFIGS)}. Run it on an x86 CPU with AVX2."
        )
    return QUANTIZATION_CONFIGS[simd]


def _ort_model(model_class: Any, folder: Path, file_name: str, settings: Settings) -> Any:
    """Optimum's model on the CPU provider, with the thread settings trtdeploy's sessions use."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    return model_class.from_pretrained(folder, file_name=file_name, session_options=options)


def _warm(pipeline: Any, image: Any, labels: Sequence[str]) -> Callable[[], str]:
    def call() -> str:
        return str(pipeline.zero_shot(image, labels)[0].label)

    return call


def _check_precisions(bundles: Mapping[str, Bundle]) -> None:
    for precision, bundle in bundles.items():
        if bundle.manifest.pipeline != "clip" or bundle.manifest.precision != precision.lower():
            raise UsageError(
                f"expected a CLIP {precision} bundle, found a {bundle.manifest.pipeline} "
                f"{bundle.manifest.precision} bundle at {bundle.root}; pass build/clip/fp32 then build/clip/int8."
            )


def _check_weights(sha256: str, bundles: Mapping[str, Bundle], weights: Path) -> None:
    """Every side runs the same weights: the folder's must be the ones each bundle was built from."""
    for precision, bundle in bundles.items():
        built = bundle.manifest.weights.get("sha256")
        if built != sha256:
            raise ArtifactError(
                f"{weights} holds weights with sha256 {sha256}, but the {precision} bundle {bundle.root} was "
                f"built from {built}; write the folder from that bundle: `peers save {bundle.root} --out {weights}`."
            )


def markdown_table(
    stats: Mapping[str, LatencyStats], top1: Mapping[str, str], settings: Settings, n_labels: int
) -> str:
    """Rows in ``stats`` order, the first (eager) the reference of every ratio and top-1."""
    eager = next(iter(stats))
    cpu = cpu_facts()
    versions = ", ".join(f"{name} {_version(name)}" for name in PEER_LIBRARIES)
    lines = [
        f"CLIP zero-shot, 1 image × {n_labels} labels; {cpu['model']} ({cpu['arch']}, {cpu['simd']}, "
        f"{cpu['cores']} cores); {settings.threads} thread(s) each side; {settings.blocks} alternating "
        f"blocks of {settings.iterations} calls after {settings.warmup} warm-up call(s); {versions}. "
        f"Eager's top-1: {top1[eager]!r}.",
        "",
        "| side | p50 | ratio to eager | top-1 = eager's |",
        "|---|---:|---:|---|",
    ]
    for name, row in stats.items():
        agrees = "yes" if top1[name] == top1[eager] else f"no ({top1[name]!r})"
        lines.append(f"| {name} | {row.p50:.1f} ms | {row.p50 / stats[eager].p50:.2f}× | {agrees} |")
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


# -- command line -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trtdeploy.peers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    save = commands.add_parser("save", help="(project .venv) the bundle's reference weights as a folder")
    save.add_argument("bundle", type=Path)
    save.add_argument("--out", type=Path, required=True)
    peers = commands.add_parser("compare", help="(.venv-peers) time Optimum and trtdeploy beside eager")
    peers.add_argument("weights", type=Path, help="the folder `save` wrote")
    peers.add_argument("fp32", type=Path, help="the CLIP FP32 bundle")
    peers.add_argument("int8", type=Path, help="the CLIP INT8 bundle")
    peers.add_argument("--threads", type=int, default=1, help="threads each side (default 1)")
    peers.add_argument("--iterations", type=int, default=Settings.iterations)
    peers.add_argument("--warmup", type=int, default=Settings.warmup)
    peers.add_argument("--blocks", type=int, default=Settings.blocks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "save":
            print(f"wrote {save_reference(args.bundle, args.out)}")
        else:
            counts = (("--threads", args.threads, 1), ("--iterations", args.iterations, 1))
            for flag, value, least in (*counts, ("--blocks", args.blocks, 1), ("--warmup", args.warmup, 0)):
                if value < least:
                    raise UsageError(f"{flag} must be a whole number >= {least}, got {value}.")
            settings = Settings(args.threads, args.iterations, args.warmup, args.blocks)
            print(compare(args.weights, args.fp32, args.int8, settings))
    except TrtDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
