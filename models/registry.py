"""Every model trtdeploy can build, listed explicitly. Tests are parametrized over this list."""

from __future__ import annotations

from trtdeploy.models.clip import RECIPE as CLIP
from trtdeploy.models.clipseg import RECIPE as CLIPSEG
from trtdeploy.models.florence2 import RECIPE as FLORENCE2
from trtdeploy.models.recipe import Recipe
from trtdeploy.runtime.errors import UsageError

RECIPES: dict[str, Recipe] = {"clip": CLIP, "clipseg": CLIPSEG, "florence2": FLORENCE2}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(
            f"unknown model {name!r}; trtdeploy builds {sorted(RECIPES)} (see `trtdeploy models`)."
        )
    return RECIPES[name]
