"""Florence-2 end to end: the five graphs against PyTorch, generation against transformers'
generate() token for token, the trained tiny model's gates against ground truth, and the runtime's
processor, answers and CLI."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessorPil

from trtdeploy.build import BuildResult, BuildSettings, BundleFromRecipe
from trtdeploy.calibration import shapes
from trtdeploy.calibration.images import EVALUATION_IMAGES
from trtdeploy.cli import main
from trtdeploy.models.florence2 import RECIPE, florence2_preprocess
from trtdeploy.models.recipe import COMMITTED_WEIGHTS
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import ArtifactError, InputValidationError, UsageError
from trtdeploy.runtime.florence2_answers import post_process_generation
from trtdeploy.runtime.locations import LOCATION_BINS
from trtdeploy.runtime.pipelines.florence2 import DECODER_WITH_PAST, Florence2Layout, Florence2Pipeline
from trtdeploy.runtime.targets import open_engines
from trtdeploy.runtime.verify import verify_bundle

pytestmark = pytest.mark.integration
SHAPES_CARD = json.loads((COMMITTED_WEIGHTS / "florence2-shapes-tiny" / "metrics.json").read_text())


def test_tiny_bundle_generates_every_task_as_generate_does(tiny_florence2: BuildResult) -> None:
    report = tiny_florence2.report
    assert report.passed
    assert {c.component for c in report.comparisons} == {
        "vision_encoder",
        "embed_tokens",
        "encoder",
        "decoder_init",
        "decoder_with_past",
    }
    assert all(c.samples.failed == 0 and c.cosine > 0.99999 for c in report.comparisons)
    exact = report.task("generation_exact_match")
    assert exact.value == 1.0 and exact.minimum == 1.0
    assert "18 cases" in exact.detail  # every task once (beam search), three greedily
    cases = dict(np.load(tiny_florence2.bundle / "reference" / "tasks.npz", allow_pickle=False))
    tasks = set(cases["generation/task"].tolist())
    assert len(tasks) == 15 and "<REGION_TO_OCR>" in tasks and "<CAPTION_TO_PHRASE_GROUNDING>" in tasks
    lengths = [(row >= 0).sum() for row in cases["generation/tokens"]]
    assert min(lengths) >= 9  # lengths forced: decoder start + at least 8 new tokens, compared step by step
    # ONNX Runtime's fused FP32 form of the vision tower and the encoder, verified as its own form.
    _graph, fused = tiny_florence2.reports
    assert fused.form == "onnxruntime fast form" and fused.task("generation_exact_match").value == 1.0
    forms = {c.name: dict(c.forms) for c in tiny_florence2.manifest.components}
    assert (
        forms["vision_encoder"] == {"onnxruntime": "vision_encoder.onnxruntime.onnx"}
        and not forms["decoder_init"]
    )
    assert (
        tiny_florence2.manifest.precision_method["fused_operators"]["encoder"]["SkipLayerNormalization"] > 0
    )


def test_the_padded_vocabulary_rows_can_never_win(tiny_florence2: BuildResult) -> None:
    bundle = Bundle.load(tiny_florence2.bundle)
    layout = Florence2Layout.from_json(bundle.manifest.pipeline_config)
    assert (layout.tokenizer_size, layout.vocab_size) == (51290, 51328)
    settings = layout.settings({"num_beams": 1, "max_new_tokens": 4})
    assert set(range(51290, 51328)) <= set(settings.suppress_tokens)
    # A caller's suppress_tokens replaces the checkpoint's list (as in generate()); padding stays.
    checkpoint = dataclasses.replace(
        layout, generation_config={**layout.generation_config, "suppress_tokens": [7]}
    )
    assert 7 in checkpoint.settings({}).suppress_tokens
    overridden = set(checkpoint.settings({"suppress_tokens": [5]}).suppress_tokens)
    assert 5 in overridden and 7 not in overridden and set(range(51290, 51328)) <= overridden

    class PaddingLover(Engine):
        """decoder_with_past with the highest logit always on a padding row."""

        def __init__(self, inner: Engine) -> None:
            super().__init__(inner.component, inner.io)
            self.inner, self.resident_kind = inner, inner.resident_kind

        def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self.inner.run(feeds)

        def _run_resident(self, feeds: Any, resident: Any, keep: Any) -> Any:
            host, kept = self.inner._run_resident(feeds, resident, keep)
            host["logits"][..., 51300] = 1e4
            return host, kept

        def _upload(self, array: np.ndarray) -> Any:
            return self.inner._upload(array)

    engines = open_engines(bundle)
    engines[DECODER_WITH_PAST] = PaddingLover(engines[DECODER_WITH_PAST])
    pipeline = Florence2Pipeline.from_bundle(bundle)
    pipeline.engines = engines
    (answer,) = pipeline.answer([EVALUATION_IMAGES[0].load()], "<CAPTION>", num_beams=1, max_new_tokens=4)
    assert answer.tokens[:2] == (2, 0) and max(answer.tokens) < 51290


def test_the_traced_channel_attention_is_the_native_arithmetic() -> None:
    import torch
    from transformers.models.florence2.modeling_florence2 import Florence2VisionChannelAttention

    from trtdeploy.models.florence2_graphs import TRACE_CONTEXTS, VisionEncoderExport

    model = RECIPE.load("tiny").model
    modules = [m for m in model.modules() if isinstance(m, Florence2VisionChannelAttention)]
    assert modules, "the tiny preset has no channel attention to rewrite"
    pixels = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        native = VisionEncoderExport(model)(pixels)
        with TRACE_CONTEXTS["vision_encoder"](model):
            traced = VisionEncoderExport(model)(pixels)
        again = VisionEncoderExport(model)(pixels)
    torch.testing.assert_close(traced, native, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, native), "the reference must run the native forward after a trace"
    assert not any("forward" in vars(m) for m in modules)


def test_the_eager_attention_switch_restores_every_config() -> None:
    """Every config is switched to eager for the trace and back afterwards; which graphs are traced
    under which context, and that each computes its reference's numbers, is
    tests/test_registry.py's test for every recipe."""
    from transformers import PretrainedConfig

    from trtdeploy.models.attention import eager_attention

    model = RECIPE.load("tiny").model
    configs = [m.config for m in model.modules() if isinstance(getattr(m, "config", None), PretrainedConfig)]
    before = [c._attn_implementation for c in configs]
    assert "eager" not in before  # else the trace would change nothing and this test prove nothing
    with eager_attention(model):
        assert {c._attn_implementation for c in configs} == {"eager"}
    assert [c._attn_implementation for c in configs] == before


