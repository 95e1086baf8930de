"""runtime/generation.py against transformers' own generate(), token for token.

Both sides drive the same small torch model: transformers through model.generate(), the numpy
loop through TorchStepDecoder, which runs the model's decoder with a KV cache reordered by
beam_idx. Random weights tend to emit EOS at once or never, so each random model gets a bias on
its EOS logit and min_new_tokens, picked (with the seed) so that beam search finishes hypotheses
mid-sequence and early_stopping True/False/"never" stop at different steps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    Florence2ForConditionalGeneration,
    GenerationConfig,
    PreTrainedModel,
)
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import configs, vocab
from trtdeploy.models.shapes.common import pixel_values
from trtdeploy.models.shapes.evaluate import florence2_prompt_ids
from trtdeploy.runtime.errors import ArtifactError, InputValidationError
from trtdeploy.runtime.generation import (
    IGNORED_KEYS,
    NEUTRAL_VALUES,
    USED_KEYS,
    Generated,
    GenerationSettings,
    _top_k,
    generate,
)

# transformers warns whenever its default length is used; here that is the point.
pytestmark = pytest.mark.filterwarnings("ignore:Using the model-agnostic default `max_length`:UserWarning")

TRAINED_FLORENCE2 = Path(__file__).resolve().parents[1] / "models" / "weights" / "florence2-shapes-tiny"
BART_VOCAB = 64
EOS = 2  # BART's and Florence-2's </s>, also their decoder start token


class TorchStepDecoder:
    """A StepDecoder over a transformers encoder-decoder model, for the tests only.

    Holds the encoder outputs of B items (computed by the model's own generate() helper, so they
    are the very tensors generate() decodes from) and an EncoderDecoderCache, as generate() does.
    """

    def __init__(self, model: PreTrainedModel, inputs: Mapping[str, torch.Tensor]) -> None:
        self.model = model
        kwargs = {k: v for k, v in inputs.items() if k != "input_ids"}
        with torch.inference_mode():
            prepared = model._maybe_prepare_encoder_kwargs_for_generation(
                inputs["input_ids"], kwargs, "input_ids", GenerationConfig()
            )
        self.hidden = prepared["encoder_outputs"].last_hidden_state  # (B, T, D)
        self.mask = inputs["attention_mask"]  # (B, T)

    def first(self, input_ids: np.ndarray, repeat: int) -> np.ndarray:
        # generate()'s _expand_inputs_for_generation: item-major repeat_interleave
        self.encoder = BaseModelOutput(last_hidden_state=self.hidden.repeat_interleave(repeat, dim=0))
        self.encoder_mask = self.mask.repeat_interleave(repeat, dim=0)
        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        return self._step(input_ids)

    def next(self, input_ids: np.ndarray, beam_idx: np.ndarray) -> np.ndarray:
        self.cache.reorder_cache(torch.from_numpy(beam_idx))
        return self._step(input_ids)

    def _step(self, input_ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(
                decoder_input_ids=torch.from_numpy(input_ids),
                encoder_outputs=self.encoder,
                attention_mask=self.encoder_mask,
                cache=self.cache,
                use_cache=True,
                return_dict=True,
            )
        self.cache = out.cache
        return out.logits[:, -1].float().numpy()  # (R, V)


@dataclass(frozen=True)
class Checkpoint:
    """A model with its generate() inputs and config files, as a checkpoint folder would hold them."""

    model: PreTrainedModel
    inputs: Mapping[str, torch.Tensor]  # what generate() is called with
    generation_config: Mapping[str, Any]  # generation_config.json
    text_config: Mapping[str, Any]
    max_position_embeddings: int | None  # the top-level model config's (None for Florence-2)

    @property
    def batch(self) -> int:
        return int(self.inputs["input_ids"].shape[0])


@dataclass(frozen=True)
class Reference:
    sequences: list[list[int]]  # per item, cut after its first EOS
    scores: np.ndarray | None  # sequences_scores (beam search)
    decoder_inputs: list[np.ndarray]  # what each decoder call was fed, (R, 1)


class recording_decoder_inputs:
    """Records the decoder_input_ids of every forward pass of the model, whoever calls it."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.inputs: list[np.ndarray] = []

    def __enter__(self) -> list[np.ndarray]:
        self.hook = self.model.register_forward_pre_hook(self._record, with_kwargs=True)
        return self.inputs

    def __exit__(self, *exc: object) -> None:
        self.hook.remove()

    def _record(self, module: object, args: object, kwargs: dict[str, Any]) -> None:
        self.inputs.append(kwargs["decoder_input_ids"].numpy().copy())


