"""The CLIP BPE tokenizer, built offline from the vocabulary file the open_clip_torch wheel ships.

open_clip_torch is installed without its dependencies (`pip install --no-deps`, done by make):
only its data file is read, its Python code is never imported.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import shutil
import tempfile
from pathlib import Path

from trtdeploy.runtime.errors import ArtifactError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77  # CLIP's text context


def clip_bpe_vocab_path() -> Path:
    try:
        dist = importlib.metadata.distribution("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        raise ArtifactError(
            "the CLIP BPE vocabulary ships in the open_clip_torch wheel, which is not installed. "
            "Install its data without its dependencies: pip install --no-deps open_clip_torch==3.3.0 "
            "(make does this)."
        ) from None
    for file in dist.files or ():
        if file.name == VOCAB_FILE:
            return Path(str(dist.locate_file(file)))
    raise ArtifactError(f"open_clip_torch {dist.version} is installed but has no {VOCAB_FILE}.")


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable-character table, in CLIP's order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_clip_tokenizer_json(dest: Path) -> None:
    """Write tokenizer.json for transformers' CLIPTokenizer, built from open_clip's vocabulary."""
    from transformers import CLIPTokenizer

    with gzip.open(clip_bpe_vocab_path(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    # The same slice as open_clip's SimpleTokenizer: 49152 - 256 - 2 merges after the header line.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    # tokenizers' BPE wants each merge as a pair (its stub says str): joined strings fail to split.
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)  # type: ignore[arg-type]
    tokenizer.model_max_length = MAX_LENGTH
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(Path(tmp) / "tokenizer.json", dest)
