"""Florence-2's tasks: which prompt each task token stands for, what input it takes, how its answer reads.

Florence-2 is steered by a task token (`<OD>`, `<CAPTION>`, ...). transformers' Florence2Processor
replaces the token by a fixed English prompt before tokenizing (`_construct_prompts`), and after
generation picks a parser by the task's answer type (`tasks_answer_post_processing_type`). The table
below is those two dicts of transformers 5.x (`models/florence2/processing_florence2.py`), merged into
one row per task.

`build_prompt` makes the prompt string the processor makes, but refuses what the processor lets
through or fails on late: an unknown task (the processor sends it to the model as plain text), text
for a task without input (it raises), a task with input given none (it asks "What is the region ?"),
a region task whose input is not one box of location tokens, and text that is not encodable.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

import numpy as np

from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.locations import LOCATION_BINS, quantize_boxes


class TaskInput(Enum):
    """What a task's prompt takes besides the image."""

    NONE = "none"
    TEXT = "text"  # a phrase or caption, written into the prompt
    REGION = "region"  # one box as four location tokens, <loc_x1><loc_y1><loc_x2><loc_y2>


class AnswerType(str, Enum):
    """How an answer is parsed; the values are Florence2PostProcessor's parse-task names."""

    PURE_TEXT = "pure_text"
    OCR = "ocr"
    PHRASE_GROUNDING = "phrase_grounding"
    DESCRIPTION_WITH_BBOXES = "description_with_bboxes"
    BBOXES = "bboxes"
    POLYGONS = "polygons"
    DESCRIPTION_WITH_POLYGONS = "description_with_polygons"
    DESCRIPTION_WITH_BBOXES_OR_POLYGONS = "description_with_bboxes_or_polygons"


INPUT_PLACEHOLDER = "{input}"


@dataclass(frozen=True)
class Florence2Task:
    """One task token, the prompt it becomes, its input and its answer type."""

    token: str
    prompt: str  # holds INPUT_PLACEHOLDER exactly when the task takes an input
    input: TaskInput
    answer: AnswerType


_ROWS = (
    Florence2Task("<CAPTION>", "What does the image describe?", TaskInput.NONE, AnswerType.PURE_TEXT),
    Florence2Task(
        "<DETAILED_CAPTION>",
        "Describe in detail what is shown in the image.",
        TaskInput.NONE,
        AnswerType.PURE_TEXT,
    ),
    Florence2Task(
        "<MORE_DETAILED_CAPTION>",
        "Describe with a paragraph what is shown in the image.",
        TaskInput.NONE,
        AnswerType.PURE_TEXT,
    ),
    Florence2Task(
        "<OD>",
        "Locate the objects with category name in the image.",
        TaskInput.NONE,
        AnswerType.DESCRIPTION_WITH_BBOXES,
    ),
    Florence2Task(
        "<DENSE_REGION_CAPTION>",
        "Locate the objects in the image, with their descriptions.",
        TaskInput.NONE,
        AnswerType.DESCRIPTION_WITH_BBOXES,
    ),
    Florence2Task(
        "<REGION_PROPOSAL>", "Locate the region proposals in the image.", TaskInput.NONE, AnswerType.BBOXES
    ),
    Florence2Task("<OCR>", "What is the text in the image?", TaskInput.NONE, AnswerType.PURE_TEXT),
    Florence2Task(
        "<OCR_WITH_REGION>", "What is the text in the image, with regions?", TaskInput.NONE, AnswerType.OCR
    ),
    Florence2Task(
        "<CAPTION_TO_PHRASE_GROUNDING>",
        "Locate the phrases in the caption: {input}",
        TaskInput.TEXT,
        AnswerType.PHRASE_GROUNDING,
    ),
    Florence2Task(
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        "Locate {input} in the image with mask",
        TaskInput.TEXT,
        AnswerType.POLYGONS,
    ),
    Florence2Task(
        "<REGION_TO_SEGMENTATION>",
        "What is the polygon mask of region {input}",
        TaskInput.REGION,
        AnswerType.POLYGONS,
    ),
    Florence2Task(
        "<OPEN_VOCABULARY_DETECTION>",
        "Locate {input} in the image.",
        TaskInput.TEXT,
        AnswerType.DESCRIPTION_WITH_BBOXES_OR_POLYGONS,
    ),
    Florence2Task(
        "<REGION_TO_CATEGORY>", "What is the region {input}?", TaskInput.REGION, AnswerType.PURE_TEXT
    ),
    Florence2Task(
        "<REGION_TO_DESCRIPTION>",
        "What does the region {input} describe?",
        TaskInput.REGION,
        AnswerType.PURE_TEXT,
    ),
    Florence2Task(
        "<REGION_TO_OCR>", "What text is in the region {input}?", TaskInput.REGION, AnswerType.PURE_TEXT
    ),
)
TASKS: Mapping[str, Florence2Task] = MappingProxyType({row.token: row for row in _ROWS})

