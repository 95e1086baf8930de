"""CLIPSeg at run time: segment an image by text prompts or by support images, over three engines.

Needs only numpy, PIL, `tokenizers` and a backend. The query image is encoded once (with any
support images in the same call), the prompts once, and the decoder runs every prompt against the
image as one batch; sigmoid, a resize back to the image's size and a threshold give the masks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.embedding_cache import bundle_graph_key
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import ArtifactError, InputValidationError, VerificationError
from trtdeploy.runtime.executor import ComponentRuns, Executor, ReferenceSet
from trtdeploy.runtime.masks import decode_mask
from trtdeploy.runtime.metrics import mask_iou, mean_iou
from trtdeploy.runtime.pipelines.base import HoldsEngines, RunRequest
from trtdeploy.runtime.pipelines.cli_support import OutputNames, check_options, request_images, text_list
from trtdeploy.runtime.preprocess import ImageLike, ImagePreprocess, to_rgb
from trtdeploy.runtime.reports import Outputs, TaskResult
from trtdeploy.runtime.targets import DEFAULT_TARGET, open_engines
from trtdeploy.runtime.tokenize import TextTokenizer, check_text, checked_text_config, truncation_notices

IMAGE_ENCODER, IMAGE_TAIL = "image_encoder", "image_tail"
TEXT_ENCODER, DECODER = "text_encoder", "decoder"
TAIL_INPUT = "hidden_states"  # image_tail reads the deepest extracted layer's output
POOLED_OUTPUT = "pooled_output"
CONDITIONAL_EMBEDDINGS = "conditional_embeddings"
LOGITS = "logits"
DEFAULT_THRESHOLD = 0.5  # sigmoid(logits) > 0.5, i.e. logits > 0
MAX_VISION_LAYERS = 1024  # far beyond any CLIP tower; a larger index in pipeline.json is corruption


def activation_names(count: int) -> tuple[str, ...]:
    """The image encoder's outputs and the decoder's inputs: activation_k is the output of vision
    layer extract_layers[k], in the config's order."""
    return tuple(f"activation_{k}" for k in range(count))


def deepest_activation(extract_layers: Sequence[int]) -> int:
    """Which activation is the deepest layer's: image_tail continues the tower from it."""
    return max(range(len(extract_layers)), key=lambda k: extract_layers[k])


def deepest_activation_name(extract_layers: Sequence[int]) -> str:
    """The image encoder output image_tail reads."""
    return activation_names(len(extract_layers))[deepest_activation(extract_layers)]


Feeds = dict[str, np.ndarray]
Prompt = str | Image.Image | np.ndarray  # a text, or a support image (a visual prompt)


@dataclass(frozen=True)
class Segmentation:
    """One image's masks, one per prompt, at the image's own size."""

    prompts: tuple[str, ...]  # the text prompts; visual prompts read "<image k>" (k: prompt index)
    probabilities: np.ndarray  # (P, H, W) float32 in [0, 1]
    masks: np.ndarray  # (P, H, W) bool: probabilities > threshold
    threshold: float

    def areas(self) -> np.ndarray:
        """(P,) the share of the image's pixels inside each mask."""
        return self.masks.reshape(len(self.prompts), -1).mean(axis=1)


@dataclass(frozen=True)
class PromptEmbeddings:
    """Conditional embeddings of a fixed prompt list, computed once and reused across images.

    ``model_key`` names the bundle graphs that computed them; a pipeline refuses embeddings from
    other graphs, since they would condition its decoder on another model's space.
    """

    prompts: tuple[str, ...]
    embeddings: np.ndarray  # (P, E) float32
    model_key: str

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as fh:
            np.savez(
                fh,
                prompts=np.array(self.prompts, dtype=str),
                embeddings=self.embeddings,
                model_key=np.array(self.model_key),
            )

    @classmethod
    def load(cls, path: str | Path) -> PromptEmbeddings:
        try:
            with np.load(path, allow_pickle=False) as data:
                prompts, embeddings, key = data["prompts"], data["embeddings"], data["model_key"]
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(
                f"{path} is not a prompt-embeddings file written by PromptEmbeddings.save ({exc})."
            ) from exc
        return cls(tuple(str(p) for p in prompts), embeddings.astype(np.float32), str(key))


