"""safetensors files read before the library sees them: the 8-byte header length bounded by the file
and by safetensors' own 100 MB cap, the header parsed strictly (no duplicate keys, known dtypes,
byte ranges inside the file that cover it exactly), sharded indexes that stay inside the folder. A
hostile header never becomes an allocation or a read past the file."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtdeploy.runtime.errors import ArtifactError

SAFE_WEIGHTS = "model.safetensors"  # the names transformers looks for in a local folder
SAFE_INDEX = "model.safetensors.index.json"
# safetensors refuses headers over 100 MB (MAX_HEADER_SIZE in the reference crate); so do we,
# before reading one, so a header claiming 2**62 bytes never becomes an allocation.
MAX_HEADER_BYTES = 100_000_000
# A config.json or an index is a few kB (Florence-2-large's index: 90 kB); 16 MiB is far past any
# real one and still bounds what a hostile one can make us read.
MAX_JSON_BYTES = 16 * 2**20
# Bits per element of every safetensors dtype (safetensors 0.8's Dtype enum).
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U16": 16,
    "I16": 16,
    "F16": 16,
    "BF16": 16,
    "U32": 32,
    "I32": 32,
    "F32": 32,
    "C64": 64,
    "U64": 64,
    "I64": 64,
    "F64": 64,
}
REWRITE = "rewrite it with save_pretrained() from the model it came from, or use the original checkpoint"


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a small UTF-8 file, or an ArtifactError saying what is wrong with it."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ArtifactError(
            f"{path} is {size} bytes; expected {what} of a few kB (at most {MAX_JSON_BYTES}). {REWRITE}."
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path} is not UTF-8 text ({exc}); expected {what}. {REWRITE}.") from exc
    try:
        value = json.loads(text, parse_constant=no_constants)
    except RecursionError as exc:
        raise ArtifactError(f"{path} nests JSON too deeply to parse; expected {what}. {REWRITE}.") from exc
    except ValueError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ArtifactError(f"{path} holds a JSON {type(value).__name__}; expected {what}. {REWRITE}.")
    return value


def no_constants(name: str) -> None:
    # Python's json reads NaN and Infinity, which are not JSON; a NaN size or epsilon cannot work.
    raise ValueError(f"{name} is not a number JSON allows")


def check_inside(folder: Path, path: Path) -> None:
    """A file the loader will read must be in the folder itself, not a link to somewhere else."""
    real, home = path.resolve(), folder.resolve()
    if real != home and home not in real.parents:
        raise ArtifactError(
            f"{path} is a symbolic link to {real}, outside {folder}; trtdeploy loads only files inside the "
            "weights folder. Copy the real files in (cp -L) and pass that folder."
        )


# -- safetensors files, read before the library sees them ---------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def values(self) -> int:
        return math.prod(self.shape)


def checkpoint_files(folder: Path, config: Mapping[str, Any]) -> list[str]:
    """The safetensors files transformers will read from the folder, in the order it looks for them:
    config.json's ``transformers_weights``, else model.safetensors, else the shards of the index."""
    explicit = config.get("transformers_weights")
    if explicit is not None:
        name = _plain_name(folder, explicit, "config.json's transformers_weights")
        if name.endswith(".safetensors"):
            return [name]
        if name.endswith(".safetensors.index.json"):
            return _index_shards(folder, name)
        raise ArtifactError(
            f"config.json's transformers_weights is {explicit!r}; expected a *.safetensors or "
            "*.safetensors.index.json file in the folder. Remove the key to load model.safetensors."
        )
    if (folder / SAFE_WEIGHTS).is_file():
        return [SAFE_WEIGHTS]
    if (folder / SAFE_INDEX).is_file():
        return _index_shards(folder, SAFE_INDEX)
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    raise ArtifactError(
        f"{folder} has neither {SAFE_WEIGHTS} nor {SAFE_INDEX} (found {', '.join(found)}); transformers loads "
        f"only those names. Rename the file to {SAFE_WEIGHTS} if it is the whole checkpoint."
    )


def _plain_name(folder: Path, name: object, what: str) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name or name in {".", ".."}:
        raise ArtifactError(
            f"{what} names {name!r}; expected the name of a file directly inside {folder} (no folders, no '..')."
        )
    return name


