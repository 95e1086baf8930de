"""Text to token ids with the small `tokenizers` library, from the tokenizer.json in the bundle.

A text longer than the window is cut to it, as CLIP's own tokenizer does, but never silently: each
cut raises a TextTruncatedWarning. ``TextTokenizer.windows`` offers the alternative, overlapping
windows over the whole text.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from trtdeploy.runtime.errors import ArtifactError, InputValidationError

# A text window longer than this is a corrupt pipeline.json (CLIP's is 77, Florence-2's 1024).
MAX_TEXT_WINDOW = 4096
# Longer texts are refused before tokenization: tokenizing a megabyte of text to keep its first
# 77 tokens (or to embed it in thousands of windows) is work without purpose.
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


class TextTruncatedWarning(UserWarning):
    """A text had more tokens than the text window and was cut to the window: the model never saw
    its end. A CLIP pipeline built with ``long_text="chunks"`` embeds such texts whole."""


# How much of a text a warning quotes: enough to find it, short enough to read on one line.
QUOTED_CHARS = 60


def truncation_message(text: str, tokens: int, window: int) -> str:
    """The one line a truncated text is reported with (CLIPSeg and the CLI use the same words)."""
    quoted = text if len(text) <= QUOTED_CHARS else text[: QUOTED_CHARS - 1] + "…"
    return (
        f"text {quoted!r} has {tokens} tokens, more than the {window}-token text window; it was cut to "
        f"the window, so its last {tokens - window} tokens are not seen. Shorten it (a CLIP pipeline made "
        "with long_text='chunks' embeds it whole, in overlapping windows)."
    )


@contextlib.contextmanager
def truncation_notices(stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, each TextTruncatedWarning is printed as one ``warning: ...`` line on
    ``stream`` (default: sys.stderr at that moment), every time, instead of Python's two-line
    warning format; other warnings pass to the display in place before. For command lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", TextTruncatedWarning)
        shown = warnings.showwarning  # the display in place (pytest's recorder, or Python's)

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if issubclass(category, TextTruncatedWarning):
                print(f"warning: {message}", file=stream if stream is not None else sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show  # catch_warnings puts the previous display back on exit
        yield


class TextTokenizer:
    """Batch tokenization padded to the longest text (right padding) and truncated to ``max_length``
    with a TextTruncatedWarning; ``windows()`` cuts a long text into overlapping windows instead.

    Right padding keeps the first token visible in every row, which keeps causal attention rows
    from being fully masked (a NaN source in FP16).
    """

    def __init__(self, path: Path, *, max_length: int, pad_id: int) -> None:
        # Two tokenizers from one file: one counts every token of a text (to say when it is cut,
        # and to cut windows), one truncates exactly as the tokenizer library does (start and end
        # tokens kept). Two objects, because toggling truncation on one would race between threads.
        self._tok = _read_tokenizer(path)
        self._tok.enable_truncation(max_length)
        self._full = _read_tokenizer(path)
        self.max_length = max_length
        self.pad_id = pad_id
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        if not 0 <= pad_id < self.vocab_size:
            raise ArtifactError(
                f"the pad id {pad_id} is not a token of {path.name} ({self.vocab_size} tokens). Rebuild the bundle."
            )
        self._name = path.name
        self._wrap = _special_wrap(self._full)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """{"input_ids": (B, S) int64, "attention_mask": (B, S) int64}."""
        return self.pad(self._encode(texts))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids with the start and end tokens, cut to ``max_length``: a text that
        is cut raises a TextTruncatedWarning naming it, its token count and the window."""
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        texts = check_texts(texts, "texts", allow_blank=True)
        rows = [e.ids for e in self._full.encode_batch(texts)]
        long = [k for k, ids in enumerate(rows) if len(ids) > self.max_length]
        if long:
            cut = self._tok.encode_batch([texts[k] for k in long])
            for k, encoding in zip(long, cut, strict=True):
                warnings.warn(
                    truncation_message(texts[k], len(rows[k]), self.max_length),
                    TextTruncatedWarning,
                    stacklevel=3,  # the line that called encode() or the tokenizer
                )
                rows[k] = encoding.ids
        return rows

    def pad(self, rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Token id rows padded on the right to the longest: {"input_ids", "attention_mask"}, (B, S) int64."""
        if not rows:
            raise InputValidationError("no token rows to pad; give at least one text.")
        for k, tokens in enumerate(rows):
            if len(tokens) == 0:
                raise InputValidationError(
                    f"text {k} has no tokens at all ({self._name} adds no start/end tokens); give a text with words."
                )
            if len(tokens) > self.max_length:
                raise InputValidationError(
                    f"token row {k} holds {len(tokens)} ids, more than the {self.max_length}-token window; cut it "
                    "with encode() or windows()."
                )
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def check_windows(self) -> None:
        """Refuse (ArtifactError) a tokenizer ``windows()`` can't cut for: one that does not wrap
        every text in fixed start and end tokens, or a window too short to hold two tokens between
        them. CLIP pools its text embedding at the end token, so a window without one would be
        pooled elsewhere."""
        self._checked_wrap()

    def windows(self, text: str) -> list[list[int]]:
        """``text`` as overlapping windows of token ids, each wrapped in the start and end tokens
        like a normal tokenization and at most ``max_length`` long; consecutive windows share half
        their tokens (stride: half the window between the start and end tokens), and the last one
        ends with the text. A text that fits is one window, its normal tokenization."""
        prefix, suffix = self._checked_wrap()
        ids = self._full.encode(check_text(text, "text", allow_blank=True)).ids
        if len(ids) <= self.max_length:
            return [ids]
        if ids[: len(prefix)] != prefix or ids[len(ids) - len(suffix) :] != suffix:
            raise ArtifactError(
                f"{self._name} wrapped {text[:QUOTED_CHARS]!r} in other start/end tokens than every text "
                f"({ids[:3]}…{ids[-3:]}, expected {prefix}…{suffix}); it can't be cut into windows."
            )
        content = ids[len(prefix) : len(ids) - len(suffix)]
        width = self.max_length - len(prefix) - len(suffix)  # a text's own tokens per window
        stride = width // 2
        starts = list(range(0, len(content) - width + 1, stride))
        if starts[-1] + width < len(content):  # the stride stepped past the tail: one window ends it
            starts.append(len(content) - width)
        return [prefix + content[s : s + width] + suffix for s in starts]

    def _checked_wrap(self) -> tuple[list[int], list[int]]:
        if self._wrap is None or not self._wrap[1]:
            found = "nothing at the end" if self._wrap else "no fixed start/end tokens"
            raise ArtifactError(
                f"{self._name} does not end every text with a fixed end token (its post-processor adds "
                f"{found}); long texts can't be cut into windows the text model pools at their end. "
                "Use long_text='truncate' with this bundle."
            )
        prefix, suffix = self._wrap
        if self.max_length - len(prefix) - len(suffix) < 2:
            raise ArtifactError(
                f"the text window is {self.max_length} tokens, {len(prefix) + len(suffix)} of them start/end "
                "tokens: too short to cut long texts into overlapping windows. Use long_text='truncate'."
            )
        return prefix, suffix


def _read_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise ArtifactError(f"could not read the tokenizer {path}: {exc}") from exc
    tok.no_padding()
    tok.no_truncation()
    return tok


def _special_wrap(tok: Any) -> tuple[list[int], list[int]] | None:
    """(start ids, end ids) the tokenizer's post-processor puts around a text, found by encoding a
    probe with and without them; None when the probe's own tokens do not appear between them intact."""
    wrapped = tok.encode("a").ids
    plain = tok.encode("a", add_special_tokens=False).ids
    for start in range(len(wrapped) - len(plain) + 1):
        if wrapped[start : start + len(plain)] == plain:
            return wrapped[:start], wrapped[start + len(plain) :]
    return None