def test_processor_equals_transformers_at_768() -> None:
    images = [s.load() for s in EVALUATION_IMAGES[:3]]
    theirs = CLIPImageProcessorPil(
        size={"height": 768, "width": 768},
        do_center_crop=False,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )(images=images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(florence2_preprocess()(images), theirs, rtol=0, atol=1e-6)


def test_shapes_bundle_equals_generate_and_the_card(shapes_florence2: BuildResult) -> None:
    """Greedy (its generation config) and beam search (3 beams, no-repeat 3) give generate()'s very
    tokens on the card's 32-image slice, so caption exact match and OD mAP@0.5 are the card's."""
    report = shapes_florence2.report
    exact = report.task("generation_exact_match")
    assert exact.value == 1.0 and "128 cases" in exact.detail
    card = SHAPES_CARD["slice"]
    assert card["count"] == 32
    assert report.task("caption_exact_match").value == pytest.approx(card["metrics"]["caption_exact_match"])
    assert report.task("od_map50").value == pytest.approx(card["metrics"]["od_map50"])
    cases = dict(np.load(shapes_florence2.bundle / "reference" / "tasks.npz", allow_pickle=False))
    settings = {json.loads(s).get("num_beams", 1) for s in cases["generation/settings"]}
    assert settings == {1, 3}


class Perturbed(Engine):
    """decoder_with_past with its logits changed by ``change`` (a broken engine for the gates)."""

    def __init__(self, inner: Engine, change: Any) -> None:
        super().__init__(inner.component, inner.io)
        self.inner, self.change, self.resident_kind = inner, change, inner.resident_kind

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.run(feeds)
        out["logits"] = self.change(out["logits"].copy())
        return out

    def _run_resident(self, feeds: Any, resident: Any, keep: Any) -> Any:  # the generation loop's path
        host, kept = self.inner._run_resident(feeds, resident, keep)
        host["logits"] = self.change(host["logits"].copy())
        return host, kept

    def _upload(self, array: np.ndarray) -> Any:  # residents it is given belong to the inner backend
        return self.inner._upload(array)


def _location_ids(bundle: Bundle) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle.asset("tokenizer")))
    return np.array([tokenizer.token_to_id(f"<loc_{i}>") for i in range(LOCATION_BINS)])


