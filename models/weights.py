"""Loading real checkpoints from a local Hugging Face folder, exactly or not at all.

safetensors only (a pickle can run code when loaded), no remote code, no network. A folder is
treated as untrusted input (research/reliability.md §1.4): before the library sees it we read each
safetensors header ourselves (bounded by the file and by safetensors' 100 MB cap), check that
config.json describes a model that can work (before building it: absurd sizes allocate gigabytes),
and build the model on the meta device to bound what the real build will allocate. After loading,
every parameter the model needs must have come from the checkpoint (what transformers reports as
missing, unexpected or mismatched is refused) and hold finite values (safetensors does not check).

The weights are identified by a hash of the loaded state dict, so a preset and a folder holding the
same tensors hash alike and a bundle can be traced back to exactly the weights it was built from.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from trtdeploy.models.checkpoint_files import (
    check_inside,
    checkpoint_files,
    read_json_object,
    read_safetensors_header,
)
from trtdeploy.models.config_rules import check_build_fits, config_from_json
from trtdeploy.runtime.errors import ArtifactError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
SHOWN = 5  # names listed in a message before "... and N more"


# -- the folder and its config.json ----------------------------------------------------------------


def check_weights_folder(folder: Path, model_types: set[str]) -> dict[str, Any]:
    """Refuse anything but a plain local safetensors checkpoint; return its config."""
    folder = Path(folder)
    if folder.is_symlink():
        raise ArtifactError(
            f"weights folder {folder} is a symbolic link (to {folder.resolve()}); pass the real folder, "
            "so what is loaded is what the path names."
        )
    if not folder.is_dir():
        raise ArtifactError(f"weights folder {folder} does not exist or is not a folder.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ArtifactError(
            f"{folder} has no config.json; pass a folder written by save_pretrained() (config.json + *.safetensors)."
        )
    check_inside(folder, config_path)
    config = read_json_object(config_path, "a JSON object of model settings")
    if config.get("model_type") not in model_types:
        raise ArtifactError(
            f"{config_path} declares model_type {config.get('model_type')!r}; this recipe loads {sorted(model_types)}."
        )
    code = sorted(p.name for p in folder.glob("*.py"))
    if "auto_map" in config or code:
        raise ArtifactError(
            f"{folder} asks for remote code ({'auto_map in config.json' if 'auto_map' in config else ', '.join(code)}). "
            "trtdeploy never runs code from a weights folder; use a checkpoint of the native transformers class."
        )
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ArtifactError(
                f"{folder} holds only pickle checkpoints ({', '.join(pickles)}), which can run code when loaded. "
                "Convert them to safetensors on a trusted machine (model.save_pretrained(dir, safe_serialization=True))."
            )
        raise ArtifactError(f"{folder} holds no *.safetensors weights.")
    return config


# -- loading, and what transformers says about it -----------------------------------------------------


def _some(names: Iterable[str]) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:SHOWN])
    return shown + (f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else "")


def check_loading_info(info: Mapping[str, Any], folder: Path) -> None:
    """Refuse a load that did not fill every parameter from the checkpoint with a tensor of its shape.

    transformers already leaves out what it does not expect in a checkpoint (tied weights, buffers
    it rebuilds), so what it reports missing was really random-initialised.
    """
    missing, unexpected = info.get("missing_keys") or (), info.get("unexpected_keys") or ()
    mismatched, errors = info.get("mismatched_keys") or (), info.get("error_msgs") or ()
    problems = []
    if missing:
        problems.append(f"{len(missing)} parameters the model needs are missing ({_some(missing)})")
    if unexpected:
        problems.append(
            f"{len(unexpected)} tensors the model does not have are present ({_some(unexpected)})"
        )
    if mismatched:
        shapes = [f"{name} {tuple(got)} where the model has {tuple(want)}" for name, got, want in mismatched]
        problems.append(f"{len(mismatched)} tensors have the wrong shape ({_some(shapes)})")
    if errors:
        problems.append(f"transformers reported: {'; '.join(map(str, errors))}")
    if problems:
        raise ArtifactError(
            f"the checkpoint in {folder} does not match its config.json: {'; '.join(problems)}. "
            "trtdeploy loads a checkpoint exactly or not at all (no random-initialised parameters); "
            f"pass the folder save_pretrained() wrote for this model."
        )


def check_finite(model: torch.nn.Module, folder: Path) -> None:
    """safetensors does not check values: refuse NaN or Inf in any loaded tensor."""
    bad, seen = [], set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        seen.add(tensor.data_ptr())
        if not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    if bad:
        raise ArtifactError(
            f"the checkpoint in {folder} holds NaN or Inf in {len(bad)} tensors ({_some(bad)}); "
            "a model with non-finite weights gives non-finite answers. Use an intact copy of the checkpoint."
        )


def load_weights_folder(folder: Path, model_class: type, model_types: set[str]) -> torch.nn.Module:
    """The model in a local checkpoint folder, every parameter from the checkpoint, or an ArtifactError."""
    folder = Path(folder)
    raw = check_weights_folder(folder, model_types)
    files = checkpoint_files(folder, raw)
    values = 0
    for name in files:
        check_inside(folder, folder / name)
        values += sum(entry.values for entry in read_safetensors_header(folder / name).values())
    config = config_from_json(raw, model_class, folder / "config.json")
    check_build_fits(model_class, config, values, folder / "config.json")
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: a local folder never needs the hub
    try:
        model, info = model_class.from_pretrained(  # type: ignore[attr-defined]
            str(folder),
            config=config,
            use_safetensors=True,
            local_files_only=True,
            trust_remote_code=False,
            ignore_mismatched_sizes=True,  # reported by name below instead of "see the report above"
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ArtifactError(f"could not load the checkpoint in {folder}: {exc}") from exc
    check_loading_info(info, folder)
    check_finite(model, folder)
    return model


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in the state dict, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