# The tokens Florence-2's tokenizer adds after BART's 50265 (ids 50265..51288, in this order), as the
# original processor adds them; the native conversion then adds <image> (51289).
LOCATION_TOKENS = tuple(f"<loc_{i}>" for i in range(LOCATION_BINS))
TASK_VOCABULARY = (
    "<od>",
    "</od>",
    "<ocr>",
    "</ocr>",
    *LOCATION_TOKENS,
    "<cap>",
    "</cap>",
    "<ncap>",
    "</ncap>",
    "<dcap>",
    "</dcap>",
    "<grounding>",
    "</grounding>",
    "<seg>",
    "</seg>",
    "<sep>",
    "<region_cap>",
    "</region_cap>",
    "<region_to_desciption>",  # sic: the checkpoints' spelling
    "</region_to_desciption>",
    "<proposal>",
    "</proposal>",
    "<poly>",
    "</poly>",
    "<and>",
)
IMAGE_TOKEN = "<image>"
BART_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# What a task with input was missing, and how to give it.
_INPUT_HELP = {
    TaskInput.TEXT: ("a phrase", "Pass the phrase as text."),
    TaskInput.REGION: (
        "a region <loc_x1><loc_y1><loc_x2><loc_y2>",
        "Write one from a pixel box with region_text(box, image_size).",
    ),
}
# A region is exactly four location tokens; bins written as the tokenizer spells them (no leading 0).
_BIN = r"(0|[1-9][0-9]{0,2})"
_REGION = re.compile(rf"<loc_{_BIN}><loc_{_BIN}><loc_{_BIN}><loc_{_BIN}>")
# Tokens of the tokenizer that free text must not smuggle in: the processor would tokenize them as
# the special token, not as the user's words.
_SPECIAL_TOKENS = (
    *BART_SPECIAL_TOKENS,
    IMAGE_TOKEN,
    *(t for t in TASK_VOCABULARY if t not in LOCATION_TOKENS),
)
_SPECIAL_IN_TEXT = re.compile("|".join([*map(re.escape, _SPECIAL_TOKENS), r"<loc_\d+>"]))


def florence2_task(token: str) -> Florence2Task:
    """The table row of a task token such as "<OD>"; refuses tokens Florence-2 does not know."""
    if isinstance(token, str) and token in TASKS:
        return TASKS[token]
    hint = difflib.get_close_matches(str(token).upper(), list(TASKS), n=1)
    suggestion = f"did you mean {hint[0]}? " if hint else ""
    raise InputValidationError(
        f"expected a Florence-2 task token, one of {', '.join(TASKS)}; got {token!r}. "
        f"{suggestion}Pass the task token itself, with its brackets, and any input separately."
    )


