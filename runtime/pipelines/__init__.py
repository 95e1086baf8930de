"""Run-time pipelines, one per model family, listed explicitly.

A pipeline turns images and text into task outputs over a bundle's engines, and names the task
metric verification uses. Adding a model adds its pipeline here.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.pipelines.clip import ClipPipeline
from trtdeploy.runtime.pipelines.clipseg import ClipSegPipeline
from trtdeploy.runtime.verify import Outputs, TaskResult


class Pipeline(Protocol):
    """What the build, verification and the CLI need of every pipeline class."""

    # Components fed by other components' outputs rather than by recorded inputs (CLIPSeg's decoder).
    chained: ClassVar[tuple[str, ...]]

    @classmethod
    def from_bundle(cls, bundle: Bundle, target: str = ..., *, threads: int | None = None) -> Pipeline: ...

    @staticmethod
    def chained_feeds(outputs: Outputs) -> dict[str, dict[str, np.ndarray]]:
        """Feeds of the chained components, from the outputs of the components that feed them."""
        ...

    @staticmethod
    def task_metrics(manifest: Manifest, reference: Outputs, actual: Outputs) -> list[TaskResult]: ...


PIPELINES: dict[str, type[Pipeline]] = {"clip": ClipPipeline, "clipseg": ClipSegPipeline}


def pipeline_class(name: str) -> type[Pipeline]:
    if name not in PIPELINES:
        raise ArtifactError(
            f"the bundle asks for the pipeline {name!r}, which this trtdeploy does not have "
            f"(it has {sorted(PIPELINES)}). Upgrade trtdeploy on this host."
        )
    return PIPELINES[name]
