"""The export checks can fail: a fixed dynamic dim and a graph that disagrees with PyTorch are caught."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from trtdeploy.build import BuildResult
from trtdeploy.export.onnx_export import check_exported_graph
from trtdeploy.export.parity import ExportParity
from trtdeploy.models.clip import RECIPE
from trtdeploy.runtime.errors import ExportError
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec

SPEC = IOSpec(
    inputs=(TensorSpec("x", "float32", ("batch", 4)),),
    outputs=(TensorSpec("y", "float32", ("batch", 4)),),
    dims={"batch": DimRange(1, 2, 8)},
)


def identity_graph(path: Path, batch: int | str) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_symbolic_batch_passes(tmp_path: Path) -> None:
    check_exported_graph(identity_graph(tmp_path / "ok.onnx", "batch"), "c", SPEC, 18)


def test_batch_fixed_by_the_exporter_is_caught(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"x: axis 0 \(batch\) was fixed to 2 by the exporter"):
        check_exported_graph(identity_graph(tmp_path / "fixed.onnx", 2), "c", SPEC, 18)


def test_low_opset_and_wrong_names_are_caught(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset 18, expected at least 20"):
        check_exported_graph(identity_graph(tmp_path / "a.onnx", "batch"), "c", SPEC, 20)
    renamed = IOSpec(
        inputs=(TensorSpec("pixels", "float32", ("batch", 4)),), outputs=SPEC.outputs, dims=SPEC.dims
    )
    with pytest.raises(ExportError, match="graph inputs are \\['x'\\], expected \\['pixels'\\]"):
        check_exported_graph(tmp_path / "a.onnx", "c", renamed, 18)


@pytest.mark.integration
def test_parity_catches_a_graph_from_other_weights(tiny_clip: BuildResult) -> None:
    torch.manual_seed(99)
    other = RECIPE.model_class()(RECIPE.presets["tiny"].config()).eval()
    vision = RECIPE.components(other)[0]
    with pytest.raises(ExportError, match="ONNX Runtime disagrees with PyTorch at sizes \\{'batch': 3\\}"):
        ExportParity(vision, other)(tiny_clip.bundle / "vision.onnx")
    loaded = RECIPE.load("tiny")
    results = ExportParity(RECIPE.components(loaded.model)[0], loaded.model)(tiny_clip.bundle / "vision.onnx")
    assert max(r.max_abs for r in results) < 1e-4 and min(r.cosine for r in results) > 0.99999


def test_exported_graphs_name_no_file_of_the_building_machine(tiny_clip: BuildResult) -> None:
    """torch.onnx records a stack trace per node (this checkout's and its venv's paths); the bundle's
    graphs drop it, so a shipped bundle names no file of the machine that built it, while the module
    scopes the layer report reads stay."""
    repo = str(Path(__file__).resolve().parents[1])
    for graph in ("vision.onnx", "text.onnx"):
        path = tiny_clip.bundle / graph
        assert repo.encode() not in path.read_bytes(), f"{graph} names a path of this checkout"
        nodes = onnx.load(str(path)).graph.node
        keys = {p.key for n in nodes for p in n.metadata_props}
        assert "pkg.torch.onnx.stack_trace" not in keys
        assert "pkg.torch.onnx.name_scopes" in keys
