"""The registry drives the test matrix: every registered model has a tiny preset that builds."""

from __future__ import annotations

import pytest

from trtdeploy.models.registry import RECIPES, get_recipe
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.errors import UsageError
from trtdeploy.runtime.pipelines import PIPELINES
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import verify_bundle


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_registered_model_builds_and_verifies_its_tiny_preset(
    name: str, request: pytest.FixtureRequest
) -> None:
    """Each registered model has a tiny preset and a session fixture `tiny_<model>` that builds it;
    the bundle it made is verified afresh from disk here, so a model registered without a working
    tiny build fails this test (a missing fixture fails it too)."""
    recipe = get_recipe(name)
    assert "tiny" in recipe.presets, f"{name} has no tiny preset for CI"
    assert recipe.default_preset in recipe.presets
    assert recipe.pipeline in PIPELINES, f"{name}'s pipeline {recipe.pipeline!r} is not registered"
    built = request.getfixturevalue(f"tiny_{name}")
    bundle = Bundle.load(built.bundle)
    assert (bundle.manifest.model, bundle.manifest.preset) == (name, "tiny")
    report = verify_bundle(bundle, open_engines(bundle), "onnxruntime")
    assert report.passed and report.tasks, report.to_markdown()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_components_trace_and_check_at_different_sizes(name: str) -> None:
    recipe = get_recipe(name)
    loaded = recipe.load("tiny")
    for component in recipe.components(loaded.model):
        for dim in component.io.input_dims:
            assert component.trace_sizes[dim] != component.check_sizes[dim]
            assert component.trace_sizes[dim] >= 2  # torch.export specialises sizes 0 and 1


def test_unknown_model() -> None:
    with pytest.raises(UsageError, match="unknown model 'resnet'"):
        get_recipe("resnet")
