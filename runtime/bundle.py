"""The bundle: a folder that fully describes one deployable model at one precision.

Layout (every path below is recorded, with its sha256 and size, in manifest.json):

    manifest.json                  written last: the commit point of the build
    <component>.onnx               one precision-explicit graph per component
    reference/<component>.inputs.npz, .outputs.npz   held-out inputs and PyTorch outputs
    pipeline.json                  preprocessing constants and pipeline settings
    tokenizer/tokenizer.json       when the model reads text
    verification.json / .md        the build's verification report

A bundle is written into a hidden sibling folder and swapped into place only when complete, so a
killed build leaves no half bundle. Loading checks every file's hash before anything parses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from trtdeploy.runtime.compare import Budget
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.specs import IOSpec

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# The asset role of the file holding a pipeline's task references (npz, keys "task/name"): whole
# answers to compare with, such as the tokens transformers' generate() produced.
TASK_REFERENCE = "task_reference"


@dataclass(frozen=True)
class ComponentEntry:
    """One graph of the bundle and its interface."""

    name: str
    onnx: str  # the precision-explicit graph every target can build (TensorRT-bound)
    io: IOSpec
    reference_inputs: str
    reference_outputs: str
    # A target's own fast form of the same component, e.g. {"onnxruntime": "vision.ort-int8.onnx"}.
    forms: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "onnx": self.onnx,
            "io": self.io.to_json(),
            "reference_inputs": self.reference_inputs,
            "reference_outputs": self.reference_outputs,
            "forms": dict(self.forms),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComponentEntry:
        forms = data.get("forms", {})
        if not isinstance(forms, Mapping) or not all(isinstance(v, str) for v in forms.values()):
            raise TypeError(f"component forms must map targets to file paths, got {forms!r:.80}")
        return cls(
            name=_text(data, "name"),
            onnx=_text(data, "onnx"),
            io=IOSpec.from_json(data["io"]),
            reference_inputs=_text(data, "reference_inputs"),
            reference_outputs=_text(data, "reference_outputs"),
            forms={str(k): v for k, v in forms.items()},
        )


def _text(data: Mapping[str, Any], key: str) -> str:
    """A field that must be a string: a number where a file name belongs is a broken manifest, not a name."""
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a text, got {type(value).__name__} {value!r:.40}")
    return value


@dataclass(frozen=True)
class Manifest:
    """What a bundle is and how it was made. ``files`` is filled in by the writer."""

    model: str
    preset: str
    weights: Mapping[str, str]  # {"source": "preset" | "folder", "sha256": ...}
    precision: str
    precision_method: Mapping[str, Any]
    pipeline: str
    components: tuple[ComponentEntry, ...]
    budget: Budget
    assets: Mapping[str, str]  # role -> relative path, e.g. {"tokenizer": "tokenizer/tokenizer.json"}
    tools: Mapping[str, str]
    created_utc: str
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # The pipeline's settings (the content of the "pipeline" asset), so verification can read
    # them from the manifest alone: e.g. CLIP's logit scale for zero-shot probabilities.
    pipeline_config: Mapping[str, Any] = field(default_factory=dict)

    def component(self, name: str) -> ComponentEntry:
        for entry in self.components:
            if entry.name == name:
                return entry
        raise ArtifactError(
            f"the bundle has no component {name!r}; it has {[c.name for c in self.components]}."
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model": self.model,
            "preset": self.preset,
            "weights": dict(self.weights),
            "precision": self.precision,
            "precision_method": dict(self.precision_method),
            "pipeline": self.pipeline,
            "components": [c.to_json() for c in self.components],
            "budget": self.budget.to_json(),
            "assets": dict(self.assets),
            "tools": dict(self.tools),
            "created_utc": self.created_utc,
            "pipeline_config": dict(self.pipeline_config),
            "files": {k: dict(v) for k, v in sorted(self.files.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        components = tuple(ComponentEntry.from_json(c) for c in _json_list(data, "components"))
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"components are named {names}: a name twice")
        assets = _json_object(data, "assets")
        if not all(isinstance(v, str) for v in assets.values()):
            raise TypeError(f"assets are {assets}: every asset must be a relative path")
        return cls(
            model=str(data["model"]),
            preset=str(data["preset"]),
            weights=_json_object(data, "weights"),
            precision=str(data["precision"]),
            precision_method=_json_object(data, "precision_method"),
            pipeline=str(data["pipeline"]),
            components=components,
            budget=Budget.from_json(data["budget"]),
            assets=assets,
            tools=_json_object(data, "tools"),
            created_utc=str(data["created_utc"]),
            files=_json_object(data, "files"),
            format_version=int(data["format_version"]),
            pipeline_config=_json_object(data, "pipeline_config", default={}),
        )


def _json_object(data: Mapping[str, Any], key: str, default: dict[str, Any] | None = None) -> dict[str, Any]:
    """``data[key]`` when it is a JSON object (``dict()`` alone would also take a list of pairs)."""
    value = data.get(key, default) if default is not None else data[key]
    if not isinstance(value, dict):
        raise TypeError(f"{key!r} is a {type(value).__name__}, not an object")
    return dict(value)


def _json_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise TypeError(f"{key!r} is a {type(value).__name__}, not a list")
    return value


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _checked_relpath(root: Path, rel: str) -> Path:
    """Resolve a manifest path inside ``root``, refusing anything that could point outside it."""
    if not isinstance(rel, str):
        raise ArtifactError(f"the manifest names a file as {type(rel).__name__} {rel!r:.40}, not a path.")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or not pure.parts:
        raise ArtifactError(f"manifest names the file {rel!r}, which is not a plain path inside the bundle.")
    path = root.joinpath(*pure.parts)
    if path.is_symlink() or any(p.is_symlink() for p in path.parents if root in p.parents):
        raise ArtifactError(f"bundle file {rel!r} is a symbolic link; bundles hold plain files only.")
    if not path.resolve().is_relative_to(root.resolve()):
        raise ArtifactError(f"bundle file {rel!r} resolves outside the bundle folder.")
    return path


class Bundle:
    """A bundle on disk whose manifest parsed and whose files all match their hashes."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def load(cls, root: str | Path, *, check_hashes: bool = True) -> Bundle:
        """The bundle at ``root``: its manifest parsed strictly, every file in the folder listed by
        it (nothing unlisted is ever read: an ONNX external-data file the manifest does not name is
        refused, not loaded), every listed file matching its size and sha256, and its pipeline
        settings within the ranges the pipeline can honour."""
        root = Path(root)
        if root.is_symlink() or not root.is_dir():
            raise ArtifactError(
                f"bundle folder {root} does not exist (or is a symbolic link, which bundles never are). "
                "Build it first: make engine MODEL=<model>."
            )
        manifest = read_manifest(root)
        bundle = cls(root, manifest)
        referenced = [c.onnx for c in manifest.components] + [
            f for c in manifest.components for f in c.forms.values()
        ]
        referenced += [p for c in manifest.components for p in (c.reference_inputs, c.reference_outputs)]
        referenced += list(manifest.assets.values())
        unlisted = sorted(set(referenced) - set(manifest.files))
        if unlisted:
            raise ArtifactError(
                f"{root / MANIFEST} refers to files it does not list with a hash: {unlisted}."
            )
        check_no_strangers(root, manifest)
        if check_hashes:
            bundle.check_files()
        bundle._check_pipeline_config()
        return bundle

    def _check_pipeline_config(self) -> None:
        from trtdeploy.runtime.pipelines import pipeline_class

        pipeline = pipeline_class(self.manifest.pipeline)
        problems = budget_problems(self.manifest.budget, pipeline.task_names, manifest_outputs(self.manifest))
        if problems:
            raise ArtifactError(
                f"{self.root}: the manifest's budget {'; '.join(problems)}. Rebuild the bundle."
            )
        pipeline.check_config(self.manifest.pipeline_config)
        if "pipeline" in self.manifest.assets and self.read_json(self.manifest.assets["pipeline"]) != dict(
            self.manifest.pipeline_config
        ):
            raise ArtifactError(
                f"{self.root}: pipeline.json differs from the settings the manifest recorded; the bundle was "
                "edited after its build. Rebuild it."
            )

    def check_files(self) -> None:
        """Check every listed file's size and sha256; raise on the first mismatch."""
        for rel, meta in self.manifest.files.items():
            path = _checked_relpath(self.root, rel)
            if not path.is_file():
                raise ArtifactError(
                    f"bundle file {rel} is missing from {self.root}. The bundle is incomplete: rebuild it."
                )
            size = path.stat().st_size
            if size != int(meta["size"]):
                raise ArtifactError(
                    f"bundle file {rel} has {size} bytes, the manifest says {meta['size']}: it was changed "
                    "after the build. Rebuild the bundle or restore the file."
                )
            digest = sha256_file(path)
            if digest != meta["sha256"]:
                raise ArtifactError(
                    f"bundle file {rel} has sha256 {digest[:16]}…, the manifest says {str(meta['sha256'])[:16]}…: "
                    "it was changed after the build. Rebuild the bundle or restore the file."
                )

    def path(self, rel: str) -> Path:
        if rel not in self.manifest.files:
            raise ArtifactError(f"{rel} is not a file of this bundle.")
        return _checked_relpath(self.root, rel)

    def read_json(self, rel: str) -> Any:
        return read_json_file(self.path(rel))

    def asset(self, role: str) -> Path:
        if role not in self.manifest.assets:
            raise ArtifactError(f"the bundle has no {role!r} asset; it has {sorted(self.manifest.assets)}.")
        return self.path(self.manifest.assets[role])

    def reference(self, component: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The held-out inputs and the PyTorch reference outputs recorded for ``component``."""
        entry = self.manifest.component(component)
        return read_npz(self.path(entry.reference_inputs)), read_npz(self.path(entry.reference_outputs))


def budget_problems(budget: Budget, task_names: frozenset[str], outputs: Sequence[str]) -> list[str]:
    """What in a budget names nothing: a task metric the pipeline does not compute, or an output
    pattern matching none of ``outputs`` ("component/output"). Either would leave what it meant
    ungated without a word."""
    problems = []
    unknown = sorted(set(budget.tasks) - task_names)
    if unknown:
        problems.append(
            f"names task metrics {unknown} that the pipeline does not compute (it computes {sorted(task_names)})"
        )
    unmatched = budget.unmatched_keys(outputs)
    if unmatched:
        problems.append(f"names outputs {unmatched} that no component has")
    return problems


def manifest_outputs(manifest: Manifest) -> list[str]:
    return [f"{c.name}/{o}" for c in manifest.components for o in c.io.output_names]


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, refusing object arrays (they would need pickle, which can run code)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an archive of named arrays")
        with loaded as data:
            arrays = {k: data[k] for k in data.files}
    # ValueError: object arrays; OSError/EOF/BadZipFile: not an npz, or a truncated one
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(
            f"{path.name} is not an .npz of plain arrays ({exc}); bundles never hold pickled data. Rebuild the bundle."
        ) from exc
    # Numbers, and unicode text (generation references record their task and settings); raw bytes,
    # structured and void records have no place in a bundle.
    odd = sorted(k for k, a in arrays.items() if a.dtype.kind not in "biufU")
    if odd:
        raise ArtifactError(
            f"{path.name} holds arrays {odd} of types {[str(arrays[k].dtype) for k in odd]}; reference arrays are "
            "numbers or text only. Rebuild the bundle."
        )
    return arrays


# A manifest or pipeline.json of a real bundle is a few hundred kB (ground truth included).
MAX_JSON_BYTES = 64 * 2**20
# The folder a bundle may hold besides its listed files: TensorRT plans, written on the device after
# the build (engine_cache.py checks each against its signed record before anything reads it).
# ONNX Runtime's TensorRT provider cache is not here: its engines carry no record to check, so it
# lives in this host's cache folder (runtime/targets.py), never in a bundle that can be copied.
RUNTIME_FOLDERS = ("engines",)


def read_json_file(path: Path) -> Any:
    """JSON from a bundle file, as ArtifactError when it is too large, not UTF-8, not JSON or
    nested past what the parser can follow."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ArtifactError(
                f"{path.name} is {path.stat().st_size:,} bytes; no bundle file of JSON is that large."
            )
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(
            f"{path.name} is not valid JSON ({type(exc).__name__}: {exc}). Rebuild the bundle."
        ) from None


