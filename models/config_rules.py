"""Config values transformers accepts but that cannot work (a patch size of 0, heads that do not
divide the width, layers CLIPSeg's decoder reads that the tower does not have, ...), refused by
field name before the model is built: building a model of absurd sizes can allocate gigabytes."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError

from trtdeploy.models.checkpoint_files import REWRITE, is_int
from trtdeploy.runtime.errors import ArtifactError

# Deepest real checkpoints of these families: CLIP ViT-bigG 48 layers, Florence-2-large 12 + 12.
# A skeleton of 1000 layers takes 1.5 s to build even on the meta device; 256 leaves room.
MAX_LAYERS = 256
MAX_STAGES = 16  # Florence-2's vision tower has 4
# A model holds at most twice its checkpoint's values (a tied weight is stored once). The allowance
# lets a small shortfall reach the exact missing-parameter report below instead of this guard.
BUILD_ALLOWANCE_VALUES = 64 * 2**20  # 256 MiB of float32


# -- config values that transformers accepts but that cannot work -----------------------------------

_ABSENT = object()
Lookup = Callable[[str], Any]  # "vision_config.patch_size" -> value, or _ABSENT


def _raw_lookup(config: Mapping[str, Any]) -> Lookup:
    def get(field: str) -> Any:
        section, _, name = field.rpartition(".")
        holder = config.get(section, _ABSENT) if section else config
        return holder.get(name, _ABSENT) if isinstance(holder, dict) else _ABSENT

    return get


def _object_lookup(config: object) -> Lookup:
    def get(field: str) -> Any:
        holder = config
        for part in field.split("."):
            holder = getattr(holder, part, _ABSENT)
            if holder is _ABSENT:
                break
        return holder

    return get


class _Rules:
    """Checks over one config, each naming the config.json field it found wrong."""

    def __init__(self, where: Path, get: Lookup) -> None:
        self.where, self.get = where, get

    def fail(self, field: str, value: object, expected: str) -> None:
        raise ArtifactError(
            f"{self.where}: {field} is {value!r}; expected {expected}: the model cannot work "
            f"with it. Fix config.json or {REWRITE}."
        )

    def ints(self, fields: Iterable[str], minimum: int = 1, maximum: int | None = None) -> None:
        for field in fields:
            value = self.get(field)
            if value is _ABSENT:
                continue
            if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
                bound = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
                self.fail(field, value, bound)

    def int_lists(self, fields: Iterable[str], minimum: int = 1) -> None:
        for field in fields:
            value = self.get(field)
            if value is _ABSENT:
                continue
            if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_STAGES:
                self.fail(field, value, f"a list of 1 to {MAX_STAGES} integers (one per stage)")
            if not all(is_int(v) and v >= minimum for v in value):
                self.fail(field, value, f"integers >= {minimum}")

    def divides(self, whole: str, part: str) -> None:
        w, p = self.get(whole), self.get(part)
        if is_int(w) and is_int(p) and p > 0 and w % p:
            self.fail(whole, w, f"a multiple of {part} ({p})")

    def at_least(self, field: str, other: str) -> None:
        v, o = self.get(field), self.get(other)
        if is_int(v) and is_int(o) and v < o:
            self.fail(field, v, f"at least {other} ({o})")


_CLIP_TEXT = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "vocab_size",
    "max_position_embeddings",
)
_CLIP_VISION = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "num_channels",
)


def _clip_rules(r: _Rules, segmentation: bool) -> None:
    r.ints(["projection_dim"])
    for section, fields in (("text_config", _CLIP_TEXT), ("vision_config", _CLIP_VISION)):
        r.ints(f"{section}.{f}" for f in fields)
        r.ints([f"{section}.num_hidden_layers"], maximum=MAX_LAYERS)
        r.divides(f"{section}.hidden_size", f"{section}.num_attention_heads")
    r.at_least("vision_config.image_size", "vision_config.patch_size")
    if segmentation:
        _clipseg_rules(r)


def _clipseg_rules(r: _Rules) -> None:
    # The decoder's transposed convolution turns the patch grid back into image_size pixels only
    # when patches tile the image; otherwise masks come out a different size from the image.
    r.divides("vision_config.image_size", "vision_config.patch_size")
    r.ints(["reduce_dim", "decoder_num_attention_heads", "decoder_intermediate_size"])
    r.divides("reduce_dim", "decoder_num_attention_heads")
    if r.get("use_complex_transposed_convolution") is True:
        r.ints(["vision_config.patch_size"], minimum=4)  # two transposed convs of patch_size // 4
        r.ints(["reduce_dim"], minimum=2)  # the first halves the channels
    layers, extract = r.get("vision_config.num_hidden_layers"), r.get("extract_layers")
    if extract is not _ABSENT:
        if not isinstance(extract, (list, tuple)) or not 1 <= len(extract) <= MAX_LAYERS:
            r.fail("extract_layers", extract, "a non-empty list of vision layer indices")
        top = layers if is_int(layers) else MAX_LAYERS
        if not all(is_int(i) and 0 <= i < top for i in extract):
            r.fail("extract_layers", extract, f"indices of vision layers, 0 to {top - 1}")
        if len(set(extract)) != len(extract):  # each is one decoder input, named by its position
            r.fail("extract_layers", extract, "distinct vision layer indices")
        # FiLM conditioning is applied at this decoder layer; past the last one the prompt is ignored.
        r.ints(["conditional_layer"], minimum=0, maximum=len(extract) - 1)


_BART = (
    *("d_model", "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim"),
    *("vocab_size", "max_position_embeddings"),
)
_FLORENCE_VISION = (
    "window_size",
    "projection_dim",
    "max_position_embeddings",
    "max_temporal_embeddings",
    "in_channels",
)
_FLORENCE_STAGES = ("depths", "embed_dim", "num_heads", "num_groups", "patch_size", "patch_stride")


def _florence2_rules(r: _Rules) -> None:
    text_type = r.get("text_config.model_type")
    if text_type is not _ABSENT and text_type != "bart":
        r.fail("text_config.model_type", text_type, "'bart' (Florence-2's language model)")
    r.ints(f"text_config.{f}" for f in _BART)
    r.ints(["text_config.encoder_layers", "text_config.decoder_layers"], maximum=MAX_LAYERS)
    r.divides("text_config.d_model", "text_config.encoder_attention_heads")
    r.divides("text_config.d_model", "text_config.decoder_attention_heads")
    r.ints(f"vision_config.{f}" for f in _FLORENCE_VISION)
    r.int_lists(f"vision_config.{f}" for f in _FLORENCE_STAGES)
    r.int_lists(["vision_config.patch_padding"], minimum=0)
    stages = {f: r.get(f"vision_config.{f}") for f in (*_FLORENCE_STAGES, "patch_padding", "patch_prenorm")}
    present = {f: v for f, v in stages.items() if isinstance(v, (list, tuple))}
    if len({len(v) for v in present.values()}) > 1:
        r.fail("vision_config", {f: len(v) for f, v in present.items()}, "one entry per stage in every list")
    depths, embed = present.get("depths"), present.get("embed_dim")
    if depths is not None and sum(depths) > MAX_LAYERS:
        r.fail("vision_config.depths", depths, f"at most {MAX_LAYERS} blocks in all")
    for name in ("num_heads", "num_groups"):
        parts = present.get(name)
        if embed is not None and parts is not None and any(e % p for e, p in zip(embed, parts, strict=False)):
            r.fail("vision_config.embed_dim", embed, f"each a multiple of vision_config.{name} {list(parts)}")
    if embed is not None and embed[-1] % 2:
        r.fail("vision_config.embed_dim", embed, "an even last stage (sine/cosine position embeddings)")
    projection, d_model = r.get("vision_config.projection_dim"), r.get("text_config.d_model")
    if is_int(projection) and is_int(d_model) and projection != d_model:
        r.fail(
            "vision_config.projection_dim",
            projection,
            f"text_config.d_model ({d_model}): image tokens join the text",
        )
    token, vocab = r.get("image_token_id"), r.get("text_config.vocab_size")
    if is_int(token) and is_int(vocab) and not 0 <= token < vocab:
        r.fail("image_token_id", token, f"a token of the vocabulary, 0 to {vocab - 1}")


_RULES: dict[str, Callable[[_Rules], None]] = {
    "clip": lambda r: _clip_rules(r, segmentation=False),
    "clipseg": lambda r: _clip_rules(r, segmentation=True),
    "florence2": _florence2_rules,
}


def config_from_json(raw: dict[str, Any], model_class: type, where: Path) -> Any:
    """The transformers config of a checked config.json, its values checked before any model exists.

    Values are checked twice: as written (so a bad one is named before transformers' own validators
    see it), then on the config object, where defaults and aliases (BART's hidden_size = d_model)
    are filled in.
    """
    rules = _RULES.get(str(raw.get("model_type")))
    for section in ("text_config", "vision_config"):
        if section in raw and raw[section] is not None and not isinstance(raw[section], dict):
            raise ArtifactError(f"{where}: {section} is {raw[section]!r}; expected a JSON object. {REWRITE}.")
    if rules:
        rules(_Rules(where, _raw_lookup(raw)))
    try:
        config = model_class.config_class.from_dict(raw)  # type: ignore[attr-defined]
    # A config is built from untrusted values; whatever transformers refuses them with is the reason.
    except (StrictDataclassError, ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
        raise ArtifactError(f"{where}: transformers refuses this config ({exc}). {REWRITE}.") from exc
    except RecursionError as exc:
        raise ArtifactError(f"{where}: the config nests too deeply for transformers. {REWRITE}.") from exc
    if rules:
        rules(_Rules(where, _object_lookup(config)))
    return config


def check_build_fits(model_class: type, config: object, checkpoint_values: int, where: Path) -> None:
    """Build the model on the meta device (no memory) and refuse one far larger than the checkpoint."""
    try:
        with torch.device("meta"):
            skeleton = model_class(copy.deepcopy(config))
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError, ArithmeticError) as exc:
        raise ArtifactError(
            f"{where}: transformers cannot build a model from this config ({exc}). {REWRITE}."
        ) from exc
    needed = sum(p.numel() for p in skeleton.parameters())
    if needed > 2 * checkpoint_values + BUILD_ALLOWANCE_VALUES:
        raise ArtifactError(
            f"{where} describes a model of {needed:,} parameter values but the checkpoint holds {checkpoint_values:,}; "
            "building it would allocate memory for weights that are not there. The config.json does not belong "
            f"to these weights; {REWRITE}."
        )
