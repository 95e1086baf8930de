"""Florence-2 prompts and input ids equal transformers' Florence2Processor; what it lets slip, we refuse.

The reference processor is built offline from the BART-layout tokenizer of models/florence2_vocab.py,
a 768 x 768 CLIP image processor (577 image tokens) and the native post-processor config.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import AutoTokenizer, CLIPImageProcessorPil, Florence2Processor

from trtdeploy.models import florence2_vocab
from trtdeploy.models.clip_vocab import write_clip_tokenizer_json
from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.florence2_answers import NATIVE_POST_PROCESSOR_CONFIG
from trtdeploy.runtime.florence2_tasks import (
    INPUT_PLACEHOLDER,
    TASK_VOCABULARY,
    TASKS,
    TaskInput,
    build_prompt,
    florence2_task,
    region_text,
)

IMAGE_TOKENS = 577  # DaViT at 768 x 768: 24 x 24 features + their mean
EXPECTED_TASKS = (
    "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>", "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>", "<OCR>", "<OCR_WITH_REGION>", "<CAPTION_TO_PHRASE_GROUNDING>",
    "<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>",
    "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>",
)  # fmt: skip
# Inputs per kind, with the whitespace and characters the processor passes through as they are.
INPUTS: dict[TaskInput, list[str | None]] = {
    TaskInput.NONE: [None],
    TaskInput.TEXT: [
        "a green car",
        "  a green car\t",
        "café {input} {0} 日本語 🚗",
        "it's a car.  Two  spaces",
    ],
    TaskInput.REGION: ["<loc_0><loc_0><loc_999><loc_999>", " <loc_12><loc_7><loc_12><loc_500>\n"],
}


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("florence2-bart")
    florence2_vocab.write_florence2_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def processor(tokenizer_folder: Path) -> Florence2Processor:
    image_processor = CLIPImageProcessorPil(
        size={"height": 768, "width": 768}, do_center_crop=False, image_seq_length=IMAGE_TOKENS
    )
    return Florence2Processor(
        image_processor=image_processor,
        tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_folder)),
        post_processor_config=copy.deepcopy(dict(NATIVE_POST_PROCESSOR_CONFIG)),
    )


def cases() -> list[tuple[str, str | None]]:
    return [(task.token, text) for task in TASKS.values() for text in INPUTS[task.input]]


def processor_text(task: str, text: str | None) -> str:
    """What a transformers user passes: the task token, then the input glued on."""
    return task + (text or "")


# --- the table ---------------------------------------------------------------------------------------


def test_table_lists_every_task_of_the_processor(processor: Florence2Processor) -> None:
    assert tuple(TASKS) == EXPECTED_TASKS
    answer_types = {token: task.answer.value for token, task in TASKS.items()}
    assert answer_types == processor.tasks_answer_post_processing_type
    without = {t: task.prompt for t, task in TASKS.items() if task.input is TaskInput.NONE}
    with_input = {t: task.prompt for t, task in TASKS.items() if task.input is not TaskInput.NONE}
    assert without == processor.task_prompts_without_inputs
    assert with_input == processor.task_prompts_with_input
    for task in TASKS.values():
        assert (INPUT_PLACEHOLDER in task.prompt) == (task.input is not TaskInput.NONE), task.token


def test_region_tasks_are_the_region_to_tasks() -> None:
    regions = {t for t, task in TASKS.items() if task.input is TaskInput.REGION}
    assert regions == {t for t in TASKS if t.startswith("<REGION_TO_")}


# --- prompts and ids against the processor -----------------------------------------------------------


@pytest.mark.parametrize(("task", "text"), cases())
def test_prompt_equals_processor(processor: Florence2Processor, task: str, text: str | None) -> None:
    assert [build_prompt(task, text)] == processor._construct_prompts(processor_text(task, text))


def test_input_ids_equal_processor_for_every_task(
    processor: Florence2Processor, tokenizer_folder: Path
) -> None:
    """<image> x 577, <s>, prompt, </s>: the processor's ids, from `tokenizers` and our prompt."""
    tok = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json"))
    image = Image.new("RGB", (45, 30), (200, 30, 60))
    for task, text in cases():
        theirs = processor(images=image, text=processor_text(task, text), return_tensors="np")
        ours = [florence2_vocab.IMAGE_TOKEN_ID] * IMAGE_TOKENS + tok.encode(build_prompt(task, text)).ids
        assert theirs["input_ids"][0].tolist() == ours, (task, text)
        assert theirs["attention_mask"][0].tolist() == [1] * len(ours)
        assert ours[IMAGE_TOKENS] == florence2_vocab.BOS_ID and ours[-1] == florence2_vocab.EOS_ID


