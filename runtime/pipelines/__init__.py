"""Run-time pipelines, one per model family, listed explicitly.

A pipeline turns images and text into task outputs over a bundle's engines, and names the task
metric verification uses. Adding a model adds its pipeline here.
"""

from __future__ import annotations

from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.pipelines.clip import ClipPipeline

PIPELINES = {"clip": ClipPipeline}


def pipeline_class(name: str) -> type[ClipPipeline]:
    if name not in PIPELINES:
        raise ArtifactError(
            f"the bundle asks for the pipeline {name!r}, which this trtdeploy does not have "
            f"(it has {sorted(PIPELINES)}). Upgrade trtdeploy on this host."
        )
    return PIPELINES[name]
