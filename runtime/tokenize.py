"""Text to token ids with the small `tokenizers` library, from the tokenizer.json in the bundle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtdeploy.runtime.errors import ArtifactError, InputValidationError

# A text window longer than this is a corrupt pipeline.json (CLIP's is 77, Florence-2's 1024).
MAX_TEXT_WINDOW = 4096
# Longer texts are refused before tokenization: tokenizing a megabyte of text to keep its first
# 77 tokens is work without purpose.
MAX_TEXT_CHARS = 100_000


def check_texts(texts: Any, what: str, *, allow_blank: bool = False) -> list[str]:
    """``texts`` as a list of encodable strings; refuses a bare string, numbers, an empty list,
    blank texts (unless ``allow_blank``: a tokenizer encodes "" as start + end) and lone
    surrogates, naming the first offender."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputValidationError(
            f"{what}: expected a list of texts, got {type(texts).__name__} {texts!r:.60}; "
            "wrap a single text in a list: ['a photo of a cat']."
        )
    if len(texts) == 0:
        raise InputValidationError(f"{what}: the list is empty; give at least one text.")
    for k, text in enumerate(texts):
        check_text(text, f"{what}[{k}]", allow_blank=allow_blank)
    return list(texts)


def check_text(text: Any, what: str, *, allow_blank: bool = False) -> str:
    """One text: an encodable str of bounded length, not blank unless ``allow_blank``."""
    if not isinstance(text, str):
        raise InputValidationError(
            f"{what} is a {type(text).__name__} ({text!r:.40}); expected a text (str)."
        )
    if not allow_blank and not text.strip():
        raise InputValidationError(f"{what} is blank; give a phrase such as 'a photo of a cat'.")
    if len(text) > MAX_TEXT_CHARS:
        raise InputValidationError(f"{what} has {len(text):,} characters; at most {MAX_TEXT_CHARS:,}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputValidationError(
            f"{what} is not valid Unicode text ({exc.reason} at character {exc.start}: a lone surrogate?)."
        ) from None
    return text


def checked_text_config(config: Mapping[str, Any]) -> tuple[int, int]:
    """(max_text_length, pad_id) of a pipeline.json, refused (ArtifactError) when out of range."""
    length, pad = config.get("max_text_length"), config.get("pad_id")
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_TEXT_WINDOW:
        raise ArtifactError(
            f"pipeline.json: max_text_length {length!r} must be a whole number from 1 to {MAX_TEXT_WINDOW}. "
            "Rebuild the bundle."
        )
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ArtifactError(
            f"pipeline.json: pad_id {pad!r} must be a token id (a whole number >= 0). Rebuild the bundle."
        )
    return length, pad


class TextTokenizer:
    """Batch tokenization padded to the longest text (right padding) and truncated to ``max_length``.

    Right padding keeps the first token visible in every row, which keeps causal attention rows
    from being fully masked (a NaN source in FP16).
    """

    def __init__(self, path: Path, *, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ArtifactError(f"could not read the tokenizer {path}: {exc}") from exc
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = pad_id
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        if not 0 <= pad_id < self.vocab_size:
            raise ArtifactError(
                f"the pad id {pad_id} is not a token of {path.name} ({self.vocab_size} tokens). Rebuild the bundle."
            )

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """{"input_ids": (B, S) int64, "attention_mask": (B, S) int64}."""
        encodings = self._tok.encode_batch(check_texts(texts, "texts", allow_blank=True))
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}
