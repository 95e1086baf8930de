"""Run-length masks: what the shapes bundles store their ground-truth masks as."""

from __future__ import annotations

import numpy as np
import pytest

from trtdeploy.calibration import shapes
from trtdeploy.runtime.masks import decode_mask, encode_mask


def test_known_mask_encodes_to_its_runs() -> None:
    mask = np.array([[False, True, True], [True, False, False]])
    assert encode_mask(mask) == [1, 3, 2]


def test_a_mask_starting_inside_begins_with_an_empty_run() -> None:
    mask = np.array([[True, True], [False, True]])
    assert encode_mask(mask) == [0, 2, 1, 1]
    assert np.array_equal(decode_mask([0, 2, 1, 1], (2, 2)), mask)


def test_shapes_masks_round_trip_and_are_compact() -> None:
    for sample in shapes.samples("evaluation", 0, 8):
        for obj in sample.objects:
            runs = encode_mask(obj.mask)
            assert np.array_equal(decode_mask(runs, obj.mask.shape), obj.mask)
            assert len(runs) < obj.mask.size / 20  # a shape is a few runs per row it covers


def test_decode_refuses_runs_that_do_not_fill_the_mask() -> None:
    with pytest.raises(ValueError, match="add up to 2 x 2"):
        decode_mask([1, 2], (2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        decode_mask([5, -1], (2, 2))


def test_encode_refuses_probabilities() -> None:
    with pytest.raises(ValueError, match="boolean"):
        encode_mask(np.zeros((2, 2), dtype=np.float32))
