"""Hostile and careless inputs to the runtime and the CLI: each is refused with trtdeploy's own error
class and a message that says what to do; none passes by reading a traceback, and none hangs.

Bundle files (manifest, references, pipeline.json, stray files, links), pipeline calls (images,
labels, prompts, settings), and the commands a newcomer types first.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from trtdeploy.build import BuildResult
from trtdeploy.calibration.images import EVALUATION_IMAGES
from trtdeploy.cli import main
from trtdeploy.runtime.bundle import MANIFEST, Bundle, sha256_file
from trtdeploy.runtime.errors import ArtifactError, InputValidationError, NumericalError
from trtdeploy.runtime.pipelines.clip import ClipPipeline
from trtdeploy.runtime.pipelines.clipseg import ClipSegPipeline
from trtdeploy.runtime.targets import open_engine

pytestmark = pytest.mark.integration


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads((bundle / MANIFEST).read_text())
    edit(data)
    (bundle / MANIFEST).write_text(json.dumps(data))


def rehash(bundle: Path, rel: str) -> None:
    """Make the manifest agree with an edited file, as an attacker who can write the folder would."""

    def edit(data: dict[str, Any]) -> None:
        data["files"][rel] = {"sha256": sha256_file(bundle / rel), "size": (bundle / rel).stat().st_size}

    edit_manifest(bundle, edit)


def edit_pipeline(bundle: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Change pipeline.json and the manifest's copy of it consistently (hashes included)."""
    config = json.loads((bundle / "pipeline.json").read_text())
    change(config)
    (bundle / "pipeline.json").write_text(json.dumps(config))
    rehash(bundle, "pipeline.json")
    edit_manifest(bundle, lambda d: d.update(pipeline_config=config))


MANIFEST_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    (
        "file record is a string",
        lambda d: d["files"].update({"vision.onnx": "abc"}),
        "not an object with sha256",
    ),
    ("size is not a number", lambda d: d["files"]["vision.onnx"].update(size="big"), "not a byte count"),
    ("size is negative", lambda d: d["files"]["vision.onnx"].update(size=-1), "not a byte count"),
    ("sha256 is not hex", lambda d: d["files"]["vision.onnx"].update(sha256="z" * 64), "not 64 hex digits"),
    ("files is a list", lambda d: d.update(files=[1, 2]), "not a valid trtdeploy manifest"),
    ("components is a string", lambda d: d.update(components="vision"), "not a valid trtdeploy manifest"),
    ("component file is a number", lambda d: d["components"][0].update(onnx=7), "onnx must be a text"),
    ("format version is text", lambda d: d.update(format_version="1"), "format version '1'"),
    (
        "budget task misspelled",
        lambda d: d["budget"]["tasks"].update(zero_shot_top_1=0.5),
        "does not compute",
    ),
    (
        "budget output unmatched",
        lambda d: d["budget"]["outputs"].update({"vision/embedz": d["budget"]["outputs"]["*"]}),
        "no component has",
    ),
    ("unknown pipeline", lambda d: d.update(pipeline="resnet"), "pipeline 'resnet'"),
    (
        "asset path is a number",
        lambda d: d["assets"].update(tokenizer=7),
        "every asset must be a relative path",
    ),
    ("a component twice", lambda d: d["components"].append(d["components"][0]), "a name twice"),
    (
        "weights as pairs",
        lambda d: d.update(weights=[["source", "preset"]]),
        "'weights' is a list, not an object",
    ),
    ("tools as pairs", lambda d: d.update(tools=[["torch", "2"]]), "'tools' is a list, not an object"),
]


@pytest.mark.parametrize(("case", "edit", "message"), MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_malformed_manifests_are_refused(tiny_clip_copy: Path, case: str, edit: Any, message: str) -> None:
    edit_manifest(tiny_clip_copy, edit)
    with pytest.raises(ArtifactError, match=message):
        Bundle.load(tiny_clip_copy)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # deeper than the parser follows
        ("[1, 2, 3]", "not an object"),
        ("\xff\xfe garbage", "not valid JSON"),
        ("", "not valid JSON"),
    ],
    ids=["deeply nested", "a list", "not UTF-8", "empty"],
)
def test_manifests_that_are_not_json_objects_are_refused(
    tiny_clip_copy: Path, content: str, message: str
) -> None:
    (tiny_clip_copy / MANIFEST).write_bytes(content.encode("utf-8", "surrogateescape") if content else b"")
    with pytest.raises(ArtifactError, match=message):
        Bundle.load(tiny_clip_copy)


