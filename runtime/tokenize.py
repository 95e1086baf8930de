"""Text to token ids with the small `tokenizers` library, from the tokenizer.json in the bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trtdeploy.runtime.errors import ArtifactError


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

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """{"input_ids": (B, S) int64, "attention_mask": (B, S) int64}."""
        if isinstance(texts, str) or not texts:
            raise ValueError("expected a non-empty list of strings")
        encodings = self._tok.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}
