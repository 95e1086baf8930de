"""The executor: runs a bundle's components by name on one set of engines.

The build (the PyTorch reference, then the candidate ONNX graphs), verification (a committed
bundle on any target) and calibration (the FP32 graphs, then each INT8 candidate) all run graphs
through this one object; what feeds which component is the pipeline's business (its ``flow``), so
"run the components, feed the chained ones" is written once per model, not once per caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import ArtifactError
from trtdeploy.runtime.onnxruntime_backend import OrtEngine, OrtSettings
from trtdeploy.runtime.reports import Feeds, Outputs
from trtdeploy.runtime.specs import IOSpec


class Executor(Mapping[str, Engine]):
    """Named engines, one per component; ``run`` splits a call the profile can't take in one go."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        self._engines = dict(engines)

    def __getitem__(self, component: str) -> Engine:
        if component not in self._engines:
            raise ArtifactError(
                f"no engine for component {component!r}; this executor runs {sorted(self._engines)}."
            )
        return self._engines[component]

    def __iter__(self) -> Iterator[str]:
        return iter(self._engines)

    def __len__(self) -> int:
        return len(self._engines)

    def run(self, component: str, feeds: Feeds) -> Feeds:
        """One component's outputs on ``feeds`` (validated by its engine, chunked to its profile).
        NaN/Inf outputs are returned, not raised: verification reports them per output."""
        return self[component].run_in_chunks(feeds, check_finite=False)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @classmethod
    def for_graphs(
        cls, interfaces: Mapping[str, IOSpec], graphs: Mapping[str, Path], settings: OrtSettings
    ) -> Executor:
        """ONNX Runtime sessions of ONNX files that are not (yet) a committed bundle."""
        engines: dict[str, Engine] = {}
        try:
            for name, io in interfaces.items():
                engines[name] = OrtEngine(name, graphs[name], io, settings)
        except BaseException:
            for engine in engines.values():
                engine.close()
            raise
        return cls(engines)


@dataclass(frozen=True)
class ComponentRuns:
    """What every component read and wrote in one pass of a pipeline's flow."""

    inputs: Outputs
    outputs: Outputs

    def add(self, component: str, feeds: Feeds, outputs: Feeds) -> Feeds:
        self.inputs[component] = feeds
        self.outputs[component] = outputs
        return outputs


@dataclass(frozen=True)
class ReferenceSet:
    """Held-out inputs and the reference outputs of every component, and the task references a
    pipeline compares whole answers with (e.g. the tokens transformers' generate() produced)."""

    inputs: Outputs
    outputs: Outputs
    tasks: Mapping[str, Feeds] = field(default_factory=dict)
    assets: Mapping[str, Path] = field(default_factory=dict)  # role -> file (tokenizer, ...)
