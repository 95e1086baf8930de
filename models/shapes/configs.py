"""The three tiny architectures and their preprocessing, all at the shapes render size (128 px).

Sizes were chosen so each model trains in minutes on two CPU cores and still clears its accuracy
target: CLIP and CLIPSeg share one tower layout (so CLIPSeg starts from the trained CLIP), and the
Florence-2 vision tower has two stages (stride 8 then 2) instead of four, because its stride-4 first
stage on a 128 px image costs most of a training step. Florence-2 is sized to the 5 MB a committed
checkpoint may take: one block per stage, a 96-wide second stage and 256-wide feed-forward layers
(1.24 M parameters, 4.97 MB in float32; the two-block, 128-wide layout was 2.1 M and 8.5 MB).
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPConfig, CLIPSegConfig, Florence2Config, GenerationConfig

from trtdeploy.calibration.shapes import IMAGE_SIZE
from trtdeploy.models.clip import preprocess_for
from trtdeploy.models.shapes import vocab
from trtdeploy.runtime.preprocess import ImagePreprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# transformers' PILImageResampling numbers, for preprocessor_config.json.
_RESAMPLE_IDS = {"bilinear": 2, "bicubic": 3}

_CLIP_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": vocab.CLIP_MAX_LENGTH,
    "bos_token_id": vocab.CLIP_BOS_ID,
    "eos_token_id": vocab.CLIP_EOS_ID,  # not 2: pool at the first end token (see vocab.py)
    "pad_token_id": vocab.CLIP_EOS_ID,
}
_CLIP_VISION: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "patch_size": 16,  # 8 x 8 patches: the smallest shape spans about 2
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
}
PROJECTION_DIM = 64


def clip_config() -> CLIPConfig:
    text = {**_CLIP_TEXT, "vocab_size": vocab.clip_tokenizer().get_vocab_size()}
    return CLIPConfig(text_config=text, vision_config=dict(_CLIP_VISION), projection_dim=PROJECTION_DIM)


def clipseg_config() -> CLIPSegConfig:
    text = {**_CLIP_TEXT, "vocab_size": vocab.clip_tokenizer().get_vocab_size()}
    return CLIPSegConfig(
        text_config=text,
        vision_config=dict(_CLIP_VISION),
        projection_dim=PROJECTION_DIM,
        extract_layers=(1, 2, 3),  # outputs of vision layers 2, 3 and 4
        reduce_dim=48,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=192,
        # conv, then two 4x transposed convolutions (patch 16 / 4): rd64-refined's head.
        use_complex_transposed_convolution=True,
    )


def florence2_config() -> Florence2Config:
    tokenizer = vocab.florence2_tokenizer()
    d_model = 128
    vision = {
        "depths": [1, 1],
        "embed_dim": [64, 96],
        "num_heads": [4, 8],
        "num_groups": [4, 8],
        "patch_size": [9, 3],
        "patch_stride": [8, 2],  # 128 px -> 16 x 16 -> 8 x 8 features, + 1 pooled = 65 image tokens
        "patch_padding": [4, 1],
        "patch_prenorm": [False, True],
        "window_size": 8,
        "drop_path_rate": 0.0,
        "projection_dim": d_model,
        "max_position_embeddings": 16,
    }
    text = {
        "model_type": "bart",
        "vocab_size": tokenizer.get_vocab_size(),
        "d_model": d_model,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 256,
        "decoder_ffn_dim": 256,
        "max_position_embeddings": 128,
        "dropout": 0.0,  # every step sees fresh images, so there is little to regularise
        "scale_embedding": False,
        **florence2_special_ids(),
    }
    return Florence2Config(
        vision_config=vision, text_config=text, image_token_id=vocab.token_id(tokenizer, vocab.IMAGE_TOKEN)
    )


def florence2_special_ids() -> dict[str, int]:
    tokenizer = vocab.florence2_tokenizer()
    bos, pad, eos = (vocab.token_id(tokenizer, t) for t in (vocab.BART_BOS, vocab.BART_PAD, vocab.BART_EOS))
    return {
        "bos_token_id": bos,
        "pad_token_id": pad,
        "eos_token_id": eos,
        "decoder_start_token_id": eos,
        "forced_bos_token_id": bos,
        "forced_eos_token_id": eos,
    }


def florence2_generation_config() -> GenerationConfig:
    """Greedy decoding: the reference a runtime decode loop must reproduce token for token."""
    return GenerationConfig(
        **florence2_special_ids(), num_beams=1, do_sample=False, max_new_tokens=vocab.FLORENCE_MAX_LENGTH
    )


CLIP_PREPROCESS = preprocess_for(IMAGE_SIZE)  # CLIPImageProcessor's rules at 128 px
CLIPSEG_PREPROCESS = ImagePreprocess(
    resize="exact", size=IMAGE_SIZE, crop=None, resample="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD
)
FLORENCE2_PREPROCESS = ImagePreprocess(
    resize="exact", size=IMAGE_SIZE, crop=None, resample="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD
)


def preprocessor_config(preprocess: ImagePreprocess, processor: str, **extra: Any) -> dict[str, Any]:
    """The same preprocessing as a transformers preprocessor_config.json, so the folder is self-describing."""
    if preprocess.resize == "shortest_edge":
        size: dict[str, int] = {"shortest_edge": int(preprocess.size)}  # type: ignore[arg-type]
    else:
        height, width = preprocess.output_hw
        size = {"height": height, "width": width}
    config: dict[str, Any] = {
        "image_processor_type": processor,
        "do_convert_rgb": True,
        "do_resize": True,
        "size": size,
        "resample": _RESAMPLE_IDS[preprocess.resample],
        "do_center_crop": preprocess.crop is not None,
        "do_rescale": True,
        "rescale_factor": preprocess.rescale,
        "do_normalize": True,
        "image_mean": list(preprocess.mean),
        "image_std": list(preprocess.std),
        **extra,
    }
    if preprocess.crop is not None:
        config["crop_size"] = {"height": preprocess.crop[0], "width": preprocess.crop[1]}
    return config
