"""Loading real checkpoints from a local Hugging Face folder, safely.

safetensors only (a pickle can run code when loaded), no remote code, no network. The weights are
identified by a hash of the loaded state dict, so a preset and a folder holding the same tensors
hash alike and a bundle can be traced back to exactly the weights it was built from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from trtdeploy.runtime.errors import ArtifactError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def check_weights_folder(folder: Path, model_types: set[str]) -> dict[str, object]:
    """Refuse anything but a plain local safetensors checkpoint; return its config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"weights folder {folder} does not exist or is not a folder.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ArtifactError(
            f"{folder} has no config.json; pass a folder written by save_pretrained() (config.json + *.safetensors)."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArtifactError(f"{config_path} is not valid JSON: {exc}") from exc
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


def load_weights_folder(folder: Path, model_class: type, model_types: set[str]) -> torch.nn.Module:
    check_weights_folder(folder, model_types)
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: a local folder never needs the hub
    try:
        model = model_class.from_pretrained(  # type: ignore[attr-defined]
            str(folder), use_safetensors=True, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"could not load the checkpoint in {folder}: {exc}") from exc
    return model


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in the state dict, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