def test_region_text_feeds_region_tasks(processor: Florence2Processor) -> None:
    region = region_text((10, 20, 300, 200), (451, 300))
    assert region == "<loc_22><loc_66><loc_665><loc_666>"
    prompt = build_prompt("<REGION_TO_CATEGORY>", region)
    assert [prompt] == processor._construct_prompts("<REGION_TO_CATEGORY>" + region)
    assert prompt == "What is the region <loc_22><loc_66><loc_665><loc_666>?"


# --- region_text against the processor's quantize ----------------------------------------------------


def test_region_text_equals_processor_quantize(processor: Florence2Processor) -> None:
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (7, 3333), (451, 300), (768, 768), (4000, 3), (1001, 999)]
    for width, height in sizes:
        scale = np.array([width, height, width, height], dtype=np.float64)
        for _ in range(50):
            corners = np.sort(rng.uniform(-0.1, 1.1, size=(2, 2)), axis=0)  # some past the edges
            box = np.array([corners[0, 0], corners[0, 1], corners[1, 0], corners[1, 1]]) * scale
            bins = processor.post_processor.quantize(
                torch.tensor(box[None], dtype=torch.float64), (width, height)
            )
            assert region_text(box.tolist(), (width, height)) == "".join(
                f"<loc_{b}>" for b in bins[0].tolist()
            )


def test_region_text_clamps_to_the_edge_bins() -> None:
    assert region_text((-5, -5, 10_000, 10_000), (640, 480)) == "<loc_0><loc_0><loc_999><loc_999>"
    assert region_text((0, 0, 640, 480), (640, 480)) == "<loc_0><loc_0><loc_999><loc_999>"
    assert region_text(np.array([3, 3, 3, 3]), (300, 300)) == "<loc_10><loc_10><loc_10><loc_10>"


def test_region_text_quantises_exactly_where_torch_float32_rounds_down(processor: Florence2Processor) -> None:
    """9 px on a 300 px side is bin 30 (9 / 0.3); the processor's quantize, fed ints, computes in
    float32 and says 29. We keep runtime/locations.py's float64 rule (equal on float64 inputs above)."""
    theirs = processor.post_processor.quantize(torch.tensor([[3, 3, 6, 9]]), (300, 300))
    assert theirs[0].tolist() == [10, 10, 20, 29]
    assert region_text((3, 3, 6, 9), (300, 300)) == "<loc_10><loc_10><loc_20><loc_30>"


# --- refusals -----------------------------------------------------------------------------------------


def test_unknown_task_is_refused_where_the_processor_sends_it_as_text(processor: Florence2Processor) -> None:
    assert processor._construct_prompts("<CAPTIONS>") == ["<CAPTIONS>"]  # silently a literal prompt
    with pytest.raises(
        InputValidationError,
        match=r"expected a Florence-2 task token.*got '<CAPTIONS>'.*did you mean <CAPTION>\?",
    ):
        build_prompt("<CAPTIONS>")
    with pytest.raises(InputValidationError, match=r"got '<od>'.*did you mean <OD>\?"):
        florence2_task("<od>")
    with pytest.raises(InputValidationError, match="got None"):
        florence2_task(None)  # type: ignore[arg-type]


