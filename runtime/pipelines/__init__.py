"""Run-time pipelines, one per model family, listed explicitly.

A pipeline turns images and text into task outputs over a bundle's engines, says how its
components feed each other (its flow) and computes the task metrics verification gates on. Adding
a model adds its pipeline here. The protocol they all follow is in base.py.
"""

from __future__ import annotations

from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.pipelines.base import Pipeline, RunRequest
from trtdeploy.runtime.pipelines.clip import ClipPipeline
from trtdeploy.runtime.pipelines.clipseg import ClipSegPipeline
from trtdeploy.runtime.pipelines.florence2 import Florence2Pipeline

PIPELINES: dict[str, type[Pipeline]] = {
    "clip": ClipPipeline,
    "clipseg": ClipSegPipeline,
    "florence2": Florence2Pipeline,
}

__all__ = ["PIPELINES", "Pipeline", "RunRequest", "pipeline_class"]


def pipeline_class(name: str) -> type[Pipeline]:
    if name not in PIPELINES:
        raise ArtifactError(
            f"the bundle asks for the pipeline {name!r}, which this trtdeploy does not have "
            f"(it has {sorted(PIPELINES)}). Upgrade trtdeploy on this host."
        )
    return PIPELINES[name]
