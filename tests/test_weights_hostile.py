"""Weights folders that are wrong, damaged or hostile: each is refused with its reason, before any
large allocation, and a complete folder written by save_pretrained() still loads without complaint."""

from __future__ import annotations

import json
import math
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPModel, CLIPSegForImageSegmentation, Florence2ForConditionalGeneration

from trtdeploy.models.recipe import COMMITTED_WEIGHTS
from trtdeploy.models.registry import get_recipe
from trtdeploy.models.weights import load_weights_folder
from trtdeploy.runtime.errors import ArtifactError

CLASSES: dict[str, type] = {
    "clip": CLIPModel,
    "clipseg": CLIPSegForImageSegmentation,
    "florence2": Florence2ForConditionalGeneration,
}


def load(folder: Path, model_type: str = "clip") -> torch.nn.Module:
    return load_weights_folder(folder, CLASSES[model_type], {model_type})


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Complete folders written by save_pretrained(): the tiny CLIP and CLIPSeg presets, Florence-2
    at the shapes size (BART ties lm_head to the shared embedding, so the file omits it)."""
    root = tmp_path_factory.mktemp("saved")
    for name in ("clip", "clipseg"):
        model: Any = get_recipe(name).load("tiny").model
        model.save_pretrained(root / name)
    florence = Florence2ForConditionalGeneration.from_pretrained(COMMITTED_WEIGHTS / "florence2-shapes-tiny")
    florence.save_pretrained(root / "florence2")
    return {name: root / name for name in CLASSES}


def copy_of(saved: dict[str, Path], tmp_path: Path, name: str = "clip") -> Path:
    dest = tmp_path / name
    shutil.copytree(saved[name], dest)
    return dest


def edit_config(folder: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def never_built(monkeypatch: pytest.MonkeyPatch, model_class: type) -> None:
    """Make building or loading the model for real fail the test: the refusal must come first."""

    def boom(*args: object, **kwargs: object) -> None:
        pytest.fail("the model was loaded before the config or the file was checked")

    monkeypatch.setattr(model_class, "from_pretrained", boom)


def write_safetensors(path: Path, header: object, data: bytes, length: int | None = None) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)


def split_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


# -- complete folders ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CLASSES))
def test_complete_save_pretrained_folder_loads_exactly(saved: dict[str, Path], name: str) -> None:
    # load_weights_folder raises on any missing, unexpected or mismatched key: loading is the check.
    model = load(saved[name], name)
    stored = load_file(str(saved[name] / "model.safetensors"))
    state = model.state_dict()
    assert stored and all(torch.equal(state[key], value) for key, value in stored.items())


def test_tied_lm_head_is_not_reported_missing(saved: dict[str, Path]) -> None:
    stored = load_file(str(saved["florence2"] / "model.safetensors"))
    model: Any = load(saved["florence2"], "florence2")
    assert "lm_head.weight" not in stored  # tied: save_pretrained() stores it once, as the embedding
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_sharded_checkpoint_loads(saved: dict[str, Path], tmp_path: Path) -> None:
    model: Any = get_recipe("clip").load("tiny").model
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    loaded = load(tmp_path / "sharded")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_symlink_inside_the_folder_is_fine(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    (folder / "real").mkdir()
    (folder / "model.safetensors").rename(folder / "real" / "weights.safetensors")
    (folder / "model.safetensors").symlink_to(Path("real") / "weights.safetensors")
    load(folder)


# -- parameters that did not come from the checkpoint ------------------------------------------------


def test_unrelated_tensor_is_refused_naming_missing_and_unexpected(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    folder = copy_of(saved, tmp_path)
    expected = len(load_file(str(folder / "model.safetensors")))
    save_file({"foo": torch.zeros(3)}, str(folder / "model.safetensors"))
    with pytest.raises(
        ArtifactError,
        match=rf"{expected} parameters the model needs are missing \(.* and {expected - 5} more\)",
    ) as err:
        load(folder)
    assert "1 tensors the model does not have are present (foo)" in str(err.value)
    assert err.value.exit_code == 3


def test_one_missing_parameter_is_named(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["visual_projection.weight"]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        ArtifactError, match=r"1 parameters the model needs are missing \(visual_projection.weight\)"
    ):
        load(folder)


def test_shape_mismatch_is_named(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    want = tuple(tensors["text_projection.weight"].shape)
    tensors["text_projection.weight"] = torch.zeros(3, 5)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        ArtifactError,
        match=rf"1 tensors have the wrong shape \(text_projection.weight \(3, 5\) where the model has \({want[0]}, {want[1]}\)\)",
    ):
        load(folder)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weight_is_named(saved: dict[str, Path], tmp_path: Path, value: float) -> None:
    folder = copy_of(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["vision_model.post_layernorm.weight"][3] = value
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        ArtifactError, match=r"NaN or Inf in 1 tensors \(vision_model.post_layernorm.weight\)"
    ):
        load(folder)


# -- config.json -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2, 3]", "holds a JSON list; expected a JSON object"),
        (b"42", "holds a JSON int; expected a JSON object"),
        (b'"clip"', "holds a JSON str"),
        (b'{"model_type": "clip", "x": "\xff\xfe"}', "is not UTF-8 text"),
        (b"[" * 100_000, "nests JSON too deeply"),
        (b'{"model_type":' * 100_000, "nests JSON too deeply"),
        (b'{"model_type": "clip",', "is not valid JSON"),
        (
            b'{"model_type": "clip", "layer_norm_eps": NaN}',
            "is not valid JSON: NaN is not a number JSON allows",
        ),
    ],
    ids=["list", "number", "string", "not-utf8", "deep-list", "deep-object", "cut", "nan"],
)
def test_config_that_is_not_a_json_object(
    saved: dict[str, Path], tmp_path: Path, content: bytes, message: str
) -> None:
    folder = copy_of(saved, tmp_path)
    (folder / "config.json").write_bytes(content)
    with pytest.raises(ArtifactError, match=message):
        load(folder)


def _set(section: str | None, **values: object) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        (config.setdefault(section, {}) if section else config).update(values)

    return edit


CONFIG_CASES = [
    ("clip", _set("vision_config", patch_size=0), r"vision_config.patch_size is 0; expected an integer >= 1"),
    ("clip", _set("vision_config", patch_size=-16), r"vision_config.patch_size is -16"),
    ("clip", _set("text_config", hidden_size=-64, num_attention_heads=-4), r"text_config.hidden_size is -64"),
    ("clip", _set("text_config", hidden_size=0), r"text_config.hidden_size is 0"),
    ("clip", _set("vision_config", num_hidden_layers=0), r"vision_config.num_hidden_layers is 0"),
    (
        "clip",
        _set("vision_config", num_hidden_layers=10**6),
        r"num_hidden_layers is 1000000; expected an integer >= 1 and <= 256",
    ),
    ("clip", _set("text_config", num_attention_heads=0), r"text_config.num_attention_heads is 0"),
    (
        "clip",
        _set("vision_config", hidden_size=64, num_attention_heads=5),
        r"vision_config.hidden_size is 64; expected a multiple of vision_config.num_attention_heads \(5\)",
    ),
    ("clip", _set("vision_config", hidden_size=True), r"vision_config.hidden_size is True"),
    (
        "clip",
        _set("vision_config", patch_size=64, image_size=32),
        r"vision_config.image_size is 32; expected at least vision_config.patch_size",
    ),
    ("clip", _set(None, projection_dim=0), r"projection_dim is 0"),
    ("clip", _set(None, vision_config=[1, 2]), r"vision_config is \[1, 2\]; expected a JSON object"),
    (
        "clipseg",
        _set("vision_config", image_size=60),
        r"vision_config.image_size is 60; expected a multiple of vision_config.patch_size",
    ),
    (
        "clipseg",
        _set(None, extract_layers=[0, 7]),
        r"extract_layers is \[0, 7\]; expected indices of vision layers",
    ),
    ("clipseg", _set(None, extract_layers=[]), r"extract_layers is \[\]; expected a non-empty list"),
    (
        "clipseg",
        _set(None, extract_layers=[0, 1], conditional_layer=3),
        r"conditional_layer is 3; expected an integer >= 0 and <= 1",
    ),
    (
        "clipseg",
        _set(None, reduce_dim=30, decoder_num_attention_heads=4),
        r"reduce_dim is 30; expected a multiple of decoder_num_attention_heads",
    ),
    ("clipseg", _set(None, reduce_dim=0), r"reduce_dim is 0"),
    ("florence2", _set("text_config", d_model=0), r"text_config.d_model is 0"),
    (
        "florence2",
        _set("text_config", encoder_attention_heads=3),
        r"text_config.d_model is 128; expected a multiple of text_config.encoder_attention_heads \(3\)",
    ),
    ("florence2", _set("text_config", decoder_layers=-1), r"text_config.decoder_layers is -1"),
    (
        "florence2",
        _set("vision_config", num_heads=[4, 7]),
        r"vision_config.embed_dim is \[64, 96\]; expected each a multiple of vision_config.num_heads \[4, 7\]",
    ),
    ("florence2", _set("vision_config", depths=[1, 1, 1]), r"expected one entry per stage"),
    (
        "florence2",
        _set("vision_config", patch_stride=[0, 2]),
        r"vision_config.patch_stride is \[0, 2\]; expected integers >= 1",
    ),
    ("florence2", _set("vision_config", window_size=0), r"vision_config.window_size is 0"),
    (
        "florence2",
        _set("vision_config", projection_dim=64),
        r"vision_config.projection_dim is 64; expected text_config.d_model \(128\)",
    ),
    (
        "florence2",
        _set(None, image_token_id=5000),
        r"image_token_id is 5000; expected a token of the vocabulary",
    ),
    (
        "florence2",
        _set("text_config", model_type="gpt2"),
        r"text_config.model_type is 'gpt2'; expected 'bart'",
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "message"), CONFIG_CASES, ids=[f"{c[0]}-{c[2][:40]}" for c in CONFIG_CASES]
)
def test_config_that_cannot_work_is_refused_before_building(
    saved: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    edit: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    folder = edit_config(copy_of(saved, tmp_path, name), edit)

    def boom(self: object, *args: object, **kwargs: object) -> None:
        pytest.fail("the model was built before its config was checked")

    monkeypatch.setattr(CLASSES[name], "__init__", boom)
    with pytest.raises(ArtifactError, match=message):
        load(folder, name)


def test_config_far_larger_than_its_checkpoint_is_refused_unbuilt(
    saved: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 layers of width 16384: 2.1e9 values (8.6 GB) if built; the guard builds it on the meta device.
    folder = edit_config(
        copy_of(saved, tmp_path), _set("text_config", hidden_size=16384, intermediate_size=65536)
    )
    never_built(monkeypatch, CLIPModel)
    with pytest.raises(
        ArtifactError, match=r"describes a model of [\d,]+ parameter values but the checkpoint holds [\d,]+"
    ):
        load(folder)


def test_strict_type_errors_from_transformers_are_artifact_errors(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    folder = edit_config(copy_of(saved, tmp_path), _set("vision_config", hidden_act=17))
    with pytest.raises(ArtifactError, match=r"transformers refuses this config .*hidden_act"):
        load(folder)


# -- damaged or hostile safetensors files ---------------------------------------------------------------


def test_truncated_file(saved: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = copy_of(saved, tmp_path)
    blob = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    never_built(monkeypatch, CLIPModel)
    with pytest.raises(
        ArtifactError,
        match=r"ends at byte \d+ of the data, but the file holds \d+ bytes of data: the file is truncated",
    ):
        load(folder)
    (folder / "model.safetensors").write_bytes(blob[:1000])
    with pytest.raises(ArtifactError, match=r"only 992 follow the length prefix: the file is truncated"):
        load(folder)
    (folder / "model.safetensors").write_bytes(blob[:5])
    with pytest.raises(ArtifactError, match=r"is 5 bytes, shorter than a safetensors length prefix"):
        load(folder)


def test_header_claiming_2_62_bytes(
    saved: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_of(saved, tmp_path)
    write_safetensors(folder / "model.safetensors", {}, b"", length=2**62)
    never_built(monkeypatch, CLIPModel)
    with pytest.raises(
        ArtifactError, match=rf"header claims {2**62} bytes; safetensors allows at most 100000000"
    ):
        load(folder)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"this is not json", "the safetensors header is not a JSON object"),
        (b"\xff\xfe\xfd", "the safetensors header is not a JSON object .UnicodeDecodeError"),
        (b"[" * 100_000, "the safetensors header is not a JSON object .RecursionError"),
        (b"[1, 2]", "the safetensors header is a JSON list"),
        (
            b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
            "duplicate key 'a'",
        ),
    ],
    ids=["text", "not-utf8", "deep", "list", "duplicate"],
)
def test_header_that_is_not_json(
    saved: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: bytes, message: str
) -> None:
    folder = copy_of(saved, tmp_path)
    write_safetensors(folder / "model.safetensors", header, b"\0" * 4)
    never_built(monkeypatch, CLIPModel)
    with pytest.raises(ArtifactError, match=message):
        load(folder)


def _tamper(entry: dict[str, Any], data_bytes: int, how: str) -> None:
    begin, end = entry["data_offsets"]
    if how == "past-end":
        entry["data_offsets"] = [data_bytes, data_bytes + end - begin]
    elif how == "shape-overflow":
        entry["shape"] = [2**40, 2**40]
    elif how == "dtype":
        entry["dtype"] = "F128"
    elif how == "negative-shape":
        entry["shape"] = [-1, *entry["shape"][1:]]


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("past-end", r"ends at byte \d+ of the data, but the file holds \d+ bytes"),
        (
            "shape-overflow",
            r"shape \(1099511627776, 1099511627776\)\) needs .* bytes but its data_offsets span",
        ),
        ("dtype", r"has dtype 'F128'; expected one of"),
        ("negative-shape", r"expected a list of sizes >= 0"),
    ],
)
def test_tensor_entries_that_do_not_fit_the_file(
    saved: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, message: str
) -> None:
    folder = copy_of(saved, tmp_path)
    header, data = split_safetensors(folder / "model.safetensors")
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    _tamper(header[name], len(data), how)
    write_safetensors(folder / "model.safetensors", header, data)
    never_built(monkeypatch, CLIPModel)
    with pytest.raises(ArtifactError, match=message):
        load(folder)


def test_overlapping_and_trailing_bytes(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    header, data = split_safetensors(folder / "model.safetensors")
    write_safetensors(folder / "model.safetensors", header, data + b"\0" * 16)
    with pytest.raises(ArtifactError, match=r"the tensors cover \d+ bytes of data but the file holds \d+"):
        load(folder)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    a, b = header[names[0]], header[names[1]]
    if math.prod(a["shape"]) == math.prod(b["shape"]) and a["dtype"] == b["dtype"]:
        b["data_offsets"] = list(a["data_offsets"])
    else:
        b["data_offsets"] = [
            a["data_offsets"][0],
            a["data_offsets"][0] + b["data_offsets"][1] - b["data_offsets"][0],
        ]
    write_safetensors(folder / "model.safetensors", header, data)
    with pytest.raises(ArtifactError, match=r"overlaps the tensor before it|leaves a gap"):
        load(folder)


# -- where the files are --------------------------------------------------------------------------------


def test_folder_that_is_a_symlink(saved: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(saved["clip"], target_is_directory=True)
    with pytest.raises(ArtifactError, match=r"is a symbolic link \(to .*\); pass the real folder"):
        load(tmp_path / "link")


@pytest.mark.parametrize("file", ["model.safetensors", "config.json"])
def test_file_linking_outside_the_folder(saved: dict[str, Path], tmp_path: Path, file: str) -> None:
    folder = copy_of(saved, tmp_path)
    (folder / file).unlink()
    (folder / file).symlink_to(saved["clip"] / file)
    with pytest.raises(
        ArtifactError,
        match=rf"{file} is a symbolic link to .*, outside .*; trtdeploy loads only files inside",
    ):
        load(folder)


def test_index_naming_a_shard_outside_the_folder(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    (folder / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (folder / "stub.safetensors").write_bytes(b"")  # the folder still looks like a safetensors checkpoint
    index = {"metadata": {}, "weight_map": {"logit_scale": "../elsewhere.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        ArtifactError,
        match=r"weight_map names '../elsewhere.safetensors'; expected the name of a file directly inside",
    ):
        load(folder)


def test_transformers_weights_outside_the_folder(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = edit_config(
        copy_of(saved, tmp_path), _set(None, transformers_weights="../clip/model.safetensors")
    )
    with pytest.raises(
        ArtifactError, match=r"transformers_weights names '../clip/model.safetensors'; expected the name"
    ):
        load(folder)


def test_metadata_that_is_not_text(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    header, data = split_safetensors(folder / "model.safetensors")
    write_safetensors(folder / "model.safetensors", {**header, "__metadata__": {"format": 5}}, data)
    with pytest.raises(
        ArtifactError, match=r"__metadata__ is \{'format': 5\}; expected an object of text values"
    ):
        load(folder)


def test_index_without_a_weight_map(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(ArtifactError, match=r"index.json holds a JSON list"):
        load(folder)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    with pytest.raises(ArtifactError, match=r'has no "weight_map" object'):
        load(folder)


def test_safetensors_under_another_name(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path)
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    with pytest.raises(
        ArtifactError,
        match=r"has neither model.safetensors nor model.safetensors.index.json \(found weights.safetensors\)",
    ):
        load(folder)