def test_text_for_a_task_without_input_is_refused(processor: Florence2Processor) -> None:
    with pytest.raises(ValueError, match="should be the only content"):
        processor._construct_prompts("<CAPTION>a dog")
    with pytest.raises(
        InputValidationError, match=r"<CAPTION> takes no input; got text 'a dog'. Drop the text"
    ):
        build_prompt("<CAPTION>", "a dog")
    with pytest.raises(InputValidationError, match="takes no input; got text ' '"):
        build_prompt("<OD>", " ")
    assert build_prompt("<OD>", "") == build_prompt("<OD>") == TASKS["<OD>"].prompt


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_a_task_with_input_given_none_is_refused(processor: Florence2Processor, text: str | None) -> None:
    assert processor._construct_prompts("<REGION_TO_CATEGORY>" + (text or "")) == ["What is the region ?"]
    with pytest.raises(
        InputValidationError, match=r"<REGION_TO_CATEGORY> takes a region <loc_x1>.*region_text"
    ):
        build_prompt("<REGION_TO_CATEGORY>", text)
    with pytest.raises(
        InputValidationError, match=r"<OPEN_VOCABULARY_DETECTION> takes a phrase as input; got"
    ):
        build_prompt("<OPEN_VOCABULARY_DETECTION>", text)


@pytest.mark.parametrize(
    "region",
    [
        "a car",
        "<loc_1><loc_2><loc_3>",  # three tokens
        "<loc_1><loc_2><loc_3><loc_4><loc_5>",
        "<loc_1><loc_2><loc_3><loc_1000>",  # bin past 999
        "<loc_1><loc_2><loc_3><loc_040>",  # a spelling no token has
        "<loc_1> <loc_2><loc_3><loc_4>",
        "<loc_1><loc_2><loc_3><loc_4>car",
        "<loc_1><loc_2><loc_3><loc_4><loc_1><loc_2><loc_3><loc_4>",  # two regions
        "<loc_-1><loc_2><loc_3><loc_4>",
    ],
)
def test_region_tasks_refuse_anything_but_one_region(region: str) -> None:
    with pytest.raises(
        InputValidationError, match=r"takes one region, four location tokens.*bins 0\.\.999; got"
    ):
        build_prompt("<REGION_TO_OCR>", region)


def test_region_tasks_refuse_swapped_corners() -> None:
    with pytest.raises(InputValidationError, match=r"x1 <= x2 and y1 <= y2.*Swap the corners"):
        build_prompt("<REGION_TO_SEGMENTATION>", "<loc_500><loc_2><loc_3><loc_4>")


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("a <image> car", "<image>"),
        ("a car</s>", "</s>"),
        ("the <loc_5> car", "<loc_5>"),
        ("a <poly> car", "<poly>"),
        ("a car <OD>", "<OD>"),
        ("<REGION_TO_CATEGORY>a car", "<REGION_TO_CATEGORY>"),
    ],
)
def test_text_tasks_refuse_special_and_task_tokens(text: str, token: str) -> None:
    with pytest.raises(InputValidationError, match=rf"takes plain text as input.*holds the token {token}"):
        build_prompt("<CAPTION_TO_PHRASE_GROUNDING>", text)


def test_processor_mishandles_a_second_task_token(processor: Florence2Processor) -> None:
    """Why the refusal above: the first task token of the processor's dict wins, the other stays."""
    prompt = processor._construct_prompts("<REGION_TO_CATEGORY>dog<OPEN_VOCABULARY_DETECTION>")
    assert prompt == ["Locate <REGION_TO_CATEGORY>dog in the image."]


def test_unencodable_text_is_refused(processor: Florence2Processor) -> None:
    # The processor only fails inside the tokenizer, with a message about argument types.
    with pytest.raises(TypeError, match="TextEncodeInput must be"):
        processor.tokenizer(processor._construct_prompts("<OPEN_VOCABULARY_DETECTION>a \ud800 car"))
    with pytest.raises(InputValidationError, match=r"UTF-8 can encode; got '\\ud800' at position 2"):
        build_prompt("<OPEN_VOCABULARY_DETECTION>", "a \ud800 car")
    with pytest.raises(InputValidationError, match="UTF-8 can encode"):
        build_prompt("<CAPTION>", "\udfff")


