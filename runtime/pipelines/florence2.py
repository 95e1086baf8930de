"""Florence-2 at run time: task prompts in, generated answers out, over five engines.

Needs only numpy, PIL, `tokenizers` and a backend. An image is preprocessed as Florence2Processor
does, encoded once by the vision tower (its features serve every task asked of it), the task's
prompt is tokenized and embedded, the encoder reads [image features; prompt], and generation
(greedy or beam search, runtime/generation.py) drives the two decoder graphs with the KV cache kept
in the backend. The answer is decoded with special tokens kept and parsed exactly as transformers'
post_process_generation parses it, in the original image's pixels.

Verification compares whole generations: the tokens our loop produces on the engines against the
tokens transformers' generate() produced with the same settings, recorded in the bundle (per-step
tensors after a first divergence would compare different prefixes). Trained models with ground truth
(the shapes model) are also held to their caption exact match and OD mAP@0.5 against the truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trtdeploy.runtime.bundle import Bundle, Manifest
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import ArtifactError, InputValidationError, UsageError
from trtdeploy.runtime.executor import ComponentRuns, Executor, ReferenceSet
from trtdeploy.runtime.florence2_answers import post_process_generation
from trtdeploy.runtime.florence2_decode import AnswerDecoder
from trtdeploy.runtime.florence2_decoder import EngineStepDecoder, past_name, present_name
from trtdeploy.runtime.florence2_tasks import build_prompt, florence2_task
from trtdeploy.runtime.generation import Generated, GenerationSettings, generate
from trtdeploy.runtime.locations import Detections, parse_location_text
from trtdeploy.runtime.metrics import exact_match, mean_average_precision
from trtdeploy.runtime.pipelines.base import HoldsEngines, RunRequest
from trtdeploy.runtime.pipelines.cli_support import OutputNames, check_options, request_images
from trtdeploy.runtime.preprocess import ImageLike, ImagePreprocess, to_rgb
from trtdeploy.runtime.reports import Feeds, Outputs, TaskResult
from trtdeploy.runtime.targets import DEFAULT_TARGET, open_engines
from trtdeploy.runtime.tokenize import check_text

VISION_ENCODER, EMBED_TOKENS, ENCODER = "vision_encoder", "embed_tokens", "encoder"
DECODER_INIT, DECODER_WITH_PAST = "decoder_init", "decoder_with_past"
GENERATION = "generation"  # the task reference: cases and the tokens generate() made for them
# What a precision candidate's generations are judged by on a calibration batch (the FP32 graphs'
# own answers to each image's recorded prompt): greedy and Florence-2's 3-beam search, to the
# checkpoint's own lengths (a long <OD> answer has more places to diverge than a capped one), and
# at least a few tokens (a random-weight preset stops at once).
TUNING_SETTINGS: tuple[Mapping[str, Any], ...] = (
    {"num_beams": 1, "min_new_tokens": 4},
    {"num_beams": 3, "no_repeat_ngram_size": 3, "min_new_tokens": 4},
)
TOKENIZER_ASSETS = ("tokenizer", "tokenizer_config")


@dataclass(frozen=True)
class Florence2Layout:
    """What pipeline.json says about the model: preprocessing, sizes, ids and generation defaults."""

    preprocess: ImagePreprocess
    image_tokens: int  # features per image
    layers: int  # decoder layers (past tensors per layer: decoder/encoder × key/value)
    bos_id: int
    eos_id: int
    pad_id: int
    tokenizer_size: int  # ids >= this are the vocabulary's padding rows: suppressed
    vocab_size: int  # the model's logits
    max_prompt_tokens: int
    generation_config: Mapping[str, Any]
    text_config: Mapping[str, Any]

    @classmethod
    def from_json(cls, config: Mapping[str, Any]) -> Florence2Layout:
        try:
            layout = cls(
                preprocess=ImagePreprocess.from_json(config["preprocess"]),
                image_tokens=_count(config["image_tokens"], "image_tokens"),
                layers=_count(config["decoder_layers"], "decoder_layers"),
                bos_id=_id(config["bos_token_id"], "bos_token_id"),
                eos_id=_id(config["eos_token_id"], "eos_token_id"),
                pad_id=_id(config["pad_token_id"], "pad_token_id"),
                tokenizer_size=_count(config["tokenizer_size"], "tokenizer_size"),
                vocab_size=_count(config["vocab_size"], "vocab_size"),
                max_prompt_tokens=_count(config["max_prompt_tokens"], "max_prompt_tokens"),
                generation_config=dict(config["generation_config"]),
                text_config=dict(config["text_config"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"pipeline.json is not a Florence-2 pipeline config trtdeploy can run ({exc!r}). Rebuild the bundle."
            ) from exc
        if layout.tokenizer_size > layout.vocab_size:
            raise ArtifactError(
                f"pipeline.json: the tokenizer has {layout.tokenizer_size} tokens but the model only "
                f"{layout.vocab_size} logits; the bundle's tokenizer is not the model's. Rebuild it."
            )
        layout.settings()  # the generation config must agree with the text config
        return layout

    def settings(self, overrides: Mapping[str, Any] | None = None) -> GenerationSettings:
        """Generation settings: the checkpoint's defaults, ``overrides`` on top (None leaves a
        default), and the vocabulary's padding rows suppressed, so they can never win."""
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        padding = range(self.tokenizer_size, self.vocab_size)
        # An override replaces the checkpoint's list, as a generate() argument does in transformers.
        asked = given.get("suppress_tokens", self.generation_config.get("suppress_tokens")) or []
        suppressed = sorted({*asked, *padding})
        if suppressed:
            given["suppress_tokens"] = suppressed
        return GenerationSettings.from_generation_config(self.generation_config, self.text_config, given)

    def encoder_mask(self, prompt_mask: np.ndarray) -> np.ndarray:
        """(B, N + S) mask of the encoder output: every image feature, then the prompt's own."""
        image = np.ones((len(prompt_mask), self.image_tokens), dtype=np.int64)
        return np.concatenate([image, prompt_mask.astype(np.int64)], axis=1)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return value


