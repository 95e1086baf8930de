"""The registry drives the test matrix: every registered model has a tiny preset that builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtdeploy.models.registry import RECIPES, get_recipe
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.pipelines import PIPELINES


def test_every_registered_model_has_a_tiny_preset_and_an_end_to_end_test() -> None:
    for name, recipe in RECIPES.items():
        assert "tiny" in recipe.presets, f"{name} has no tiny preset for CI"
        assert recipe.default_preset in recipe.presets
        assert recipe.pipeline in PIPELINES, f"{name}'s pipeline {recipe.pipeline!r} is not registered"
        end_to_end = Path(__file__).parent / f"test_{name}.py"
        assert end_to_end.is_file(), (
            f"{name} is registered but has no end-to-end test module {end_to_end.name}"
        )


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_components_trace_and_check_at_different_sizes(name: str) -> None:
    recipe = get_recipe(name)
    loaded = recipe.load("tiny")
    for component in recipe.components(loaded.model):
        for dim in component.io.input_dims:
            assert component.trace_sizes[dim] != component.check_sizes[dim]
            assert component.trace_sizes[dim] >= 2  # torch.export specialises sizes 0 and 1


def test_unknown_model() -> None:
    with pytest.raises(ArtifactError, match="unknown model 'resnet'"):
        get_recipe("resnet")