def test_non_text_input_is_refused() -> None:
    with pytest.raises(InputValidationError, match="as a str or None; got bytes"):
        build_prompt("<OPEN_VOCABULARY_DETECTION>", b"a car")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("box", "size", "message"),
    [
        ((1, 2, 3), (10, 10), "four finite pixel coordinates"),
        ((1, 2, 3, float("nan")), (10, 10), "four finite pixel coordinates"),
        ((1, 2, 3, float("inf")), (10, 10), "four finite pixel coordinates"),
        (("1", 2, 3, 4), (10, 10), "four finite pixel coordinates"),
        ((True, 2, 3, 4), (10, 10), "four finite pixel coordinates"),
        ((5, 2, 3, 4), (10, 10), "x1 <= x2 and y1 <= y2"),
        ((1, 2, 3, 4), (0, 10), "two positive ints"),
        ((1, 2, 3, 4), (10.5, 10), "two positive ints"),
        ((1, 2, 3, 4), (10,), "two positive ints"),
    ],
)
def test_region_text_refuses_bad_boxes_and_sizes(box: object, size: object, message: str) -> None:
    with pytest.raises(InputValidationError, match=message):
        region_text(box, size)  # type: ignore[arg-type]


# --- the tokenizer's layout ----------------------------------------------------------------------------


def test_special_ids_follow_bart_and_florence2(tokenizer_folder: Path) -> None:
    tok = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json"))
    expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 50264, "<od>": 50265, "</od>": 50266}
    expected |= {"<ocr>": 50267, "</ocr>": 50268, "<loc_0>": 50269, "<loc_998>": 51267, "<loc_999>": 51268}
    expected |= {
        "<cap>": 51269,
        "<sep>": 51279,
        "<poly>": 51286,
        "</poly>": 51287,
        "<and>": 51288,
        "<image>": 51289,
    }
    assert {t: tok.token_to_id(t) for t in expected} == expected
    assert [tok.token_to_id(t) for t in TASK_VOCABULARY] == list(range(50265, 51289))
    assert tok.get_vocab_size(with_added_tokens=True) == florence2_vocab.VOCAB_SIZE == 51290
    assert tok.encode("a cat").ids == [0, 324, 2372, 2]  # CLIP's 320, 2368, shifted by BART's 4 specials


def test_words_split_into_clips_bpe_pieces(tokenizer_folder: Path, tmp_path: Path) -> None:
    """The same BPE as CLIP's tokenizer, every id moved up by BART's four leading specials."""
    write_clip_tokenizer_json(tmp_path / "clip.json")
    clip = Tokenizer.from_file(str(tmp_path / "clip.json"))
    ours = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json"))
    for text in [
        "What is the polygon mask of region",
        "café, naïve résumé!",
        "it's 3.14 o'clock",
        "日本語 🚀",
    ]:
        clip_ids = clip.encode(text).ids[1:-1]  # without <|startoftext|> and <|endoftext|>
        assert ours.encode(text, add_special_tokens=False).ids == [i + 4 for i in clip_ids], text


def test_transformers_loads_it_with_florence2s_special_tokens(processor: Florence2Processor) -> None:
    tok = processor.tokenizer
    assert (tok.image_token, tok.image_token_id) == ("<image>", 51289)
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 50264 and len(tok) == 51290
    assert set(TASK_VOCABULARY) <= set(tok.all_special_tokens)
    assert processor.image_token_id == 51289 and processor.num_image_tokens == IMAGE_TOKENS


def test_provenance_names_the_source_and_layout(tmp_path: Path) -> None:
    from importlib.metadata import version

    line = florence2_vocab.provenance()
    assert f"CLIP BPE from open_clip_torch {version('open_clip_torch')}" in line
    assert "re-indexed into BART's layout" in line and "<image>=51289" in line and "51290 tokens" in line