def read_manifest(root: Path) -> Manifest:
    """The manifest of the bundle at ``root``, parsed strictly (every field of the type it must have)."""
    path = root / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(
            f"{root} has no {MANIFEST}: it is not a bundle, or its build did not finish. Rebuild it with make engine."
        )
    data = read_json_file(path)
    try:
        if not isinstance(data, dict):
            raise TypeError(f"the manifest is a {type(data).__name__}, not an object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{path} has format version {version!r}; this trtdeploy reads version {FORMAT_VERSION}. "
                "Rebuild the bundle with this version."
            )
        manifest = Manifest.from_json(data)
        _check_file_records(manifest.files)
    except ArtifactError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ArtifactError(
            f"{path} is not a valid trtdeploy manifest: {type(exc).__name__}: {exc}."
        ) from None
    return manifest


def _check_file_records(files: Mapping[str, Any]) -> None:
    for rel, meta in files.items():
        if not isinstance(meta, Mapping):
            raise TypeError(
                f"file record of {rel!r} is {type(meta).__name__}, not an object with sha256 and size"
            )
        size, digest = meta.get("size"), meta.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"file record of {rel!r} has size {size!r}, not a byte count")
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)
        ):
            raise ValueError(f"file record of {rel!r} has sha256 {digest!r}, not 64 hex digits")


