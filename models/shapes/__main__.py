"""python -m trtdeploy.models.shapes train|eval|compare: retrain, score and check the tiny shapes models.

train MODEL [--out DIR] [--clip DIR]   train from scratch, evaluate, write the folder and its card
eval MODEL --weights DIR [--start S] [--count N]   FP32 metrics on evaluation samples S..S+N-1
compare NEW_ROOT COMMITTED_ROOT        do retrained folders reproduce the committed figures?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import card, common, train_clip, train_clipseg, train_florence2
from trtdeploy.models.shapes.models import COMMITTED, MODELS, ShapesModel, get
from trtdeploy.models.weights import load_weights_folder

WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"
EVALUATION_COUNT = 500  # evaluation-split samples behind each card's figures
SLICE_COUNT = 32  # the prefix of those that the test suite re-scores


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        out = args.out or WEIGHTS_ROOT / get(args.model).folder_name
        train(get(args.model), Path(out), clip_folder=Path(args.clip) if args.clip else None)
        return 0
    if args.command == "eval":
        spec = get(args.model)
        print(json.dumps(evaluate_folder(spec, Path(args.weights), args.start, args.count), indent=2))
        return 0
    return compare(Path(args.new), Path(args.committed))


def train(spec: ShapesModel, out: Path, clip_folder: Path | None = None) -> dict[str, Any]:
    """Train ``spec`` into ``out`` (replaced atomically when complete) and return its metrics record."""
    common.say(f"training {spec.folder_name} into {out}")
    staging = common.staging_folder(out)
    spec.write_tokenizer(staging)
    started = time.monotonic()
    model, settings = _run_trainer(spec, staging, clip_folder or out.parent / get("clip").folder_name)
    seconds = time.monotonic() - started
    model.save_pretrained(str(staging))  # config.json + model.safetensors (+ generation_config.json)
    (staging / "preprocessor_config.json").write_text(
        json.dumps(spec.preprocessor_config(model), indent=2) + "\n", encoding="utf-8"
    )
    record: dict[str, Any] = {
        "name": spec.folder_name,
        "architecture": spec.model_class.__name__,
        "parameters": common.parameter_count(model),
        "weights_bytes": sum(p.stat().st_size for p in staging.glob("*.safetensors")),
        "dataset_version": shapes.DATASET_VERSION,
        "settings": settings.to_json(),
        "train_seconds": round(seconds, 1),
        "command": f"python -m trtdeploy.models.shapes train {spec.key}",
        "environment": card.environment(),
        "evaluation": evaluate_folder(spec, staging, 0, EVALUATION_COUNT),
        "slice": evaluate_folder(spec, staging, 0, SLICE_COUNT),
    }
    card.write_metrics(staging, record)
    card.write_card(staging, record, spec.about)
    common.replace_folder(staging, out)
    common.say(
        f"{spec.folder_name}: {json.dumps(record['evaluation']['metrics'])} in {seconds:.0f} s -> {out}"
    )
    return record


def evaluate_folder(spec: ShapesModel, folder: Path, start: int, count: int) -> dict[str, Any]:
    """Load the folder as a user's checkpoint is loaded and score it on evaluation samples start..start+count-1."""
    model = load_weights_folder(folder, spec.model_class, {spec.model_type})
    model.eval()
    torch.set_num_threads(common.TrainSettings.threads)
    samples = shapes.samples("evaluation", start, count)
    return {
        "start": start,
        "count": count,
        "fingerprint": card.evaluation_fingerprint(samples),
        "metrics": spec.metrics(model, folder, samples),
    }


def compare(new_root: Path, committed_root: Path) -> int:
    """0 if every committed model's retrained figures are within tolerance of its committed ones, else 1."""
    failures = []
    print("| model | metric | committed | retrained | tolerance | result |\n|---|---|---:|---:|---:|---|")
    for spec in (get(key) for key in COMMITTED):
        committed = card.read_metrics(committed_root / spec.folder_name)["evaluation"]["metrics"]
        new = card.read_metrics(new_root / spec.folder_name)["evaluation"]["metrics"]
        for name, value in committed.items():
            ok = abs(new[name] - value) <= card.REPRODUCE_TOLERANCE[name]
            failures += [] if ok else [f"{spec.folder_name} {name}"]
            print(
                f"| {spec.folder_name} | {name} | {value:.4f} | {new[name]:.4f} | ±{card.REPRODUCE_TOLERANCE[name]} "
                f"| {'ok' if ok else 'OUT'} |"
            )
    if failures:
        print(f"not reproduced: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _run_trainer(
    spec: ShapesModel, staging: Path, clip_folder: Path
) -> tuple[PreTrainedModel, common.TrainSettings]:
    if spec.key == "clip":
        return train_clip.train(staging), train_clip.SETTINGS
    if spec.key == "clipseg":
        return train_clipseg.train(staging, clip_folder), train_clipseg.SETTINGS
    return train_florence2.train(staging), train_florence2.SETTINGS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trtdeploy.models.shapes", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train one model from scratch and write its folder")
    train_cmd.add_argument("model", choices=sorted(MODELS))
    train_cmd.add_argument("--out", help="folder to write (default: models/weights/<name>)")
    train_cmd.add_argument(
        "--clip", help="clipseg only: the tiny CLIP to start from (default: <out>/../clip-shapes-tiny)"
    )
    eval_cmd = commands.add_parser("eval", help="FP32 metrics of a weights folder on evaluation samples")
    eval_cmd.add_argument("model", choices=sorted(MODELS))
    eval_cmd.add_argument("--weights", required=True)
    eval_cmd.add_argument("--start", type=int, default=0)
    eval_cmd.add_argument("--count", type=int, default=EVALUATION_COUNT)
    compare_cmd = commands.add_parser("compare", help="check retrained figures against committed ones")
    compare_cmd.add_argument("new", help="folder holding the retrained <name>/ folders")
    compare_cmd.add_argument("committed", help="folder holding the committed <name>/ folders")
    return parser


if __name__ == "__main__":
    sys.exit(main())
