"""CLIPSeg end to end on the tiny preset: the split graphs against the monolithic transformers
forward, the runtime pipeline against CLIPSegProcessor + CLIPSegForImageSegmentation, and the
FP16 / INT8 bundles against their budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from trtdeploy.build import BuildResult
from trtdeploy.calibration.data import CalibrationSettings, raw_calibration_data
from trtdeploy.calibration.images import CALIBRATION_IMAGES, EVALUATION_IMAGES, load_images
from trtdeploy.calibration.prompts import CALIBRATION_PROMPTS, SEGMENTATION_PROMPTS
from trtdeploy.cli import main
from trtdeploy.models.clipseg import (
    RECIPE,
    DecoderExport,
    ImageEncoderExport,
    TextEncoderExport,
    _tiny,
    preprocess_of,
    rd64_preprocess,
    reference_processor,
)
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import ArtifactError, InputValidationError
from trtdeploy.runtime.pipelines.clipseg import (
    DECODER,
    ClipSegPipeline,
    PromptEmbeddings,
    activation_names,
    sigmoid,
)
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import verify_bundle

pytestmark = pytest.mark.integration
ACTIVATIONS = activation_names(3)  # the tiny preset extracts three layers
PROMPTS = ["a cat", "a photo of a rocket", "the sky"]


@pytest.fixture(scope="module")
def model() -> Any:
    return RECIPE.load("tiny").model


@pytest.fixture(scope="module")
def pipeline(tiny_clipseg: BuildResult) -> ClipSegPipeline:
    return ClipSegPipeline.from_bundle(Bundle.load(tiny_clipseg.bundle))


def processor(bundle_dir: Path) -> Any:
    return reference_processor(rd64_preprocess(), bundle_dir / "tokenizer" / "tokenizer.json")


def monolithic_logits(model: Any, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return model(**inputs).logits.numpy()


def assert_logits_close(got: np.ndarray, want: np.ndarray) -> None:
    """Random-weight logits reach hundreds: compare relative to their scale (float rounding only)."""
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    assert scale > 1.0  # the check below is not vacuous
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)


def assert_probabilities_close(got: np.ndarray, want_logits: np.ndarray) -> None:
    """sigmoid's slope is at most 1/4, so logits equal up to float rounding of their scale give
    probabilities within a quarter of that."""
    scale = float(np.abs(want_logits).max())
    assert scale > 1.0
    np.testing.assert_allclose(got, sigmoid(want_logits), rtol=0, atol=0.25 * 2e-6 * scale)


def test_split_equals_the_monolithic_forward(model: Any, tiny_clipseg: BuildResult) -> None:
    """image_encoder + text_encoder + decoder in PyTorch give CLIPSegForImageSegmentation's logits
    for every (image, prompt) pair, the image repeated per prompt as the documentation does."""
    images = load_images(EVALUATION_IMAGES[:2])
    inputs = processor(tiny_clipseg.bundle)(
        text=PROMPTS, images=images, padding=True, return_tensors="pt"
    )  # pixel_values (2, 3, 352, 352); input_ids (3, S)
    with torch.inference_mode():
        activations = ImageEncoderExport(model)(inputs["pixel_values"])
        conditional = TextEncoderExport(model)(inputs["input_ids"], inputs["attention_mask"])
        split = DecoderExport(model)(*activations, conditional).numpy()  # (2, 3, 352, 352)
    for i in range(len(images)):
        pixels = inputs["pixel_values"][i : i + 1].expand(len(PROMPTS), -1, -1, -1)
        want = monolithic_logits(
            model,
            {
                "pixel_values": pixels,
                "input_ids": inputs["input_ids"],
                "attention_mask": inputs["attention_mask"],
            },
        )
        assert_logits_close(split[i], want)


def test_segment_equals_transformers(
    model: Any, pipeline: ClipSegPipeline, tiny_clipseg: BuildResult
) -> None:
    """The bundle's engines through segment() give what the transformers documentation computes:
    CLIPSegProcessor(text=prompts, images=[image] * P) and sigmoid(CLIPSegForImageSegmentation)."""
    image = EVALUATION_IMAGES[1].load().resize((352, 352))  # at the model's size the final resize is exact
    inputs = processor(tiny_clipseg.bundle)(
        text=PROMPTS, images=[image] * len(PROMPTS), padding=True, return_tensors="pt"
    )
    want = monolithic_logits(model, dict(inputs))  # (P, 352, 352)
    result = pipeline.segment(image, PROMPTS)
    assert result.prompts == tuple(PROMPTS)
    assert_probabilities_close(result.probabilities, want)
    assert 0.05 < result.masks.mean() < 0.95  # random weights still give masks with two sides
    np.testing.assert_array_equal(result.masks, result.probabilities > 0.5)


@pytest.mark.parametrize("index", range(len(EVALUATION_IMAGES)))
def test_pixel_values_equal_the_clipseg_processor(index: int, tiny_clipseg: BuildResult) -> None:
    image = EVALUATION_IMAGES[index].load()
    ours = rd64_preprocess()([image])
    theirs = processor(tiny_clipseg.bundle)(images=[image], return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 352, 352)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_odd_images_equal_the_clipseg_processor(tiny_clipseg: BuildResult) -> None:
    photo = EVALUATION_IMAGES[0].load()
    odd = [
        photo.transpose(Image.Transpose.ROTATE_90),
        photo.convert("L"),
        photo.convert("RGBA"),
        photo.resize((90, 60)),
    ]
    for image in odd:
        theirs = processor(tiny_clipseg.bundle)(images=[image.convert("RGB")], return_tensors="np")[
            "pixel_values"
        ]
        np.testing.assert_allclose(rd64_preprocess()([image]), theirs, rtol=0, atol=1e-6)


def test_token_ids_equal_the_clipseg_processor(pipeline: ClipSegPipeline, tiny_clipseg: BuildResult) -> None:
    texts = [*SEGMENTATION_PROMPTS, "A Photo of TWO  dogs, playing!", "a " + "very " * 90 + "long prompt"]
    ours = pipeline.tokenizer(texts)
    theirs = processor(tiny_clipseg.bundle)(
        text=texts, padding=True, truncation=True, max_length=77, return_tensors="np"
    )
    np.testing.assert_array_equal(ours["input_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
    assert ours["input_ids"].shape[1] == 77  # the long prompt is cut at CLIP's context, as the processor does


def test_visual_prompt_equals_conditional_pixel_values(
    model: Any, pipeline: ClipSegPipeline, tiny_clipseg: BuildResult
) -> None:
    """A support image as the prompt: the image encoder's pooled output is the embedding
    transformers computes from conditional_pixel_values."""
    query = EVALUATION_IMAGES[2].load().resize((352, 352))
    support = EVALUATION_IMAGES[0].load()
    inputs = processor(tiny_clipseg.bundle)(images=[query], visual_prompt=[support], return_tensors="pt")
    want = monolithic_logits(model, dict(inputs))[0]  # (352, 352)
    mixed = pipeline.segment(query, ["a cat", support, "the sky"])  # text and image prompts together
    assert mixed.prompts == ("a cat", "<image 1>", "the sky")
    assert_probabilities_close(mixed.probabilities[1], want)
    text_only = pipeline.segment(query, ["a cat", "the sky"])
    np.testing.assert_allclose(mixed.probabilities[[0, 2]], text_only.probabilities, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (90, 60), (1000, 353)])
def test_masks_come_back_at_the_input_size(pipeline: ClipSegPipeline, size: tuple[int, int]) -> None:
    image = EVALUATION_IMAGES[0].load().resize(size)
    result = pipeline.segment(image, PROMPTS, threshold=0.3)
    width, height = size
    assert result.probabilities.shape == result.masks.shape == (len(PROMPTS), height, width)
    assert result.masks.dtype == bool and result.probabilities.dtype == np.float32
    assert result.probabilities.min() >= 0.0 and result.probabilities.max() <= 1.0
    np.testing.assert_array_equal(result.masks, result.probabilities > 0.3)
    np.testing.assert_allclose(result.areas(), result.masks.reshape(len(PROMPTS), -1).mean(axis=1))
    # Resizing back keeps the picture: the 352 x 352 map resized to the image matches it.
    at_model_size = pipeline.segment(image.resize((352, 352)), PROMPTS[:1]).probabilities[0]
    back = np.asarray(Image.fromarray(at_model_size).resize(size, Image.Resampling.BILINEAR))
    assert np.mean(np.abs(back - result.probabilities[0])) < 0.05


def test_bad_inputs_are_rejected_clearly(pipeline: ClipSegPipeline) -> None:
    image = EVALUATION_IMAGES[0].load()
    cases: list[tuple[Any, Any, dict[str, Any], str]] = [
        (image, [], {}, "non-empty list of texts"),
        (image, "a cat", {}, "non-empty list of texts"),  # a bare string is not a list of prompts
        (image, ["a cat", "  "], {}, "prompt 1 is blank"),
        (image, ["a cat", 3], {}, "prompt 1 is a int; expected a text"),
        (image, ["a cat", np.zeros((8, 8, 3), np.float32)], {}, "prompt 1 \\(a support image\\).*uint8"),
        (np.zeros((8, 8, 3), np.float32), ["a cat"], {}, "image:.*uint8"),
        ("cat.jpg", ["a cat"], {}, "image:.*PIL image"),
        (image, ["a cat"], {"threshold": 1.5}, "strictly between 0 and 1"),
        (image, ["a cat"], {"threshold": 0.0}, "strictly between 0 and 1"),
    ]
    for img, prompts, kwargs, message in cases:
        with pytest.raises(InputValidationError, match=message):
            pipeline.segment(img, prompts, **kwargs)


def test_prompt_embeddings_are_reused_and_tied_to_their_bundle(
    pipeline: ClipSegPipeline, tmp_path: Path
) -> None:
    image = EVALUATION_IMAGES[3].load()
    support = EVALUATION_IMAGES[0].load()
    stored = pipeline.embed_prompts([*PROMPTS, support])
    stored.save(tmp_path / "prompts.npz")
    loaded = PromptEmbeddings.load(tmp_path / "prompts.npz")
    assert loaded.prompts == (*PROMPTS, "<image 3>") and loaded.model_key == pipeline.model_key
    fresh = pipeline.segment(image, [*PROMPTS, support])
    reused = pipeline.segment(image, loaded)
    np.testing.assert_allclose(reused.probabilities, fresh.probabilities, rtol=0, atol=1e-6)
    foreign = PromptEmbeddings(loaded.prompts, loaded.embeddings, "0" * 64)
    with pytest.raises(InputValidationError, match="computed by other graphs"):
        pipeline.segment(image, foreign)
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(ArtifactError, match="not a prompt-embeddings file"):
        PromptEmbeddings.load(tmp_path / "junk.npz")


def test_more_prompts_than_the_decoder_profile_are_split(pipeline: ClipSegPipeline) -> None:
    image = EVALUATION_IMAGES[4].load()
    prompts = [f"thing number {i}" for i in range(20)]  # the decoder's profile takes 16 prompts a call
    together = pipeline.segment(image, prompts)
    apart = pipeline.segment(image, prompts[16:])
    np.testing.assert_allclose(together.probabilities[16:], apart.probabilities, rtol=0, atol=1e-6)


def test_graphs_keep_images_prompts_and_length_dynamic(tiny_clipseg: BuildResult) -> None:
    def dims(path: Path) -> dict[str, list[object]]:
        graph = onnx.load(str(path), load_external_data=False).graph
        return {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*graph.input, *graph.output)
        }

    image = dims(tiny_clipseg.bundle / "image_encoder.onnx")
    assert image["pixel_values"] == ["images", 3, 352, 352]
    assert image["activation_0"] == ["images", 485, 32] and set(image) == {"pixel_values", *ACTIVATIONS}
    assert dims(tiny_clipseg.bundle / "image_tail.onnx")["pooled_output"] == ["images", 16]
    assert dims(tiny_clipseg.bundle / "text_encoder.onnx")["input_ids"] == ["prompts", "sequence"]
    decoder = dims(tiny_clipseg.bundle / "decoder.onnx")
    assert decoder["conditional_embeddings"] == ["prompts", 16]
    assert decoder["logits"] == ["images", "prompts", 352, 352]


def test_decoder_reference_is_fed_the_encoders_reference_outputs(tiny_clipseg: BuildResult) -> None:
    bundle = Bundle.load(tiny_clipseg.bundle)
    image_inputs, image_outputs = bundle.reference("image_encoder")
    text_inputs, text_outputs = bundle.reference("text_encoder")
    decoder_inputs, decoder_outputs = bundle.reference(DECODER)
    assert len(image_inputs["pixel_values"]) == len(EVALUATION_IMAGES)
    assert len(text_inputs["input_ids"]) == len(SEGMENTATION_PROMPTS)
    for name in ACTIVATIONS:
        np.testing.assert_array_equal(decoder_inputs[name], image_outputs[name])
    np.testing.assert_array_equal(
        decoder_inputs["conditional_embeddings"], text_outputs["conditional_embeddings"]
    )
    assert decoder_outputs["logits"].shape == (len(EVALUATION_IMAGES), len(SEGMENTATION_PROMPTS), 352, 352)


class Negated(Engine):
    """The decoder with its logits negated when fed anything but its recorded inputs: the
    decoder alone still matches, so only the end-to-end task metric can catch it."""

    def __init__(self, inner: Engine, recorded: dict[str, np.ndarray]) -> None:
        super().__init__(inner.component, inner.io)
        self.inner, self.recorded = inner, recorded

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.run(feeds)
        same = all(np.array_equal(feeds[k], self.recorded[k]) for k in feeds)
        return out if same else {k: -v for k, v in out.items()}


def test_mask_iou_is_taken_end_to_end_and_fails_when_masks_disagree(tiny_clipseg: BuildResult) -> None:
    """The task metric can fail: inverted masks end to end score near 0 while the decoder alone,
    on its recorded inputs, is exact."""
    bundle = Bundle.load(tiny_clipseg.bundle)
    engines = open_engines(bundle)
    same = verify_bundle(bundle, engines, "onnxruntime").task("mask_iou")
    assert same.value > 0.9999 and same.passed
    recorded, _ = bundle.reference(DECODER)
    # Recorded inputs are the PyTorch encoders' outputs; end to end the engines' differ by rounding.
    engines[DECODER] = Negated(engines[DECODER], recorded)
    report = verify_bundle(bundle, engines, "onnxruntime")
    result = report.task("mask_iou")
    assert result.value < 0.2 and not result.passed
    assert "decoder alone 1.0000" in result.detail
    assert all(c.passed for c in report.comparisons if c.component == DECODER)


def test_fp32_bundle_verifies_end_to_end(tiny_clipseg: BuildResult) -> None:
    (task,) = tiny_clipseg.report.tasks
    assert task.name == "mask_iou" and task.value > 0.9999 and "end to end" in task.detail
    assert tiny_clipseg.report.passed


@pytest.mark.parametrize("fixture", ["tiny_clipseg_fp16", "tiny_clipseg_int8"])
def test_fp16_and_int8_bundles_meet_their_mask_iou_budget(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    result: BuildResult = request.getfixturevalue(fixture)
    budget = {"fp16": 0.97, "int8": 0.90}[result.manifest.precision]
    assert result.manifest.budget.tasks["mask_iou"] == budget  # the acceptance figure (see builders.py)
    recipe_logits = RECIPE.budget(result.manifest.precision).outputs["decoder/logits"]
    assert result.manifest.budget.outputs["decoder/logits"] == recipe_logits
    for report in result.reports:
        (task,) = report.tasks
        assert report.passed and task.value >= budget, report.to_markdown()


def test_calibration_decoder_batches_are_real_encoder_outputs(
    model: Any, tiny_clipseg: BuildResult, tmp_path: Path
) -> None:
    """The decoder is calibrated on what the PyTorch encoders make of calibration images and prompts."""
    from trtdeploy.runtime.bundle_writer import BundleWriter

    raw = raw_calibration_data(CalibrationSettings(count=6, batch=4))
    loaded = RECIPE.load("tiny")
    with BundleWriter(tmp_path / "scratch") as writer:
        assets = RECIPE.write_assets(loaded, writer)
        feeds = RECIPE.calibration_feeds(loaded, raw, writer, assets, batch=4)
    decoder = feeds[DECODER]
    assert [len(b["activation_0"]) for b in decoder] == [1] * 6  # 6 images, one per batch of 1 x 4 pairs
    assert all(len(b["conditional_embeddings"]) == 4 for b in decoder)
    pixels = preprocess_of(model)(list(raw.images[:1]))
    with torch.inference_mode():
        want = ImageEncoderExport(model)(torch.from_numpy(pixels))[0].numpy()
    np.testing.assert_allclose(decoder[0]["activation_0"], want, rtol=0, atol=1e-5)
    assert set(raw.prompts).isdisjoint(SEGMENTATION_PROMPTS)
    assert set(CALIBRATION_PROMPTS).isdisjoint(SEGMENTATION_PROMPTS)
    assert {s.name for s in CALIBRATION_IMAGES}.isdisjoint(s.name for s in EVALUATION_IMAGES)


def test_weights_folder_brings_its_processor(tmp_path: Path) -> None:
    torch.manual_seed(3)
    from transformers import CLIPSegForImageSegmentation

    CLIPSegForImageSegmentation(_tiny()).save_pretrained(tmp_path / "seg")
    loaded = RECIPE.load(weights=tmp_path / "seg")
    assert loaded.weights["source"] == "folder"
    assert preprocess_of(loaded.model) == rd64_preprocess()  # no preprocessor_config.json: rd64-refined's
    config = {
        "size": {"height": 352, "width": 352},
        "resample": 2,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    (tmp_path / "seg" / "preprocessor_config.json").write_text(json.dumps(config))
    loaded = RECIPE.load(weights=tmp_path / "seg")
    assert preprocess_of(loaded.model).mean == (0.5, 0.5, 0.5)  # the early CIDAS revision's normalization
    (tmp_path / "seg" / "preprocessor_config.json").write_text(json.dumps({**config, "do_center_crop": True}))
    with pytest.raises(ArtifactError, match="do_center_crop"):
        RECIPE.components(RECIPE.load(weights=tmp_path / "seg").model)


def test_cli_run_writes_masks_at_the_image_size(
    tiny_clipseg: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = EVALUATION_IMAGES[0].path()
    args = [
        "run",
        str(tiny_clipseg.bundle),
        "--image",
        str(image),
        "--prompts",
        "a cat, the sky",
        "--out-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("masks at probability > 0.5") and len(lines) == 3
    masks = sorted(tmp_path.glob("*.png"))
    assert [m.name for m in masks] == ["chelsea.0.a-cat.png", "chelsea.1.the-sky.png"]
    with Image.open(image) as original, Image.open(masks[0]) as mask:
        assert mask.size == original.size and mask.mode == "L"
        share = np.mean(np.asarray(mask) > 0)
    assert f"{share:7.2%}" in lines[1]
    assert main(["run", str(tiny_clipseg.bundle), "--image", str(image), "--labels", "a cat"]) == 2
    assert "--labels do not apply to this bundle" in capsys.readouterr().err
    assert main(["run", str(tiny_clipseg.bundle), "--image", str(image)]) == 2


def test_cli_run_says_once_when_a_prompt_is_cut_and_masks_equal_segment(
    pipeline: ClipSegPipeline, tiny_clipseg: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prompts are encoded once for every image; one cut at the text window is said once, on stderr,
    and the areas printed are those of segment() with the same (cut) prompt."""
    long_prompt = "a " + "very " * 100 + "long cat"
    paths = [str(EVALUATION_IMAGES[k].path()) for k in (0, 1)]
    assert (
        main(
            [
                "run",
                str(tiny_clipseg.bundle),
                "--images",
                *paths,
                "--prompts",
                f"{long_prompt},the sky",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "77-token text window" in warnings[0], captured.err
    answers = json.loads(captured.out)
    with pytest.warns(UserWarning, match="text window"):
        want = pipeline.segment(EVALUATION_IMAGES[1].load(), [long_prompt, "the sky"]).areas()
    got = [entry["area"] for entry in answers[paths[1]]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_cli_bench_segments_with_each_prompt_count(
    tiny_clipseg: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "bench",
        str(tiny_clipseg.bundle),
        "--prompts",
        "1,3",
        "--batch",
        "1",
        "--iterations",
        "4",
        "--blocks",
        "1",
    ]
    assert main([*args, "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| segment: 1 image × 1 prompts |" in out and "| segment: 1 image × 3 prompts |" in out
    record = json.loads((tmp_path / "clipseg-fp32-onnxruntime.json").read_text())
    rows = record["pipeline"]
    assert [(r["items"], r["unit"]) for r in rows] == [(1, "prompts"), (3, "prompts")]
    assert all(r["engine"]["n"] == 2 and r["pytorch_eager"]["n"] == 2 and r["ratio_p50"] > 0 for r in rows)
    # Component rows use the leading dim of each graph (images, prompts) as the batch.
    assert {(r["component"], r["batch"]) for r in record["rows"]} == {
        ("image_encoder", 1),
        ("image_tail", 1),
        ("text_encoder", 1),
        ("decoder", 1),
    }
    assert (
        main(
            [
                "bench",
                str(tiny_clipseg.bundle),
                "--prompts",
                "1,30",
                "--batch",
                "1",
                "--iterations",
                "1",
                "--blocks",
                "1",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
