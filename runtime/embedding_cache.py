"""Embeddings computed once per loaded bundle and reused: a bounded LRU map, saved as an .npz
that names the bundle graphs that computed it.

A serving pipeline is asked about the same texts over and over (a zero-shot classifier's labels,
image after image), and each answer is a pure function of the text and the bundle's graphs. So
the graphs run once per distinct key; a saved cache carries the key of the bundle it came from,
and a bundle refuses a cache from another one, whose vectors live in another model's space.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtdeploy.runtime.atomic import write_atomic
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import ArtifactError, InputValidationError

FORMAT = "trtdeploy embedding cache 1"
Key = tuple[str, ...]


def bundle_graph_key(bundle: Bundle, components: Sequence[str], *, assets: Sequence[str] = ()) -> str:
    """sha256 naming what computes a cache's embeddings: the weights, every form of the graphs of
    ``components`` (a target's fast form computes them too), and the files of the asset roles in
    ``assets`` (a tokenizer, the pipeline settings). Without assets it is CLIPSeg's
    bundle_model_key formula, so caches keyed either way agree."""
    manifest = bundle.manifest
    files = sorted(
        rel
        for name in components
        for rel in (manifest.component(name).onnx, *manifest.component(name).forms.values())
    )
    identity: dict[str, Any] = {
        "weights": manifest.weights.get("sha256"),
        "graphs": {rel: manifest.files[rel]["sha256"] for rel in files},
    }
    if assets:
        identity["assets"] = {role: _file_sha256(bundle, role) for role in assets}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _file_sha256(bundle: Bundle, role: str) -> str:
    bundle.asset(role)  # refuses a role the bundle lacks, naming the ones it has
    return str(bundle.manifest.files[bundle.manifest.assets[role]]["sha256"])


class EmbeddingCache:
    """At most ``capacity`` embeddings (each a (D,) float32 row) by key, least recently used out first;
    ``capacity`` 0 keeps nothing. Safe to share between threads.

    ``kind`` names what the rows are ("clip text embeddings") and ``fields`` what each key holds
    (("long_text", "text")); a saved file must match both. ``width`` is D where it is known.
    """

    def __init__(self, capacity: int, *, kind: str, fields: Sequence[str], width: int | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise InputValidationError(
                f"the cache size must be a whole number of entries >= 0 (0 turns the cache off), got {capacity!r}."
            )
        self.capacity = capacity
        self.kind = kind
        self.fields = tuple(fields)
        self.width = width
        self._rows: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def get(self, keys: Sequence[Key]) -> list[np.ndarray | None]:
        """Each key's row (marked most recently used), or None where it is not held."""
        with self._lock:
            found = []
            for key in keys:
                row = self._rows.get(key)
                if row is not None:
                    self._rows.move_to_end(key)
                found.append(row)
            return found

    def put(self, keys: Sequence[Key], rows: np.ndarray) -> None:
        """Hold ``rows`` ((N, D) float32, one per key), evicting the least recently used beyond capacity."""
        if rows.ndim != 2 or len(rows) != len(keys) or rows.dtype != np.float32:
            raise ValueError(
                f"{len(keys)} keys need ({len(keys)}, D) float32 rows, got {rows.dtype} {rows.shape}"
            )
        if self.capacity == 0:
            return
        with self._lock:
            for key, row in zip(keys, rows, strict=True):
                kept = np.array(row)  # a copy: callers may change what they were handed
                kept.flags.writeable = False
                self._rows[key] = kept
                self._rows.move_to_end(key)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def save(self, path: str | Path, model_key: str) -> int:
        """Write every entry (oldest first) to ``path`` as an .npz, atomically; returns the count."""
        with self._lock:
            keys, rows = list(self._rows), list(self._rows.values())
        encoded = [json.dumps(list(key), ensure_ascii=False).encode("utf-8") for key in keys]
        offsets = np.cumsum([0, *(len(e) for e in encoded)], dtype=np.int64)  # (N + 1,)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format=np.array(FORMAT),
            kind=np.array(self.kind),
            fields=np.array(self.fields, dtype=str),
            model_key=np.array(model_key),
            keys_utf8=np.frombuffer(b"".join(encoded), dtype=np.uint8),  # JSON keys: exact for any text
            key_offsets=offsets,
            embeddings=np.stack(rows) if rows else np.zeros((0, self.width or 0), dtype=np.float32),
        )
        write_atomic(Path(path), buffer.getvalue())
        return len(keys)

    def load(self, path: str | Path, model_key: str) -> int:
        """Add the entries of a file ``save`` wrote for the same ``model_key`` (they become the most
        recently used, in the file's order); returns how many. A file of another kind, for other
        graphs or not written by ``save`` is refused (ArtifactError), and so is one holding more
        entries than the capacity (InputValidationError)."""
        arrays = _read_npz(path)
        what = f"{path} ({self.kind})"
        if str(arrays["kind"]) != self.kind or tuple(str(f) for f in arrays["fields"]) != self.fields:
            raise ArtifactError(
                f"{path} holds {arrays['kind']} keyed by {list(arrays['fields'])}, not {self.kind} keyed by "
                f"{list(self.fields)}; load it into the pipeline that saved it."
            )
        if str(arrays["model_key"]) != model_key:
            raise ArtifactError(
                f"{what} was computed with another bundle (graph key {str(arrays['model_key'])[:12]}…) than this "
                f"one ({model_key[:12]}…): its embeddings live in another model's space. Recompute them with "
                "this bundle and save them again."
            )
        keys = _decode_keys(arrays["keys_utf8"], arrays["key_offsets"], len(self.fields), what)
        rows = _checked_rows(arrays["embeddings"], len(keys), self.width, what)
        if len(keys) > self.capacity:
            raise InputValidationError(
                f"{path} holds {len(keys)} embeddings, more than this cache's capacity of {self.capacity}; "
                f"make the pipeline with a cache of at least {len(keys)} entries to load it."
            )
        if keys:
            self.put(keys, rows)
        return len(keys)