def test_a_pickle_bearing_reference_is_refused(tiny_clip_copy: Path) -> None:
    rel = "reference/vision.inputs.npz"
    with open(tiny_clip_copy / rel, "wb") as fh:
        np.savez(fh, pixel_values=np.array([{"evil": "payload"}], dtype=object))  # needs pickle to load
    rehash(tiny_clip_copy, rel)
    bundle = Bundle.load(tiny_clip_copy)
    with pytest.raises(ArtifactError, match="never hold pickled data"):
        bundle.reference("vision")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda fh: fh.write(b"PK\x03\x04" + b"\x00" * 40), "not an .npz of plain arrays"),  # a broken zip
        (lambda fh: np.save(fh, np.zeros(3, np.float32)), "a single array"),
        (lambda fh: np.savez(fh, pixel_values=np.array([b"abc"])), "numbers or text only"),
    ],
    ids=["truncated zip", "an .npy in place of the .npz", "bytes values"],
)
def test_reference_arrays_that_are_not_plain_numbers_are_refused(
    tiny_clip_copy: Path, content: Callable[[Any], Any], message: str
) -> None:
    rel = "reference/vision.inputs.npz"
    with open(tiny_clip_copy / rel, "wb") as fh:
        content(fh)
    rehash(tiny_clip_copy, rel)
    with pytest.raises(ArtifactError, match=message):
        Bundle.load(tiny_clip_copy).reference("vision")


def test_an_unlisted_external_data_file_is_refused_not_loaded(tiny_clip_copy: Path) -> None:
    (tiny_clip_copy / "vision.onnx.data").write_bytes(b"\x00" * 64)  # weights an ONNX graph could read
    with pytest.raises(ArtifactError, match=r"files its manifest does not list \(vision.onnx.data\)"):
        Bundle.load(tiny_clip_copy)


def test_links_anywhere_in_a_bundle_are_refused(tiny_clip_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tiny_clip_copy / "engines").symlink_to(elsewhere)  # a plan cache brought in from outside
    with pytest.raises(ArtifactError, match="holds symbolic links \\(engines\\)"):
        Bundle.load(tiny_clip_copy)
    (tiny_clip_copy / "engines").unlink()
    link = tmp_path / "bundle-link"
    link.symlink_to(tiny_clip_copy)
    with pytest.raises(ArtifactError, match="symbolic link"):
        Bundle.load(link)


def test_hard_links_into_a_bundle_are_refused(tiny_clip_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-name"
    os.link(tiny_clip_copy / "vision.onnx", outside)  # whoever holds this name can rewrite the graph
    with pytest.raises(ArtifactError, match=r"hard links: vision.onnx"):
        Bundle.load(tiny_clip_copy)
    outside.unlink()
    Bundle.load(tiny_clip_copy)


def test_an_onnxruntime_trt_cache_inside_a_bundle_is_refused(tiny_clip_copy: Path, host_cache: Path) -> None:
    from trtdeploy.runtime.targets import _ort_trt_cache

    (tiny_clip_copy / "ort-trt-cache").mkdir()  # engines with no record, copied in from elsewhere
    (tiny_clip_copy / "ort-trt-cache" / "vision.engine").write_bytes(b"plan")
    with pytest.raises(
        ArtifactError, match=r"files its manifest does not list \(ort-trt-cache/vision.engine\)"
    ):
        Bundle.load(tiny_clip_copy)
    shutil.rmtree(tiny_clip_copy / "ort-trt-cache")
    # The provider's own cache lives in this host's cache folder, named by the graph it was built from.
    cache = Path(_ort_trt_cache(Bundle.load(tiny_clip_copy), "vision"))
    assert cache == host_cache / "onnxruntime-trt" / sha256_file(tiny_clip_copy / "vision.onnx")[:32]


def test_an_engines_link_is_refused_by_the_plan_cache(tiny_clip_copy: Path, tmp_path: Path) -> None:
    from trtdeploy.runtime.engine_cache import EngineCache

    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "vision-0.json").write_text("{}")
    (tiny_clip_copy / "engines").symlink_to(forged)
    with pytest.raises(ArtifactError, match="symbolic link; plans are read only from the bundle's own"):
        EngineCache(tiny_clip_copy).records()


