"""What a recipe is: how one model family becomes deployable.

A recipe names its presets, loads weights (a preset's fixed-seed random init, or a local Hugging
Face folder), lists its components (one graph each, with its export wrapper, interface and the
sizes to trace and check at), records held-out reference inputs and writes the run-time assets
(tokenizer, preprocessing) into the bundle. Accuracy budgets per precision are data in the recipe.
"""

from __future__ import annotations

import abc
import contextlib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from trtdeploy.calibration.data import (
    CalibrationSettings,
    RawCalibrationData,
    raw_calibration_data,
    shapes_calibration_data,
)
from trtdeploy.runtime.bundle_writer import BundleWriter
from trtdeploy.runtime.compare import Budget
from trtdeploy.runtime.errors import UsageError
from trtdeploy.runtime.executor import ComponentRuns
from trtdeploy.runtime.specs import IOSpec

Feeds = dict[str, np.ndarray]


# Trained weights that ship with the project (the tiny shapes models), one folder per preset.
COMMITTED_WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Preset:
    """A named architecture, random-initialised from ``seed``; or, with ``weights``, the trained
    checkpoint in that folder of COMMITTED_WEIGHTS (its config.json is the architecture)."""

    name: str
    description: str
    config: Callable[[], object] | None  # builds the transformers config; None for committed weights
    seed: int = 0
    weights: str | None = None


@dataclass(frozen=True)
class Component:
    """One graph of a model.

    ``wrapper`` builds the export module (keyword inputs named as in ``io``, outputs in the order
    of ``io.outputs``); ``random_inputs`` makes valid feeds at given dim sizes. The export traces
    at ``trace_sizes`` and is checked at ``check_sizes``, which must differ in every dynamic dim
    so a dim the exporter silently fixed is caught. ``traced_under``, when given, is a context the
    exporter traces ``wrapper`` in: the same numbers in a layout the engines run faster; the
    reference (and so every check of the graph) runs ``wrapper`` outside it.
    """

    name: str
    io: IOSpec
    wrapper: Callable[[torch.nn.Module], torch.nn.Module]
    random_inputs: Callable[[Mapping[str, int], np.random.Generator], Feeds]
    trace_sizes: Mapping[str, int]
    check_sizes: Mapping[str, int]
    exporter: str = "dynamo"
    # ONNX Runtime's transformer-optimizer model type ("bart", "swin") for an FP32 fast form of
    # this graph on that runtime (calibration/ort_forms.py); None: the graph itself serves.
    ort_fusion: str | None = None
    traced_under: Callable[[torch.nn.Module], contextlib.AbstractContextManager[None]] | None = None

    def __post_init__(self) -> None:
        for dim in self.io.input_dims:
            if self.trace_sizes.get(dim) == self.check_sizes.get(dim):
                raise ValueError(f"{self.name}: dim {dim!r} is traced and checked at the same size")


@dataclass
class LoadedModel:
    """A reference model in eval mode, with what identifies its weights."""

    recipe: Recipe
    preset: str
    model: torch.nn.Module
    weights: dict[str, str] = field(default_factory=dict)  # {"source": ..., "sha256": ...}
    folder: Path | None = None  # the checkpoint folder, when the weights came from one

    @functools.cached_property  # read once: the build asks at each stage
    def trained_on_shapes(self) -> bool:
        """A shapes model: its reference, calibration and task metrics use the shapes dataset."""
        from trtdeploy.models.shapes.card import trained_on_shapes

        return self.folder is not None and trained_on_shapes(self.folder)


