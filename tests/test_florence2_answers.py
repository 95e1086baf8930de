"""Florence-2 answers: our parsers and decoder equal transformers' Florence2Processor and tokenizers.

Every comparison is against transformers run here, on hand-made sequences (the cases its regexes
treat in surprising ways) and on seeded random sequences of words, location and task tokens. Results
are compared by repr, so an int where transformers has an int (not a float) is part of "equal".
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer, CLIPImageProcessorPil, Florence2Processor
from transformers.models.florence2.processing_florence2 import Florence2PostProcessor

from trtdeploy.models import florence2_vocab
from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.florence2_answers import (
    BANNED_GROUNDING_PHRASES,
    NATIVE_POST_PROCESSOR_CONFIG,
    parse_answer,
    post_process_generation,
)
from trtdeploy.runtime.florence2_decode import AnswerDecoder
from trtdeploy.runtime.florence2_tasks import TASKS, AnswerType

TINY_TOKENIZER = Path(__file__).resolve().parents[1] / "models" / "weights" / "florence2-shapes-tiny"
SIZES = [(451, 300), (1, 1), (7, 3333), (768, 768), (4001, 3), (1000, 1000)]
RANDOM_CASES_PER_TYPE = 300

# Hand-made answers: (task, generated text), each a rule of transformers' parsers.
CASES = [
    ("<OD>", "</s><s>car<loc_100><loc_200><loc_300><loc_400></s>"),
    ("<OD>", "</s><s>car<loc_54><loc_375><loc_906><loc_707>door<loc_710><loc_276><loc_908><loc_537></s>"),
    ("<OD>", "</s><s>wheel<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8><loc_9><loc_10></s>"),  # 2 boxes + 2 extra
    ("<OD>", "</s><s>car<loc_1><loc_2><loc_3></s>"),  # too few locations: no box
    ("<OD>", "</s><s>car</s>"),
    ("<OD>", "</s><s></s>"),
    ("<OD>", ""),
    ("<OD>", "<loc_1><loc_2><loc_3><loc_4>"),  # no label: not a phrase
    ("<OD>", "</s><s>  café é dog <loc_0><loc_0><loc_999><loc_999></s>"),  # non-ASCII dropped after strip
    ("<OD>", "</s><s>a\nb<loc_1><loc_2><loc_3><loc_4>c<loc_5><loc_6><loc_7><loc_8></s>"),  # line break in label
    ("<OD>", "</s><s>\n  cat<loc_1><loc_2><loc_3><loc_4></s>"),  # leading whitespace with a line break is fine
    ("<OD>", "</s><s>car<loc_1><pad><loc_2><loc_3><loc_4><loc_5></s>"),  # <pad> removed before parsing
    ("<OD>", "</s><s>car<loc_007><loc_1000><loc_123456><loc_٣></s>"),  # spellings no token has
    ("<OD>", "</s><s>car<loc_1><loc_2><poly><loc_3><loc_4><loc_5><loc_6></s>"),  # a tag breaks the phrase
    ("<DENSE_REGION_CAPTION>", "</s><s>a red car parked<loc_10><loc_20><loc_500><loc_600>sky<loc_0><loc_0><loc_999><loc_300></s>"),
    ("<REGION_PROPOSAL>", "</s><s><loc_0><loc_0><loc_999><loc_999><loc_5><loc_5><loc_6><loc_6><loc_7></s>"),
    ("<REGION_PROPOSAL>", "</s><s>label<loc_1><loc_2><loc_3><loc_4>x<loc_1><loc_2></s>"),  # labels ignored
    ("<REGION_PROPOSAL>", "</s><s></s>"),
    ("<CAPTION_TO_PHRASE_GROUNDING>", "</s><s>the image<loc_0><loc_0><loc_999><loc_999>a dog<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<CAPTION_TO_PHRASE_GROUNDING>", "</s><s>A dog<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>it<loc_9><loc_9><loc_9><loc_9></s>"),
    ("<CAPTION_TO_PHRASE_GROUNDING>", "</s><s> I <loc_1><loc_2><loc_3><loc_4>i<loc_1><loc_2><loc_3><loc_4>each other<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<CAPTION_TO_PHRASE_GROUNDING>", "</s><s>thé<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<OCR_WITH_REGION>", "</s><s>hello<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>wörld 日本<loc_9><loc_8><loc_7><loc_6><loc_5><loc_4><loc_3><loc_2></s>"),
    ("<OCR_WITH_REGION>", "</s><s>short<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<OCR_WITH_REGION>", "</s><s>a\nb<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8></s>"),
    ("<OCR_WITH_REGION>", "</s><s><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8><loc_9></s>"),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", "</s><s><loc_1><loc_2><loc_3><loc_4><loc_5><sep><loc_6><loc_7><loc_8></s>"),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", "</s><s>dog<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", "</s><s><sep><loc_1><loc_2><loc_3><loc_4></s>"),  # label "<sep>"
    ("<REFERRING_EXPRESSION_SEGMENTATION>", "</s><s><sep><sep><sep><sep></s>"),
    ("<REGION_TO_SEGMENTATION>", "</s><s><poly><loc_1><loc_2><loc_3><loc_4><sep><loc_9><loc_9></poly><poly><loc_1><loc_2><loc_3></poly></s>"),
    ("<REGION_TO_SEGMENTATION>", "</s><s><poly><loc_1><loc_2><loc_3><loc_4></s>"),  # unclosed <poly>
    ("<REGION_TO_SEGMENTATION>", "</s><s><poly><loc_1><sep><loc_2><sep><loc_3></poly></s>"),  # empty polygons
    ("<REGION_TO_SEGMENTATION>", "</s><s><loc_0><loc_0><loc_999><loc_999><loc_999><loc_0></s>"),
    ("<OPEN_VOCABULARY_DETECTION>", "</s><s>cat<poly><loc_1><loc_2><loc_3><loc_4></poly>dog<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<OPEN_VOCABULARY_DETECTION>", "</s><s>cat<loc_1><loc_2><loc_3><loc_4>dög<loc_5><loc_6><loc_7><loc_8></s>"),
    ("<OPEN_VOCABULARY_DETECTION>", "</s><s>ünï<poly><loc_1><loc_2><loc_3><loc_4><sep><loc_5><loc_6><loc_7><loc_8></poly></s>"),
    ("<OPEN_VOCABULARY_DETECTION>", "</s><s></s>"),
    ("<CAPTION>", "</s><s>A green car parked in front of a yellow building.</s>"),
    ("<CAPTION>", "</s><s> A cat<pad> </s>"),  # <pad> stays in pure text
    ("<DETAILED_CAPTION>", ""),
    ("<MORE_DETAILED_CAPTION>", "</s><s>Ein Café — 日本語 🚀<loc_1></s>"),
    ("<OCR>", "</s><s>STOP<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<REGION_TO_CATEGORY>", "</s><s>car<loc_1><loc_2><loc_3><loc_4></s>"),
    ("<REGION_TO_DESCRIPTION>", "</s><s>a car</s>"),
    ("<REGION_TO_OCR>", "<s>text</s><s>more</s>"),
]  # fmt: skip

WORDS = ["car", "a dog", "the image", "it", "I", "a set", "café", "日本", " ", "  wheel ", "\n", "é", "<", ">",
         "loc_", "{input}", "the", "A red\ncar", "two  spaces", "each other", "x"]  # fmt: skip
TAGS = ["<s>", "</s>", "<pad>", "<poly>", "</poly>", "<sep>", "<od>", "</od>", "<box>", "</box>", "<bbox>", "<ground>",
        "<obj>", "<and>", "<image>"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("florence2-bart")
    florence2_vocab.write_florence2_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def processor(tokenizer_folder: Path) -> Florence2Processor:
    image_processor = CLIPImageProcessorPil(
        size={"height": 768, "width": 768}, do_center_crop=False, image_seq_length=577
    )
    processor = Florence2Processor(
        image_processor=image_processor,
        tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_folder)),
        post_processor_config=copy.deepcopy(dict(NATIVE_POST_PROCESSOR_CONFIG)),
    )
    # One task name per answer type, so every parser can be reached through post_process_generation
    # (no task of the table answers description_with_polygons).
    by_type = {f"<{a.value}>": a.value for a in AnswerType}
    processor.tasks_answer_post_processing_type = {**processor.tasks_answer_post_processing_type, **by_type}
    return processor


def theirs(processor: Florence2Processor, text: str, answer: AnswerType, size: tuple[int, int]) -> object:
    task = f"<{answer.value}>"
    return processor.post_process_generation(text=text, task=task, image_size=size)[task]


def random_location(rng: np.random.Generator) -> str:
    roll = rng.random()
    if roll < 0.85:
        return f"<loc_{rng.integers(0, 1000)}>"
    if roll < 0.93:
        return f"<loc_{rng.choice([0, 999])}>"
    return f"<loc_{rng.choice(['1000', '007', '123456', '٣', ''])}>"  # spellings no token has


def random_answer(rng: np.random.Generator) -> str:
    """Words, runs of location tokens, markup and polygon groups, with and without </s><s>."""
    parts: list[str] = []
    for _ in range(rng.integers(0, 10)):
        kind = rng.choice(["word", "locations", "tag", "polygon"], p=[0.3, 0.35, 0.15, 0.2])
        if kind == "word":
            parts.append(str(rng.choice(WORDS)))
        elif kind == "locations":
            parts += [random_location(rng) for _ in range(rng.choice([1, 2, 3, 4, 4, 4, 5, 7, 8, 8, 12]))]
        elif kind == "tag":
            parts.append(str(rng.choice(TAGS)))
        else:
            parts.append("<poly>")
            for _ in range(rng.integers(1, 4)):
                parts += [random_location(rng) for _ in range(rng.integers(0, 9))] + ["<sep>"]
            parts[-1] = "</poly>" if rng.random() < 0.85 else "<sep>"
    body = "".join(parts)
    return f"</s><s>{body}</s>" if rng.random() < 0.7 else body


# --- hand-made answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "text"), CASES)
def test_hand_made_answers_equal_transformers(processor: Florence2Processor, task: str, text: str) -> None:
    for size in SIZES:
        expected = processor.post_process_generation(text=text, task=task, image_size=size)
        assert repr(post_process_generation(text, task, size)) == repr(expected), size


def test_every_task_and_answer_type_is_covered() -> None:
    assert {task for task, _ in CASES} == set(TASKS)
    assert {TASKS[task].answer for task, _ in CASES} == set(AnswerType) - {
        AnswerType.DESCRIPTION_WITH_POLYGONS
    }


def test_known_numbers_and_labels() -> None:
    """A few answers worked out by hand, so the comparison above is not the only witness."""
    od = post_process_generation("</s><s>car<loc_100><loc_200><loc_300><loc_400></s>", "<OD>", (451, 300))
    assert od == {"<OD>": {"bboxes": [[45, 60, 135, 120]], "labels": ["car"]}}
    edges = post_process_generation("<s>é cat <loc_0><loc_0><loc_999><loc_999></s>", "<OD>", (1000, 10))
    assert edges == {"<OD>": {"bboxes": [[0, 0, 999, 9]], "labels": [" cat"]}}  # "é" gone after the strip
    grounding = "</s><s>the image<loc_0><loc_0><loc_9><loc_9>a dog<loc_1><loc_1><loc_3><loc_3></s>"
    answer = post_process_generation(grounding, "<CAPTION_TO_PHRASE_GROUNDING>", (1000, 1000))
    assert answer == {"<CAPTION_TO_PHRASE_GROUNDING>": {"bboxes": [[1, 1, 3, 3]], "labels": ["a dog"]}}
    poly = "<poly><loc_0><loc_0><loc_9><loc_9><loc_5><sep><loc_1><loc_2></poly>"
    assert parse_answer(poly, AnswerType.POLYGONS, (1000, 1000)) == {
        "polygons": [[[0, 0, 9, 9], [1, 2]]],
        "labels": [""],
    }
    assert post_process_generation("</s><s> A cat<pad> </s>", "<CAPTION>", (5, 5)) == {
        "<CAPTION>": "A cat<pad>"
    }


def test_dequantising_reproduces_torchs_float32_steps(processor: Florence2Processor) -> None:
    """Every bin, on sides where float64 arithmetic gives another pixel for some bin, and a few others."""
    float64_differs = [144, 288, 304, 576, 608, 688, 752, 816, 1040, 1136, 1152, 1168, 1216, 1328]
    text = "x" + "".join(f"<loc_{b}><loc_{b}><loc_{b}><loc_{b}>" for b in range(1000))
    misses = 0
    for side in [1, 7, 451, 768, 1000, 1999, *float64_differs]:
        ours = parse_answer(text, AnswerType.DESCRIPTION_WITH_BBOXES, (side, side))
        assert ours == theirs(processor, text, AnswerType.DESCRIPTION_WITH_BBOXES, (side, side)), side
        in_float64 = [int((b + 0.5) * (side / 1000)) for b in range(1000)]
        misses += in_float64 != [box[0] for box in ours["bboxes"]]  # type: ignore[index]
    assert misses == len(float64_differs)


# --- random answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", list(AnswerType), ids=lambda a: a.value)
def test_random_answers_equal_transformers(processor: Florence2Processor, answer: AnswerType) -> None:
    rng = np.random.default_rng(list(AnswerType).index(answer))
    found_something = 0
    for _ in range(RANDOM_CASES_PER_TYPE):
        text = random_answer(rng)
        size = SIZES[rng.integers(0, len(SIZES))]
        ours = parse_answer(text, answer, size)
        assert repr(ours) == repr(theirs(processor, text, answer, size)), (text, size)
        found_something += bool(isinstance(ours, str) or any(ours.values()))
    assert found_something > RANDOM_CASES_PER_TYPE // 10, "the generator should make parsable answers too"


@pytest.mark.parametrize("task", list(TASKS))
def test_random_answers_equal_transformers_per_task(processor: Florence2Processor, task: str) -> None:
    rng = np.random.default_rng(1000 + list(TASKS).index(task))
    for _ in range(30):
        text, size = random_answer(rng), SIZES[rng.integers(0, len(SIZES))]
        expected = processor.post_process_generation(text=text, task=task, image_size=size)
        assert repr(post_process_generation(text, task, size)) == repr(expected), (text, size)


# --- the native post-processor config ------------------------------------------------------------------


def test_native_config_has_every_parse_task_and_the_banned_phrases(processor: Florence2Processor) -> None:
    assert set(NATIVE_POST_PROCESSOR_CONFIG) == {a.value for a in AnswerType}
    assert processor.post_processor.banned_grounding_tokens == BANNED_GROUNDING_PHRASES
    assert {"it", "I", "the image", "a set", "each other"} <= BANNED_GROUNDING_PHRASES


def test_transformers_ignores_the_lowercase_ocr_keys(processor: Florence2Processor) -> None:
    """The shipped config says "pattern"/"area_threshold"; the parser reads "PATTERN"/"AREA_THRESHOLD"."""
    config = copy.deepcopy(dict(NATIVE_POST_PROCESSOR_CONFIG))
    config["ocr"] = {"pattern": "(never)", "area_threshold": 0.99}
    post = Florence2PostProcessor(config=config, tokenizer=processor.tokenizer)
    text = "hello<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>"
    parsed = post(text=text, image_size=(100, 100), parse_tasks=["ocr"])["ocr"]
    assert parsed == [{"quad_box": [0, 0, 0, 0, 0, 0, 0, 0], "text": "hello"}]


# --- refusals ------------------------------------------------------------------------------------------


def test_unknown_task_is_refused_where_transformers_reads_pure_text(processor: Florence2Processor) -> None:
    assert processor.post_process_generation(text="<s>a</s>", task="<NOPE>", image_size=(1, 1)) == {
        "<NOPE>": "a"
    }
    with pytest.raises(InputValidationError, match="expected a Florence-2 task token"):
        post_process_generation("<s>a</s>", "<NOPE>", (1, 1))


@pytest.mark.parametrize("size", [None, (0, 10), (10, -1), (10.0, 10), (10, 10, 3), "640x480", (True, 10)])
def test_bad_image_sizes_are_refused(size: object) -> None:
    with pytest.raises(
        InputValidationError, match=r"expected image_size as \(width, height\), two positive ints"
    ):
        post_process_generation("</s><s>car<loc_1><loc_2><loc_3><loc_4></s>", "<OD>", size)  # type: ignore[arg-type]


def test_non_text_is_refused() -> None:
    with pytest.raises(InputValidationError, match="generated text as a str; got list. Decode the token ids"):
        post_process_generation([2, 0, 2], "<OD>", (10, 10))  # type: ignore[arg-type]


# --- decoding ids to text --------------------------------------------------------------------------------


def random_rows(
    rng: np.random.Generator, vocab_size: int, specials: list[int], count: int = 200
) -> list[list[int]]:
    """Rows of ids: ordinary ones, special ones, and ids past the vocabulary (a model's padded logits)."""
    rows = []
    for _ in range(count):
        length = int(rng.integers(0, 40))
        kinds = rng.choice(3, size=length, p=[0.6, 0.35, 0.05])
        ordinary = rng.integers(0, vocab_size, size=length)
        special = rng.choice(specials, size=length)
        padding = rng.integers(vocab_size, vocab_size + 38, size=length)
        rows.append([int(x) for x in np.choose(kinds, [ordinary, special, padding])])
    return rows


def test_bart_layout_decode_equals_transformers(tokenizer_folder: Path) -> None:
    theirs = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    specials = [0, 1, 2, 3, 50264, 51289, *range(50265, 51289)]
    rows = random_rows(np.random.default_rng(7), florence2_vocab.VOCAB_SIZE, specials)
    ours = AnswerDecoder.from_folder(tokenizer_folder)
    assert ours.decode_batch(rows) == theirs.batch_decode(rows, skip_special_tokens=False)
    assert (
        ours.decode_batch(np.array(rows[:1] * 3, dtype=np.int64).reshape(3, -1)) == [ours.decode(rows[0])] * 3
    )


def test_tiny_model_decode_equals_transformers() -> None:
    theirs = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    vocab = theirs.backend_tokenizer.get_vocab_size(with_added_tokens=True)
    specials = [0, 1, 2, 3, *range(vocab - 1001, vocab)]  # the location tokens and <image>
    rows = random_rows(np.random.default_rng(8), vocab, specials)
    assert AnswerDecoder.from_folder(TINY_TOKENIZER).decode_batch(rows) == theirs.batch_decode(
        rows, skip_special_tokens=False
    )


def test_clean_up_setting_is_honoured_as_transformers_honours_it(
    tmp_path: Path, tokenizer_folder: Path
) -> None:
    """transformers cleans " ." up for word-level tokenizers only, unless forced for BPE ones."""
    settings = [
        (TINY_TOKENIZER, {"clean_up_tokenization_spaces": True}, True),
        (tokenizer_folder, {"clean_up_tokenization_spaces": True}, False),  # BPE: skipped
        (
            tokenizer_folder,
            {
                "clean_up_tokenization_spaces": True,
                "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output": True,
            },
            True,
        ),
    ]
    for i, (source, changes, cleans) in enumerate(settings):
        folder = tmp_path / str(i)
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, **changes}))
        theirs = AutoTokenizer.from_pretrained(str(folder))
        ours = AnswerDecoder.from_folder(folder)
        assert ours.clean_up_spaces is cleans
        text = "what is the text in the image ? it's a cat ."
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False)
        assert (" ?" not in ours.decode(ids)) is cleans


