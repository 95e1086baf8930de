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

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import TracebackType
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
        return cls(
            name=str(data["name"]),
            onnx=str(data["onnx"]),
            io=IOSpec.from_json(data["io"]),
            reference_inputs=str(data["reference_inputs"]),
            reference_outputs=str(data["reference_outputs"]),
            forms={str(k): str(v) for k, v in data.get("forms", {}).items()},
        )


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
        return cls(
            model=str(data["model"]),
            preset=str(data["preset"]),
            weights=dict(data["weights"]),
            precision=str(data["precision"]),
            precision_method=dict(data["precision_method"]),
            pipeline=str(data["pipeline"]),
            components=tuple(ComponentEntry.from_json(c) for c in data["components"]),
            budget=Budget.from_json(data["budget"]),
            assets=dict(data["assets"]),
            tools=dict(data["tools"]),
            created_utc=str(data["created_utc"]),
            files=dict(data["files"]),
            format_version=int(data["format_version"]),
            pipeline_config=dict(data.get("pipeline_config", {})),
        )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _checked_relpath(root: Path, rel: str) -> Path:
    """Resolve a manifest path inside ``root``, refusing anything that could point outside it."""
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
        root = Path(root)
        if not root.is_dir():
            raise ArtifactError(
                f"bundle folder {root} does not exist. Build it first: make engine MODEL=<model>."
            )
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(
                f"{root} has no {MANIFEST}: it is not a bundle, or its build did not finish. "
                "Rebuild it with make engine."
            )
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
            manifest = Manifest.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{manifest_path} is not a valid trtdeploy manifest: {exc!r}.") from exc
        if manifest.format_version != FORMAT_VERSION:
            raise ArtifactError(
                f"{manifest_path} has format version {manifest.format_version}; this trtdeploy reads "
                f"version {FORMAT_VERSION}. Rebuild the bundle with this version."
            )
        bundle = cls(root, manifest)
        referenced = [c.onnx for c in manifest.components] + [
            f for c in manifest.components for f in c.forms.values()
        ]
        referenced += [p for c in manifest.components for p in (c.reference_inputs, c.reference_outputs)]
        referenced += list(manifest.assets.values())
        unlisted = sorted(set(referenced) - set(manifest.files))
        if unlisted:
            raise ArtifactError(f"{manifest_path} refers to files it does not list with a hash: {unlisted}.")
        if check_hashes:
            bundle.check_files()
        return bundle

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
        return json.loads(self.path(rel).read_text(encoding="utf-8"))

    def asset(self, role: str) -> Path:
        if role not in self.manifest.assets:
            raise ArtifactError(f"the bundle has no {role!r} asset; it has {sorted(self.manifest.assets)}.")
        return self.path(self.manifest.assets[role])

    def reference(self, component: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The held-out inputs and the PyTorch reference outputs recorded for ``component``."""
        entry = self.manifest.component(component)
        return read_npz(self.path(entry.reference_inputs)), read_npz(self.path(entry.reference_outputs))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class BundleWriter:
    """Writes a bundle into a hidden temporary sibling folder and swaps it into place on commit.

    Use as a context manager: leaving the block without ``commit`` (an exception, a kill)
    leaves the final folder untouched and the temporary one is removed (or, after a kill, is a
    hidden folder without a manifest that no loader accepts).
    """

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final).absolute()
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.final.parent))
        self.root.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be copied and shared
        self.committed = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            shutil.rmtree(self.root, ignore_errors=True)

    def path(self, rel: str) -> Path:
        path = _checked_relpath(self.root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, rel: str, obj: Any) -> Path:
        path = self.path(rel)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def write_text(self, rel: str, text: str) -> Path:
        path = self.path(rel)
        path.write_text(text, encoding="utf-8")
        return path

    def write_npz(self, rel: str, arrays: Mapping[str, np.ndarray]) -> Path:
        path = self.path(rel)
        with open(path, "wb") as fh:
            # numpy's stub reads **arrays as a possible allow_pickle=...; the keys are tensor names.
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        return path

    def files(self) -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.name != MANIFEST:
                yield path.relative_to(self.root).as_posix()

    def commit(self, manifest: Manifest) -> Manifest:
        """Hash every file, write the manifest last, fsync, and swap the folder into place."""
        files = {}
        for rel in self.files():
            path = self.root / rel
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
            _fsync(path)
        final_manifest = replace(manifest, files=files)
        manifest_path = self.root / MANIFEST
        manifest_path.write_text(json.dumps(final_manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        _fsync(manifest_path)
        self._swap_into_place()
        self.committed = True
        return final_manifest

    def reject(self) -> Path:
        """Keep an unfinished bundle for inspection at ``<final>.rejected`` (it has no manifest, so
        no loader accepts it) and return that path."""
        rejected = self.final.with_name(self.final.name + ".rejected")
        if rejected.exists():
            shutil.rmtree(rejected)
        os.replace(self.root, rejected)
        self.root = rejected
        self.committed = True  # nothing left for __exit__ to clean up
        return rejected

    def _swap_into_place(self) -> None:
        # rename(2) can't replace a non-empty folder, so move the old bundle aside first. A kill
        # between the two renames leaves no bundle at the final path, never a mixed one.
        old = None
        if self.final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.final.parent))
            os.replace(self.final, old / "bundle")
        os.replace(self.root, self.final)
        self.root = self.final
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(OSError):
            _fsync(self.final.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
