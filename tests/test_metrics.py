"""Task metrics and Florence-2 location text, on hand-made cases with known answers (good and bad)."""

from __future__ import annotations

import numpy as np
import pytest

from trtdeploy.runtime.locations import (
    Detections,
    dequantize_boxes,
    location_text,
    parse_location_text,
    quantize_boxes,
)
from trtdeploy.runtime.metrics import (
    box_iou,
    exact_match,
    mask_iou,
    mean_average_precision,
    mean_iou,
    top1_accuracy,
)


def dets(boxes: list[list[float]], labels: list[str], scores: list[float] | None = None) -> Detections:
    return Detections(
        np.array(boxes, dtype=np.float64).reshape(-1, 4),
        tuple(labels),
        None if scores is None else np.array(scores, dtype=np.float64),
    )


def square_mask(x0: int, y0: int, x1: int, y1: int, size: int = 10) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# --- classification and text ---------------------------------------------------------------------


def test_top1_counts_rows_whose_argmax_is_the_target() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.0, 0.0, 1.0]])
    assert top1_accuracy(scores, [0, 1, 2, 2]) == 0.75
    assert top1_accuracy(scores, [1, 0, 1, 0]) == 0.0


def test_top1_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="expected scores \\(N, C\\) and targets \\(N,\\)"):
        top1_accuracy(np.zeros((3, 2)), [0, 1])


def test_exact_match_ignores_spacing_but_not_words_or_case() -> None:
    refs = ["a red circle and a blue square", "a green star", "a red cross", "a blue circle"]
    preds = [
        "a red circle  and a blue square ",
        "a green star and a red cross",
        "A red cross",
        "a blue circle",
    ]
    assert exact_match(preds, refs) == 0.5
    with pytest.raises(ValueError, match="equal, non-zero numbers of texts"):
        exact_match(["a"], [])


# --- masks ------------------------------------------------------------------------------------------


def test_mask_iou_of_known_overlaps() -> None:
    a = square_mask(0, 0, 4, 4)  # 16 px
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, square_mask(2, 0, 6, 4)) == pytest.approx(8 / 24)
    assert mask_iou(a, square_mask(5, 5, 9, 9)) == 0.0
    empty = np.zeros((10, 10), dtype=bool)
    assert mask_iou(empty, empty) == 1.0  # both say "nothing here": they agree
    assert mask_iou(empty, a) == 0.0


def test_mean_iou_averages_images_not_pixels() -> None:
    big, small = square_mask(0, 0, 8, 8), square_mask(0, 0, 2, 2)
    # A perfect big mask and a missed small one score 0.5, however many pixels each holds.
    assert mean_iou([big, np.zeros_like(small)], [big, small]) == 0.5


def test_mask_iou_refuses_probabilities_and_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="must be boolean \\(threshold probabilities first\\)"):
        mask_iou(np.full((4, 4), 0.7), np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(np.ones((4, 4), dtype=bool), np.ones((4, 5), dtype=bool))


# --- boxes -------------------------------------------------------------------------------------------


def test_box_iou_pairwise() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    expected = np.array([[1.0, 50 / 150, 0.0], [25 / 100, 0.0, 0.0]])
    np.testing.assert_allclose(box_iou(a, b), expected)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)


def test_map_is_one_for_perfect_detections() -> None:
    truth = [
        dets([[0, 0, 10, 10], [20, 20, 30, 30]], ["circle", "square"]),
        dets([[5, 5, 15, 15]], ["circle"]),
    ]
    assert mean_average_precision(truth, truth) == 1.0


def test_map_counts_a_wrong_label_or_a_far_box_as_a_miss() -> None:
    truth = [dets([[0, 0, 10, 10]], ["circle"]), dets([[0, 0, 10, 10]], ["square"])]
    wrong_label = [dets([[0, 0, 10, 10]], ["square"]), dets([[0, 0, 10, 10]], ["square"])]
    # circle: no detections (AP 0); square: one hit, one false positive at the same score (AP 1 * 1/2).
    assert mean_average_precision(wrong_label, truth) == pytest.approx((0.0 + 0.5) / 2)
    shifted = [dets([[6, 0, 16, 10]], ["circle"]), dets([[0, 0, 10, 10]], ["square"])]  # IoU 4/16 with truth
    assert mean_average_precision(shifted, truth) == pytest.approx(0.5)
    assert mean_average_precision(shifted, truth, iou_threshold=0.2) == 1.0


