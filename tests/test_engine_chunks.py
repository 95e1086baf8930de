"""Engine.run_in_chunks: sets larger than a profile run in several calls, with the same result."""

from __future__ import annotations

import numpy as np
import pytest

from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec


class PairSums(Engine):
    """A decoder-like engine: every image row with every prompt row -> (images, prompts) sums."""

    def __init__(self, images: int, prompts: int) -> None:
        io = IOSpec(
            inputs=(
                TensorSpec("image", "float32", ("images", 2)),
                TensorSpec("prompt", "float32", ("prompts", 2)),
            ),
            outputs=(TensorSpec("pairs", "float32", ("images", "prompts")),),
            dims={"images": DimRange(1, 1, images), "prompts": DimRange(1, 1, prompts)},
        )
        super().__init__("pairs", io)
        self.calls: list[tuple[int, int]] = []

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image, prompt = feeds["image"], feeds["prompt"]
        self.calls.append((len(image), len(prompt)))
        return {"pairs": image.sum(1)[:, None] * 10 + prompt.sum(1)[None, :]}  # (I, P)


def feeds(images: int, prompts: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.standard_normal((images, 2)).astype(np.float32),
        "prompt": rng.standard_normal((prompts, 2)).astype(np.float32),
    }


def test_two_oversized_dims_are_split_and_reassembled() -> None:
    engine = PairSums(images=2, prompts=3)
    whole = PairSums(images=5, prompts=7).run(feeds(5, 7))["pairs"]  # (5, 7)
    got = engine.run_in_chunks(feeds(5, 7))["pairs"]
    assert np.array_equal(got, whole)
    assert max(i for i, _ in engine.calls) <= 2 and max(p for _, p in engine.calls) <= 3
    assert len(engine.calls) == 3 * 3  # images 2+2+1, each with prompts 3+3+1


def test_a_set_within_the_profile_runs_once() -> None:
    engine = PairSums(images=8, prompts=8)
    engine.run_in_chunks(feeds(5, 7))
    assert engine.calls == [(5, 7)]


def test_a_dim_an_output_lacks_is_not_split_and_run_refuses_it() -> None:
    class Pooled(PairSums):
        def __init__(self) -> None:
            super().__init__(images=2, prompts=8)
            self.io = IOSpec(
                inputs=self.io.inputs,
                outputs=(TensorSpec("pairs", "float32", ("prompts",)),),
                dims=self.io.dims,
            )

        def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"pairs": feeds["prompt"].sum(1)}

    with pytest.raises(InputValidationError, match="between 1 and 2, got 5"):
        Pooled().run_in_chunks(feeds(5, 3))
