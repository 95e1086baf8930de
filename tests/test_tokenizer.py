"""The run-time tokenizer (tokenizers + the bundle's tokenizer.json) equals transformers' CLIPTokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import CLIPTokenizer

from trtdeploy.models.clip import EOS_ID
from trtdeploy.models.clip_vocab import MAX_LENGTH, write_clip_tokenizer_json
from trtdeploy.runtime.tokenize import TextTokenizer

PROMPTS = [
    "a photo of a cat",
    "A  Photo of a CAT!!",
    "café au lait, naïve résumé",
    "don't stop: it's 3.14159 o'clock",
    "日本語のテキスト and emoji 🚀",
    "",
    "word " * 100,  # longer than 77 tokens: truncated, still ends in EOS
]


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    write_clip_tokenizer_json(path)
    return path


def test_known_ids(tokenizer_json: Path) -> None:
    tok = TextTokenizer(tokenizer_json, max_length=MAX_LENGTH, pad_id=EOS_ID)
    ids = tok(["a photo of a cat"])["input_ids"][0].tolist()
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_batch_matches_transformers(tokenizer_json: Path) -> None:
    ours = TextTokenizer(tokenizer_json, max_length=MAX_LENGTH, pad_id=EOS_ID)(PROMPTS)
    theirs = CLIPTokenizer(tokenizer_file=str(tokenizer_json))(
        PROMPTS, padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="np"
    )
    np.testing.assert_array_equal(ours["input_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
    assert ours["input_ids"].shape[1] == MAX_LENGTH
    assert ours["input_ids"][-1, -1] == EOS_ID  # the truncated prompt still ends in EOS


def test_empty_batch_is_rejected(tokenizer_json: Path) -> None:
    tok = TextTokenizer(tokenizer_json, max_length=MAX_LENGTH, pad_id=EOS_ID)
    with pytest.raises(ValueError, match="the list is empty"):
        tok([])
    with pytest.raises(ValueError, match="expected a list of texts, got str"):
        tok("a bare string")  # type: ignore[arg-type]