def transformers_generate(checkpoint: Checkpoint, overrides: Mapping[str, Any]) -> Reference:
    """model.generate() with the checkpoint's generation config as the model's own."""
    model = checkpoint.model
    saved = model.generation_config
    model.generation_config = GenerationConfig.from_dict(dict(checkpoint.generation_config))
    try:
        with torch.inference_mode(), recording_decoder_inputs(model) as decoder_inputs:
            out = model.generate(
                **checkpoint.inputs, **overrides, return_dict_in_generate=True, output_scores=True
            )
    finally:
        model.generation_config = saved
    scores = getattr(out, "sequences_scores", None)
    sequences = [_cut_after_eos(row, overrides.get("eos_token_id", EOS)) for row in out.sequences.tolist()]
    return Reference(sequences, None if scores is None else scores.numpy(), decoder_inputs)


def _cut_after_eos(row: list[int], eos: int) -> list[int]:
    """transformers pads each row to the batch's longest; a row ends at its first EOS after the start."""
    if eos in row[1:]:
        return row[: row.index(eos, 1) + 1]
    return row


def numpy_generate(checkpoint: Checkpoint, overrides: Mapping[str, Any]) -> Generated:
    """Our generate() with the checkpoint's configs, driving the model through TorchStepDecoder."""
    settings = GenerationSettings.from_generation_config(
        checkpoint.generation_config,
        checkpoint.text_config,
        overrides,
        max_position_embeddings=checkpoint.max_position_embeddings,
    )
    return generate(TorchStepDecoder(checkpoint.model, checkpoint.inputs), checkpoint.batch, settings)


def assert_same_as_transformers(checkpoint: Checkpoint, **overrides: Any) -> Generated:
    expected = transformers_generate(checkpoint, overrides)
    with recording_decoder_inputs(checkpoint.model) as decoder_inputs:
        got = numpy_generate(checkpoint, overrides)
    assert [t.tolist() for t in got.tokens] == expected.sequences, overrides
    assert all(t.dtype == np.int64 for t in got.tokens)
    # the same number of decoder calls, fed the same tokens (finished rows included) in the same row order
    assert got.decoder_calls == len(decoder_inputs) == len(expected.decoder_inputs), overrides
    for ours, theirs in zip(decoder_inputs, expected.decoder_inputs, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    if expected.scores is None:
        assert got.scores is None
    else:
        assert got.scores is not None and got.scores.dtype == np.float32
        # log-softmax in numpy and in torch differ by about an ulp (see runtime/generation.py)
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
    return got


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """These models are tiny: on shared cores, torch's thread pool costs far more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the models -----------------------------------------------------------------------------------


def tiny_bart(seed: int, eos_bias: float, *, max_position_embeddings: int = 64) -> Checkpoint:
    """A random BART and a batch of 3 encoder inputs of lengths 9, 6 and 4 (right-padded, masked)."""
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=BART_VOCAB,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=max_position_embeddings,
        init_std=0.1,
    )
    model = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = eos_bias
    ids = torch.randint(3, BART_VOCAB, (3, 9), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(9)[None, :] < torch.tensor([[9], [6], [4]])).long()  # (3, 9)
    ids[mask == 0] = config.pad_token_id
    generation_config = json.loads(model.generation_config.to_json_string())  # what save_pretrained writes
    return Checkpoint(
        model,
        {"input_ids": ids, "attention_mask": mask},
        generation_config,
        config.to_dict(),
        config.max_position_embeddings,
    )


@pytest.fixture(scope="module")
def bart() -> Checkpoint:
    return tiny_bart(seed=0, eos_bias=1.0)


@pytest.fixture(scope="module")
def bart_late_eos() -> Checkpoint:
    return tiny_bart(seed=2, eos_bias=1.0)


def florence2_inputs(model: Florence2ForConditionalGeneration, tasks: list[str], images: np.ndarray) -> dict:
    """Florence2Processor's layout, right-padded to the longest prompt: <image> x 65, <s> prompt </s>."""
    tokenizer = vocab.florence2_tokenizer()
    prompts = [florence2_prompt_ids(tokenizer, task, num_image_tokens=65) for task in tasks]
    length = max(map(len, prompts))
    pad = model.config.text_config.pad_token_id
    ids = torch.tensor([p + [pad] * (length - len(p)) for p in prompts])  # (B, T)
    mask = torch.tensor([[1] * len(p) + [0] * (length - len(p)) for p in prompts])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixel_values(images, configs.FLORENCE2_PREPROCESS),
    }