class Recipe(abc.ABC):
    """One model family. Subclasses fill in the abstract parts; ``load`` is shared."""

    name: ClassVar[str]
    pipeline: ClassVar[str]
    presets: ClassVar[Mapping[str, Preset]]
    default_preset: ClassVar[str]
    # Calibration samples the INT8 fallback judges a candidate on (the last ones); None: the last
    # batch, enough where the task metric reads every sample's outputs. A generation budget over
    # one batch's cases passes candidates that held-out images then reject.
    tuning_samples: ClassVar[int | None] = None

    def load(self, preset: str | None = None, weights: Path | None = None) -> LoadedModel:
        """The reference model from a local weights folder, or a preset's fixed-seed random init."""
        from trtdeploy.models.weights import load_weights_folder, state_dict_sha256

        if weights is not None:
            if preset is not None:
                raise UsageError(
                    "give either a preset or a weights folder, not both: the folder's config.json "
                    "defines the architecture."
                )
            folder: Path | None = Path(weights)
            model = load_weights_folder(weights, self.model_class(), self.config_model_types())
            name = "weights"
            source = {"source": "folder", "folder": Path(weights).name}
        else:
            name = preset or self.default_preset
            if name not in self.presets:
                raise UsageError(
                    f"{self.name} has no preset {name!r}; choose one of {sorted(self.presets)} "
                    "or pass a weights folder."
                )
            spec = self.presets[name]
            if spec.weights is not None:
                folder = COMMITTED_WEIGHTS / spec.weights
                model = load_weights_folder(folder, self.model_class(), self.config_model_types())
                source = {"source": "committed", "folder": spec.weights}
            else:
                assert spec.config is not None, f"preset {name} has neither a config nor weights"
                folder = None
                torch.manual_seed(spec.seed)
                model = self.model_class()(spec.config())
                source = {"source": "preset", "seed": str(spec.seed)}
        model.eval()
        return LoadedModel(self, name, model, {**source, "sha256": state_dict_sha256(model)}, folder)

    def raw_calibration(self, loaded: LoadedModel, settings: CalibrationSettings) -> RawCalibrationData:
        """Raw calibration images and prompts: the user's folder, else the data the model knows:
        the shapes calibration split for a shapes model, the built-in photographs otherwise."""
        if settings.folder is None and loaded.trained_on_shapes:
            return shapes_calibration_data(settings)
        return raw_calibration_data(settings)

    @abc.abstractmethod
    def model_class(self) -> type: ...

    @abc.abstractmethod
    def config_model_types(self) -> set[str]:
        """The ``model_type`` values a weights folder's config.json may declare."""

    @abc.abstractmethod
    def components(self, model: torch.nn.Module) -> tuple[Component, ...]: ...

    @abc.abstractmethod
    def write_assets(self, loaded: LoadedModel, writer: BundleWriter) -> dict[str, str]:
        """Write run-time assets (tokenizer, pipeline.json) and return role -> relative path."""

    @abc.abstractmethod
    def reference_inputs(
        self, loaded: LoadedModel, writer: BundleWriter, assets: Mapping[str, str]
    ) -> dict[str, Feeds]:
        """Held-out real inputs of the pipeline's source components, prepared with the bundle's own
        run-time assets. The pipeline's flow feeds the other components from their outputs (a
        chained component may get some recorded inputs of its own here, e.g. an attention mask)."""

    def task_references(
        self, loaded: LoadedModel, writer: BundleWriter, assets: Mapping[str, str], runs: ComponentRuns
    ) -> dict[str, Feeds]:
        """Whole answers of the reference model that the pipeline's task metrics compare with (e.g.
        the tokens transformers' generate() produces), by task; none by default."""
        return {}

    @abc.abstractmethod
    def calibration_feeds(
        self,
        loaded: LoadedModel,
        raw: RawCalibrationData,
        writer: BundleWriter,
        assets: Mapping[str, str],
        batch: int,
    ) -> dict[str, tuple[Feeds, ...]]:
        """Calibration batches per component from raw images and prompts, through the same
        preprocessing as the reference inputs. An inner component (a decoder) is fed what its
        upstream components produce on these inputs in PyTorch, never random tensors."""

    @abc.abstractmethod
    def budget(self, precision: str) -> Budget: ...
