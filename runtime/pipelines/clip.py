"""CLIP at run time: zero-shot classification and image<->text retrieval over two engines.

Needs only numpy, PIL, `tokenizers` and a backend. Embeddings are L2-normalised here (the graphs
return the projected, unnormalised embeddings), logits are exp(logit_scale) · cosine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.engine import Engine, check_finite_outputs
from trtdeploy.runtime.errors import ArtifactError, InputValidationError
from trtdeploy.runtime.executor import ComponentRuns, Executor, ReferenceSet
from trtdeploy.runtime.metrics import top1_accuracy
from trtdeploy.runtime.pipelines.base import HoldsEngines, RunRequest
from trtdeploy.runtime.pipelines.cli_support import check_options, request_images, text_list
from trtdeploy.runtime.preprocess import ImageLike, ImagePreprocess
from trtdeploy.runtime.reports import Outputs, TaskResult
from trtdeploy.runtime.targets import DEFAULT_TARGET, open_engines
from trtdeploy.runtime.tokenize import TextTokenizer, check_texts, checked_text_config

VISION, TEXT = "vision", "text"


@dataclass(frozen=True)
class Ranked:
    label: str
    probability: float


# exp(logit_scale) is CLIP's softmax temperature: OpenAI clamps it at 100 in training; a bundle
# asking for more than this is corrupt, and one of 1e9 would make every probability 0 or 1.
MAX_LOGIT_SCALE = float(np.log(1000.0))


class ClipPipeline(HoldsEngines):
    """Zero-shot classification and retrieval with a CLIP bundle's ``vision`` and ``text`` engines."""

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
    ) -> None:
        self.vision = vision
        self.text = text
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.scale = float(np.exp(logit_scale))
        self._max_images = vision.io.dims["batch"].max
        self._max_texts = text.io.dims["batch"].max

    def held_engines(self) -> Iterable[Engine]:
        return (self.vision, self.text)

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, target: str = DEFAULT_TARGET, *, threads: int | None = None
    ) -> ClipPipeline:
        config = bundle.manifest.pipeline_config  # equal to pipeline.json (Bundle.load checks)
        cls.check_config(config)
        engines = open_engines(bundle, target, threads=threads)
        tokenizer = TextTokenizer(
            bundle.asset("tokenizer"), max_length=int(config["max_text_length"]), pad_id=int(config["pad_id"])
        )
        return cls(
            engines[VISION],
            engines[TEXT],
            tokenizer,
            ImagePreprocess.from_json(config["preprocess"]),
            float(config["logit_scale"]),
        )

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
        """(M, D) unit-norm text embeddings."""
        texts = check_texts(texts, "texts")
        chunks = []
        for i in range(0, len(texts), self._max_texts):
            chunks.append(self.text.run(self.tokenizer(texts[i : i + self._max_texts]))["text_embeds"])
        return l2_normalize(np.concatenate(chunks))

    def logits(self, images: Sequence[ImageLike], texts: Sequence[str]) -> np.ndarray:
        """(N images, M texts) logits: exp(logit_scale) · cosine similarity."""
        logits = self.scale * self.image_embeddings(images) @ self.text_embeddings(texts).T
        check_finite_outputs("zero-shot", {"logits": logits}, {})
        return logits

    def zero_shot(self, image: ImageLike, labels: Sequence[str]) -> list[Ranked]:
        """The labels ranked by probability for one image (softmax over the labels)."""
        labels = check_texts(labels, "labels")
        probs = softmax(self.logits([image], labels)[0])
        order = np.argsort(-probs, kind="stable")
        return [Ranked(labels[i], float(probs[i])) for i in order]

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
        """Each image's labels ranked by probability."""
        usage = "a CLIP bundle ranks labels: --labels 'a cat,a dog'"
        check_options(request, cls.run_options, usage, allow_out_dir=False)
        labels = text_list(request.options.get("--labels"), "--labels", usage)
        pipeline = cls.from_bundle(bundle, request.target, threads=request.threads)
        answers = {}
        for path, image in request_images(request):
            answers[str(path)] = pipeline.zero_shot(image, labels)
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