PIPELINE_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("negative size", lambda c: c["preprocess"].update(size=-224), "whole numbers from 1"),
    ("huge size", lambda c: c["preprocess"].update(size=10**9), "whole numbers from 1"),
    ("size as text", lambda c: c["preprocess"].update(size="224"), "whole numbers from 1"),
    ("unknown resample", lambda c: c["preprocess"].update(resample="lanczos"), "unknown resample"),
    ("unknown resize", lambda c: c["preprocess"].update(resize="fit"), "unknown resize"),
    ("zero std", lambda c: c["preprocess"].update(std=[0, 1, 1]), "std > 0"),
    ("NaN mean", lambda c: c["preprocess"].update(mean=[float("nan"), 0, 0]), "finite number"),
    ("text length 1e30", lambda c: c.update(max_text_length=1e30), "max_text_length"),
    ("text length 0", lambda c: c.update(max_text_length=0), "max_text_length"),
    ("negative pad id", lambda c: c.update(pad_id=-1), "pad_id"),
    ("logit scale 1e9", lambda c: c.update(logit_scale=1e9), "logit_scale"),
    ("logit scale text", lambda c: c.update(logit_scale="4.6"), "logit_scale"),
    ("preprocess missing", lambda c: c.pop("preprocess"), "no 'preprocess'"),
]


@pytest.mark.parametrize(("case", "change", "message"), PIPELINE_CASES, ids=[c[0] for c in PIPELINE_CASES])
def test_absurd_pipeline_settings_are_refused_when_the_bundle_loads(
    tiny_clip_copy: Path, case: str, change: Any, message: str
) -> None:
    edit_pipeline(tiny_clip_copy, change)
    with pytest.raises(ArtifactError, match=message):
        Bundle.load(tiny_clip_copy)


def test_pipeline_json_edited_apart_from_the_manifest_is_refused(tiny_clip_copy: Path) -> None:
    config = json.loads((tiny_clip_copy / "pipeline.json").read_text())
    (tiny_clip_copy / "pipeline.json").write_text(json.dumps({**config, "logit_scale": 1.0}))
    rehash(tiny_clip_copy, "pipeline.json")
    with pytest.raises(ArtifactError, match="differs from the settings the manifest recorded"):
        Bundle.load(tiny_clip_copy)


@pytest.fixture(scope="module")
def clip(tiny_clip: BuildResult) -> ClipPipeline:
    return ClipPipeline.from_bundle(Bundle.load(tiny_clip.bundle))


@pytest.fixture(scope="module")
def clipseg(tiny_clipseg: BuildResult) -> ClipSegPipeline:
    return ClipSegPipeline.from_bundle(Bundle.load(tiny_clipseg.bundle))


PHOTO = EVALUATION_IMAGES[0].load


ZERO_SHOT_CASES: list[tuple[str, Callable[[], Any], Any, str]] = [
    ("image None", lambda: None, ["a cat"], "expected a PIL image"),
    ("image a path string", lambda: "cat.jpg", ["a cat"], "Open files with PIL.Image.open"),
    ("CHW float array", lambda: np.zeros((3, 32, 32), np.float32), ["a cat"], "uint8 laid out"),
    ("CHW uint8 array", lambda: np.zeros((3, 32, 32), np.uint8), ["a cat"], "uint8 laid out"),
    ("five channels", lambda: np.zeros((32, 32, 5), np.uint8), ["a cat"], "uint8 laid out"),
    ("4-D batch array", lambda: np.zeros((1, 32, 32, 3), np.uint8), ["a cat"], "uint8 laid out"),
    ("1 x 10000 strip", lambda: Image.new("RGB", (1, 10000)), ["a cat"], "aspect ratio above"),
    ("empty image", lambda: np.zeros((0, 4, 3), np.uint8), ["a cat"], "at least one pixel"),
    ("labels empty", PHOTO, [], "the list is empty"),
    ("labels one string", PHOTO, "a cat", "expected a list of texts, got str"),
    ("labels numbers", PHOTO, [1, 2], "is a int"),
    ("label None", PHOTO, ["a cat", None], "is a NoneType"),
    ("label blank", PHOTO, ["a cat", "   "], "is blank"),
    ("lone surrogate", PHOTO, ["a \ud800 cat"], "lone surrogate"),
    ("label a megabyte", PHOTO, ["x" * 1_000_001], "characters; at most"),
    ("labels a dict", PHOTO, {"a": 1}, "expected a list of texts"),
]


@pytest.mark.parametrize(
    ("case", "image", "labels", "message"), ZERO_SHOT_CASES, ids=[c[0] for c in ZERO_SHOT_CASES]
)
def test_bad_zero_shot_calls_are_refused(
    clip: ClipPipeline, case: str, image: Any, labels: Any, message: str
) -> None:
    with pytest.raises(InputValidationError, match=message):
        clip.zero_shot(image(), labels)