@pytest.fixture(scope="module")
def random_florence2() -> Checkpoint:
    """The tiny Florence-2 architecture with random weights, and an EOS logit bias (a hook on lm_head)."""
    torch.manual_seed(2)
    model = Florence2ForConditionalGeneration(configs.florence2_config()).eval()
    bias = torch.zeros(model.config.text_config.vocab_size)
    bias[EOS] = 1.8
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: out + bias)
    images = np.stack([s.image for s in shapes.samples("evaluation", 0, 3)])
    inputs = florence2_inputs(model, ["<CAPTION>", "<OD>", "<CAPTION>"], images)
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == 2, "the prompts should differ in length"
    generation_config = configs.florence2_generation_config().to_diff_dict()
    return Checkpoint(model, inputs, generation_config, model.config.text_config.to_dict(), None)


@pytest.fixture(scope="module")
def trained_florence2() -> Checkpoint:
    """The committed shapes model on 4 evaluation images, loaded as a deployment would load it."""
    model = Florence2ForConditionalGeneration.from_pretrained(TRAINED_FLORENCE2).eval()
    generation_config = json.loads((TRAINED_FLORENCE2 / "generation_config.json").read_text())
    text_config = json.loads((TRAINED_FLORENCE2 / "config.json").read_text())["text_config"]
    images = np.stack([s.image for s in shapes.samples("evaluation", 0, 4)])
    inputs = florence2_inputs(model, ["<CAPTION>", "<OD>", "<OD>", "<CAPTION>"], images)
    return Checkpoint(model, inputs, generation_config, text_config, None)


# --- equality with transformers -------------------------------------------------------------------

GREEDY_CASES = {
    "default-length": {},
    "min-max-new-tokens": {"min_new_tokens": 6, "max_new_tokens": 12},
    "min-max-length": {"min_length": 5, "max_length": 9},
    "repetition-penalty": {"repetition_penalty": 1.3, "max_new_tokens": 15},
    "no-repeat-2": {"no_repeat_ngram_size": 2, "min_new_tokens": 8, "max_new_tokens": 14},
    "no-repeat-3": {"no_repeat_ngram_size": 3, "min_new_tokens": 8, "max_new_tokens": 14},
    "forced-bos": {"forced_bos_token_id": 0, "max_new_tokens": 10},
    "suppress": {"suppress_tokens": [5, 17, 30], "min_new_tokens": 3, "max_new_tokens": 12},
}


@pytest.mark.parametrize("overrides", GREEDY_CASES.values(), ids=GREEDY_CASES.keys())
def test_greedy_matches_transformers(bart: Checkpoint, overrides: dict[str, Any]) -> None:
    assert_same_as_transformers(bart, **overrides)


@pytest.mark.parametrize("num_beams", [2, 3, 4])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_matches_transformers(
    bart: Checkpoint, bart_late_eos: Checkpoint, num_beams: int, early_stopping: bool | str
) -> None:
    for checkpoint in (bart, bart_late_eos):
        assert_same_as_transformers(
            checkpoint,
            num_beams=num_beams,
            early_stopping=early_stopping,
            min_new_tokens=2,
            max_new_tokens=16,
        )


@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0, 0.0, -0.5])
@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_length_penalty_matches_transformers(
    bart_late_eos: Checkpoint, length_penalty: float, early_stopping: bool | str
) -> None:
    assert_same_as_transformers(
        bart_late_eos,
        num_beams=3,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        min_new_tokens=2,
        max_new_tokens=16,
    )