def _id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a token id, got {value!r}")
    return value


class PromptTokenizer:
    """Task prompts -> ids as Florence2Processor lays them out after the image placeholders:
    <s> prompt </s> (the processor tokenizes that string without adding special tokens), right-padded."""

    def __init__(self, path: Path, layout: Florence2Layout) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ArtifactError(f"could not read the tokenizer {path}: {exc}") from exc
        self._tok.no_padding()
        self._tok.no_truncation()
        self.layout = layout

    def __call__(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        rows = [
            [
                self.layout.bos_id,
                *self._tok.encode(check_text(p, "prompt"), add_special_tokens=False).ids,
                self.layout.eos_id,
            ]
            for p in prompts
        ]
        longest = max(len(r) for r in rows)
        if longest > self.layout.max_prompt_tokens:
            raise InputValidationError(
                f"the prompt has {longest} tokens; after the {self.layout.image_tokens} image features the model "
                f"has room for {self.layout.max_prompt_tokens}. Shorten the text input."
            )
        ids = np.full((len(rows), longest), self.layout.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for k, row in enumerate(rows):
            ids[k, : len(row)] = row
            mask[k, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


@dataclass(frozen=True)
class Answer:
    """One image's answer to one task: the generated tokens, their text and the parsed answer."""

    task: str
    tokens: tuple[int, ...]
    text: str
    parsed: Any  # post_process_generation's value for the task: a text, or boxes/labels/polygons
    image_size: tuple[int, int]  # (width, height) of the image the pixels of the answer refer to

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "answer": self.parsed,
            "text": self.text,
            "image_size": list(self.image_size),
        }


def _answer_decoder(assets: Mapping[str, Path]) -> AnswerDecoder:
    """The decoder of the bundle's own tokenizer files, as its manifest lists them."""
    return AnswerDecoder.from_files(assets["tokenizer"], assets.get("tokenizer_config"))


class Florence2Pipeline(HoldsEngines):
    """Florence-2's tasks over a bundle's five engines."""

    sources: ClassVar[tuple[str, ...]] = (VISION_ENCODER, EMBED_TOKENS, ENCODER)
    task_names: ClassVar[frozenset[str]] = frozenset(
        {
            "generation_exact_match",
            "generation_token_agreement",
            "caption_exact_match_drop",
            "od_map50_drop",
        }
    )
    run_options: ClassVar[frozenset[str]] = frozenset({"--task", "--text", "--num-beams", "--max-new-tokens"})

    def __init__(
        self,
        engines: Mapping[str, Engine],
        tokenizer: PromptTokenizer,
        decoder: AnswerDecoder,
        layout: Florence2Layout,
    ) -> None:
        self.engines = dict(engines)
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.layout = layout
        self._max_images = self.engines[VISION_ENCODER].io.dims["batch"].max
        self._max_rows = self.engines[DECODER_WITH_PAST].io.dims["rows"].max
        self._max_length = self.engines[DECODER_WITH_PAST].io.dims["present"].max

    def held_engines(self) -> Iterable[Engine]:
        return self.engines.values()

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, target: str = DEFAULT_TARGET, *, threads: int | None = None
    ) -> Florence2Pipeline:
        layout = Florence2Layout.from_json(bundle.manifest.pipeline_config)  # = pipeline.json (load checks)
        tokenizer = PromptTokenizer(bundle.asset("tokenizer"), layout)
        decoder = _answer_decoder({role: bundle.asset(role) for role in bundle.manifest.assets})
        return cls(open_engines(bundle, target, threads=threads), tokenizer, decoder, layout)

    @staticmethod
    def check_config(config: Mapping[str, Any]) -> None:
        Florence2Layout.from_json(config)

    # --- answering --------------------------------------------------------------------------------

    def image_features(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """(I, N, D) image features and each image's (width, height): encode once, ask many tasks."""
        rgb = [to_rgb(image) for image in _image_list(images)]
        pixels = self.layout.preprocess(rgb)
        features = self.engines[VISION_ENCODER].run_in_chunks({"pixel_values": pixels})["image_features"]
        return features, [image.size for image in rgb]

    def answer(
        self,
        images: Sequence[ImageLike],
        task: str,
        text: str | None = None,
        **generation: Any,
    ) -> list[Answer]:
        """Each image's answer to ``task`` (+ ``text`` for tasks that take one); ``generation``
        overrides the checkpoint's generation settings (num_beams=1, max_new_tokens=64, ...)."""
        # The prompt and the settings are checked before the vision tower's seconds, not after.
        prompt, settings = build_prompt(task, text), self.checked_settings(generation)
        features, sizes = self.image_features(images)
        return self._answers(features, sizes, task, prompt, settings)

    def checked_settings(self, generation: Mapping[str, Any]) -> GenerationSettings:
        """The generation settings for ``generation``, refused when the engines cannot hold them."""
        settings = self.layout.settings(generation)
        if settings.num_beams > self._max_rows:
            raise UsageError(
                f"num_beams={settings.num_beams}: the decoder engines hold at most {self._max_rows} rows "
                f"(images × beams). Ask for {self._max_rows} beams or fewer, or rebuild with a larger profile."
            )
        if settings.max_total_length > self._max_length:
            raise UsageError(
                f"generation up to {settings.max_total_length} tokens (start token included): the decoder "
                f"engines hold at most {self._max_length} positions. Ask for "
                f"max_new_tokens={self._max_length - 1} or fewer."
            )
        return settings

    def answer_features(
        self,
        features: np.ndarray,
        sizes: Sequence[tuple[int, int]],
        task: str,
        text: str | None = None,
        **generation: Any,
    ) -> list[Answer]:
        return self._answers(
            features, sizes, task, build_prompt(task, text), self.checked_settings(generation)
        )

    def _answers(
        self,
        features: np.ndarray,
        sizes: Sequence[tuple[int, int]],
        task: str,
        prompt: str,
        settings: GenerationSettings,
    ) -> list[Answer]:
        tokens = self.generate_tokens(features, self.tokenizer([prompt] * len(features)), settings)
        texts = self.decoder.decode_batch([list(t) for t in tokens])
        return [
            Answer(
                task,
                tuple(int(i) for i in t),
                txt,
                post_process_generation(txt, task, size)[task],
                (int(size[0]), int(size[1])),
            )
            for t, txt, size in zip(tokens, texts, sizes, strict=True)
        ]

    def generate_tokens(
        self, features: np.ndarray, prompts: Mapping[str, np.ndarray], settings: GenerationSettings
    ) -> list[np.ndarray]:
        """Generated ids per image (decoder start first), as generate() returns them; images go in
        chunks the decoder's rows (images × beams) allow."""
        return generate_with(Executor(self.engines), self.layout, features, prompts, settings, self._max_rows)

    # --- the protocol -----------------------------------------------------------------------------

    @staticmethod
    def flow(run: Executor, sources: Outputs, config: Mapping[str, Any]) -> ComponentRuns:
        """vision -> embed -> encoder on the recorded pixels and prompts; then one decoder_init call
        on the start token and one decoder_with_past step on its cache, with the rows of the past
        reordered (beam_idx rolled by one) so the gather is checked too."""
        layout = Florence2Layout.from_json(config)
        runs = ComponentRuns({}, {})
        vision = runs.add(
            VISION_ENCODER, sources[VISION_ENCODER], run.run(VISION_ENCODER, sources[VISION_ENCODER])
        )
        embeds = runs.add(EMBED_TOKENS, sources[EMBED_TOKENS], run.run(EMBED_TOKENS, sources[EMBED_TOKENS]))
        prompt_mask = sources[ENCODER]["attention_mask"]
        encoder_feeds = {
            "image_features": vision["image_features"],
            "inputs_embeds": embeds["inputs_embeds"],
            "attention_mask": prompt_mask,
        }
        hidden = runs.add(ENCODER, encoder_feeds, run.run(ENCODER, encoder_feeds))["last_hidden_state"]
        # beam_idx indexes rows, so the decoder calls must not be split: at most a profile's rows.
        rows = min(len(hidden), run[DECODER_WITH_PAST].io.dims["rows"].max)
        settings = layout.settings()
        mask = layout.encoder_mask(prompt_mask[:rows])
        init_feeds = {
            "decoder_input_ids": np.full((rows, 1), settings.decoder_start_token_id, dtype=np.int64),
            "encoder_hidden_states": hidden[:rows],
            "encoder_attention_mask": mask,
        }
        init = runs.add(DECODER_INIT, init_feeds, run.run(DECODER_INIT, init_feeds))
        first = settings.forced_bos_token_id
        next_ids = np.argmax(init["logits"][:, -1], axis=-1) if first is None else np.full(rows, first)
        step_feeds = {
            "input_ids": next_ids.reshape(rows, 1).astype(np.int64),
            "encoder_attention_mask": mask,
            "beam_idx": np.roll(np.arange(rows, dtype=np.int64), 1),
            **_past_from_presents(init, layout.layers),
        }
        runs.add(DECODER_WITH_PAST, step_feeds, run.run(DECODER_WITH_PAST, step_feeds))
        return runs

    @staticmethod
    def tuning_tasks(run: Executor, runs: ComponentRuns, config: Mapping[str, Any]) -> Outputs:
        """``run``'s generations on the batch's images and prompts, in every TUNING_SETTINGS: a
        candidate is held to the same generation budget against these as the bundle is against
        generate()'s (the batch has no ground truth; its task metrics are not asked)."""
        layout = Florence2Layout.from_json(config)
        prompt_ids, prompt_mask = (
            runs.inputs[EMBED_TOKENS]["input_ids"],
            runs.inputs[ENCODER]["attention_mask"],
        )
        images = len(prompt_ids)
        settings = [json.dumps(dict(s), sort_keys=True) for s in TUNING_SETTINGS for _ in range(images)]
        cases = {
            "image": np.tile(np.arange(images, dtype=np.int64), len(TUNING_SETTINGS)),
            "settings": np.array(settings, dtype=str),
            "prompt_ids": np.tile(prompt_ids, (len(TUNING_SETTINGS), 1)),
            "prompt_mask": np.tile(prompt_mask, (len(TUNING_SETTINGS), 1)),
        }
        features = runs.outputs[VISION_ENCODER]["image_features"]
        max_rows = run[DECODER_WITH_PAST].io.dims["rows"].max
        tokens = replay_generation_cases(run, layout, features, cases, max_rows)
        tasks = np.array([""] * len(settings), dtype=str)
        return {
            GENERATION: {
                **cases,
                "task": tasks,
                "scored": np.zeros(len(settings), bool),
                "tokens": padded_rows(tokens),
            }
        }

    @staticmethod
    def task_metrics(
        manifest: Manifest, run: Executor, reference: ReferenceSet, actual: Outputs
    ) -> list[TaskResult]:
        """Generated sequences against generate()'s, case by case; and on a model with ground truth
        (the shapes model) caption exact match and OD mAP@0.5 against the truth, each within the
        budget's drop of what generate()'s own tokens score."""
        cases = reference.tasks.get(GENERATION)
        if not cases:
            # Generation is what a Florence-2 bundle does: a budget gating it without its reference
            # would pass on per-graph tensors alone.
            return [
                TaskResult(
                    name, float("nan"), manifest.budget.tasks[name], "no generation reference to compare"
                )
                for name in ("generation_exact_match", "generation_token_agreement")
                if name in manifest.budget.tasks
            ]
        layout = Florence2Layout.from_json(manifest.pipeline_config)
        features = actual[VISION_ENCODER]["image_features"]  # the engines' own, on the recorded pixels
        max_rows = run[DECODER_WITH_PAST].io.dims["rows"].max
        produced = replay_generation_cases(run, layout, features, cases, max_rows)
        expected = [_unpad(row) for row in cases["tokens"]]
        results = generation_agreement(manifest, produced, expected)
        truth = manifest.pipeline_config.get("ground_truth")
        if truth is not None:
            decoder = _answer_decoder(reference.assets)
            results += ground_truth_metrics(manifest, decoder, cases, produced, expected, truth)
        return results

    @classmethod
    def run_cli(cls, bundle: Bundle, request: RunRequest) -> list[str]:
        """Each image's parsed answer to --task (JSON with --json); --out-dir draws boxes as PNGs."""
        usage = "a Florence-2 bundle answers a task: --task '<OD>' [--text ...] [--num-beams N] [--max-new-tokens N]"
        check_options(request, cls.run_options, usage, allow_out_dir=True)
        task = request.options.get("--task")
        if not task:
            raise InputValidationError(f"--task is missing: {usage}.")
        florence2_task(task)
        pipeline = cls.from_bundle(bundle, request.target, threads=request.threads)
        images = list(request_images(request))
        # Output names are settled (and one that would overwrite an input refused) before any work.
        targets = OutputNames(request.out_dir, [p for p, _ in images]) if request.out_dir else None
        drawings = [targets.png(i, task) for i in range(len(images))] if targets else []
        answers = pipeline.answer(
            [image for _, image in images],
            task,
            request.options.get("--text"),
            num_beams=request.options.get("--num-beams"),
            max_new_tokens=request.options.get("--max-new-tokens"),
        )
        drawn = {}
        if request.out_dir is not None:
            from trtdeploy.runtime.florence2_draw import draw_answer

            request.out_dir.mkdir(parents=True, exist_ok=True)
            for (path, image), answer, out in zip(images, answers, drawings, strict=True):
                drawn[str(path)] = draw_answer(image, answer, out)
        if request.as_json:
            return [
                json.dumps(
                    {
                        str(p): {**a.to_json(), **({"drawn": str(drawn[str(p)])} if drawn else {})}
                        for (p, _), a in zip(images, answers, strict=True)
                    }
                )
            ]
        lines = []
        for (path, _), answer in zip(images, answers, strict=True):
            lines.append(f"{path}: {task}")
            lines.append(f"  {json.dumps(answer.parsed)}")
            if drawn:
                lines.append(f"  -> {drawn[str(path)]}")
        return lines


def generate_with(
    run: Executor,
    layout: Florence2Layout,
    features: np.ndarray,
    prompts: Mapping[str, np.ndarray],
    settings: GenerationSettings,
    max_rows: int,
) -> list[np.ndarray]:
    """The prompt embedded, the encoder and generation for each image's features (item-major chunks
    of at most ``max_rows`` decoder rows)."""
    per_call = max(1, max_rows // settings.num_beams)
    out: list[np.ndarray] = []
    for start in range(0, len(features), per_call):
        chunk = features[start : start + per_call]
        ids = prompts["input_ids"][start : start + per_call]
        mask = prompts["attention_mask"][start : start + per_call]
        embeds = run.run(EMBED_TOKENS, {"input_ids": ids})["inputs_embeds"]
        hidden = run.run(ENCODER, {"image_features": chunk, "inputs_embeds": embeds, "attention_mask": mask})[
            "last_hidden_state"
        ]
        decoder = EngineStepDecoder(
            run[DECODER_INIT], run[DECODER_WITH_PAST], hidden, layout.encoder_mask(mask), layout.layers
        )
        generated: Generated = generate(decoder, len(chunk), settings)
        out += list(generated.tokens)
    return out


def replay_generation_cases(
    run: Executor,
    layout: Florence2Layout,
    features: np.ndarray,
    cases: Mapping[str, np.ndarray],
    max_rows: int,
) -> list[np.ndarray]:
    """Our tokens for every recorded case (image, prompt ids, settings), cases with the same prompt
    and settings batched over their images."""
    produced: list[np.ndarray | None] = [None] * len(cases["image"])
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for k, (setting, ids, mask) in enumerate(
        zip(cases["settings"], cases["prompt_ids"], cases["prompt_mask"], strict=True)
    ):
        groups.setdefault((str(setting), tuple(int(i) for i in ids[mask.astype(bool)])), []).append(k)
    for (setting, ids), members in groups.items():
        settings = layout.settings(json.loads(setting))
        images = features[[int(cases["image"][k]) for k in members]]
        row = np.array(ids, dtype=np.int64)
        prompts = {
            "input_ids": np.tile(row, (len(members), 1)),
            "attention_mask": np.ones((len(members), len(row)), np.int64),
        }
        for k, tokens in zip(
            members, generate_with(run, layout, images, prompts, settings, max_rows), strict=True
        ):
            produced[k] = tokens
    return [p for p in produced if p is not None]


def generation_agreement(
    manifest: Manifest, produced: Sequence[np.ndarray], expected: Sequence[np.ndarray]
) -> list[TaskResult]:
    """Exact-sequence rate (gated) and token agreement (reported, or gated if the budget says so)."""
    same = [np.array_equal(p, e) for p, e in zip(produced, expected, strict=True)]
    agreement = [_token_agreement(p, e) for p, e in zip(produced, expected, strict=True)]
    first_diff = next((k for k, ok in enumerate(same) if not ok), None)
    detail = f"{len(same)} cases against transformers' generate() with the same settings"
    if first_diff is not None:
        detail += f"; case {first_diff} differs: {produced[first_diff].tolist()[:12]}… vs {expected[first_diff].tolist()[:12]}…"
    tasks = manifest.budget.tasks
    return [
        TaskResult(
            "generation_exact_match", float(np.mean(same)), tasks.get("generation_exact_match", 0.0), detail
        ),
        TaskResult(
            "generation_token_agreement",
            float(np.mean(agreement)),
            tasks.get("generation_token_agreement", 0.0),
            "share of reference tokens matched position by position, averaged over cases",
        ),
    ]


def ground_truth_metrics(
    manifest: Manifest,
    decoder: AnswerDecoder,
    cases: Mapping[str, np.ndarray],
    produced: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    truth: Mapping[str, Any],
) -> list[TaskResult]:
    """<CAPTION> exact match and <OD> mAP@0.5 of the cases marked for scoring, against the truth."""
    scored = [k for k, flag in enumerate(cases["scored"]) if bool(flag)]
    results = []
    for task, metric in (("<CAPTION>", "caption_exact_match"), ("<OD>", "od_map50")):
        members = [k for k in scored if str(cases["task"][k]) == task]
        if not members:
            continue
        images = [int(cases["image"][k]) for k in members]
        ours = _truth_score(metric, decoder.decode_batch([list(produced[k]) for k in members]), images, truth)
        theirs = _truth_score(
            metric, decoder.decode_batch([list(expected[k]) for k in members]), images, truth
        )
        allowed = manifest.budget.tasks.get(f"{metric}_drop", 0.0)
        detail = f"{len(members)} evaluation images; PyTorch FP32 {theirs:.4f}, drop {theirs - ours:+.4f} (at most {allowed})"
        results.append(TaskResult(metric, ours, round(theirs - allowed, 6), detail))
    return results


def _truth_score(metric: str, texts: Sequence[str], images: Sequence[int], truth: Mapping[str, Any]) -> float:
    """Caption exact match, or OD mAP@0.5 of the boxes parsed from the texts (float pixels)."""
    if metric == "caption_exact_match":
        clean = [t.replace("<s>", "").replace("</s>", "").replace("<pad>", "").strip() for t in texts]
        return exact_match(clean, [truth["captions"][i] for i in images])
    size = (int(truth["image_size"][0]), int(truth["image_size"][1]))
    found = [parse_location_text(t, size) for t in texts]
    gt = [
        Detections(
            np.asarray(truth["boxes"][i], dtype=np.float64).reshape(-1, 4), tuple(truth["box_labels"][i])
        )
        for i in images
    ]
    return mean_average_precision(found, gt, iou_threshold=0.5)


def _past_from_presents(outputs: Feeds, layers: int) -> Feeds:
    return {
        past_name(i, attention, kind): outputs[present_name(i, attention, kind)]
        for i in range(layers)
        for attention in ("decoder", "encoder")
        for kind in ("key", "value")
    }


def padded_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Token rows of different lengths as one int64 array, padded with -1 (never a token id)."""
    longest = max((len(r) for r in rows), default=0)
    padded = np.full((len(rows), longest), -1, dtype=np.int64)
    for k, row in enumerate(rows):
        padded[k, : len(row)] = row
    return padded


def _unpad(row: np.ndarray) -> np.ndarray:
    return row[row >= 0]


def _token_agreement(produced: np.ndarray, expected: np.ndarray) -> float:
    length = max(len(produced), len(expected))
    same = sum(int(a == b) for a, b in zip(produced, expected, strict=False))
    return same / length if length else 1.0


def _image_list(images: Any) -> list[Any]:
    if isinstance(images, str | Path) or not isinstance(images, Sequence) or len(images) == 0:
        raise InputValidationError(
            f"expected a non-empty list of images (PIL images or (H, W[, C]) uint8 arrays), got {images!r:.60}; "
            "wrap a single image in a list."
        )
    return list(images)