def _index_shards(folder: Path, index_name: str) -> list[str]:
    index_path = folder / index_name
    if not index_path.is_file():
        raise ArtifactError(f"{index_path} does not exist; the checkpoint's index must sit in the folder.")
    check_inside(folder, index_path)
    index = read_json_object(index_path, 'a JSON object with a "weight_map"')
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ArtifactError(
            f'{index_path} has no "weight_map" object of tensor name -> shard file; {REWRITE}.'
        )
    shards = sorted({_plain_name(folder, s, f"{index_path} weight_map") for s in weight_map.values()})
    for shard in shards:
        if not shard.endswith(".safetensors"):
            raise ArtifactError(f"{index_path} maps tensors to {shard!r}; expected *.safetensors shards.")
    return shards


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors a safetensors file declares, checked against the file's real size.

    Layout: 8-byte little-endian header length N, N bytes of JSON, then the data buffer, which the
    tensors' [begin, end) byte ranges must cover exactly (no overlap, no gap, nothing past the end).
    """
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist or is not a file; the checkpoint names it.")
    size = path.stat().st_size
    if size < 8:
        raise ArtifactError(
            f"{path} is {size} bytes, shorter than a safetensors length prefix (8): truncated."
        )
    with path.open("rb") as f:
        claimed = int.from_bytes(f.read(8), "little")
        if claimed > MAX_HEADER_BYTES:
            raise ArtifactError(
                f"{path}: the safetensors header claims {claimed} bytes; safetensors allows at most "
                f"{MAX_HEADER_BYTES} and the file has {size}. The file is corrupt or not safetensors; {REWRITE}."
            )
        if claimed > size - 8:
            raise ArtifactError(
                f"{path}: the safetensors header claims {claimed} bytes but only {size - 8} follow the length "
                f"prefix: the file is truncated. Copy it again (compare its size with the source)."
            )
        raw = f.read(claimed)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(
            f"{path}: the safetensors header is not a JSON object ({type(exc).__name__}: {exc}); "
            f"the file is corrupt or not safetensors. {REWRITE}."
        ) from exc
    if not isinstance(header, dict):
        raise ArtifactError(
            f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object."
        )
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ArtifactError(
            f"{path}: __metadata__ is {metadata!r}; expected an object of text values. The header is corrupt; {REWRITE}."
        )
    data_bytes = size - 8 - claimed
    entries = {
        name: _tensor_entry(path, name, spec, data_bytes)
        for name, spec in header.items()
        if name != "__metadata__"
    }
    _check_coverage(path, entries, data_bytes)
    return entries


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_entry(path: Path, name: str, spec: object, data_bytes: int) -> TensorEntry:
    if not isinstance(spec, dict):
        raise ArtifactError(
            f"{path}: tensor {name!r} is described by {spec!r}; expected an object. {REWRITE}."
        )
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise ArtifactError(
            f"{path}: tensor {name!r} has dtype {dtype!r}; expected one of {sorted(DTYPE_BITS)}. {REWRITE}."
        )
    if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
        raise ArtifactError(f"{path}: tensor {name!r} has shape {shape!r}; expected a list of sizes >= 0.")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) and o >= 0 for o in offsets)):
        raise ArtifactError(f"{path}: tensor {name!r} has data_offsets {offsets!r}; expected [begin, end].")
    entry = TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])
    bits = entry.values * DTYPE_BITS[dtype]  # Python ints: no overflow, unlike a C parser
    if bits % 8 or entry.end < entry.begin or entry.end - entry.begin != bits // 8:
        raise ArtifactError(
            f"{path}: tensor {name!r} ({dtype}, shape {tuple(shape)}) needs {bits / 8:g} bytes but its "
            f"data_offsets span [{entry.begin}, {entry.end}). The header is corrupt; {REWRITE}."
        )
    if entry.end > data_bytes:
        raise ArtifactError(
            f"{path}: tensor {name!r} ends at byte {entry.end} of the data, but the file holds {data_bytes} "
            "bytes of data: the file is truncated or its header was tampered with. Copy it again."
        )
    return entry


def _check_coverage(path: Path, entries: Mapping[str, TensorEntry], data_bytes: int) -> None:
    at = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != at:
            what = "overlaps the tensor before it" if entry.begin < at else f"leaves a gap at byte {at}"
            raise ArtifactError(f"{path}: tensor {name!r} {what}; the header is corrupt. {REWRITE}.")
        at = entry.end
    if at != data_bytes:
        raise ArtifactError(
            f"{path}: the tensors cover {at} bytes of data but the file holds {data_bytes}; "
            f"the file was altered after it was written. {REWRITE}."
        )