BEAM_PROCESSOR_CASES = {
    "no-repeat-0": {"no_repeat_ngram_size": 0},
    "no-repeat-2": {"no_repeat_ngram_size": 2},
    "no-repeat-3": {"no_repeat_ngram_size": 3},
    "repetition-penalty": {"repetition_penalty": 1.3},
    "forced-bos": {"forced_bos_token_id": 0},
    "suppress": {"suppress_tokens": [5, 17, 30]},
    "min-max-length": {"min_length": 6, "max_length": 12},
    "default-length": {"min_new_tokens": None, "max_new_tokens": None},
}


@pytest.mark.parametrize("overrides", BEAM_PROCESSOR_CASES.values(), ids=BEAM_PROCESSOR_CASES.keys())
def test_beam_search_processors_match_transformers(bart: Checkpoint, overrides: dict[str, Any]) -> None:
    assert_same_as_transformers(
        bart, **{"num_beams": 3, "min_new_tokens": 4, "max_new_tokens": 14, **overrides}
    )


def test_without_forced_eos_the_longest_hypotheses_end_without_eos() -> None:
    """No forced EOS: a hypothesis that reaches max length is returned without one."""
    checkpoint = tiny_bart(seed=1, eos_bias=-3.0)
    generation_config = {k: v for k, v in checkpoint.generation_config.items() if k != "forced_eos_token_id"}
    checkpoint = replace(checkpoint, generation_config=generation_config)
    for num_beams in (1, 3):
        got = assert_same_as_transformers(checkpoint, num_beams=num_beams, max_new_tokens=8)
        assert any(t[-1] != EOS and len(t) == 9 for t in got.tokens)


def test_default_max_length_is_capped_at_max_position_embeddings() -> None:
    checkpoint = tiny_bart(seed=0, eos_bias=-5.0, max_position_embeddings=12)
    for num_beams in (1, 2):
        got = assert_same_as_transformers(checkpoint, num_beams=num_beams)
        assert max(map(len, got.tokens)) == 12


def test_beam_search_finishes_hypotheses_mid_sequence(bart: Checkpoint, bart_late_eos: Checkpoint) -> None:
    """The cases above exercise what they claim: EOS before max length, different lengths per item,
    and early_stopping values that stop at different steps."""
    calls = {}
    for early_stopping in (True, False, "never"):
        got = numpy_generate(
            bart,
            {"num_beams": 3, "early_stopping": early_stopping, "min_new_tokens": 2, "max_new_tokens": 16},
        )
        calls[early_stopping] = got.decoder_calls
        if early_stopping is True:
            assert all(t[-1] == EOS and len(t) < 17 for t in got.tokens)
            assert len({len(t) for t in got.tokens}) > 1
    assert calls[True] < calls[False] or calls[False] < calls["never"], calls
    overrides = {"num_beams": 3, "early_stopping": True, "min_new_tokens": 2, "max_new_tokens": 16}
    lengths = {len(t) for t in numpy_generate(bart_late_eos, overrides).tokens}
    assert len(lengths) > 1 and max(lengths) < 17, lengths


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_beams": 3, "no_repeat_ngram_size": 3, "early_stopping": True},
        {"num_beams": 2, "repetition_penalty": 1.3},
    ],
    ids=["greedy", "beams3-no-repeat3", "beams2-repetition"],
)
def test_random_florence2_matches_transformers(
    random_florence2: Checkpoint, overrides: dict[str, Any]
) -> None:
    """Forced BOS 0 after decoder start 2, forced EOS, a batch of 3 whose prompts differ in length."""
    got = assert_same_as_transformers(random_florence2, min_new_tokens=3, max_new_tokens=20, **overrides)
    assert all(t[0] == EOS and t[1] == 0 for t in got.tokens)
    assert any(len(t) < 21 for t in got.tokens)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_beams": 3, "no_repeat_ngram_size": 3, "early_stopping": True}],
    ids=["greedy", "beams3-no-repeat3"],
)
def test_trained_florence2_matches_transformers(
    trained_florence2: Checkpoint, overrides: dict[str, Any]
) -> None:
    got = assert_same_as_transformers(trained_florence2, **overrides)
    tokenizer = Tokenizer.from_file(str(TRAINED_FLORENCE2 / "tokenizer.json"))
    texts = [tokenizer.decode(t.tolist()) for t in got.tokens]
    assert texts[0] == shapes.sample("evaluation", 0).caption  # the trained model reads the image
    assert all("<loc_" in tokenizer.decode(t.tolist(), skip_special_tokens=False) for t in got.tokens[1:3])


