"""The input validator: every way a feed can be wrong is rejected with a message that names it."""

from __future__ import annotations

import numpy as np
import pytest

from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec, validate_feeds

TEXT = IOSpec(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "sequence"), value_range=(0, 99)),
        TensorSpec("attention_mask", "int64", ("batch", "sequence"), value_range=(0, 1)),
    ),
    outputs=(TensorSpec("embeds", "float32", ("batch", 8)),),
    dims={"batch": DimRange(1, 4, 8), "sequence": DimRange(1, 8, 16)},
)
IMAGE = IOSpec(
    inputs=(TensorSpec("pixel_values", "float32", ("batch", 3, 4, 4)),),
    outputs=(TensorSpec("embeds", "float32", ("batch", 8)),),
    dims={"batch": DimRange(1, 2, 4)},
)


def text_feeds(batch: int = 2, length: int = 5) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.ones((batch, length), dtype=np.int64),
        "attention_mask": np.ones((batch, length), dtype=np.int64),
    }


def test_valid_feeds_come_back_contiguous() -> None:
    ids = np.ones((5, 2), dtype=np.int64).T  # a transposed, non-contiguous view
    out = validate_feeds("text", TEXT, {"input_ids": ids, "attention_mask": np.ones((2, 5), np.int64)})
    assert out["input_ids"].flags.c_contiguous
    np.testing.assert_array_equal(out["input_ids"], ids)


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"input_ids": np.ones((2, 5), np.int64)}, "missing ['attention_mask']"),
        ({**text_feeds(), "token_type_ids": np.ones((2, 5), np.int64)}, "unexpected 'token_type_ids'"),
        (
            {"input_idz": np.ones((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64)},
            "did you mean 'input_ids'",
        ),
        ({**text_feeds(), "input_ids": np.ones((2, 5), np.int32)}, "expected dtype int64, got int32"),
        ({**text_feeds(), "input_ids": [[1, 2, 3]]}, "expected a numpy.ndarray of int64, got list"),
        ({**text_feeds(), "input_ids": np.ones((2, 5, 1), np.int64)}, "expected rank 2"),
        ({**text_feeds(), "input_ids": np.ones(5, np.int64)}, "expected rank 2"),
        (text_feeds(batch=9), "axis 0 (batch) must be between 1 and 8, got 9"),
        (text_feeds(length=17), "axis 1 (sequence) must be between 1 and 16, got 17"),
        (text_feeds(batch=0), "axis 0 (batch) must be between 1 and 8, got 0"),
        ({**text_feeds(), "attention_mask": np.ones((3, 5), np.int64)}, "'input_ids' has batch=2"),
        (
            {**text_feeds(), "input_ids": np.full((2, 5), 100, np.int64)},
            "values must lie in [0, 99], got values in [100, 100]",
        ),
        ({**text_feeds(), "input_ids": np.full((2, 5), -1, np.int64)}, "values must lie in [0, 99]"),
        ({**text_feeds(), "attention_mask": np.full((2, 5), 2, np.int64)}, "values must lie in [0, 1]"),
    ],
)
def test_bad_text_feeds_are_rejected(feeds: dict[str, object], message: str) -> None:
    with pytest.raises(InputValidationError) as info:
        validate_feeds("text", TEXT, feeds)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((1, 3, 4, 5), np.float32), "axis 3 must be 4"),
        (np.zeros((1, 4, 4, 4), np.float32), "axis 1 must be 3"),
        (np.zeros((1, 3, 4, 4), np.float64), "expected dtype float32, got float64"),
        (np.zeros((1, 3, 4, 4), np.float16), "expected dtype float32, got float16"),
        (np.full((1, 3, 4, 4), np.nan, np.float32), "48 of 48 values are NaN or Inf"),
        (np.array([[[[np.inf] * 4] * 4] * 3], np.float32), "NaN or Inf"),
        # ONNX Runtime runs a batch that is a multiple of a static size; the validator does not.
        (np.zeros((2, 3, 4, 4, 1), np.float32), "expected rank 4"),
        (np.zeros((5, 3, 4, 4), np.float32), "between 1 and 4, got 5"),
    ],
)
def test_bad_pixel_feeds_are_rejected(pixels: np.ndarray, message: str) -> None:
    with pytest.raises(InputValidationError) as info:
        validate_feeds("vision", IMAGE, {"pixel_values": pixels})
    assert message in str(info.value)


def test_non_mapping_feeds_are_rejected() -> None:
    with pytest.raises(InputValidationError, match="expected a mapping"):
        validate_feeds("vision", IMAGE, [np.zeros((1, 3, 4, 4), np.float32)])  # type: ignore[arg-type]


def test_non_finite_can_be_allowed_explicitly() -> None:
    pixels = np.full((1, 3, 4, 4), np.inf, np.float32)
    assert validate_feeds("vision", IMAGE, {"pixel_values": pixels}, allow_non_finite=True)


def test_iospec_json_round_trip_and_profiles() -> None:
    again = IOSpec.from_json(TEXT.to_json())
    assert again == TEXT
    assert TEXT.profile_shapes()["input_ids"] == ((1, 1), (4, 8), (8, 16))


def test_dim_without_range_is_a_spec_error() -> None:
    with pytest.raises(ValueError, match="has no range"):
        IOSpec(inputs=(TensorSpec("x", "float32", ("batch",)),), outputs=())


def test_dim_range_order_is_checked() -> None:
    with pytest.raises(ValueError):
        DimRange(4, 2, 8)