def build_prompt(task: str, text: str | None = None) -> str:
    """The prompt Florence2Processor builds from ``task`` (+ ``text``), checked first.

    Tasks without input take ``text=None`` (or ""); text tasks take a phrase; region tasks take
    ``region_text(...)``. Surrounding whitespace of ``text`` is stripped, as the processor does.
    """
    spec = florence2_task(task)
    if text is not None and not isinstance(text, str):
        raise InputValidationError(
            f"expected the input of {task} as a str or None; got {type(text).__name__}. Pass text."
        )
    _check_encodable(text or "", task)
    if spec.input is TaskInput.NONE:
        if text:
            raise InputValidationError(
                f"{task} takes no input; got text {text!r}. Drop the text, or pick a task that takes "
                f"one: {', '.join(t.token for t in _ROWS if t.input is not TaskInput.NONE)}."
            )
        return spec.prompt
    given = (text or "").strip()
    if not given:
        wanted, how = _INPUT_HELP[spec.input]
        raise InputValidationError(f"{task} takes {wanted} as input; got {text!r}. {how}")
    if spec.input is TaskInput.REGION:
        _check_region(given, task)
    else:
        _check_free_text(given, task)
    return spec.prompt.format(input=given)


def region_text(box: Sequence[float] | np.ndarray, image_size: tuple[int, int]) -> str:
    """Pixel box (x1, y1, x2, y2) on an image of (width, height) -> "<loc_x1><loc_y1><loc_x2><loc_y2>".

    Bins are floor(coordinate / (side / 1000)) clamped to [0, 999], Florence2PostProcessor.quantize's
    rule, so a box that reaches past the image lands on the edge bins.
    """
    size = checked_image_size(image_size)
    values = np.asarray(box, dtype=np.float64) if _is_number_sequence(box) else None
    if values is None or values.shape != (4,) or not np.isfinite(values).all():
        raise InputValidationError(
            f"expected a box as four finite pixel coordinates (x1, y1, x2, y2); got {box!r}."
        )
    x1, y1, x2, y2 = values
    if x1 > x2 or y1 > y2:
        raise InputValidationError(
            f"expected a box with x1 <= x2 and y1 <= y2 (top-left corner, then bottom-right); got {box!r}. "
            "Swap the corners."
        )
    bins = quantize_boxes(values.reshape(1, 4), size)[0]
    return "".join(f"<loc_{int(b)}>" for b in bins)


def checked_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) as two positive ints, or InputValidationError saying what was given."""
    valid = (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in image_size)
    )
    if not valid:
        raise InputValidationError(
            f"expected image_size as (width, height), two positive ints in pixels; got {image_size!r}. "
            "Pass the size of the image the model saw before resizing (PIL's Image.size)."
        )
    return int(image_size[0]), int(image_size[1])


def _check_encodable(text: str, task: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise InputValidationError(
            f"expected the input of {task} as text that UTF-8 can encode; got {bad!r} at position "
            f"{exc.start} ({exc.reason}). Remove it, or decode the source bytes with errors='replace'."
        ) from None


def _check_region(given: str, task: str) -> None:
    found = _REGION.fullmatch(given)
    if found is None:
        raise InputValidationError(
            f"{task} takes one region, four location tokens <loc_x1><loc_y1><loc_x2><loc_y2> with bins "
            f"0..{LOCATION_BINS - 1}; got {given!r}. Write a pixel box with region_text(box, image_size)."
        )
    x1, y1, x2, y2 = (int(g) for g in found.groups())
    if x1 > x2 or y1 > y2:
        raise InputValidationError(
            f"{task} takes a region with x1 <= x2 and y1 <= y2 (top-left, then bottom-right); got {given!r}. "
            "Swap the corners."
        )


def _check_free_text(given: str, task: str) -> None:
    token = _smuggled_token(given)
    if token is not None:
        raise InputValidationError(
            f"{task} takes plain text as input; got {given!r}, which holds the token {token}. The "
            "processor would read it as that token, not as words: remove it."
        )


def _smuggled_token(text: str) -> str | None:
    """The first special or task token inside ``text``, if any."""
    special = _SPECIAL_IN_TEXT.search(text)
    if special is not None:
        return special.group()
    return next((token for token in TASKS if token in text), None)


def _is_number_sequence(box: object) -> bool:
    if isinstance(box, np.ndarray):
        return box.dtype.kind in "iuf"
    return isinstance(box, (tuple, list)) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in box
    )