def test_location_answers_round_trip_through_the_bart_layout(tokenizer_folder: Path) -> None:
    theirs = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    ours = AnswerDecoder.from_folder(tokenizer_folder)
    for text in [
        "car<loc_1><loc_2><loc_3><loc_4>",
        "</s><s>wheels<loc_144><loc_5><loc_7><loc_9>a red door<loc_0><loc_0><loc_999><loc_999></s>",
        "<poly><loc_1><loc_2><sep><loc_3><loc_4></poly>",
        "a photo of a cat",
    ]:
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.decode(ids) == text


def test_decoder_refuses_batches_and_negative_ids(tokenizer_folder: Path) -> None:
    ours = AnswerDecoder.from_folder(tokenizer_folder)
    with pytest.raises(
        InputValidationError,
        match="one sequence of non-negative integer token ids; got an array of shape \\(2, 2\\)",
    ):
        ours.decode([[1, 2], [3, 4]])  # type: ignore[list-item]
    with pytest.raises(InputValidationError, match="non-negative integer"):
        ours.decode([5, -1])
    with pytest.raises(InputValidationError, match="dtype float"):
        ours.decode(np.array([1.0, 2.0]))


# --- the runtime stays torch-free ------------------------------------------------------------------------

BLOCKED = ("torch", "transformers", "onnx", "onnxscript")


def test_runtime_modules_work_with_torch_transformers_and_onnx_blocked() -> None:
    script = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of these now raises ImportError
from pathlib import Path
from trtdeploy.runtime.florence2_answers import post_process_generation
from trtdeploy.runtime.florence2_decode import AnswerDecoder
from trtdeploy.runtime.florence2_tasks import build_prompt, region_text
assert build_prompt("<REGION_TO_CATEGORY>", region_text((1, 2, 3, 4), (10, 10))).startswith("What is the region")
text = AnswerDecoder.from_folder(Path({str(TINY_TOKENIZER)!r})).decode([0, 2])
assert text == "<s></s>", text
answer = post_process_generation("car<loc_1><loc_2><loc_3><loc_4>", "<OD>", (100, 100))
assert answer == {{"<OD>": {{"bboxes": [[0, 0, 0, 0]], "labels": ["car"]}}}}, answer
leaked = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r} and sys.modules[m] is not None)
assert not leaked, leaked
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