def test_map_without_scores_is_precision_times_recall() -> None:
    truth = [dets([[0, 0, 10, 10], [20, 0, 30, 10]], ["star", "star"]), dets([[0, 0, 10, 10]], ["star"])]
    found = [dets([[0, 0, 10, 10], [50, 50, 60, 60]], ["star", "star"]), dets([[0, 0, 10, 10]], ["star"])]
    # 2 of 3 found (recall 2/3), 2 of 3 detections right (precision 2/3): one operating point.
    assert mean_average_precision(found, truth) == pytest.approx(4 / 9)


def test_map_uses_scores_to_rank() -> None:
    truth = [dets([[0, 0, 10, 10]], ["star"])]
    good_first = [dets([[0, 0, 10, 10], [50, 50, 60, 60]], ["star", "star"], [0.9, 0.1])]
    bad_first = [dets([[0, 0, 10, 10], [50, 50, 60, 60]], ["star", "star"], [0.1, 0.9])]
    assert mean_average_precision(good_first, truth) == 1.0
    assert mean_average_precision(bad_first, truth) == pytest.approx(0.5)


def test_map_matches_each_ground_truth_box_once() -> None:
    truth = [dets([[0, 0, 10, 10]], ["cross"])]
    twice = [dets([[0, 0, 10, 10], [0, 0, 10, 10]], ["cross", "cross"])]
    assert mean_average_precision(twice, truth) == pytest.approx(0.5)  # the duplicate is a false positive


def test_map_refuses_empty_or_misaligned_input() -> None:
    with pytest.raises(ValueError, match="same non-zero number of images"):
        mean_average_precision([], [])
    with pytest.raises(ValueError, match="holds no boxes"):
        mean_average_precision([dets([], [])], [dets([], [])])


def test_detections_check_their_shapes() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        dets([[0, 0, 1, 1], [0, 0, 2, 2]], ["a"])
    with pytest.raises(ValueError, match="boxes must be \\(N, 4\\)"):
        Detections(np.zeros((2, 3)), ("a", "b"))


# --- Florence-2 location text ------------------------------------------------------------------------


def test_quantize_follows_florence2_bins() -> None:
    # 1000 bins across the side: coord / (size / 1000), floored, clamped to 0..999.
    bins = quantize_boxes(np.array([[0.0, 0.0, 128.0, 64.0], [12.8, 6.4, 64.05, 127.99]]), (128, 128))
    np.testing.assert_array_equal(bins, [[0, 0, 999, 500], [100, 50, 500, 999]])


def test_dequantize_takes_bin_centres() -> None:
    boxes = dequantize_boxes(np.array([[100, 200, 300, 400]]), (451, 300))
    np.testing.assert_allclose(boxes, [[45.3255, 60.15, 135.5255, 120.15]])
    # transformers' post-processor then truncates to int: its documented answer for this case.
    np.testing.assert_array_equal(boxes.astype(int), [[45, 60, 135, 120]])


def test_location_text_round_trips_through_the_parser() -> None:
    boxes = np.array([[10, 20, 60, 70], [80, 5, 120, 40]], dtype=np.float64)
    text = location_text(["circle", "square"], boxes, (128, 128))
    assert text == "circle<loc_78><loc_156><loc_468><loc_546>square<loc_625><loc_39><loc_937><loc_312>"
    parsed = parse_location_text(f"</s><s>{text}</s>", (128, 128))
    assert parsed.labels == ("circle", "square")
    np.testing.assert_allclose(parsed.boxes, boxes, atol=128 / 1000)  # within one bin


def test_parser_reads_spaced_labels_and_several_boxes_per_phrase() -> None:
    text = "<s> red circle<loc_0><loc_0><loc_500><loc_500><loc_500><loc_500><loc_999><loc_999> star<loc_1>"
    parsed = parse_location_text(text, (1000, 1000))
    assert parsed.labels == ("red circle", "red circle")  # the dangling <loc_1> after "star" is no box
    np.testing.assert_allclose(parsed.boxes, [[0.5, 0.5, 500.5, 500.5], [500.5, 500.5, 999.5, 999.5]])


def test_parser_finds_nothing_in_plain_text() -> None:
    parsed = parse_location_text("</s><s>a red circle</s>", (128, 128))
    assert parsed.boxes.shape == (0, 4) and parsed.labels == ()


def test_location_text_refuses_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        location_text(["circle"], np.zeros((2, 4)), (128, 128))
    with pytest.raises(ValueError, match="image_size is \\(width, height\\)"):
        quantize_boxes(np.zeros((1, 4)), (0, 128))