@pytest.mark.parametrize("top_k", [-1, 0, 1.5, True, "3"])
def test_retrieve_refuses_a_bad_top_k(clip: ClipPipeline, top_k: Any) -> None:
    with pytest.raises(InputValidationError, match="top_k must be a whole number"):
        clip.retrieve("a cat", [PHOTO()], top_k=top_k)


def test_outputs_with_nan_or_inf_are_never_returned(tiny_clip: BuildResult) -> None:
    """Finite pixels so large the graph overflows: the engine says so instead of returning NaN."""
    engine = open_engine(Bundle.load(tiny_clip.bundle), "vision")
    pixels = np.full((1, 3, 224, 224), 3e38, np.float32)
    with pytest.raises(NumericalError, match="hold NaN or Inf.*pixel_values in \\[3e\\+38"):
        engine.run({"pixel_values": pixels})


SEGMENT_CASES: list[tuple[str, Any, dict[str, Any], str]] = [
    ("10 000 prompts at once", ["a cat"] * 10_000, {}, "Use segment_chunks"),
    ("threshold above 1", ["a cat"], {"threshold": 1.5}, "strictly between 0 and 1"),
    ("threshold as text", ["a cat"], {"threshold": "0.5"}, "strictly between 0 and 1"),
    ("prompts None", None, {}, "non-empty list"),
    ("prompt surrogate", ["\udfff"], {}, "lone surrogate"),
]


@pytest.mark.parametrize(
    ("case", "prompts", "options", "message"), SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES]
)
def test_bad_segment_calls_are_refused(
    clipseg: ClipSegPipeline, case: str, prompts: Any, options: Any, message: str
) -> None:
    with pytest.raises(InputValidationError, match=message):
        clipseg.segment(PHOTO(), prompts, **options)


def test_many_prompts_stream_in_bounded_chunks(clipseg: ClipSegPipeline) -> None:
    prompts = [f"thing {i}" for i in range(20)]
    chunks = list(clipseg.segment_chunks(PHOTO(), prompts, chunk=8))
    assert [len(c.prompts) for c in chunks] == [8, 8, 4]
    whole = clipseg.segment(PHOTO(), prompts[8:16])
    np.testing.assert_allclose(chunks[1].probabilities, whole.probabilities, atol=1e-6)


def fake_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height (a decompression bomb needs no more to be refused)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


IMAGE_FILE_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing file", lambda d: d / "nope.jpg", "no such file"),
    ("a folder", lambda d: d, "is a folder"),
    (
        "a text file",
        lambda d: (d / "notes.jpg").write_text("hello") and d / "notes.jpg",
        "not an image PIL can read",
    ),
    ("an empty file", lambda d: (d / "empty.png").write_bytes(b"") or d / "empty.png", "is empty"),
    ("a 20000 x 20000 bomb", lambda d: fake_png(d / "bomb.png", 20000, 20000), "too large to decode safely"),
    (
        "a truncated photo",
        lambda d: (
            (d / "cut.jpg").write_bytes(EVALUATION_IMAGES[3].path().read_bytes()[:2000]) and d / "cut.jpg"
        ),
        "truncated",
    ),
]