_ARRAYS = ("format", "kind", "fields", "model_key", "keys_utf8", "key_offsets", "embeddings")


def _read_npz(path: str | Path) -> Mapping[str, np.ndarray]:
    expected = f"an embedding cache written by save_text_cache ({FORMAT})"
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with data:
            missing = [name for name in _ARRAYS if name not in data.files]
            if missing:
                raise ValueError(f"it lacks {missing}")
            arrays = {name: data[name] for name in _ARRAYS}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file; expected {expected}.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path} is not {expected}: {exc}.") from None
    if str(arrays["format"]) != FORMAT:
        raise ArtifactError(f"{path} is in format {str(arrays['format'])!r}; expected {FORMAT!r}.")
    return arrays


def _decode_keys(blob: np.ndarray, offsets: np.ndarray, width: int, what: str) -> list[Key]:
    """The keys of a saved cache from their JSON texts (``offsets`` (N + 1,) into the bytes)."""
    if (
        blob.dtype != np.uint8
        or blob.ndim != 1
        or offsets.dtype != np.int64
        or offsets.ndim != 1
        or len(offsets) < 1
        or offsets[0] != 0
        or offsets[-1] != len(blob)
        or np.any(np.diff(offsets) < 0)
    ):
        raise ArtifactError(f"{what}: the key table is damaged (offsets do not index the key bytes).")
    data = blob.tobytes()
    keys: list[Key] = []
    for start, end in itertools.pairwise(offsets.tolist()):
        try:
            key = json.loads(data[start:end].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ArtifactError(
                f"{what}: key {len(keys)} is not valid JSON text; the file is damaged."
            ) from None
        if not isinstance(key, list) or len(key) != width or not all(isinstance(k, str) for k in key):
            raise ArtifactError(f"{what}: key {len(keys)} is {key!r:.60}, not {width} texts.")
        keys.append(tuple(key))
    return keys


def _checked_rows(rows: np.ndarray, count: int, width: int | None, what: str) -> np.ndarray:
    if rows.ndim != 2 or len(rows) != count or rows.dtype != np.float32:
        raise ArtifactError(
            f"{what}: embeddings are {rows.dtype} {rows.shape}, expected ({count}, D) float32, one per key."
        )
    if count and width is not None and rows.shape[1] != width:
        raise ArtifactError(f"{what}: embeddings are {rows.shape[1]} wide; this bundle's are {width}.")
    if not np.isfinite(rows).all():
        raise ArtifactError(f"{what}: embeddings hold NaN or Inf; the file is damaged.")
    return rows
