"""The shapes tokenizers: word-level ids the three model classes can use, saved as tokenizer.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import configs, vocab
from trtdeploy.runtime.locations import LOCATION_BINS, parse_location_text
from trtdeploy.runtime.tokenize import TextTokenizer


def test_clip_tokenizer_wraps_every_caption_word_in_start_and_end() -> None:
    tok = vocab.clip_tokenizer()
    for s in shapes.samples("train", 0, 30):
        for text in (s.caption, s.referring_expression, shapes.label_prompt(s.label)):
            ids = tok.encode(text).ids
            assert ids[0] == vocab.CLIP_BOS_ID and ids[-1] == vocab.CLIP_EOS_ID
            assert tok.token_to_id(vocab.CLIP_UNK) not in ids, f"unknown word in {text!r}"
            assert len(ids) <= vocab.CLIP_MAX_LENGTH


def test_clip_end_id_selects_first_end_pooling() -> None:
    """transformers pools CLIP text at argmax(ids) when eos is 2; ours must take the first end token."""
    config = configs.clip_config().text_config
    assert config.eos_token_id == vocab.CLIP_EOS_ID != 2
    assert config.vocab_size == vocab.clip_tokenizer().get_vocab_size()


def test_unknown_words_map_to_unk() -> None:
    tok = vocab.clip_tokenizer()
    assert tok.encode("a red dog").ids[3] == tok.token_to_id(vocab.CLIP_UNK)


def test_florence2_prompts_use_bart_layout_and_known_words() -> None:
    tok = vocab.florence2_tokenizer()
    for prompt in vocab.FLORENCE_TASK_PROMPTS.values():
        ids = tok.encode(prompt).ids
        assert ids[0] == 0 and ids[-1] == 2 and tok.token_to_id(vocab.BART_UNK) not in ids
    assert [tok.token_to_id(t) for t in vocab.BART_SPECIALS] == [0, 1, 2, 3]


def test_florence2_location_tokens_are_consecutive_and_image_token_is_last() -> None:
    tok = vocab.florence2_tokenizer()
    first = tok.token_to_id("<loc_0>")
    assert [tok.token_to_id(f"<loc_{i}>") for i in range(LOCATION_BINS)] == list(
        range(first, first + LOCATION_BINS)
    )
    assert tok.token_to_id(vocab.IMAGE_TOKEN) == tok.get_vocab_size() - 1
    assert configs.florence2_config().image_token_id == tok.get_vocab_size() - 1


def test_florence2_answers_decode_to_parsable_text() -> None:
    """Location tokens decode without spaces, so the post-processing regex finds every box."""
    tok = vocab.florence2_tokenizer()
    s = shapes.sample("evaluation", 3)
    from trtdeploy.runtime.locations import location_text

    size = (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    ids = [2, *tok.encode(location_text(s.box_labels, s.boxes, size)).ids]  # as generate() returns it
    parsed = parse_location_text(tok.decode(ids, skip_special_tokens=False), size)
    assert parsed.labels == s.box_labels
    np.testing.assert_allclose(parsed.boxes, s.boxes, atol=size[0] / LOCATION_BINS)
    assert tok.decode(tok.encode(s.caption).ids) == s.caption


@pytest.mark.parametrize("which", ["clip", "florence2"])
def test_saved_tokenizer_loads_with_tokenizers_and_transformers(which: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from trtdeploy.models.shapes.models import get

    get(which).write_tokenizer(tmp_path)
    plain = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "a red circle and a blue square"
    assert plain.encode(text).ids == auto(text)["input_ids"]


def test_runtime_tokenizer_pads_clip_batches_with_the_end_id(tmp_path: Path) -> None:
    from trtdeploy.models.shapes.models import get

    get("clip").write_tokenizer(tmp_path)
    batch = TextTokenizer(
        tmp_path / "tokenizer.json", max_length=vocab.CLIP_MAX_LENGTH, pad_id=vocab.CLIP_EOS_ID
    )(["a red circle", "a red circle and a blue square"])
    assert batch["input_ids"].shape == (2, 9)
    assert (
        list(batch["input_ids"][0, 4:]) == [vocab.CLIP_EOS_ID] * 5 and batch["attention_mask"][0].sum() == 5
    )
