"""CLIP text at run time: the text-embedding cache, long texts (truncation with a warning, or
overlapping windows checked against PyTorch), and `trtdeploy run` over several images."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer

from trtdeploy.build import BuildResult
from trtdeploy.calibration.images import EVALUATION_IMAGES
from trtdeploy.cli import main
from trtdeploy.models.clip import BOS_ID, EOS_ID, RECIPE
from trtdeploy.models.clip_vocab import MAX_LENGTH, write_clip_tokenizer_json
from trtdeploy.runtime.bundle import Bundle
from trtdeploy.runtime.embedding_cache import bundle_graph_key
from trtdeploy.runtime.errors import ArtifactError, InputValidationError
from trtdeploy.runtime.pipelines.clip import ClipPipeline, text_model_key
from trtdeploy.runtime.tokenize import TextTokenizer, TextTruncatedWarning

LABELS = ["a photo of a cat", "a cup of coffee", "a rocket launch", "a photo of a dog"]
# 10 × 5 + 20 × 5 = 150 tokens between start and end: past the 77-token window, and its tail
# (rockets) is about something else than its head (cats), so the cut loses meaning.
LONG_TEXT = "a photo of a cat " * 10 + "a rocket launch at night " * 20
CONTENT = MAX_LENGTH - 2  # a text's own tokens per window (start and end tokens aside)
integration = pytest.mark.integration  # the tests that build the tiny bundles


# -- the tokenizer alone -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    write_clip_tokenizer_json(path)
    return TextTokenizer(path, max_length=MAX_LENGTH, pad_id=EOS_ID)


def test_a_cut_text_is_named_in_a_warning(tokenizer: TextTokenizer) -> None:
    with pytest.warns(
        TextTruncatedWarning, match=r"has 152 tokens, more than the 77-token text window"
    ) as seen:
        ids = tokenizer([LONG_TEXT, "a cat"])["input_ids"]
    assert len(seen) == 1 and "'a photo of a cat a photo" in str(seen[0].message)  # quoted, abbreviated
    assert "…" in str(seen[0].message) and "75 tokens are not seen" in str(seen[0].message)
    assert (
        ids.shape == (2, MAX_LENGTH) and ids[0, 0] == BOS_ID and ids[0, -1] == EOS_ID
    )  # cut, still ends in EOS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a text that fits says nothing
        tokenizer(["a photo of a cat", "word " * 75])  # 75 + 2 tokens: exactly the window


def test_windows_overlap_by_half_and_each_ends_in_eos(tokenizer: TextTokenizer) -> None:
    windows = tokenizer.windows(LONG_TEXT)
    whole = tokenizer._full.encode(LONG_TEXT, add_special_tokens=False).ids  # 150 content tokens
    assert [len(w) for w in windows] == [MAX_LENGTH] * 4  # starts 0, 37, 74 and 75 (the tail)
    for window, start in zip(windows, (0, 37, 74, len(whole) - CONTENT), strict=True):
        assert window == [BOS_ID, *whole[start : start + CONTENT], EOS_ID]
        assert int(np.argmax(window)) == len(window) - 1  # legacy pooling (argmax of ids) lands on EOS
    assert tokenizer.windows("a photo of a cat") == [tokenizer.encode(["a photo of a cat"])[0]]


# -- the cache ----------------------------------------------------------------------------------------


@pytest.fixture
def calls() -> Iterator[Callable[[Any, str], list[int]]]:
    """spy(pipeline, "text") -> a list that grows by the batch size of each call to that engine."""
    spied: list[tuple[Any, Any]] = []

    def spy(pipeline: Any, name: str) -> list[int]:
        engine = getattr(pipeline, name)
        sizes: list[int] = []
        real = engine.run
        engine.run = lambda feeds, **kw: sizes.append(len(next(iter(feeds.values())))) or real(feeds, **kw)
        spied.append((engine, real))
        return sizes

    yield spy
    for engine, real in spied:
        engine.run = real


@integration
def test_a_warm_zero_shot_runs_the_vision_engine_only(
    tiny_clip: BuildResult, calls: Callable[[Any, str], list[int]]
) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    cached, uncached = ClipPipeline.from_bundle(bundle), ClipPipeline.from_bundle(bundle, text_cache_size=0)
    text, vision = calls(cached, "text"), calls(cached, "vision")
    image = EVALUATION_IMAGES[0].load()
    cold = cached.zero_shot(image, LABELS)
    assert text == [len(LABELS)] and vision == [1]
    warm = cached.zero_shot(image, list(reversed(LABELS)))  # the same labels, in another order
    assert text == [len(LABELS)] and vision == [1, 1]  # the text engine did not run again
    expected = uncached.zero_shot(image, LABELS)
    assert cold == expected  # Ranked labels and float probabilities, equal bit for bit
    assert {r.label: r.probability for r in warm} == {r.label: r.probability for r in expected}
    assert np.array_equal(cached.text_embeddings(LABELS), uncached.text_embeddings(LABELS))
    assert text == [len(LABELS)]
    uncached_text = calls(uncached, "text")
    uncached.zero_shot(image, LABELS)
    assert uncached_text == [len(LABELS)]  # text_cache_size=0: every call encodes


@integration
def test_the_cache_is_bounded_least_recently_used_first(
    tiny_clip: BuildResult, calls: Callable[[Any, str], list[int]]
) -> None:
    pipeline = ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle), text_cache_size=2)
    text = calls(pipeline, "text")
    pipeline.text_embeddings(["a", "b"])
    pipeline.text_embeddings(["a"])  # "a" is now the most recent
    pipeline.text_embeddings(["c"])  # evicts "b"
    assert len(pipeline.text_cache) == 2 and text == [2, 1]
    pipeline.text_embeddings(["a", "c"])
    assert text == [2, 1]
    pipeline.text_embeddings(["b", "b"])  # one distinct miss, encoded once
    assert text == [2, 1, 1]
    pipeline.clear_text_cache()
    pipeline.text_embeddings(["b"])
    assert len(pipeline.text_cache) == 1 and text == [2, 1, 1, 1]
    with pytest.raises(InputValidationError, match="whole number of entries >= 0"):
        ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle), text_cache_size=-1)


@integration
def test_threads_sharing_a_small_cache_get_the_serial_answers(tiny_clip: BuildResult) -> None:
    pipeline = ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle), text_cache_size=3)
    queries = [LABELS[i % 4 :] + LABELS[: i % 4] for i in range(16)]  # rotations: hits and evictions
    serial = ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle), text_cache_size=0)
    expected = [serial.text_embeddings(q) for q in queries]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(pipeline.text_embeddings, queries))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-6)  # batches of other sizes round differently
    assert len(pipeline.text_cache) == 3


@integration
def test_a_saved_cache_warms_a_fresh_pipeline(
    tiny_clip: BuildResult, tmp_path: Path, calls: Callable[[Any, str], list[int]]
) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    first = ClipPipeline.from_bundle(bundle)
    odd = ["a photo of a cat\x00", "日本語 🚀", '"quoted", [bracketed]']  # keys stored exactly
    embeddings = first.text_embeddings([*LABELS, *odd])
    path = tmp_path / "labels.npz"
    assert first.save_text_cache(path) == len(LABELS) + len(odd)
    second = ClipPipeline.from_bundle(bundle)
    text = calls(second, "text")
    assert second.load_text_cache(path) == len(LABELS) + len(odd)
    assert np.array_equal(second.text_embeddings([*LABELS, *odd]), embeddings) and text == []
    image = EVALUATION_IMAGES[1].load()
    assert second.zero_shot(image, LABELS) == first.zero_shot(image, LABELS) and text == []
    chunked = ClipPipeline.from_bundle(bundle, long_text="chunks")
    chunked_text = calls(chunked, "text")
    chunked.load_text_cache(path)
    chunked.text_embeddings(LABELS)  # keys carry the long-text mode: truncate-mode rows don't serve it
    assert chunked_text == [len(LABELS)]
    small = ClipPipeline.from_bundle(bundle, text_cache_size=2)
    with pytest.raises(
        InputValidationError, match="holds 7 embeddings, more than this cache's capacity of 2"
    ):
        small.load_text_cache(path)


@integration
def test_a_cache_from_another_bundle_or_no_cache_file_is_refused(
    tiny_clip: BuildResult, tiny_clip_fp16: BuildResult, tmp_path: Path
) -> None:
    other = ClipPipeline.from_bundle(Bundle.load(tiny_clip_fp16.bundle))
    other.text_embeddings(LABELS)
    path = tmp_path / "fp16-labels.npz"
    other.save_text_cache(path)
    pipeline = ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle))
    with pytest.raises(ArtifactError, match="was computed with another bundle"):
        pipeline.load_text_cache(path)
    assert len(pipeline.text_cache) == 0
    bad = {
        "garbage.npz": lambda p: p.write_bytes(b"not a zip at all"),
        "one-array.npy": lambda p: np.save(p, np.zeros(3)),
        "pickled.npz": lambda p: np.savez(p, format=np.array([{"x": 1}], dtype=object)),
        "other.npz": lambda p: np.savez(p, embeddings=np.zeros((1, 16))),
    }
    for name, write in bad.items():
        write(tmp_path / name)
        with pytest.raises(ArtifactError, match="is not an embedding cache written by save_text_cache"):
            pipeline.load_text_cache(tmp_path / name)
    with pytest.raises(ArtifactError, match="no such file"):
        pipeline.load_text_cache(tmp_path / "missing.npz")


@integration
def test_the_key_names_the_text_graphs_and_matches_clipseg(
    tiny_clip: BuildResult, tiny_clip_fp16: BuildResult, tiny_clipseg: BuildResult
) -> None:
    from trtdeploy.runtime.pipelines.clipseg import IMAGE_ENCODER, IMAGE_TAIL, TEXT_ENCODER, bundle_model_key

    fp32, fp16 = Bundle.load(tiny_clip.bundle), Bundle.load(tiny_clip_fp16.bundle)
    assert text_model_key(fp32) != text_model_key(fp16)  # the same weights, other graphs
    assert text_model_key(fp32) != bundle_graph_key(fp32, ("text",))  # the tokenizer and settings count
    assert bundle_graph_key(fp32, ("text",)) != bundle_graph_key(fp32, ("vision",))
    clipseg = Bundle.load(tiny_clipseg.bundle)
    assert bundle_graph_key(clipseg, (IMAGE_ENCODER, IMAGE_TAIL, TEXT_ENCODER)) == bundle_model_key(clipseg)


# -- long texts ---------------------------------------------------------------------------------------


def torch_text_features(ids: list[list[int]]) -> np.ndarray:
    """(R, D) unit-norm get_text_features of token id rows (each already wrapped, none padded)."""
    model: Any = RECIPE.load("tiny").model
    with torch.inference_mode():
        out = model.get_text_features(input_ids=torch.tensor(ids)).pooler_output
    return torch.nn.functional.normalize(out, dim=-1).numpy()


@integration
def test_long_texts_are_cut_by_default_with_a_warning(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    pipeline = ClipPipeline.from_bundle(bundle)
    with pytest.warns(TextTruncatedWarning, match="has 152 tokens, more than the 77-token text window"):
        got = pipeline.text_embeddings([LONG_TEXT])[0]
    tok = CLIPTokenizer(tokenizer_file=str(bundle.asset("tokenizer")))
    cut = tok([LONG_TEXT], truncation=True, max_length=MAX_LENGTH)["input_ids"]  # what CLIP itself does
    np.testing.assert_allclose(got, torch_text_features(cut)[0], atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipeline.text_embeddings([LONG_TEXT])  # cached: cut and reported once


@integration
def test_chunks_average_overlapping_windows_like_pytorch(tiny_clip: BuildResult) -> None:
    bundle = Bundle.load(tiny_clip.bundle)
    tok = CLIPTokenizer(tokenizer_file=str(bundle.asset("tokenizer")))
    content = tok(LONG_TEXT, add_special_tokens=False)["input_ids"]  # 150 ids, built here independently
    starts = [*range(0, len(content) - CONTENT + 1, CONTENT // 2), len(content) - CONTENT]
    windows = [[tok.bos_token_id, *content[s : s + CONTENT], tok.eos_token_id] for s in starts]
    mean = torch_text_features(windows).mean(axis=0)
    expected = mean / np.linalg.norm(mean)
    pipeline = ClipPipeline.from_bundle(bundle, long_text="chunks")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is cut, so nothing is said
        got = pipeline.text_embeddings([LONG_TEXT, "a photo of a cat"])
    assert float(got[0] @ expected) >= 0.9999
    truncated = ClipPipeline.from_bundle(bundle, text_cache_size=0)
    short = truncated.text_embeddings(["a photo of a cat"])[0]
    assert float(got[1] @ short) >= 0.9999  # a text that fits is its own single window
    with pytest.warns(TextTruncatedWarning):
        assert float(got[0] @ truncated.text_embeddings([LONG_TEXT])[0]) < 0.9999  # the tail counts


@integration
def test_an_unknown_long_text_mode_is_refused(tiny_clip: BuildResult) -> None:
    with pytest.raises(
        InputValidationError, match=r"long_text must be 'truncate' .* or 'chunks' .*got 'mean'"
    ):
        ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle), long_text="mean")


# -- trtdeploy run over several images ----------------------------------------------------------------


def photo_folder(root: Path, count: int) -> list[str]:
    """``count`` evaluation photographs (PNGs) copied into root/photos, beside files that are not
    images; their paths in name order."""
    folder = root / "photos"
    folder.mkdir()
    photos = []
    for i, sample in enumerate(EVALUATION_IMAGES[:count]):
        assert sample.path().suffix == ".png"
        photos.append(str(shutil.copyfile(sample.path(), folder / f"{i:02d}-photo.png")))
    (folder / "notes.txt").write_text("not an image")  # a folder's other files are not images
    (folder / ".hidden.png").write_bytes(b"a resource fork, not a photo")  # nor are hidden ones
    return photos


def blocks(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            found[line.rstrip(":")] = []
        else:
            found[list(found)[-1]].append(line)
    return found


@integration
def test_run_batches_images_from_a_folder_a_glob_and_a_list(
    tiny_clip: BuildResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = photo_folder(tmp_path, 3)
    folder = tmp_path / "photos"
    batches: list[int] = []
    encoded: list[list[str]] = []
    made = ClipPipeline.from_bundle.__func__  # type: ignore[attr-defined]
    image_embeddings, text_embeddings = ClipPipeline.image_embeddings, ClipPipeline.text_embeddings

    def small_profile(cls: type, *args: Any, **kwargs: Any) -> ClipPipeline:
        pipeline = made(cls, *args, **kwargs)
        pipeline._max_images = 2  # as if the vision profile's largest batch were 2
        return pipeline

    monkeypatch.setattr(ClipPipeline, "from_bundle", classmethod(small_profile))
    monkeypatch.setattr(
        ClipPipeline,
        "image_embeddings",
        lambda self, images: batches.append(len(images)) or image_embeddings(self, images),
    )
    monkeypatch.setattr(
        ClipPipeline,
        "text_embeddings",
        lambda self, texts: encoded.append(list(texts)) or text_embeddings(self, texts),
    )
    for given in ([str(folder)], [str(folder / "*.png")], photos):
        assert main(["run", str(tiny_clip.bundle), "--images", *given, "--labels", "a cat,a dog"]) == 0
        answers = blocks(capsys.readouterr().out)
        assert list(answers) == photos and all(len(lines) == 2 for lines in answers.values())
        assert batches == [2, 1] and encoded == [["a cat", "a dog"]]  # labels once, images by the profile
        batches.clear()
        encoded.clear()
    monkeypatch.undo()
    pipeline = ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle))
    for path, lines in answers.items():
        expected = pipeline.zero_shot(EVALUATION_IMAGES[photos.index(path)].load(), ["a cat", "a dog"])
        assert lines == [f"  {r.probability:7.2%}  {r.label}" for r in expected]  # the single-image lines


@integration
def test_run_refuses_an_empty_folder_or_glob(
    tiny_clip: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "list.csv").write_text("a,b")
    cases = {
        str(tmp_path / "empty"): "is a folder with no image files in it",
        str(tmp_path / "*.png"): "matches no file",
    }
    for given, message in cases.items():
        assert main(["run", str(tiny_clip.bundle), "--images", given, "--labels", "a cat"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


@integration
def test_run_says_on_stderr_when_a_label_is_cut(
    tiny_clip: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(EVALUATION_IMAGES[0].path())
    assert (
        main(["run", str(tiny_clip.bundle), "--image", image, "--labels", f"a cat,{LONG_TEXT.strip()}"]) == 0
    )
    captured = capsys.readouterr()
    assert captured.err.count("warning: text 'a photo of a cat") == 1
    assert "has 152 tokens, more than the 77-token text window" in captured.err
    assert list(blocks(captured.out)) == [image]