# --- the logits processors against transformers' own list ---------------------------------------

PROCESSOR_CONFIGS = {
    "everything": {
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 3,
        "min_new_tokens": 4,
        "forced_bos_token_id": 0,
        "forced_eos_token_id": 2,
        "suppress_tokens": [4, 9],
    },
    "penalty-below-1": {"repetition_penalty": 0.7, "no_repeat_ngram_size": 1},
    "no-repeat-2": {"no_repeat_ngram_size": 2, "min_length": 3},
    "no-repeat-4": {"no_repeat_ngram_size": 4, "eos_token_id": [2, 5], "forced_eos_token_id": [2, 5]},
    "suppressed-eos": {"suppress_tokens": [2, 7], "forced_eos_token_id": [2, 5]},
}


@pytest.mark.parametrize("fields", PROCESSOR_CONFIGS.values(), ids=PROCESSOR_CONFIGS.keys())
def test_logits_processors_equal_transformers_bit_for_bit(bart: Checkpoint, fields: dict[str, Any]) -> None:
    """Random sequences over few tokens (so n-grams repeat) and random scores, at every length."""
    generation_config = GenerationConfig(**{**GENERATION_CONFIG, "max_new_tokens": 9, **fields})
    generation_config.max_length = 10  # what _prepare_generated_length makes of max_new_tokens 9
    if generation_config.min_new_tokens is not None:
        generation_config.min_length = generation_config.min_new_tokens + 1
    bart.model._prepare_special_tokens(generation_config, device="cpu")
    theirs = bart.model._get_logits_processor(generation_config, input_ids_seq_length=1, device="cpu")
    ours = GenerationSettings.from_generation_config(
        GENERATION_CONFIG, TEXT_CONFIG, {"max_new_tokens": 9, **fields}
    )
    process = ours.logits_processors()
    rng = np.random.default_rng(0)
    for length in range(1, 10):
        ids = np.concatenate([np.full((6, 1), 2), rng.integers(0, 6, (6, length - 1))], axis=1)  # (R, L)
        scores = (rng.standard_normal((6, BART_VOCAB)) * 3).astype(np.float32)  # (R, V)
        expected = theirs(torch.from_numpy(ids), torch.from_numpy(scores.copy())).numpy()
        np.testing.assert_array_equal(process(ids, scores), expected, err_msg=f"length {length}")


# --- top-k order ----------------------------------------------------------------------------------


def test_top_k_matches_torch_on_distinct_values() -> None:
    values = np.random.default_rng(0).standard_normal((5, 3000)).astype(np.float32)
    values[0, :7] = -np.inf
    got_values, got_columns = _top_k(values, 8)
    want = torch.topk(torch.from_numpy(values), 8)
    np.testing.assert_array_equal(got_columns, want.indices.numpy())
    np.testing.assert_array_equal(got_values, want.values.numpy())


def test_top_k_breaks_ties_by_lower_column_and_ranks_nan_first() -> None:
    values = np.array([[0.0, 1.0, -np.inf, 1.0, -0.0, -np.inf, np.nan, -1e9]], dtype=np.float32)
    _, columns = _top_k(values, 8)
    assert columns.tolist() == [[6, 1, 3, 0, 4, 7, 2, 5]]


# --- settings from a generation config ------------------------------------------------------------

TEXT_CONFIG = {
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "vocab_size": 64,
}
GENERATION_CONFIG = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2}


def settings(
    generation_config: Mapping[str, Any] = GENERATION_CONFIG, **overrides: Any
) -> GenerationSettings:
    return GenerationSettings.from_generation_config(generation_config, TEXT_CONFIG, overrides)


def test_the_key_lists_cover_every_generation_config_field() -> None:
    """A transformers upgrade that adds a field fails here, so that someone decides what it means."""
    fields = {k for k in GenerationConfig().to_dict() if not k.startswith("_")}
    listed = USED_KEYS | IGNORED_KEYS | set(NEUTRAL_VALUES)
    assert fields == listed
    assert not USED_KEYS & IGNORED_KEYS and not USED_KEYS & set(NEUTRAL_VALUES)


