"""Generated token ids -> text, as transformers' `tokenizer.batch_decode(ids, skip_special_tokens=False)`.

Florence-2's answers are parsed from text with its special tokens kept (`</s><s>car<loc_54>...`), so
the runtime decodes with the `tokenizers` library and the bundle's tokenizer.json. transformers 5.x
(`TokenizersBackend._decode`) decodes with the same library, then applies `clean_up_tokenization`
(" ." -> ".", " 's" -> "'s", ...) only when tokenizer_config.json sets `clean_up_tokenization_spaces`
and the model is not BPE, unless `clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`
forces it. This module applies the same rule, so its text equals transformers' for any tokenizer
folder, not only for the ones whose config leaves the clean-up off.

Ids the tokenizer does not know (a model's logits are padded to a multiple of 64 past the
vocabulary) decode to nothing, in both libraries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trtdeploy.runtime.errors import ArtifactError, InputValidationError

# transformers' clean_up_tokenization, in its order (tokenization_utils_base.py).
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


class AnswerDecoder:
    """Token ids -> text with special tokens kept, equal to transformers' decode of the same folder."""

    def __init__(
        self, tokenizer_json: Path, *, clean_up_spaces: bool = False, clean_up_bpe: bool = False
    ) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ArtifactError(f"could not read the tokenizer {tokenizer_json}: {exc}") from exc
        is_bpe = type(self._tok.model).__name__ == "BPE"
        self.clean_up_spaces = clean_up_spaces and (clean_up_bpe or not is_bpe)

    @classmethod
    def from_folder(cls, folder: Path) -> AnswerDecoder:
        """tokenizer.json, with the clean-up settings of tokenizer_config.json when it is there."""
        config = Path(folder) / "tokenizer_config.json"
        return cls.from_files(Path(folder) / "tokenizer.json", config if config.is_file() else None)

    @classmethod
    def from_files(cls, tokenizer_json: Path, tokenizer_config: Path | None) -> AnswerDecoder:
        """tokenizer.json, with the clean-up settings of a tokenizer_config.json (None: there is none)."""
        config: dict[str, object] = {}
        if tokenizer_config is not None:
            try:
                loaded = json.loads(tokenizer_config.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ArtifactError(
                    f"could not read {tokenizer_config}: {exc}. Copy it again from the tokenizer folder."
                ) from exc
            if not isinstance(loaded, dict):
                raise ArtifactError(f"{tokenizer_config} is a JSON {type(loaded).__name__}, not an object.")
            config = loaded
        return cls(
            tokenizer_json,
            # transformers' defaults when the keys are absent: no clean-up.
            clean_up_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
            clean_up_bpe=bool(
                config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
            ),
        )

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """One sequence of ids (a list or a 1-D array) -> its text."""
        text: str = self._tok.decode(_id_list(ids), skip_special_tokens=False)
        if self.clean_up_spaces:
            for spaced, tight in _CLEAN_UP:
                text = text.replace(spaced, tight)
        return text

    def decode_batch(self, rows: Sequence[Sequence[int]] | np.ndarray) -> list[str]:
        """(B, S) ids -> B texts."""
        return [self.decode(row) for row in rows]


def _id_list(ids: Sequence[int] | np.ndarray) -> list[int]:
    array = np.asarray(ids)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu") or (array.size and array.min() < 0):
        raise InputValidationError(
            f"expected one sequence of non-negative integer token ids; got an array of shape {array.shape} "
            f"and dtype {array.dtype}. Pass one row of the generated ids."
        )
    return [int(i) for i in array]
