"""Florence-2's generated text -> the answer dict, as transformers' Florence2Processor returns it.

`post_process_generation(text, task, image_size)` equals
`Florence2Processor.post_process_generation(text=text, task=task, image_size=image_size)` of
transformers 5.x (`models/florence2/processing_florence2.py`, `Florence2PostProcessor`), run with the
post-processor config the native checkpoints ship: the same keys, the same labels and the same int
pixel coordinates, malformed sequences included. The rules it copies, some of them surprising:

- `<s>`, `</s>` and `<pad>` are removed before parsing; pure-text answers drop `<s>`/`</s>` only
  and keep `<pad>`.
- A phrase is text without `<` followed by four or more location tokens; every complete group of
  four is one box, leftover tokens are dropped. Its label is the text before the first `<loc_`,
  stripped, and only then stripped of non-ASCII characters (so "é cat" becomes " cat"). Box labels
  lose non-ASCII characters; OCR and polygon labels keep them. A label with a line break in it
  drops its phrase, because the label pattern's `.` stops at newlines.
- Polygons are runs of location tokens ended by `<sep>` or the end of a `<poly>...</poly>` group;
  an odd run loses its last token.
- Dequantising is `int((bin + 0.5) * (side / 1000))` computed in float32, as torch computes it on
  an int64 tensor plus a Python float. float64 would differ on a few bins (368 of the 5 million
  (bin, side) pairs with sides 1..5000), so the float32 steps are reproduced here. Bins above 999
  (no tokenizer has such tokens, but location text spelled out by plain tokens can say anything)
  follow the same arithmetic.

What differs on purpose: an unknown task raises InputValidationError (transformers parses it as
pure text), and `image_size` must be two positive ints.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.florence2_tasks import AnswerType, checked_image_size, florence2_task
from trtdeploy.runtime.locations import LOCATION_BINS

# The `post_processor_config` the native checkpoints ship, as transformers'
# convert_florence2_original_pytorch_to_hf.py (`convert_florence2_checkpoint`) writes it into
# processor_config.json. Its lowercase "pattern"/"area_threshold" are never read: the parser looks up
# "PATTERN" and "AREA_THRESHOLD", so the OCR parser runs on its built-in default pattern (the same
# string) and no area filter. What does act: the key set (a missing key is "Unsupported parse task")
# and the banned grounding phrases, whose duplicates the parser folds into a set.
_BANNED_GROUNDING_TOKENS = (
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they",
    "them", "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "you", "your", "yours",
    "they", "them", "their", "theirs", "mine", "yours", "his", "hers", "its", "ours", "yours",
    "theirs", "myself", "yourself", "himself", "herself", "itself", "ourselves", "yourselves",
    "themselves", "this", "that", "these", "those", "who", "whom", "whose", "which", "what", "who",
    "whom", "whose", "which", "that", "all", "another", "any", "anybody", "anyone", "anything",
    "each", "everybody", "everyone", "everything", "few", "many", "nobody", "none", "one",
    "several", "some", "somebody", "someone", "something", "each other", "one another", "myself",
    "yourself", "himself", "herself", "itself", "ourselves", "yourselves", "themselves",
    "the image", "image", "images", "the", "a", "an", "a group", "other objects", "lots", "a set",
)  # fmt: skip
OCR_PATTERN = r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"
NATIVE_POST_PROCESSOR_CONFIG: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "ocr": {"pattern": OCR_PATTERN, "area_threshold": 0.0},
        "phrase_grounding": {"banned_grounding_tokens": list(_BANNED_GROUNDING_TOKENS)},
        "pure_text": {},
        "description_with_bboxes": {},
        "description_with_polygons": {},
        "polygons": {},
        "bboxes": {},
        "description_with_bboxes_or_polygons": {},
    }
)
BANNED_GROUNDING_PHRASES = frozenset(_BANNED_GROUNDING_TOKENS)

Answer = str | dict[str, list[Any]]
_Phrases = list[tuple[str, list[list[int]]]]  # (label, boxes or polygons) per phrase, in order

_MARKUP = ("<s>", "</s>", "<pad>")
_OCR = re.compile(OCR_PATTERN)
_PHRASE = re.compile(r"([^<]+(?:<loc_\d+>){4,})")
_UNLABELLED_PHRASE = re.compile(r"(?:(?:<loc_\d+>){4,})")
_LABEL = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)")
_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")
_POLYGON_PHRASE = re.compile(r"([^<]+(?:<loc_\d+>|<sep>|<poly>|</poly>){4,})")
_UNLABELLED_POLYGON_PHRASE = re.compile(r"(?:(?:<loc_\d+>|<sep>|<poly>|</poly>){4,})")
_POLYGON_LABEL = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_|<poly>)")
_LEADING_LOCATION = re.compile(r"^<loc_\d+>")
_POLYGON_GROUP = re.compile(r"<poly>(.*?)</poly>")
_POLYGON_RUN = re.compile(r"((?:<loc_\d+>)+)(?:<sep>|$)")
_LOCATION = re.compile(r"<loc_(\d+)>")
_INT64_MAX = 2**63 - 1


def post_process_generation(text: str, task: str, image_size: tuple[int, int]) -> dict[str, Answer]:
    """{task: answer} for generated ``text`` (special tokens kept) on an image of (width, height)."""
    spec = florence2_task(task)
    return {task: parse_answer(text, spec.answer, image_size)}


def parse_answer(text: str, answer: AnswerType, image_size: tuple[int, int]) -> Answer:
    """The answer of one answer type: a str for pure text, else a dict of lists (see the module doc)."""
    if not isinstance(text, str):
        raise InputValidationError(
            f"expected the generated text as a str; got {type(text).__name__}. Decode the token ids "
            "first (AnswerDecoder in trtdeploy.runtime.florence2_decode)."
        )
    size = checked_image_size(image_size)
    return _ASSEMBLERS[AnswerType(answer)](text, size)


def _pure_text(text: str, size: tuple[int, int]) -> Answer:
    return text.replace("<s>", "").replace("</s>", "").strip()


def _ocr(text: str, size: tuple[int, int]) -> Answer:
    quads, labels = [], []
    for content, *bins in _OCR.findall(_without_markup(text)):
        quads.append(_dequantize([int(b) for b in bins], size))
        labels.append(content.strip())
    return {"quad_boxes": quads, "labels": labels}


def _boxes(
    text: str, size: tuple[int, int], *, unlabelled: bool = False, banned: frozenset[str] = frozenset()
) -> Answer:
    bboxes, labels = [], []
    for label, boxes in _phrases_with_boxes(text, size, unlabelled=unlabelled):
        if label in banned:
            continue
        bboxes += boxes
        labels += [_ascii(label)] * len(boxes)
    return {"bboxes": bboxes, "labels": labels}


def _polygons(text: str, size: tuple[int, int], *, unlabelled: bool = False) -> Answer:
    phrases = _phrases_with_polygons(text, size, unlabelled=unlabelled)
    return {"polygons": [polygons for _, polygons in phrases], "labels": [label for label, _ in phrases]}


def _boxes_or_polygons(text: str, size: tuple[int, int]) -> Answer:
    """Polygons when the text holds a <poly>, else boxes; the other pair of lists stays empty."""
    answer: dict[str, list[Any]] = {"bboxes": [], "bboxes_labels": [], "polygons": [], "polygons_labels": []}
    if "<poly>" in text:
        for label, polygons in _phrases_with_polygons(text, size, unlabelled=False):
            answer["polygons"].append(polygons)
            answer["polygons_labels"].append(label)
    else:
        for label, boxes in _phrases_with_boxes(text, size, unlabelled=False):
            answer["bboxes"] += boxes
            answer["bboxes_labels"] += [_ascii(label)] * len(boxes)
    return answer


_ASSEMBLERS: Mapping[AnswerType, Callable[[str, tuple[int, int]], Answer]] = MappingProxyType(
    {
        AnswerType.PURE_TEXT: _pure_text,
        AnswerType.OCR: _ocr,
        AnswerType.PHRASE_GROUNDING: partial(_boxes, banned=BANNED_GROUNDING_PHRASES),
        AnswerType.DESCRIPTION_WITH_BBOXES: _boxes,
        AnswerType.BBOXES: partial(_boxes, unlabelled=True),  # <REGION_PROPOSAL>: labels are ""
        AnswerType.POLYGONS: partial(_polygons, unlabelled=True),
        AnswerType.DESCRIPTION_WITH_POLYGONS: _polygons,
        AnswerType.DESCRIPTION_WITH_BBOXES_OR_POLYGONS: _boxes_or_polygons,
    }
)


def _phrases_with_boxes(text: str, size: tuple[int, int], *, unlabelled: bool) -> _Phrases:
    """(label, boxes) per phrase; ``unlabelled`` reads bare runs of location tokens (label "")."""
    pattern = _UNLABELLED_PHRASE if unlabelled else _PHRASE
    phrases: _Phrases = []
    for phrase in pattern.findall(_without_markup(text)):
        label = _LABEL.search(phrase)
        if label is None:  # a line break inside the label
            continue
        boxes = [_dequantize([int(b) for b in box.groups()], size) for box in _BOX.finditer(phrase)]
        phrases.append((label.group().strip(), boxes))
    return phrases


def _phrases_with_polygons(text: str, size: tuple[int, int], *, unlabelled: bool) -> _Phrases:
    """(label, polygons) per polygon group; a phrase without <poly>...</poly> is one group."""
    pattern = _UNLABELLED_POLYGON_PHRASE if unlabelled else _POLYGON_PHRASE
    phrases: _Phrases = []
    for phrase in pattern.findall(_without_markup(text)):
        # transformers looks for the label after dropping one leading location token.
        label = _POLYGON_LABEL.search(_LEADING_LOCATION.sub("", phrase, count=1))
        if label is None:
            continue
        if "<poly>" in phrase and "</poly>" in phrase:
            groups = [g.group(1) for g in _POLYGON_GROUP.finditer(phrase)]
        else:
            groups = [phrase]
        for group in groups:
            runs = [run.group(1) for run in _POLYGON_RUN.finditer(group)]
            if runs:
                phrases.append((label.group().strip(), [_polygon(run, size) for run in runs]))
    return phrases


def _polygon(run: str, size: tuple[int, int]) -> list[int]:
    bins = [int(b) for b in _LOCATION.findall(run)]
    return _dequantize(bins[: len(bins) // 2 * 2], size)  # x, y pairs: an odd last bin is dropped


def _dequantize(bins: Sequence[int], size: tuple[int, int]) -> list[int]:
    """Interleaved x, y bins -> int pixels at bin centres, with torch's float32 steps.

    torch computes `(int64_bins + 0.5) * (side / 1000)` in float32 (the Python float becomes a
    float32 scalar) and `.int()` truncates. Bins past int64, which torch refuses to hold, are held at
    int64's maximum; a pixel past int32 is whatever the platform's float->int32 cast makes of it, in
    torch as here.
    """
    width, height = size
    per_bin = np.array([width / LOCATION_BINS, height / LOCATION_BINS], dtype=np.float32)  # (2,)
    held = np.array([min(b, _INT64_MAX) for b in bins], dtype=np.int64).reshape(-1, 2)  # (P, 2)
    with np.errstate(invalid="ignore", over="ignore"):
        pixels = (held.astype(np.float32) + np.float32(0.5)) * per_bin
        return [int(v) for v in pixels.astype(np.int32).reshape(-1)]


def _without_markup(text: str) -> str:
    for token in _MARKUP:
        text = text.replace(token, "")
    return text


def _ascii(label: str) -> str:
    return label.encode("ascii", "ignore").decode("ascii")