# The most prompts one segment() call takes: its probabilities alone are prompts × H × W floats
# (4.6 GiB for 10,000 prompts on a 451 × 300 photo). More prompts go through segment_chunks().
MAX_PROMPTS_PER_CALL = 256


class ClipSegPipeline(HoldsEngines):
    """Text- and image-prompted segmentation with a CLIPSeg bundle's four engines: the query image
    runs the vision tower only up to the deepest layer the decoder reads; a support image also runs
    image_tail, the rest of the tower, for its pooled embedding."""

    # The decoder is fed what the encoders produce: verification also runs it on the engines' own
    # encoder outputs (end to end), and the build records its reference inputs that way.
    sources: ClassVar[tuple[str, ...]] = (IMAGE_ENCODER, TEXT_ENCODER)
    task_names: ClassVar[frozenset[str]] = frozenset({"mask_iou", "mean_iou_drop"})
    run_options: ClassVar[frozenset[str]] = frozenset({"--prompts", "--threshold"})

    def __init__(
        self,
        engines: Mapping[str, Engine],
        tokenizer: TextTokenizer,
        preprocess: ImagePreprocess,
        threshold: float,
        model_key: str,
        extract_layers: Sequence[int],
    ) -> None:
        self.image_encoder = engines[IMAGE_ENCODER]
        self.image_tail = engines[IMAGE_TAIL]
        self.text_encoder = engines[TEXT_ENCODER]
        self.decoder = engines[DECODER]
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.threshold = _checked_threshold(threshold)
        self.model_key = model_key
        self.activations = activation_names(len(extract_layers))
        self._deepest = deepest_activation_name(extract_layers)
        self._max_images = self.image_encoder.io.dims["images"].max
        self._max_texts = self.text_encoder.io.dims["prompts"].max
        self._max_prompts = self.decoder.io.dims["prompts"].max  # per decoder call

    def held_engines(self) -> Iterable[Engine]:
        return (self.image_encoder, self.image_tail, self.text_encoder, self.decoder)

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, target: str = DEFAULT_TARGET, *, threads: int | None = None
    ) -> ClipSegPipeline:
        config = bundle.manifest.pipeline_config  # equal to pipeline.json (Bundle.load checks)
        cls.check_config(config)
        tokenizer = TextTokenizer(
            bundle.asset("tokenizer"), max_length=int(config["max_text_length"]), pad_id=int(config["pad_id"])
        )
        return cls(
            open_engines(bundle, target, threads=threads),
            tokenizer,
            ImagePreprocess.from_json(config["preprocess"]),
            float(config["threshold"]),
            bundle_model_key(bundle),
            [int(i) for i in config["extract_layers"]],
        )

    def segment(
        self,
        image: ImageLike,
        prompts: Sequence[Prompt] | PromptEmbeddings,
        *,
        threshold: float | None = None,
    ) -> Segmentation:
        """Masks of ``image`` for each prompt (a text or a support image), or for precomputed
        prompt embeddings; ``threshold`` (0 < t < 1) defaults to the bundle's."""
        cut = self.threshold if threshold is None else _checked_threshold(threshold)
        query = _query_image(image)
        count = len(prompts.prompts) if isinstance(prompts, PromptEmbeddings) else _prompt_count(prompts)
        if count > MAX_PROMPTS_PER_CALL:
            raise InputValidationError(
                f"{count} prompts in one segment() call would hold {count} full-size probability maps at once; "
                f"at most {MAX_PROMPTS_PER_CALL} per call. Use segment_chunks(image, prompts) to stream them."
            )
        if isinstance(prompts, PromptEmbeddings):
            self._check_key(prompts)
            labels, conditional = prompts.prompts, prompts.embeddings
            encoded = self._encode_images([query])
        else:
            labels, texts, supports = split_prompts(prompts)
            encoded = self._encode_images([query, *supports.values()])  # one call: query + supports
            pooled = self._pool(encoded[self._deepest][1:]) if supports else ()  # supports only
            visual = dict(zip(supports, pooled, strict=True))
            conditional = self._conditional(len(labels), texts, visual)
        logits = self._decode(
            {name: encoded[name][:1] for name in self.activations}, conditional
        )  # (P, S, S)
        probabilities = resize_maps(sigmoid(logits), query.size)  # (P, H, W)
        return Segmentation(labels, probabilities, probabilities > cut, cut)

    def segment_chunks(
        self, image: ImageLike, prompts: Sequence[Prompt], *, chunk: int = 16, threshold: float | None = None
    ) -> Iterator[Segmentation]:
        """segment() over any number of prompts, ``chunk`` at a time: memory stays bounded by one
        chunk's maps. The image is encoded once per chunk (the encoder is cheap next to the maps)."""
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_PROMPTS_PER_CALL:
            raise InputValidationError(
                f"chunk must be a whole number from 1 to {MAX_PROMPTS_PER_CALL}, got {chunk!r}."
            )
        _prompt_count(prompts)
        for start in range(0, len(prompts), chunk):
            yield self.segment(image, list(prompts[start : start + chunk]), threshold=threshold)

    def embed_prompts(self, prompts: Sequence[Prompt]) -> PromptEmbeddings:
        """Conditional embeddings of ``prompts`` to reuse over many images (save() keeps them)."""
        labels, texts, supports = split_prompts(prompts)
        visual: dict[int, np.ndarray] = {}
        if supports:
            hidden = self._encode_images(list(supports.values()))[self._deepest]
            visual = dict(zip(supports, self._pool(hidden), strict=True))
        conditional = self._conditional(len(labels), texts, visual)
        return PromptEmbeddings(labels, conditional, self.model_key)

    def _encode_images(self, images: Sequence[Image.Image]) -> dict[str, np.ndarray]:
        """Every image_encoder output (the extracted layers' hidden states, each (N, T, W)) for
        ``images``, run in chunks the engine's profile allows."""
        pixels = self.preprocess(images)  # (N, 3, S, S)
        chunks = [
            self.image_encoder.run({"pixel_values": pixels[i : i + self._max_images]})
            for i in range(0, len(pixels), self._max_images)
        ]
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _pool(self, hidden: np.ndarray) -> np.ndarray:
        """(N, E) support images' embeddings from their deepest extracted hidden states (N, T, W)."""
        return self.image_tail.run_in_chunks({TAIL_INPUT: hidden})[POOLED_OUTPUT]

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(T, E) conditional embeddings of text prompts."""
        chunks = [
            self.text_encoder.run(self.tokenizer(texts[i : i + self._max_texts]))[CONDITIONAL_EMBEDDINGS]
            for i in range(0, len(texts), self._max_texts)
        ]
        return np.concatenate(chunks)

    def _conditional(
        self, count: int, texts: Mapping[int, str], visual: Mapping[int, np.ndarray]
    ) -> np.ndarray:
        """(P, E) embeddings in prompt order, from the text encoder and from support images' pooled outputs."""
        rows: dict[int, np.ndarray] = dict(visual)
        if texts:
            rows.update(zip(texts, self._encode_texts(list(texts.values())), strict=True))
        return np.stack([rows[k] for k in range(count)]).astype(np.float32)

    def _decode(self, activations: Mapping[str, np.ndarray], conditional: np.ndarray) -> np.ndarray:
        """(P, S, S) logits of one image's activations (each (1, T, W)) with every prompt."""
        chunks = []
        for i in range(0, len(conditional), self._max_prompts):
            feeds = {**activations, CONDITIONAL_EMBEDDINGS: conditional[i : i + self._max_prompts]}
            chunks.append(self.decoder.run(feeds)[LOGITS][0])  # (p, S, S) of the (1, p, S, S) logits
        return np.concatenate(chunks)

    def _check_key(self, prompts: PromptEmbeddings) -> None:
        if prompts.model_key != self.model_key:
            raise InputValidationError(
                f"the prompt embeddings for {list(prompts.prompts)[:3]}… were computed by other graphs "
                f"(key {prompts.model_key[:12]}…) than this bundle's ({self.model_key[:12]}…); recompute them "
                "with this pipeline's embed_prompts()."
            )

    @staticmethod
    def tuning_tasks(run: Executor, runs: ComponentRuns, config: Mapping[str, Any]) -> Outputs:
        """None: the task metrics read the components' outputs."""
        return {}

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> None:
        """pipeline.json: preprocessing it can run, a text window and pad id, a threshold in (0, 1),
        and the extracted layers the decoder reads."""
        if not isinstance(config, Mapping) or "preprocess" not in config or "threshold" not in config:
            raise ArtifactError(
                "pipeline.json lacks 'preprocess' or 'threshold'; the bundle is incomplete. Rebuild it."
            )
        ImagePreprocess.from_json(config["preprocess"])
        checked_text_config(config)
        threshold = config["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 < threshold < 1.0:
            raise ArtifactError(
                f"pipeline.json: threshold {threshold!r} must lie strictly between 0 and 1. Rebuild the bundle."
            )
        checked_extract_layers(config)

    @staticmethod
    def flow(run: Executor, sources: Outputs, config: Mapping[str, Any]) -> ComponentRuns:
        """The encoders on their recorded inputs, then the decoder on what they produced."""
        runs = ComponentRuns({}, {})
        for name in (IMAGE_ENCODER, TEXT_ENCODER):
            runs.add(name, sources[name], run.run(name, sources[name]))
        deepest = deepest_activation_name(checked_extract_layers(config))
        tail = {TAIL_INPUT: runs.outputs[IMAGE_ENCODER][deepest]}
        runs.add(IMAGE_TAIL, tail, run.run(IMAGE_TAIL, tail))
        feeds = decoder_feeds(runs.outputs)
        runs.add(DECODER, feeds, run.run(DECODER, feeds))
        return runs

    @classmethod
    def run_cli(cls, bundle: Bundle, request: RunRequest) -> list[str]:
        """Per image and prompt, the share of pixels in the mask; PNGs of the masks with --out-dir."""
        usage = "a CLIPSeg bundle segments by prompts: --prompts 'a cat,the sky' [--threshold 0.4] [--out-dir masks/]"
        check_options(request, cls.run_options, usage, allow_out_dir=True)
        prompts = text_list(request.options.get("--prompts"), "--prompts", usage)
        threshold = request.options.get("--threshold")
        pipeline = cls.from_bundle(bundle, request.target, threads=request.threads)
        images = list(request_images(request))
        # Output names are settled (and one that would overwrite an input refused) before any work.
        names = OutputNames(request.out_dir, [p for p, _ in images]) if request.out_dir else None
        masks = (
            {(i, k): names.png(i, str(k), p) for i in range(len(images)) for k, p in enumerate(prompts)}
            if names
            else {}
        )
        if request.out_dir:
            request.out_dir.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        answers: dict[str, list[dict[str, Any]]] = {}
        with truncation_notices():  # a prompt cut to the text window is said once, on stderr
            embedded = pipeline.embed_prompts(prompts)  # encoded once for every image
        for i, (path, image) in enumerate(images):
            result = pipeline.segment(image, embedded, threshold=threshold)
            lines.append(f"{path}: masks at probability > {result.threshold:g}")
            answers[str(path)] = []
            for k, (prompt, area) in enumerate(zip(result.prompts, result.areas(), strict=True)):
                line = f"  {area:7.2%}  {prompt}"
                entry: dict[str, Any] = {"prompt": prompt, "area": float(area)}
                if masks:
                    out = masks[i, k]
                    Image.fromarray(result.masks[k].astype(np.uint8) * 255).save(out)
                    line += f"  -> {out}"
                    entry["mask"] = str(out)
                lines.append(line)
                answers[str(path)].append(entry)
        return [json.dumps(answers)] if request.as_json else lines

    @staticmethod
    def task_metrics(
        manifest: Manifest, run: Executor, reference: ReferenceSet, actual: Outputs
    ) -> list[TaskResult]:
        """Mask IoU, end to end: the masks of the decoder run on the engines' own encoder outputs
        against the PyTorch reference masks, per held-out image × prompt, averaged. Where the
        reference images carry ground-truth masks (the shapes models), the gate is the mean IoU
        against them, held to within the budget's mean_iou_drop of PyTorch FP32's, and agreement
        with FP32 is reported: most of those pairs name an object the image lacks, where a trained
        model leaves a few stray pixels that any rounding moves, so one pair's IoU swings 0 to 1
        (measured INT8: 0.90 over 400 pairs, worst 0.0, while IoU against the truth held)."""
        minimum = manifest.budget.tasks.get("mask_iou")
        threshold = float(manifest.pipeline_config["threshold"])
        end_to_end = run.run(DECODER, decoder_feeds(actual))[LOGITS]  # on the engines' own encodings
        ref = reference.outputs[DECODER][LOGITS]  # (I, P, S, S)
        value, worst = mask_agreement(ref, end_to_end, threshold)
        alone, _ = mask_agreement(ref, actual[DECODER][LOGITS], threshold)
        cover = float(np.mean(sigmoid(ref) > threshold))
        images, prompts, height, width = ref.shape
        detail = (
            f"{images} images × {prompts} prompts at {height}×{width}, end to end; worst pair {worst:.4f}; "
            f"decoder alone {alone:.4f}; reference masks cover {cover:.1%} of pixels"
        )
        truth = manifest.pipeline_config.get("ground_truth")
        if truth is not None:
            return [
                TaskResult(
                    "mask_iou", value, 0.0, detail + " (reported; mean IoU against the truth is the gate)"
                ),
                iou_against_truth(manifest, ref, end_to_end, truth),
            ]
        if minimum is None:  # a budget may judge the logits alone; the metric is still reported
            return [TaskResult("mask_iou", value, 0.0, detail + " (not gated by this budget)")]
        return [TaskResult("mask_iou", value, minimum, detail)]


def decoder_feeds(outputs: Mapping[str, Mapping[str, np.ndarray]]) -> Feeds:
    """The decoder's feeds from the encoders' outputs: every image with every prompt (the image
    encoder's outputs are exactly the activations the decoder reads)."""
    image, text = outputs[IMAGE_ENCODER], outputs[TEXT_ENCODER]
    return {**image, CONDITIONAL_EMBEDDINGS: text[CONDITIONAL_EMBEDDINGS]}


def checked_extract_layers(config: Mapping[str, Any]) -> list[int]:
    """pipeline.json's extract_layers: the vision layers the decoder reads, a non-empty list of
    distinct layer indices."""
    layers = config.get("extract_layers")
    if (
        not isinstance(layers, list)
        or not layers
        or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_VISION_LAYERS for i in layers
        )
        or len(set(layers)) != len(layers)
    ):
        raise ArtifactError(
            f"pipeline.json: extract_layers {layers!r} must be a non-empty list of distinct vision layer "
            f"indices (0 to {MAX_VISION_LAYERS - 1}), as the model's config has them. Rebuild the bundle."
        )
    return layers