def test_each_gate_fails_on_a_perturbed_engine(shapes_florence2: BuildResult) -> None:
    bundle = Bundle.load(shapes_florence2.bundle)
    locations = _location_ids(bundle)

    def shifted_boxes(logits: np.ndarray) -> np.ndarray:  # every location read 60 bins further on
        logits[..., locations] = np.roll(logits[..., locations], 60, axis=-1)
        return logits

    engines = open_engines(bundle)
    engines[DECODER_WITH_PAST] = Perturbed(engines[DECODER_WITH_PAST], shifted_boxes)
    report = verify_bundle(bundle, engines, "onnxruntime")
    assert not report.task("generation_exact_match").passed
    assert not report.task("od_map50").passed and report.task("od_map50").value < 0.5
    assert report.task("caption_exact_match").passed  # captions hold no location tokens

    eos = Florence2Layout.from_json(bundle.manifest.pipeline_config).eos_id

    def early_end(logits: np.ndarray) -> np.ndarray:  # answers cut short: end favoured early on
        logits[..., eos] += 8.0
        return logits

    engines = open_engines(bundle)
    engines[DECODER_WITH_PAST] = Perturbed(engines[DECODER_WITH_PAST], early_end)
    report = verify_bundle(bundle, engines, "onnxruntime")
    assert not report.task("caption_exact_match").passed


def test_answers_are_transformers_post_processing_of_our_tokens(shapes_florence2: BuildResult) -> None:
    bundle = Bundle.load(shapes_florence2.bundle)
    pipeline = Florence2Pipeline.from_bundle(bundle)
    samples = shapes.samples("evaluation", 0, 3)
    images = [Image.fromarray(s.image) for s in samples]
    features, sizes = pipeline.image_features(images)
    detections = pipeline.answer_features(features, sizes, "<OD>")
    captions = pipeline.answer_features(features, sizes, "<CAPTION>")
    for sample, od, caption in zip(samples, detections, captions, strict=True):
        assert od.parsed == post_process_generation(od.text, "<OD>", (128, 128))["<OD>"]
        assert sorted(od.parsed["labels"]) == sorted(sample.box_labels)
        assert caption.parsed == sample.caption
    # The same features answer both tasks: the vision tower ran once for the three images.
    assert features.shape == (3, 65, 128)