def test_defaults_follow_transformers() -> None:
    s = settings()
    assert (s.decoder_start_token_id, s.eos_token_ids, s.pad_token_id) == (2, (2,), 1)
    assert (s.num_beams, s.length_penalty, s.early_stopping, s.no_repeat_ngram_size) == (1, 1.0, False, 0)
    assert (s.repetition_penalty, s.forced_bos_token_id, s.forced_eos_token_ids, s.suppress_tokens) == (
        1.0,
        None,
        (),
        (),
    )
    assert (s.max_total_length, s.min_total_length) == (21, 0)  # 20 new tokens after the start token
    assert settings(max_length=20).max_total_length == 20
    assert settings(max_length=20, max_new_tokens=5).max_total_length == 6  # max_new_tokens wins
    assert settings(min_length=4, min_new_tokens=1).min_total_length == 2
    # decoder start from bos, padding with eos: _prepare_special_tokens' fallbacks
    s = GenerationSettings.from_generation_config({"bos_token_id": 0, "eos_token_id": [2, 5]}, {}, {})
    assert (s.decoder_start_token_id, s.fill_token_id, s.eos_token_ids) == (0, 2, (2, 5))


def test_the_committed_florence2_generation_config() -> None:
    folder_config = json.loads((TRAINED_FLORENCE2 / "config.json").read_text())
    s = GenerationSettings.from_generation_config(
        json.loads((TRAINED_FLORENCE2 / "generation_config.json").read_text()), folder_config["text_config"]
    )
    assert (s.decoder_start_token_id, s.forced_bos_token_id, s.eos_token_ids, s.forced_eos_token_ids) == (
        2,
        0,
        (2,),
        (2,),
    )
    assert (s.num_beams, s.max_total_length, s.pad_token_id) == (1, 65, 1)


def test_null_values_mean_unset() -> None:
    assert (
        settings({**GENERATION_CONFIG, "num_beams": None, "max_length": None}, min_length=None) == settings()
    )


def test_keys_that_do_not_change_the_tokens_are_ignored() -> None:
    s = settings(
        {**GENERATION_CONFIG, "temperature": 0.7, "top_k": 5, "top_p": 0.9, "transformers_version": "5.24.0"},
        output_scores=True,
        use_cache=False,
        num_assistant_tokens=3,
        _from_model_config=True,
    )
    assert s == settings()


def test_an_override_may_neutralise_the_generation_config() -> None:
    assert settings({**GENERATION_CONFIG, "do_sample": True}, do_sample=False) == settings()


def test_extra_stop_tokens_are_accepted() -> None:
    assert settings({**GENERATION_CONFIG, "eos_token_id": [2, 7]}).eos_token_ids == (2, 7)