def iou_against_truth(
    manifest: Manifest, reference: np.ndarray, actual: np.ndarray, truth: Mapping[str, Any]
) -> TaskResult:
    """Mean IoU of the engine's masks against the ground-truth masks of the referred objects (the
    shapes models), which may fall at most the budget's mean_iou_drop below PyTorch FP32's own."""
    threshold = float(manifest.pipeline_config["threshold"])
    size = (int(truth["mask_size"][0]), int(truth["mask_size"][1]))
    pairs = list(truth["referred"])  # each {"image": i, "prompt": p, "mask": run lengths}
    if reference.shape[-2:] != size:
        raise VerificationError(
            f"the ground-truth masks are {size[0]}×{size[1]} but the logits {reference.shape[-2:]}; the bundle's "
            "pipeline.json does not match its graphs. Rebuild the bundle."
        )
    masks = [decode_mask(pair["mask"], size) for pair in pairs]

    def mean_against_truth(logits: np.ndarray) -> float:
        found = [sigmoid(logits[pair["image"], pair["prompt"]]) > threshold for pair in pairs]
        return mean_iou(found, masks)

    reference_iou, engine_iou = mean_against_truth(reference), mean_against_truth(actual)
    allowed = manifest.budget.tasks.get("mean_iou_drop", 0.0)
    detail = (
        f"{len(pairs)} referred objects, end to end; PyTorch FP32 {reference_iou:.4f}, drop "
        f"{reference_iou - engine_iou:+.4f} (at most {allowed})"
    )
    return TaskResult("mean_iou", engine_iou, round(reference_iou - allowed, 6), detail)


