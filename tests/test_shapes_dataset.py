"""The shapes dataset: deterministic, splits that never overlap, ground truth that agrees with itself."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trtdeploy.calibration import shapes
from trtdeploy.calibration.images import CALIBRATION_IMAGES, EVALUATION_IMAGES


@pytest.fixture(scope="module")
def mixed() -> list[shapes.ShapesSample]:
    """Samples from every split, including the last index of the finite ones."""
    out = (
        shapes.samples("train", 0, 40)
        + shapes.samples("calibration", 0, 20)
        + shapes.samples("evaluation", 0, 40)
    )
    return [*out, shapes.sample("calibration", 9_999), shapes.sample("evaluation", 9_999)]


def test_a_sample_is_a_function_of_split_and_index_alone() -> None:
    first = shapes.sample("evaluation", 17)
    shapes.samples("train", 0, 5)  # other work in between must not matter
    again = shapes.sample("evaluation", 17)
    assert np.array_equal(first.image, again.image)
    assert first.caption == again.caption and first.referring_expression == again.referring_expression
    assert np.array_equal(first.boxes, again.boxes) and np.array_equal(
        first.referring_mask, again.referring_mask
    )


def test_different_indices_give_different_images() -> None:
    images = [s.image for s in shapes.samples("train", 0, 10)]
    assert all(not np.array_equal(a, b) for a, b in itertools.combinations(images, 2))


def test_split_seed_ranges_never_overlap() -> None:
    ranges = sorted((s.seeds for s in shapes.SPLITS.values()), key=lambda r: r.start)
    for before, after in itertools.pairwise(ranges):
        assert before.stop <= after.start, f"{before} overlaps {after}"
    assert {s.name for s in shapes.SPLITS.values()} == {"train", "calibration", "evaluation"}


def test_evaluation_backgrounds_are_never_training_or_calibration_backgrounds() -> None:
    evaluation = {image.name for image in shapes.SPLITS["evaluation"].backgrounds}
    for name in ("train", "calibration"):
        seen = {image.name for image in shapes.SPLITS[name].backgrounds}
        assert not evaluation & seen, f"{name} shares backgrounds {evaluation & seen} with evaluation"
    assert evaluation == {image.name for image in EVALUATION_IMAGES}
    assert {image.name for image in shapes.SPLITS["train"].backgrounds} <= {
        image.name for image in CALIBRATION_IMAGES
    }


def test_samples_record_their_split_seed_and_background(mixed: list[shapes.ShapesSample]) -> None:
    for s in mixed:
        split = shapes.SPLITS[s.split]
        assert s.seed == split.first_seed + s.index and s.seed in split.seeds
        assert s.background in {image.name for image in split.backgrounds}


def test_indices_outside_a_split_are_refused() -> None:
    with pytest.raises(IndexError, match="split 'evaluation' has samples 0..9999; asked for 10000"):
        shapes.sample("evaluation", 10_000)
    with pytest.raises(IndexError, match="asked for -1"):
        shapes.sample("train", -1)
    with pytest.raises(KeyError, match="unknown shapes split 'test'"):
        shapes.sample("test", 0)


def test_images_are_rgb_uint8_at_the_render_size(mixed: list[shapes.ShapesSample]) -> None:
    for s in mixed:
        assert s.image.shape == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3) and s.image.dtype == np.uint8


def test_every_mask_lies_inside_its_box_and_touches_all_four_sides(mixed: list[shapes.ShapesSample]) -> None:
    for s in mixed:
        for obj in s.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= shapes.IMAGE_SIZE and 0 <= y0 < y1 <= shapes.IMAGE_SIZE
            inside = np.zeros_like(obj.mask)
            inside[y0:y1, x0:x1] = True
            assert obj.mask.any() and not (obj.mask & ~inside).any(), "mask pixels outside the box"
            rows, cols = np.nonzero(obj.mask)
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x0, y0, x1, y1), (
                "box is not tight"
            )


def test_objects_do_not_overlap_and_are_distinct_kinds(mixed: list[shapes.ShapesSample]) -> None:
    for s in mixed:
        assert 1 <= len(s.objects) <= shapes.MAX_OBJECTS
        for a, b in itertools.combinations(s.objects, 2):
            assert not (a.mask & b.mask).any()
        assert len({obj.name for obj in s.objects}) == len(s.objects), (
            "two objects of the same colour and shape"
        )


def test_objects_come_largest_first_in_distinct_size_classes(mixed: list[shapes.ShapesSample]) -> None:
    order = [name for name, _ in shapes.SIZES]
    for s in mixed:
        ranks = [order.index(obj.size) for obj in s.objects]
        assert ranks == sorted(set(ranks)), f"size classes {[obj.size for obj in s.objects]} out of order"


def test_objects_sit_on_the_patch_grid(mixed: list[shapes.ShapesSample]) -> None:
    """Squares and crosses fill the left and top edges of the square they are drawn in, so their
    boxes start where that square does: on the PLACEMENT_GRID, for every split."""
    corners = [obj.box[:2] for s in mixed for obj in s.objects if obj.shape in ("square", "cross")]
    assert len(corners) > 20
    assert all(x % shapes.PLACEMENT_GRID == 0 and y % shapes.PLACEMENT_GRID == 0 for x, y in corners), corners


def test_caption_lists_every_shape_in_order(mixed: list[shapes.ShapesSample]) -> None:
    for s in mixed:
        parts = s.caption.split(" and ")
        assert parts == [f"a {obj.colour} {obj.shape}" for obj in s.objects]
        assert s.label == f"{s.objects[0].colour} {s.objects[0].shape}" and s.label in shapes.LABELS
        assert shapes.label_prompt(s.label) == parts[0]


def test_referring_expression_names_exactly_the_masked_object(mixed: list[shapes.ShapesSample]) -> None:
    for s in mixed:
        target = s.objects[s.referent]
        assert s.referring_expression == f"the {target.colour} {target.shape}"
        assert np.array_equal(s.referring_mask, target.mask)
        assert [f"the {obj.name}" for obj in s.objects].count(s.referring_expression) == 1


def test_boxes_and_labels_match_the_objects(mixed: list[shapes.ShapesSample]) -> None:
    for s in mixed:
        assert s.boxes.shape == (len(s.objects), 4) and s.boxes.dtype == np.float32
        assert s.box_labels == tuple(obj.shape for obj in s.objects)
        assert all(label in shapes.SHAPES for label in s.box_labels)


def test_the_shape_is_painted_in_its_colour(mixed: list[shapes.ShapesSample]) -> None:
    """The mask's pixels are near the object's colour: a mask that missed the paint would fail."""
    for s in mixed:
        for obj in s.objects:
            mean = s.image[obj.mask].astype(np.float64).mean(axis=0)
            nearest = min(
                shapes.COLOURS, key=lambda c: float(np.sum((np.array(shapes.COLOURS[c]) - mean) ** 2))
            )
            assert nearest == obj.colour, f"{obj.name} painted as {mean.round()}"


def test_the_label_set_covers_every_colour_and_shape_once() -> None:
    assert len(shapes.LABELS) == len(set(shapes.LABELS)) == len(shapes.COLOURS) * len(shapes.SHAPES)


def test_a_sample_of_many_covers_every_class_and_object_count() -> None:
    many = shapes.samples("calibration", 0, 300)
    assert {s.label for s in many} == set(shapes.LABELS)
    assert {len(s.objects) for s in many} == {1, 2, 3}
