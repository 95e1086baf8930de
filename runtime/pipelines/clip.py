"""CLIP at run time: zero-shot classification and image<->text retrieval over two engines.

Needs only numpy, PIL, `tokenizers` and a backend. Embeddings are L2-normalised here (the graphs
return the projected, unnormalised embeddings), logits are exp(logit_scale) · cosine.

A classifier asks with the same labels image after image, so text embeddings are cached per loaded
bundle (a bounded LRU; save_text_cache/load_text_cache keep it across processes): a warm zero_shot
runs the vision engine only. A text longer than the text window is cut to it with a
TextTruncatedWarning, or, with ``long_text="chunks"``, embedded whole as the normalised mean of
overlapping windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.embedding_cache import EmbeddingCache, bundle_graph_key
from trtdeploy.runtime.engine import Engine, check_finite_outputs
from trtdeploy.runtime.errors import ArtifactError, InputValidationError, UsageError
from trtdeploy.runtime.executor import ComponentRuns, Executor, ReferenceSet
from trtdeploy.runtime.metrics import top1_accuracy
from trtdeploy.runtime.pipelines.base import HoldsEngines, RunRequest
from trtdeploy.runtime.pipelines.cli_support import (
    check_options,
    checked_image_paths,
    open_image_batches,
    text_list,
)
from trtdeploy.runtime.preprocess import ImageLike, ImagePreprocess
from trtdeploy.runtime.reports import Outputs, TaskResult
from trtdeploy.runtime.targets import DEFAULT_TARGET, open_engines
from trtdeploy.runtime.tokenize import TextTokenizer, check_texts, checked_text_config, truncation_notices

VISION, TEXT = "vision", "text"
# How a text longer than the text window is embedded: "truncate" cuts it to the window (CLIP's
# own behaviour) with a TextTruncatedWarning; "chunks" embeds overlapping windows of it, each
# wrapped in start/end tokens, and returns the normalised mean of their unit embeddings.
LONG_TEXT_MODES = ("truncate", "chunks")
# Distinct texts whose embeddings a pipeline keeps by default: a few MiB at CLIP's 512 or 768 wide.
TEXT_CACHE_SIZE = 4096
TEXT_CACHE_KIND = "clip text embeddings"


@dataclass(frozen=True)
class Ranked:
    label: str
    probability: float


# exp(logit_scale) is CLIP's softmax temperature: OpenAI clamps it at 100 in training; a bundle
# asking for more than this is corrupt, and one of 1e9 would make every probability 0 or 1.
MAX_LOGIT_SCALE = float(np.log(1000.0))


class ClipPipeline(HoldsEngines):
    """Zero-shot classification and retrieval with a CLIP bundle's ``vision`` and ``text`` engines.

    ``text_cache_size`` distinct texts keep their embeddings (least recently used out first; 0
    turns the cache off); ``long_text`` ("truncate" or "chunks", see LONG_TEXT_MODES) is how every
    text this pipeline embeds is treated when it outgrows the window. ``model_key`` names the
    bundle graphs (from_bundle sets it); save_text_cache and load_text_cache need it.
    """

    sources: ClassVar[tuple[str, ...]] = (VISION, TEXT)  # both graphs read recorded inputs
    task_names: ClassVar[frozenset[str]] = frozenset({"zero_shot_top1_agreement", "zero_shot_top1_drop"})
    run_options: ClassVar[frozenset[str]] = frozenset({"--labels"})

    def __init__(
        self,
        vision: Engine,
        text: Engine,
        tokenizer: TextTokenizer,
        preprocess: ImagePreprocess,
        logit_scale: float,
        *,
        text_cache_size: int = TEXT_CACHE_SIZE,
        long_text: str = "truncate",
        model_key: str | None = None,
    ) -> None:
        if long_text not in LONG_TEXT_MODES:
            raise InputValidationError(
                f"long_text must be 'truncate' (cut a text to the {tokenizer.max_length}-token window, with a "
                f"warning) or 'chunks' (embed overlapping windows of it and average them), got {long_text!r}."
            )
        if long_text == "chunks":
            tokenizer.check_windows()  # a tokenizer that can't be cut into windows is refused now, not mid-call
        self.vision = vision
        self.text = text
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.scale = float(np.exp(logit_scale))
        self.long_text = long_text
        self.model_key = model_key
        self.text_cache = EmbeddingCache(
            text_cache_size, kind=TEXT_CACHE_KIND, fields=("long_text", "text"), width=_embed_width(text)
        )
        self._max_images = vision.io.dims["batch"].max
        self._max_texts = text.io.dims["batch"].max

    def held_engines(self) -> Iterable[Engine]:
        return (self.vision, self.text)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        target: str = DEFAULT_TARGET,
        *,
        threads: int | None = None,
        text_cache_size: int = TEXT_CACHE_SIZE,
        long_text: str = "truncate",
    ) -> ClipPipeline:
        config = bundle.manifest.pipeline_config  # equal to pipeline.json (Bundle.load checks)
        cls.check_config(config)
        tokenizer = TextTokenizer(
            bundle.asset("tokenizer"), max_length=int(config["max_text_length"]), pad_id=int(config["pad_id"])
        )
        key = text_model_key(bundle)
        engines = open_engines(bundle, target, threads=threads)
        try:
            return cls(
                engines[VISION],
                engines[TEXT],
                tokenizer,
                ImagePreprocess.from_json(config["preprocess"]),
                float(config["logit_scale"]),
                text_cache_size=text_cache_size,
                long_text=long_text,
                model_key=key,
            )
        except BaseException:  # a refused argument must not leave sessions open
            for engine in engines.values():
                engine.close()
            raise

    @staticmethod
    def tuning_tasks(run: Executor, runs: ComponentRuns, config: Mapping[str, Any]) -> Outputs:
        """None: the task metrics read the components' outputs."""
        return {}

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> None:
        """pipeline.json: preprocessing it can run, a text window and pad id the tokenizer can use,
        and a logit scale in CLIP's range."""
        ImagePreprocess.from_json(_field(config, "preprocess"))
        checked_text_config(config)
        scale = _field(config, "logit_scale")
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not -10.0 <= scale <= MAX_LOGIT_SCALE
        ):
            raise ArtifactError(
                f"pipeline.json: logit_scale {scale!r} is outside CLIP's range [-10, ln(1000) = "
                f"{MAX_LOGIT_SCALE:.3f}] (the natural log of the softmax temperature; OpenAI's is ln(100)). "
                "Rebuild the bundle."
            )

    def image_embeddings(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(N, D) unit-norm image embeddings, run in batches the engine's profile allows."""
        pixels = self.preprocess(images)
        chunks = [
            self.vision.run({"pixel_values": pixels[i : i + self._max_images]})["image_embeds"]
            for i in range(0, len(pixels), self._max_images)
        ]
        return l2_normalize(np.concatenate(chunks))

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """(M, D) unit-norm text embeddings, each distinct text encoded once while the cache keeps it."""
        texts = check_texts(texts, "texts")
        found = self.text_cache.get([(self.long_text, t) for t in texts])
        missing = list(dict.fromkeys(t for t, row in zip(texts, found, strict=True) if row is None))
        fresh: dict[str, np.ndarray] = {}
        if missing:
            computed = self._encode_texts(missing)  # (K, D)
            self.text_cache.put([(self.long_text, t) for t in missing], computed)
            fresh = dict(zip(missing, computed, strict=True))
        return np.stack([fresh[t] if row is None else row for t, row in zip(texts, found, strict=True)])

    def clear_text_cache(self) -> None:
        """Forget every cached text embedding."""
        self.text_cache.clear()

    def save_text_cache(self, path: str | Path) -> int:
        """Write the cached text embeddings to ``path`` (.npz) with this bundle's key; returns how many."""
        return self.text_cache.save(path, self._checked_model_key())

    def load_text_cache(self, path: str | Path) -> int:
        """Add the embeddings save_text_cache wrote with this bundle; returns how many. A file from
        another bundle, or not such a file, is refused (ArtifactError)."""
        return self.text_cache.load(path, self._checked_model_key())

    def _checked_model_key(self) -> str:
        if self.model_key is None:
            raise UsageError(
                "this pipeline was made from engines, without a bundle key, so its text cache can't be "
                "saved or loaded; make it with ClipPipeline.from_bundle(bundle)."
            )
        return self.model_key

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(K, D) unit-norm embeddings of distinct texts, by the text engine, as long_text says."""
        if self.long_text == "truncate":
            return self._embed_token_rows(self.tokenizer.encode(texts))
        windows = [self.tokenizer.windows(t) for t in texts]
        embeds = self._embed_token_rows([w for text in windows for w in text])  # (all windows, D)
        ends = np.cumsum([len(w) for w in windows])
        means = [embeds[end - len(w) : end].mean(axis=0) for w, end in zip(windows, ends, strict=True)]
        return l2_normalize(np.stack(means))

    def _embed_token_rows(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """(R, D) unit-norm embeddings of token id rows, run in batches the engine's profile allows."""
        chunks = [
            self.text.run(self.tokenizer.pad(rows[i : i + self._max_texts]))["text_embeds"]
            for i in range(0, len(rows), self._max_texts)
        ]
        return l2_normalize(np.concatenate(chunks))

    def logits(self, images: Sequence[ImageLike], texts: Sequence[str]) -> np.ndarray:
        """(N images, M texts) logits: exp(logit_scale) · cosine similarity."""
        logits = self.scale * self.image_embeddings(images) @ self.text_embeddings(texts).T
        check_finite_outputs("zero-shot", {"logits": logits}, {})
        return logits

    def zero_shot(self, image: ImageLike, labels: Sequence[str]) -> list[Ranked]:
        """The labels ranked by probability for one image (softmax over the labels)."""
        return self.zero_shot_many([image], labels)[0]

    def zero_shot_many(self, images: Sequence[ImageLike], labels: Sequence[str]) -> list[list[Ranked]]:
        """For each image, the labels ranked by probability; the labels are encoded once (or come
        from the cache) and the images run in batches the vision profile allows."""
        labels = check_texts(labels, "labels")
        return self._rank(self.image_embeddings(images), self.text_embeddings(labels), labels)

    def _rank(self, images: np.ndarray, texts: np.ndarray, labels: Sequence[str]) -> list[list[Ranked]]:
        """Rankings from (N, D) image and (M, D) text unit embeddings of ``labels``."""
        logits = self.scale * images @ texts.T  # (N, M)
        check_finite_outputs("zero-shot", {"logits": logits}, {})
        ranked = []
        for row in logits:
            probs = softmax(row)
            ranked.append([Ranked(labels[i], float(probs[i])) for i in np.argsort(-probs, kind="stable")])
        return ranked

    def retrieve(self, query: str, images: Sequence[ImageLike], top_k: int = 5) -> list[tuple[int, float]]:
        """Indices of the ``top_k`` images closest to a text query, with their cosine similarity."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputValidationError(f"top_k must be a whole number of images >= 1, got {top_k!r}.")
        if not isinstance(query, str):
            raise InputValidationError(f"query must be a text (str), got {type(query).__name__}.")
        scores = (self.image_embeddings(images) @ self.text_embeddings([query]).T)[:, 0]
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [(int(i), float(scores[i])) for i in order]

    @staticmethod
    def flow(run: Executor, sources: Outputs, config: Mapping[str, Any]) -> ComponentRuns:
        """Both graphs read recorded inputs; neither feeds the other."""
        runs = ComponentRuns({}, {})
        for name in (VISION, TEXT):
            runs.add(name, sources[name], run.run(name, sources[name]))
        return runs

    @classmethod
    def run_cli(cls, bundle: Bundle, request: RunRequest) -> list[str]:
        """Each image's labels ranked by probability, one block per image. The labels are encoded
        once (a label cut to the text window is reported on stderr), the images run in batches of
        the vision profile's largest batch; every image file is checked before any engine runs."""
        usage = "a CLIP bundle ranks labels: --labels 'a cat,a dog'"
        check_options(request, cls.run_options, usage, allow_out_dir=False)
        labels = text_list(request.options.get("--labels"), "--labels", usage)
        paths = checked_image_paths(request)
        answers: dict[str, list[Ranked]] = {}
        with cls.from_bundle(bundle, request.target, threads=request.threads) as pipeline:
            with truncation_notices():
                texts = pipeline.text_embeddings(labels)  # (M, D)
            for batch in open_image_batches(paths, pipeline._max_images):
                embeds = pipeline.image_embeddings([image for _, image in batch])  # (n, D)
                answers.update(
                    zip((str(p) for p, _ in batch), pipeline._rank(embeds, texts, labels), strict=True)
                )
        if request.as_json:
            return [
                json.dumps(
                    {
                        p: [{"label": r.label, "probability": r.probability} for r in ranked]
                        for p, ranked in answers.items()
                    }
                )
            ]
        lines = []
        for path_text, ranked in answers.items():
            lines.append(f"{path_text}:")
            lines += [f"  {item.probability:7.2%}  {item.label}" for item in ranked]
        return lines

    @staticmethod
    def task_metrics(
        manifest: Manifest, run: Executor, reference: ReferenceSet, actual: Outputs
    ) -> list[TaskResult]:
        """Zero-shot top-1 agreement: for each held-out image, the engine picks the prompt the
        reference picks, up to a tie (see zero_shot_agreement). Where the reference images carry
        true labels (the shapes models), top-1 against the truth is the gate instead: a partly
        trained model has many near-ties that any rounding flips either way, so agreement with
        FP32 is then reported, and what is held is the accuracy itself."""
        minimum = manifest.budget.tasks.get("zero_shot_top1_agreement")
        scale = float(np.exp(manifest.pipeline_config["logit_scale"]))
        agreement, strict, n_images, n_texts = zero_shot_agreement(reference.outputs, actual, scale)
        detail = f"{n_images} images × {n_texts} prompts; strict argmax agreement {strict:.3f}"
        truth = manifest.pipeline_config.get("ground_truth", {}).get("zero_shot_labels")
        if truth is not None:
            return [
                TaskResult(
                    "zero_shot_top1_agreement", agreement, 0.0, detail + " (reported; top-1 is the gate)"
                ),
                top1_against_truth(manifest, reference.outputs, actual, np.asarray(truth)),
            ]
        if minimum is None:  # a budget may judge the embeddings alone; the metric is still reported
            return [
                TaskResult("zero_shot_top1_agreement", agreement, 0.0, detail + " (not gated by this budget)")
            ]
        return [TaskResult("zero_shot_top1_agreement", agreement, minimum, detail)]


def top1_against_truth(
    manifest: Manifest, reference: Mapping[str, Mapping[str, np.ndarray]], actual: Outputs, truth: np.ndarray
) -> TaskResult:
    """Zero-shot top-1 of the engine against the reference images' true labels, which may fall
    at most the budget's zero_shot_top1_drop below the PyTorch FP32 reference's own top-1."""
    reference_top1 = _top1(reference, truth)
    engine_top1 = _top1(actual, truth)
    allowed = manifest.budget.tasks.get("zero_shot_top1_drop", 0.0)
    detail = (
        f"{len(truth)} labelled images; PyTorch FP32 {reference_top1:.4f}, drop "
        f"{reference_top1 - engine_top1:+.4f} (at most {allowed})"
    )
    return TaskResult("zero_shot_top1", engine_top1, round(reference_top1 - allowed, 6), detail)


def _top1(outputs: Mapping[str, Mapping[str, np.ndarray]], truth: np.ndarray) -> float:
    scores = (
        outputs[VISION]["image_embeds"] @ l2_normalize(outputs[TEXT]["text_embeds"]).T
    )  # (images, labels)
    return top1_accuracy(scores, truth)


# Two prompts whose reference zero-shot probabilities differ by less than this are tied: picking
# either is agreement. A trained CLIP's top-1 leads by far more; a random-weight CLIP scores every
# prompt almost alike (1/prompts each), so its top-1 is a tie and says nothing about an engine.
TIE_PROBABILITY = 0.01


def zero_shot_agreement(
    reference: Mapping[str, Mapping[str, np.ndarray]], actual: Outputs, scale: float
) -> tuple[float, float, int, int]:
    """(agreement up to ties, strict argmax agreement, images, prompts): the fraction of images
    whose top-1 prompt under the engine's embeddings is the reference's top-1, where a pick whose
    reference probability is within TIE_PROBABILITY of the reference's top-1 counts as agreeing."""
    ref = l2_normalize(reference[VISION]["image_embeds"]) @ l2_normalize(reference[TEXT]["text_embeds"]).T
    got = l2_normalize(actual[VISION]["image_embeds"]) @ l2_normalize(actual[TEXT]["text_embeds"]).T
    probs = np.stack([softmax(scale * row) for row in ref])  # (images, prompts)
    rows = np.arange(ref.shape[0])
    picked = probs[rows, np.argmax(got, axis=1)]
    agree = picked >= probs.max(axis=1) - TIE_PROBABILITY
    strict = np.argmax(ref, axis=1) == np.argmax(got, axis=1)
    return float(np.mean(agree)), float(np.mean(strict)), ref.shape[0], ref.shape[1]


def text_model_key(bundle: Bundle) -> str:
    """What a cached CLIP text embedding depends on: the weights, every form of the text graph,
    and the tokenizer and pipeline.json (the text window and pad id)."""
    return bundle_graph_key(bundle, (TEXT,), assets=("tokenizer", "pipeline"))


def _embed_width(text: Engine) -> int | None:
    """D of the text engine's (batch, D) text_embeds, where the spec fixes it."""
    for spec in text.io.outputs:
        if spec.name == "text_embeds" and isinstance(spec.shape[-1], int):
            return spec.shape[-1]
    return None


def _field(config: Mapping[str, Any], name: str) -> Any:
    if not isinstance(config, Mapping) or name not in config:
        raise ArtifactError(f"pipeline.json has no {name!r}; the bundle is incomplete. Rebuild it.")
    return config[name]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.finfo(x.dtype).tiny)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / np.sum(e)