def mask_agreement(reference: np.ndarray, actual: np.ndarray, threshold: float) -> tuple[float, float]:
    """(mean, worst) IoU between the thresholded masks of two (I, P, S, S) logit arrays, per (I, P)."""
    if reference.shape != actual.shape:
        raise VerificationError(
            f"engine logits have shape {actual.shape}, the reference {reference.shape}; they can't be compared."
        )
    ref = sigmoid(reference).reshape(-1, *reference.shape[-2:]) > threshold
    got = sigmoid(actual).reshape(-1, *actual.shape[-2:]) > threshold
    ious = [mask_iou(g, r) for g, r in zip(got, ref, strict=True)]
    return float(np.mean(ious)), float(np.min(ious))


def _prompt_count(prompts: object) -> int:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise InputValidationError(
            f"prompts: expected a non-empty list of texts and/or support images, got {prompts!r:.80}; "
            "wrap a single prompt in a list: ['a cat']."
        )
    return len(prompts)


def split_prompts(
    prompts: Sequence[Prompt],
) -> tuple[tuple[str, ...], dict[int, str], dict[int, Image.Image]]:
    """(labels, texts by position, support images by position); rejects anything else clearly."""
    _prompt_count(prompts)
    labels: list[str] = []
    texts: dict[int, str] = {}
    supports: dict[int, Image.Image] = {}
    for k, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            check_text(prompt, f"prompt {k}")
            texts[k] = prompt
            labels.append(prompt)
        elif isinstance(prompt, Image.Image | np.ndarray):
            supports[k] = _image(prompt, f"prompt {k} (a support image)")
            labels.append(f"<image {k}>")
        else:
            raise InputValidationError(
                f"prompt {k} is a {type(prompt).__name__}; expected a text (str) or a support image "
                "(PIL image or (H, W[, C]) uint8 array)."
            )
    return tuple(labels), texts, supports


def _query_image(image: ImageLike) -> Image.Image:
    return _image(image, "image")


def _image(image: object, what: str) -> Image.Image:
    try:
        return to_rgb(image)  # type: ignore[arg-type]
    except InputValidationError as exc:
        raise InputValidationError(f"{what}: {exc}") from None


def _checked_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 < threshold < 1.0:
        raise InputValidationError(
            f"threshold must be a number strictly between 0 and 1 (a probability), got {threshold!r}."
        )
    return float(threshold)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function without overflow (random-weight logits reach thousands)."""
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(P, S, S) maps -> (P, H, W) with bilinear interpolation; ``size`` is PIL's (width, height)."""
    resized = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(m, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR)
        )
        for m in maps  # float32 arrays open as PIL mode "F"
    ]
    return np.clip(np.stack(resized), 0.0, 1.0)


def bundle_model_key(bundle: Bundle) -> str:
    """Identifies the weights and the graphs (every form) that compute prompt embeddings: the text
    encoder, and the image encoder and tail for visual prompts."""
    return bundle_graph_key(bundle, (IMAGE_ENCODER, IMAGE_TAIL, TEXT_ENCODER))