def test_special_ids_that_disagree_with_the_text_config_are_refused() -> None:
    with pytest.raises(ArtifactError) as caught:
        settings({"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "decoder_start_token_id": 2})
    message = str(caught.value)
    for clash in (
        "bos_token_id 2 in the generation config vs 0",
        "eos_token_id 1",
        "vs 2 in the text config",
    ):
        assert clash in message
    assert "pad_token_id 0 in the generation config vs 1 in the text config" in message
    assert "decoder_start_token_id" not in message  # that one agrees
    assert "correct generation_config.json" in message


def test_a_decoder_start_taken_from_bos_that_disagrees_is_refused() -> None:
    with pytest.raises(ArtifactError, match=r"decoder_start_token_id 0 \(taken from bos_token_id\).* vs 2"):
        settings({"bos_token_id": 0, "eos_token_id": 2})


def test_a_config_without_any_start_token_is_refused() -> None:
    with pytest.raises(ArtifactError, match="neither decoder_start_token_id nor bos_token_id"):
        GenerationSettings.from_generation_config({"eos_token_id": 2}, {}, {})


def test_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ArtifactError, match=r"token ids \[99\], outside the text config's vocab_size 64"):
        settings(forced_bos_token_id=99)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("do_sample", True),
        ("num_return_sequences", 2),
        ("num_beam_groups", 2),
        ("diversity_penalty", 0.5),
        ("constraints", [[1, 2]]),
        ("force_words_ids", [[3]]),
        ("bad_words_ids", [[3]]),
        ("sequence_bias", {"3": 1.0}),
        ("penalty_alpha", 0.6),
        ("guidance_scale", 1.5),
        ("renormalize_logits", True),
        ("remove_invalid_values", True),
        ("begin_suppress_tokens", [3]),
        ("encoder_no_repeat_ngram_size", 2),
        ("stop_strings", ["end"]),
        ("max_time", 1.0),
    ],
)
def test_keys_that_change_the_output_are_refused(key: str, value: Any) -> None:
    with pytest.raises(ArtifactError, match=rf"the generation config sets {key}=.*not implemented here"):
        settings({**GENERATION_CONFIG, key: value})
    with pytest.raises(InputValidationError, match=rf"the generate\(\) overrides sets {key}="):
        settings(**{key: value})


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(
        ArtifactError, match="'forced_decoder_ids', which is not a transformers 5.24 GenerationConfig"
    ):
        settings({**GENERATION_CONFIG, "forced_decoder_ids": [[1, 3]]})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_beams": 0}, "num_beams must be an int >= 1; got 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an int >= 1; got 0"),
        ({"max_length": 1}, "max_length must be an int >= 2; got 1"),
        ({"min_new_tokens": -1}, "min_new_tokens must be an int >= 0; got -1"),
        ({"min_length": -3}, "min_length must be an int >= 0; got -3"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be an int >= 0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be a number > 0"),
        ({"length_penalty": math.nan}, "length_penalty must be a finite number"),
        ({"early_stopping": "sometimes"}, "early_stopping must be True, False or 'never'"),
        ({"num_beams": 2.0}, "num_beams must be an int >= 1"),
        ({"eos_token_id": "2"}, "eos_token_id must be a non-negative token id"),
        ({"suppress_tokens": [-4]}, "suppress_tokens must be a non-negative token id"),
        (
            {"min_new_tokens": 10, "max_new_tokens": 5},
            r"minimum length \(min_new_tokens=10, 11 tokens.*exceeds",
        ),
        (
            {"forced_bos_token_id": 4, "suppress_tokens": [4]},
            r"forced_bos_token_id \[4\] is also in suppress_tokens",
        ),
        ({"min_length": 30}, r"minimum length \(30 tokens .*exceeds the maximum \(21 tokens"),
    ],
)
def test_out_of_range_values_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InputValidationError, match=message):
        settings(**overrides)


def test_generate_refuses_a_bad_batch_and_bad_logits() -> None:
    class WrongShape:
        def first(self, input_ids: np.ndarray, repeat: int) -> np.ndarray:
            return np.zeros((input_ids.shape[0] + 1, 64), dtype=np.float32)

        def next(self, input_ids: np.ndarray, beam_idx: np.ndarray) -> np.ndarray:
            raise AssertionError("not reached")

    with pytest.raises(InputValidationError, match="batch must be a positive int"):
        generate(WrongShape(), 0, settings())
    with pytest.raises(ArtifactError, match=r"logits of shape \(3, 64\); expected \(2, vocab\)"):
        generate(WrongShape(), 2, settings())


# --- runtime isolation ----------------------------------------------------------------------------

ISOLATED = """
import sys
for name in ("torch", "transformers", "onnx", "onnxscript"):
    sys.modules[name] = None  # importing them now raises ImportError
import numpy as np
from trtdeploy.runtime.generation import GenerationSettings, generate
import trtdeploy.runtime.logits_processors

class Scripted:  # prefers token 5 + step, then EOS
    step = 0
    def first(self, input_ids, repeat):
        return self.logits(input_ids.shape[0])
    def next(self, input_ids, beam_idx):
        self.step += 1
        return self.logits(input_ids.shape[0])
    def logits(self, rows):
        out = np.zeros((rows, 16), dtype=np.float32)
        out[:, 2 if self.step == 3 else 5 + self.step] = 4.0
        return out

s = GenerationSettings(decoder_start_token_id=2, eos_token_ids=(2,), num_beams={beams}, max_new_tokens=8)
print(generate(Scripted(), 2, s).tokens[1].tolist())
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "onnx") and sys.modules[m])
assert not leaked, leaked
"""


@pytest.mark.parametrize("beams", [1, 2])
def test_generation_imports_and_runs_with_torch_transformers_and_onnx_blocked(beams: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ISOLATED.replace("{beams}", str(beams))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2, 5, 6, 7, 2]"
