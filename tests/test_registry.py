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


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_graph_is_traced_with_eager_attention_and_computes_its_reference(name: str) -> None:
    """The exporter traces each graph under its context (eager attention at least, models/attention.py)
    and the reference runs the model as is: both compute the same numbers at the check sizes."""
    import numpy as np
    import torch

    recipe = get_recipe(name)
    model = recipe.load("tiny").model
    rng = np.random.default_rng(9)
    for component in recipe.components(model):
        if component.traced_under is None:
            continue
        feeds = component.random_inputs(component.check_sizes, rng)
        args = [torch.from_numpy(feeds[n]) for n in component.io.input_names]
        with torch.inference_mode():
            native = component.wrapper(model)(*args)
            with component.traced_under(model):
                traced = component.wrapper(model)(*args)
        natives = native if isinstance(native, tuple) else (native,)
        theirs = traced if isinstance(traced, tuple) else (traced,)
        for out, a, b in zip(component.io.output_names, natives, theirs, strict=True):
            scale = max(
                1.0, float(a.abs().max())
            )  # random-weight logits reach thousands: float rounding scales
            torch.testing.assert_close(
                b, a, rtol=1e-5, atol=1e-5 * scale, msg=f"{name}/{component.name}/{out}"
            )
    traced_names = {c.name for c in recipe.components(model) if c.traced_under is not None}
    # Florence-2's token embedding has no attention to trace; CLIPSeg's decoder keeps SDPA for FP16
    # (models/clipseg.py says why).
    untraced = {"embed_tokens", "decoder"} if name == "clipseg" else {"embed_tokens"}
    assert traced_names == {c.name for c in recipe.components(model)} - untraced