def test_cli_run_prints_the_parsed_answer_and_draws_it(
    shapes_florence2: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "shapes.png"
    sample = shapes.sample("evaluation", 1)
    Image.fromarray(sample.image).save(image)
    bundle = str(shapes_florence2.bundle)
    assert (
        main(
            [
                "run",
                bundle,
                "--image",
                str(image),
                "--task",
                "<OD>",
                "--json",
                "--out-dir",
                str(tmp_path / "drawn"),
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)[str(image)]
    assert sorted(answer["answer"]["labels"]) == sorted(sample.box_labels)
    with Image.open(answer["drawn"]) as drawn:
        assert drawn.size == (128, 128)
    assert main(["run", bundle, "--image", str(image), "--task", "<CAPTION>", "--num-beams", "3"]) == 0
    assert sample.caption in capsys.readouterr().out
    assert main(["run", bundle, "--image", str(image), "--labels", "a cat"]) == 2
    assert "--labels do not apply to this bundle" in capsys.readouterr().err
    assert main(["run", bundle, "--image", str(image)]) == 2
    assert "--task is missing" in capsys.readouterr().err
    assert main(["run", bundle, "--image", str(image), "--task", "<CAPTION>", "--text", "a cat"]) == 2
    assert "takes no input" in capsys.readouterr().err


def test_pipeline_refuses_bad_requests(shapes_florence2: BuildResult) -> None:
    pipeline = Florence2Pipeline.from_bundle(Bundle.load(shapes_florence2.bundle))
    image = Image.fromarray(shapes.sample("evaluation", 2).image)
    cases: list[tuple[Any, str, dict[str, Any], str]] = [
        ([image], "<SEGMENT>", {}, "expected a Florence-2 task token"),
        ([image], "<OD>", {"num_beams": 0}, "num_beams"),
        ([image], "<OD>", {"do_sample": True}, "do_sample"),
        ([], "<OD>", {}, "non-empty list of images"),
        (image, "<OD>", {}, "non-empty list of images"),
        ([np.zeros((3, 8, 8), np.uint8)], "<OD>", {}, "uint8 laid out"),
    ]
    for images, task, options, message in cases:
        with pytest.raises(InputValidationError, match=message):
            pipeline.answer(images, task, **options)
    # Settings the engines cannot hold are refused before the vision tower runs, not after.
    rows = pipeline.engines[DECODER_WITH_PAST].io.dims["rows"].max
    positions = pipeline.engines[DECODER_WITH_PAST].io.dims["present"].max
    pipeline.image_features = lambda *a: pytest.fail("the vision tower ran")  # type: ignore[method-assign]
    too_much: list[tuple[dict[str, Any], str]] = [
        ({"num_beams": rows + 1}, f"at most {rows} rows"),
        ({"max_new_tokens": positions}, f"max_new_tokens={positions - 1} or fewer"),
    ]
    for options, message in too_much:
        with pytest.raises(UsageError, match=re.escape(message)):
            pipeline.answer([image], "<OD>", **options)
    del pipeline.image_features  # the longest generation the engines hold does run
    assert (
        len(pipeline.answer([image], "<OD>", num_beams=1, max_new_tokens=positions - 1)[0].tokens)
        <= positions
    )


def test_a_generation_config_with_wrong_ids_is_refused(tmp_path: Path) -> None:
    """Fine-tunes in the wild ship bos 2 / eos 1 / pad 0: refused, naming each field, never used."""
    folder = tmp_path / "finetune"
    shutil.copytree(COMMITTED_WEIGHTS / "florence2-shapes-tiny", folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(
        json.dumps({**config, "eos_token_id": 1, "pad_token_id": 0})
    )
    settings = BuildSettings(model="florence2", weights=folder, out=tmp_path / "bundle", quiet=True)
    with pytest.raises(ArtifactError, match="eos_token_id") as info:
        BundleFromRecipe(settings)()
    assert "pad_token_id" in str(info.value)
    assert not (tmp_path / "bundle").exists()


def test_remote_code_checkpoints_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "original"
    shutil.copytree(COMMITTED_WEIGHTS / "florence2-shapes-tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="remote code"):
        RECIPE.load(weights=folder)


def test_kept_kv_cache_matches_the_host_round_trip_and_is_not_rescanned(
    shapes_florence2: BuildResult,
) -> None:
    """IO binding (the cache kept as OrtValues) gives the same outputs as plain runs with numpy
    caches; and a kept input is shape-checked, not scanned for NaN again (it was checked when made)."""
    import onnxruntime as ort

    bundle = Bundle.load(shapes_florence2.bundle)
    engine = open_engines(bundle)[DECODER_WITH_PAST]
    feeds, _ = bundle.reference(DECODER_WITH_PAST)
    plain = engine.run(feeds)
    past = [n for n in feeds if n.startswith("past.")]
    resident = {}
    from trtdeploy.runtime.engine import Resident

    for name in past:
        value = ort.OrtValue.ortvalue_from_numpy(feeds[name])
        resident[name] = Resident(feeds[name].shape, "float32", value, engine.resident_kind)
    host = {n: v for n, v in feeds.items() if n not in past}
    outputs, kept = engine.run_resident(host, resident, keep=["present.0.decoder.key"])
    np.testing.assert_array_equal(outputs["logits"], plain["logits"])
    np.testing.assert_array_equal(
        kept["present.0.decoder.key"].handle.numpy(), plain["present.0.decoder.key"]
    )
    poisoned = feeds[past[0]].copy()
    poisoned[0, 0, 0, 0] = np.nan
    with pytest.raises(InputValidationError, match="NaN"):
        engine.run({**feeds, past[0]: poisoned})
    resident[past[0]] = Resident(
        poisoned.shape, "float32", ort.OrtValue.ortvalue_from_numpy(poisoned), engine.resident_kind
    )
    with pytest.raises(Exception, match="NaN or Inf"):  # the kept input passed; the NaN shows in the outputs
        engine.run_resident(host, resident)
    as_half = feeds[past[1]].astype(np.float16)
    wrong_type = Resident(
        as_half.shape, "float16", ort.OrtValue.ortvalue_from_numpy(as_half), engine.resident_kind
    )
    with pytest.raises(
        InputValidationError, match=f"kept inputs of the wrong type \\({past[1]} is float16\\)"
    ):
        engine.run_resident(host, {**resident, past[1]: wrong_type})
    with pytest.raises(InputValidationError, match=r"axis 2 \(past\)"):
        wrong = feeds[past[1]][:, :, :0]
        resident[past[1]] = Resident(wrong.shape, "float32", None, engine.resident_kind)
        engine.run_resident(host, resident)


def test_a_bundle_without_its_generation_reference_fails_verification(
    tiny_florence2: BuildResult, tmp_path: Path
) -> None:
    """Per-graph tensors alone never pass a Florence-2 bundle whose budget gates generation."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_florence2.bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    rel = manifest["assets"].pop("task_reference")
    manifest["files"].pop(rel)
    (copy / rel).unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = Bundle.load(copy)
    report = verify_bundle(bundle, open_engines(bundle, threads=1), "onnxruntime")
    assert not report.passed
    assert any(
        "generation_exact_match: nan" in f and "no generation reference" in f for f in report.failures()
    )
