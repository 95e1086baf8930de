"""torch -> ONNX for one component, and the checks that the graph keeps the recipe's contract.

The exporter can silently fix a dynamic dim to its example value (torch.export's Dim.AUTO falls
back to static without an error), so after every export the graph's inputs and outputs are read
back and every dim the spec calls dynamic must still be symbolic.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch

from trtdeploy.models.recipe import Component
from trtdeploy.runtime.errors import ExportError
from trtdeploy.runtime.specs import IOSpec

# One protobuf can't exceed 2 GiB; above a margin below that, weights go to an external file.
EXTERNAL_DATA_BYTES = 1_800_000_000
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class ExportSettings:
    opset: int = 18  # >= 17 keeps LayerNormalization one node (TensorRT parses opsets 9..25)
    seed: int = 1234  # for the random trace inputs


class OnnxFromComponent:
    """Stage: export one component of a reference model to an ONNX file and check the graph."""

    def __init__(
        self, component: Component, model: torch.nn.Module, settings: ExportSettings | None = None
    ) -> None:
        self.component = component
        self.model = model
        self.settings = settings or ExportSettings()

    def __call__(self, path: Path) -> Path:
        component, settings = self.component, self.settings
        wrapper = component.wrapper(self.model)
        # The TorchScript exporter restores the wrapper's own training flag on every child after
        # export, so a wrapper left in train mode would flip the reference model to train mode.
        wrapper.eval()
        rng = np.random.default_rng(settings.seed)
        feeds = component.random_inputs(component.trace_sizes, rng)
        # Wrappers take their inputs positionally in the interface's order (a decoder's many past
        # tensors as *args), so every graph is traced the same way.
        args = tuple(torch.from_numpy(feeds[name]) for name in component.io.input_names)
        external = _parameter_bytes(self.model) > EXTERNAL_DATA_BYTES
        kwargs: dict[str, Any] = {
            "input_names": list(component.io.input_names),
            "output_names": list(component.io.output_names),
            "opset_version": settings.opset,
        }
        exporter: Literal["dynamo", "torchscript"] = (
            "dynamo" if component.exporter == "dynamo" else "torchscript"
        )
        if exporter == "dynamo":
            shapes = _dynamic_shapes(component.io, _named_parameters(wrapper))
            kwargs.update(dynamo=True, dynamic_shapes=shapes, external_data=external)
        else:
            kwargs.update(dynamo=False, dynamic_axes=_dynamic_axes(component.io))
        path.parent.mkdir(parents=True, exist_ok=True)
        log = io.StringIO()
        try:
            traced_under = component.traced_under or (lambda _model: contextlib.nullcontext())
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(log),
                _quiet_logger("torch.onnx"),
                traced_under(self.model),
            ):
                warnings.simplefilter("ignore")  # exporter chatter; failures still raise
                torch.onnx.export(wrapper, args, str(path), **kwargs)
        except Exception as exc:
            raise ExportError(f"{component.name}: torch.onnx.export ({exporter}) failed: {exc}") from exc
        _drop_stack_traces(path)
        check_exported_graph(path, component.name, component.io, settings.opset)
        return path


def _drop_stack_traces(path: Path) -> None:
    """Remove the Python stack trace torch.onnx records on every node: it names the files of the
    machine that built the bundle (its checkout, its virtual environment), so the same weights would
    export to different bytes in another folder, and a shipped bundle would carry the builder's paths.
    The module scopes (which PyTorch module traced a node) stay: the layer report names layers by them."""
    model = onnx.load(str(path), load_external_data=False)
    changed = False
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE_KEY]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
            changed = True
    if changed:  # the weights stay where they are: external data is referenced, not rewritten
        onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a logger's warnings (e.g. "torchvision is not installed") for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _named_parameters(wrapper: torch.nn.Module) -> int | None:
    """How many inputs the wrapper's forward names before a ``*args`` (None: it has none)."""
    parameters = list(inspect.signature(wrapper.forward).parameters.values())
    if not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)


def _dynamic_shapes(io: IOSpec, named: int | None) -> tuple[Any, ...]:
    """torch.export dims per input, shaped like the wrapper's signature (``*args`` nested last).
    A dim that may be 0 is declared from 1 (torch.export does not trace empty sizes); the ONNX dim
    is symbolic either way, and the engines accept the spec's true minimum."""
    dims = {name: torch.export.Dim(name, min=max(1, r.min), max=r.max) for name, r in io.dims.items()}
    per_input = [{axis: dims[d] for axis, d in enumerate(s.shape) if isinstance(d, str)} for s in io.inputs]
    if named is None:
        return tuple(per_input)
    return (*per_input[:named], tuple(per_input[named:]))


def _dynamic_axes(io: IOSpec) -> dict[str, dict[int, str]]:
    return {
        s.name: {axis: d for axis, d in enumerate(s.shape) if isinstance(d, str)}
        for s in (*io.inputs, *io.outputs)
    }


def check_exported_graph(path: Path, component: str, io: IOSpec, opset: int) -> None:
    """Run the ONNX checker and shape inference, then hold the graph's I/O to the spec."""
    try:
        onnx.checker.check_model(str(path), full_check=True)  # by path: works with external data
    except Exception as exc:
        raise ExportError(f"{component}: the exported graph fails the ONNX checker: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    got_opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if got_opset < opset:
        raise ExportError(f"{component}: the graph declares opset {got_opset}, expected at least {opset}.")
    graph_inputs = {i.name: i for i in model.graph.input}
    graph_outputs = {o.name: o for o in model.graph.output}
    if list(graph_inputs) != list(io.input_names):
        raise ExportError(
            f"{component}: graph inputs are {list(graph_inputs)}, expected {list(io.input_names)}."
        )
    if list(graph_outputs) != list(io.output_names):
        raise ExportError(
            f"{component}: graph outputs are {list(graph_outputs)}, expected {list(io.output_names)}."
        )
    problems = []
    for spec in (*io.inputs, *io.outputs):
        value = graph_inputs.get(spec.name) or graph_outputs[spec.name]
        tensor_type = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor_type.elem_type, str(tensor_type.elem_type))
        if dtype != spec.dtype:
            problems.append(f"{spec.name}: dtype {dtype}, expected {spec.dtype}")
        dims = tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            problems.append(f"{spec.name}: rank {len(dims)}, expected {len(spec.shape)}")
            continue
        for axis, (want, got) in enumerate(zip(spec.shape, dims, strict=True)):
            if isinstance(want, int) and got.HasField("dim_value") and got.dim_value != want:
                problems.append(f"{spec.name}: axis {axis} is {got.dim_value}, expected {want}")
            if isinstance(want, str) and got.HasField("dim_value"):
                problems.append(
                    f"{spec.name}: axis {axis} ({want}) was fixed to {got.dim_value} by the exporter; it must stay "
                    "dynamic (look for a Python int() or len() on that size in the model's forward)"
                )
    if problems:
        raise ExportError(
            f"{component}: the exported graph breaks its interface:\n  " + "\n  ".join(problems)
        )