@pytest.mark.parametrize(("case", "make", "message"), IMAGE_FILE_CASES, ids=[c[0] for c in IMAGE_FILE_CASES])
def test_run_refuses_bad_image_files(
    tiny_clip: BuildResult,
    tmp_path: Path,
    case: str,
    make: Any,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make(tmp_path)
    assert main(["run", str(tiny_clip.bundle), "--image", str(path), "--labels", "a cat"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_run_on_a_fifo_returns_at_once(
    tiny_clip: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it to read would block until a writer came
    assert main(["run", str(tiny_clip.bundle), "--image", str(fifo), "--labels", "a cat"]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_out_dir_never_writes_over_an_input_and_keeps_same_stems_apart(
    tiny_clipseg: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = EVALUATION_IMAGES[0].path()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        shutil.copy(photo, tmp_path / folder / "cat.png")
    run = ["run", str(tiny_clipseg.bundle), "--prompts", "a cat", "--threads", "1"]
    images = ["--image", str(tmp_path / "a" / "cat.png"), "--image", str(tmp_path / "b" / "cat.png")]
    assert main([*run, *images, "--out-dir", str(tmp_path / "masks")]) == 0
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "0-cat.0.a-cat.png",
        "1-cat.0.a-cat.png",
    ]
    capsys.readouterr()
    # An input named like an output, in the output folder itself: refused before anything runs.
    shutil.copy(photo, tmp_path / "a" / "cat.0.a-cat.png")
    before = (tmp_path / "a" / "cat.0.a-cat.png").read_bytes()
    named = tmp_path / "a" / "cat.0.a-cat.png"
    assert (
        main(
            [
                *run,
                "--image",
                str(named),
                "--image",
                str(named.with_name("cat.png")),
                "--out-dir",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    assert "would write" in capsys.readouterr().err and named.read_bytes() == before


CLI_CASES: list[tuple[str, Callable[[Path, Path], list[str]], str]] = [
    (
        "--out-dir is a file",
        lambda b, d: [
            "run",
            str(b),
            "--image",
            str(EVALUATION_IMAGES[0].path()),
            "--prompts",
            "a cat",
            "--out-dir",
            str(d / "f.txt"),
        ],
        "is a file, not a folder",
    ),
    (
        "--labels on CLIPSeg",
        lambda b, d: ["run", str(b), "--image", str(EVALUATION_IMAGES[0].path()), "--labels", "a cat"],
        "do not apply to this bundle",
    ),
    (
        "--prompts empty",
        lambda b, d: ["run", str(b), "--image", str(EVALUATION_IMAGES[0].path()), "--prompts", " , "],
        "missing or empty",
    ),
    (
        "verify --report in a missing folder",
        lambda b, d: ["verify", str(b), "--report", str(d / "no" / "r.json")],
        "does not exist",
    ),
    ("verify --report a folder", lambda b, d: ["verify", str(b), "--report", str(d)], "is a folder"),
    ("bench --iterations 0", lambda b, d: ["bench", str(b), "--iterations", "0"], "at least 1"),
    ("bench --batch -1", lambda b, d: ["bench", str(b), "--batch", "-1"], "at least 1"),
    ("bench --batch x", lambda b, d: ["bench", str(b), "--batch", "1,x"], "whole numbers"),
    ("bench --threads 0", lambda b, d: ["bench", str(b), "--threads", "0"], "at least 1"),
    ("unknown command", lambda b, d: ["deploy", str(b)], "invalid choice"),
    ("run without --image", lambda b, d: ["run", str(b), "--prompts", "a cat"], "--image"),
    ("verify a missing bundle", lambda b, d: ["verify", str(d / "nowhere")], "does not exist"),
]


@pytest.mark.parametrize(("case", "argv", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_mistakes_get_a_usage_error(
    tiny_clipseg: BuildResult,
    tmp_path: Path,
    case: str,
    argv: Any,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "f.txt").write_text("mine")
    code = main(argv(tiny_clipseg.bundle, tmp_path))
    err = capsys.readouterr().err
    assert code == (3 if case == "verify a missing bundle" else 2), err
    assert message in err and "Traceback" not in err
    assert (tmp_path / "f.txt").read_text() == "mine"


def test_a_file_the_system_refuses_is_a_message_not_a_traceback(
    tiny_clipseg: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("mine")  # a file where the output folder's parent should be
    argv = [
        "run",
        str(tiny_clipseg.bundle),
        "--image",
        str(EVALUATION_IMAGES[0].path()),
        "--prompts",
        "a cat",
    ]
    code = main([*argv, "--out-dir", str(blocker / "masks")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert str(blocker / "masks") in err and "Traceback" not in err
    assert blocker.read_text() == "mine"


def test_a_bundle_copy_missing_its_pipeline_json_still_says_what_to_do(
    tiny_clip_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(tiny_clip_copy / "tokenizer")
    assert main(["info", str(tiny_clip_copy)]) == 3
    assert "is missing" in capsys.readouterr().err


def test_engines_are_released_on_close_and_when_a_later_one_fails(
    tiny_clip_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trtdeploy.runtime.onnxruntime_backend import OrtEngine
    from trtdeploy.runtime.targets import open_engines

    closed: list[str] = []
    close = OrtEngine.close

    def counting_close(self: OrtEngine) -> None:
        closed.append(self.component)
        close(self)

    monkeypatch.setattr(OrtEngine, "close", counting_close)
    with ClipPipeline.from_bundle(Bundle.load(tiny_clip_copy), threads=1) as pipeline:
        pipeline.zero_shot(EVALUATION_IMAGES[0].load(), ["a cat", "a dog"])
    assert sorted(closed) == ["text", "vision"]
    closed.clear()
    (tiny_clip_copy / "text.onnx").write_bytes(b"not a graph")  # the second engine cannot open
    rehash(tiny_clip_copy, "text.onnx")
    with pytest.raises(ArtifactError, match="could not load text.onnx"):
        open_engines(Bundle.load(tiny_clip_copy), threads=1)
    assert closed == ["vision"]