def check_no_strangers(root: Path, manifest: Manifest) -> None:
    """Every file under ``root`` is the manifest, a listed file, or in a runtime folder; no link anywhere."""
    listed = set(manifest.files) | {MANIFEST}
    strangers, links, shared = [], [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                links.append(rel)
            elif name in filenames and rel not in listed and rel.split("/")[0] not in RUNTIME_FOLDERS:
                strangers.append(rel)
            elif name in filenames and path.stat().st_nlink > 1:
                shared.append(rel)
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
    if links:
        raise ArtifactError(
            f"{root} holds symbolic links ({', '.join(sorted(links)[:5])}); a bundle holds plain files only, so "
            "nothing it loads can come from outside it. Replace them with the files or rebuild the bundle."
        )
    if shared:
        # A hard link is a second name for a file outside the bundle: whoever holds that name can
        # change what the bundle loads after its hashes were checked.
        raise ArtifactError(
            f"{root} holds files with other names outside it (hard links: {', '.join(sorted(shared)[:5])}); "
            "a bundle's files must be its own. Copy the bundle (cp -r makes separate files) or rebuild it."
        )
    if strangers:
        raise ArtifactError(
            f"{root} holds files its manifest does not list ({', '.join(sorted(strangers)[:5])}"
            f"{' …' if len(strangers) > 5 else ''}); nothing unlisted is loaded (an ONNX graph could read one "
            "as external weights). Remove them, or rebuild the bundle."
        )
