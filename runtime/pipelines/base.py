"""What every run-time pipeline answers to: the build, verification, calibration and the CLI talk
to a model family only through this protocol, so adding a model is adding its pipeline.

``flow`` is the model's data flow: which components read recorded inputs (``sources``) and how
the others are fed from their outputs. The build runs it on the PyTorch reference to record every
component's inputs and outputs, calibration on the FP32 graphs, and a pipeline's task metrics may
run it on the engines under test, end to end.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.executor import ComponentRuns, Executor, ReferenceSet
from trtdeploy.runtime.reports import Outputs, TaskResult


@dataclass(frozen=True)
class RunRequest:
    """What `trtdeploy run` was asked: images, and the options a pipeline may take. Each pipeline
    uses the options it knows and refuses the others, naming them."""

    images: tuple[Path, ...]
    options: Mapping[str, Any] = field(default_factory=dict)  # option name (as typed) -> value
    target: str = "onnxruntime"
    threads: int | None = None
    out_dir: Path | None = None
    as_json: bool = False


class HoldsEngines(abc.ABC):
    """A pipeline's engines are released by close(), or on leaving ``with Pipeline.from_bundle(...)``
    (sessions and GPU buffers are not left to the garbage collector)."""

    @abc.abstractmethod
    def held_engines(self) -> Iterable[Engine]:
        """Every engine the pipeline opened."""

    def close(self) -> None:
        for engine in self.held_engines():
            engine.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Pipeline(Protocol):
    """What the build, verification and the CLI need of every pipeline class."""

    # Components fed by recorded inputs; the flow feeds the others from their outputs.
    sources: ClassVar[tuple[str, ...]]
    # The task metric names a budget may set minimums for (anything else is a misspelling).
    task_names: ClassVar[frozenset[str]]
    # The `trtdeploy run` options this pipeline reads ("--labels", ...).
    run_options: ClassVar[frozenset[str]]

    @classmethod
    def from_bundle(cls, bundle: Bundle, target: str = ..., *, threads: int | None = None) -> Pipeline: ...

    @staticmethod
    def flow(run: Executor, sources: Outputs, config: Mapping[str, Any]) -> ComponentRuns:
        """Every component's inputs and outputs, from the sources' recorded inputs."""
        ...

    @staticmethod
    def task_metrics(
        manifest: Manifest, run: Executor, reference: ReferenceSet, actual: Outputs
    ) -> list[TaskResult]:
        """The task metrics of ``run``'s engines; ``actual`` holds each component's outputs on its
        recorded inputs, already computed by verification."""
        ...

    @staticmethod
    def tuning_tasks(run: Executor, runs: ComponentRuns, config: Mapping[str, Any]) -> Outputs:
        """Task references for judging precision candidates on a calibration batch (``runs``: the
        flow on ``run``, the FP32 graphs), where the task metrics compare whole answers rather than
        the components' outputs: what ``run`` answers, in the form the bundle's task reference has."""
        ...

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> None:
        """Refuse (ArtifactError) pipeline settings outside the ranges the pipeline can honour."""
        ...

    @classmethod
    def run_cli(cls, bundle: Bundle, request: RunRequest) -> Sequence[str]:
        """`trtdeploy run`: the lines to print (JSON when request.as_json)."""
        ...
