"""Encoder-decoder generation in numpy that reproduces transformers' ``generate()`` token for token.

The model is reached through a ``StepDecoder`` (for Florence-2: two ONNX decoder graphs, a first
step and a with-past step); this module owns everything ``generate()`` does around it: special
tokens and lengths from a checkpoint's generation config, the logits processors
(logits_processors.py), greedy search and beam search. The reference is transformers 5.24,
``generation/utils.py``: ``_prepare_special_tokens``, ``_prepare_generated_length``, ``_sample`` and
``_beam_search`` with its helpers; comments name the function each piece mirrors.

Given the same logits, greedy search is exact. Beam search ranks log-softmax scores, and numpy's
exp/log round differently from torch's SLEEF kernels by about one float32 ulp, so continuations
whose summed scores differ by less than ~1e-6 may be ranked differently (see ``_log_softmax``);
exact ties go to the lower index, where torch leaves their order unspecified (see ``_top_k``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from trtdeploy.runtime.errors import ArtifactError, InputValidationError, TrtDeployError
from trtdeploy.runtime.logits_processors import LogitsProcessors

DEFAULT_MAX_NEW_TOKENS = 20  # GenerationConfig._get_default_generation_params()["max_length"]
PROMPT_LENGTH = 1  # the decoder starts from one token: transformers' decoder_prompt_len
# transformers marks dead beams and empty finished slots with -1e9, not -inf, so that -1e9 + score
# stays orderable. Exactly representable in float32, which beam scores are kept in, as in torch.
NO_SCORE = np.float32(-1.0e9)


class StepDecoder(Protocol):
    """The decoder half of an encoder-decoder model that already holds its encoder outputs for a batch
    of B items and keeps its own KV cache between calls."""

    def first(self, input_ids: np.ndarray, repeat: int) -> np.ndarray:
        """input_ids (B*repeat, S) int64, the decoder's start tokens; the encoder outputs of item b serve rows
        b*repeat .. b*repeat+repeat-1 (item-major). Returns the last position's logits (B*repeat, V) float32
        and starts the cache."""
        ...

    def next(self, input_ids: np.ndarray, beam_idx: np.ndarray) -> np.ndarray:
        """input_ids (R, 1) int64; beam_idx (R,) int64: row r continues the previous call's row beam_idx[r]
        (the cache is reordered by it before this step; greedy passes arange(R)). Returns logits (R, V) float32."""
        ...


@dataclass(frozen=True)
class GenerationSettings:
    """How ``generate()`` decodes: the GenerationConfig fields that matter for greedy and beam search,
    with their transformers 5.24 meaning. max_length/min_length count the decoder start token, as in
    transformers; max_new_tokens/min_new_tokens do not, and win when set."""

    decoder_start_token_id: int
    eos_token_ids: tuple[int, ...] = ()  # empty: only the maximum length stops generation
    pad_token_id: int | None = None  # fed to finished rows in greedy search; never returned
    bos_token_id: int | None = None
    forced_bos_token_id: int | None = None  # forced as the first generated token
    forced_eos_token_ids: tuple[int, ...] = ()  # forced as the token that reaches the maximum length
    num_beams: int = 1  # 1: greedy search
    length_penalty: float = 1.0  # finished beam score = summed log-probs / generated**length_penalty
    early_stopping: bool | Literal["never"] = False
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int | None = None
    max_length: int | None = None
    min_new_tokens: int | None = None
    min_length: int = 0
    suppress_tokens: tuple[int, ...] = ()
    # When neither max_length nor max_new_tokens is set, transformers generates 20 new tokens, capped
    # at the model config's max_position_embeddings: BART's config has one, Florence-2's top-level
    # config has none (its text config's does not count).
    max_position_embeddings: int | None = None

    def __post_init__(self) -> None:
        problems = _id_problems(self) + _search_problems(self) + _length_problems(self)
        if problems:
            raise InputValidationError("invalid generation settings: " + "; ".join(problems))
        if self.min_total_length > self.max_total_length:
            raise InputValidationError(
                f"the minimum length ({_length_words(self, 'min')}) exceeds the maximum "
                f"({_length_words(self, 'max')}): no output could satisfy both; lower the minimum or "
                "raise the maximum"
            )

    @property
    def max_total_length(self) -> int:
        """Generation stops at this length, decoder start token included (``_prepare_generated_length``)."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens + PROMPT_LENGTH
        if self.max_length is not None:
            return self.max_length
        default = DEFAULT_MAX_NEW_TOKENS + PROMPT_LENGTH
        return default if self.max_position_embeddings is None else min(default, self.max_position_embeddings)

    @property
    def min_total_length(self) -> int:
        """EOS is banned below this length, decoder start token included."""
        if self.min_new_tokens is not None:
            return self.min_new_tokens + PROMPT_LENGTH
        return self.min_length

    @property
    def fill_token_id(self) -> int:
        """What finished rows are fed: pad, else the first EOS (``_prepare_special_tokens``)."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_ids[0] if self.eos_token_ids else self.decoder_start_token_id

    def logits_processors(self) -> LogitsProcessors:
        return LogitsProcessors(
            eos_token_ids=self.eos_token_ids,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            min_length=self.min_total_length,
            forced_bos_token_id=self.forced_bos_token_id,
            forced_eos_token_ids=self.forced_eos_token_ids,
            max_length=self.max_total_length,
            suppress_tokens=self.suppress_tokens,
        )

    @classmethod
    def from_generation_config(
        cls,
        generation_config: Mapping[str, Any],
        text_config: Mapping[str, Any],
        overrides: Mapping[str, Any] | None = None,
        *,
        max_position_embeddings: int | None = None,
    ) -> GenerationSettings:
        """Settings from a checkpoint's generation_config.json, checked against the model's text config.

        ``overrides`` are what a caller would pass as ``generate(**kwargs)``; a None override keeps
        the generation config's value. An absent (or null) key takes transformers' default: special ids stay
        unset, then ``_prepare_special_tokens`` starts from bos_token_id when decoder_start_token_id
        is unset and feeds the first EOS where pad_token_id is unset. ``max_position_embeddings``:
        the top-level model config's (see the field).
        """
        # None means unset, in a config file as in generate()'s keyword arguments.
        overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
        merged = {k: v for k, v in {**generation_config, **overrides}.items() if v is not None}
        for key, value in merged.items():
            _check_key(key, value, from_overrides=key in overrides)
        start = _decoder_start(merged, text_config)
        eos = _token_ids(merged.get("eos_token_id"), "eos_token_id")
        _check_against_text_config(
            {
                "bos_token_id": merged.get("bos_token_id"),
                "eos_token_id": eos,
                "pad_token_id": merged.get("pad_token_id"),
                "decoder_start_token_id": start,
            },
            text_config,
            start_from_bos="decoder_start_token_id" not in merged,
        )
        settings = cls(
            decoder_start_token_id=start,
            eos_token_ids=eos,
            pad_token_id=merged.get("pad_token_id"),
            bos_token_id=merged.get("bos_token_id"),
            forced_bos_token_id=merged.get("forced_bos_token_id"),
            forced_eos_token_ids=_token_ids(merged.get("forced_eos_token_id"), "forced_eos_token_id"),
            num_beams=merged.get("num_beams", 1),
            length_penalty=merged.get("length_penalty", 1.0),
            early_stopping=merged.get("early_stopping", False),
            no_repeat_ngram_size=merged.get("no_repeat_ngram_size", 0),
            repetition_penalty=merged.get("repetition_penalty", 1.0),
            max_new_tokens=merged.get("max_new_tokens"),
            max_length=merged.get("max_length"),
            min_new_tokens=merged.get("min_new_tokens"),
            min_length=merged.get("min_length", 0),
            suppress_tokens=_token_ids(merged.get("suppress_tokens"), "suppress_tokens"),
            max_position_embeddings=max_position_embeddings,
        )
        _check_vocabulary(settings, text_config.get("vocab_size"))
        return settings


@dataclass(frozen=True)
class Generated:
    """What ``generate()`` made of each batch item."""

    tokens: tuple[np.ndarray, ...]  # per item (L,) int64: decoder start, generated ids, EOS if reached
    scores: np.ndarray | None  # (B,) float32 beam scores (transformers' sequences_scores); None if greedy
    decoder_calls: int  # first() and next() calls together


def generate(decoder: StepDecoder, batch: int, settings: GenerationSettings) -> Generated:
    """Greedy search (num_beams 1) or beam search over ``batch`` items, as transformers' generate()."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputValidationError(f"batch must be a positive int (the decoder's item count); got {batch!r}")
    if settings.num_beams == 1:
        return _greedy_search(decoder, batch, settings)
    return _beam_search(decoder, batch, settings)


# --- greedy search --------------------------------------------------------------------------------


def _greedy_search(decoder: StepDecoder, batch: int, settings: GenerationSettings) -> Generated:
    """``GenerationMixin._sample`` with do_sample False."""
    process = settings.logits_processors()
    max_length = settings.max_total_length
    ids = np.zeros((batch, max_length), dtype=np.int64)  # (B, T)
    ids[:, 0] = settings.decoder_start_token_id
    lengths = np.full(batch, max_length, dtype=np.int64)
    unfinished = np.ones(batch, dtype=bool)
    logits = _checked_logits(decoder.first(ids[:, :1].copy(), repeat=1), batch, settings)
    calls, length = 1, 1
    while True:
        scores = process(ids[:, :length], logits)  # greedy processes the raw logits
        tokens = scores.argmax(axis=-1)  # (B,) the first maximum on ties, as torch.argmax
        if settings.eos_token_ids:
            # The batch decodes in lockstep: finished rows keep running and are fed padding.
            tokens = np.where(unfinished, tokens, settings.fill_token_id)
        ids[:, length] = tokens
        length += 1
        stopped = np.isin(tokens, settings.eos_token_ids) | (length >= max_length)  # the stopping criteria
        lengths[unfinished & stopped] = length
        unfinished &= ~stopped
        if not unfinished.any():
            break
        logits = _checked_logits(decoder.next(tokens[:, None], np.arange(batch)), batch, settings)
        calls += 1
    return Generated(tuple(ids[b, : lengths[b]].copy() for b in range(batch)), None, calls)


# --- beam search ----------------------------------------------------------------------------------


@dataclass
class _Beams:
    """Beam search state between steps (B items, N beams, T max length); ``_beam_search``'s tensors."""

    running: np.ndarray  # (B, N, T) int64 live hypotheses, best first (running_sequences)
    running_scores: np.ndarray  # (B, N) float32 summed log-probs (running_beam_scores)
    running_rows: np.ndarray  # (B, N) int64 the decoder row each live hypothesis continues
    finished: np.ndarray  # (B, N, T) int64 the best finished hypotheses, best first (sequences)
    finished_scores: np.ndarray  # (B, N) float32 length-penalised; NO_SCORE while empty (beam_scores)
    finished_lengths: np.ndarray  # (B, N) int64, decoder start and EOS included
    is_finished: np.ndarray  # (B, N) bool: the slot holds a hypothesis (is_sent_finished)
    improvable: np.ndarray  # (B,) bool: a live beam may still beat them (is_early_stop_heuristic_unsatisfied)

    @classmethod
    def start(cls, batch: int, beams: int, max_length: int, start_token: int) -> _Beams:
        running = np.zeros((batch, beams, max_length), dtype=np.int64)
        running[:, :, 0] = start_token
        scores = np.zeros((batch, beams), dtype=np.float32)
        scores[:, 1:] = NO_SCORE  # only beam 0 is live at first: the others would repeat its choices
        return cls(
            running=running,
            running_scores=scores,
            running_rows=np.zeros((batch, beams), dtype=np.int64),
            finished=running.copy(),
            finished_scores=np.full((batch, beams), NO_SCORE, dtype=np.float32),
            finished_lengths=np.zeros((batch, beams), dtype=np.int64),
            is_finished=np.zeros((batch, beams), dtype=bool),
            improvable=np.ones(batch, dtype=bool),
        )


@dataclass(frozen=True)
class _Candidates:
    """The top K continuations of each item's beams, best first (K = 2N with one EOS id)."""

    scores: np.ndarray  # (B, K) float32 summed log-probs
    sequences: np.ndarray  # (B, K, T) int64, the new token at the current length
    rows: np.ndarray  # (B, K) int64 the decoder row each one continues
    stopped: np.ndarray  # (B, K) bool: ends in EOS or reaches the maximum length


def _beam_search(decoder: StepDecoder, batch: int, settings: GenerationSettings) -> Generated:
    """``GenerationMixin._beam_search`` with do_sample False and one returned sequence per item."""
    process = settings.logits_processors()
    beams = settings.num_beams
    rows = batch * beams
    state = _Beams.start(batch, beams, settings.max_total_length, settings.decoder_start_token_id)
    first = decoder.first(state.running[:, :, :1].reshape(rows, 1), repeat=beams)
    logits = _checked_logits(first, rows, settings)
    calls, length = 1, 1
    while True:
        # Beam search runs the processors on log-softmax scores (greedy search on raw logits).
        scores = process(state.running[:, :, :length].reshape(rows, length), _log_softmax(logits))
        candidates = _top_continuations(state, scores.reshape(batch, beams, -1), length, settings)
        _keep_running(state, candidates)
        _file_finished(state, candidates, length, settings)
        length += 1
        _update_improvable(state, length, settings)
        # _beam_search_has_unfinished_sequences: each condition spans the whole batch.
        all_full = bool(state.is_finished.all()) and settings.early_stopping is True
        if not state.improvable.any() or all_full or candidates.stopped.all():
            break
        last = state.running[:, :, length - 1].reshape(rows, 1)
        logits = _checked_logits(decoder.next(last, state.running_rows.reshape(rows)), rows, settings)
        calls += 1
    best = tuple(state.finished[b, 0, : state.finished_lengths[b, 0]].copy() for b in range(batch))
    return Generated(best, state.finished_scores[:, 0].copy(), calls)


def _top_continuations(
    state: _Beams, log_probs: np.ndarray, length: int, settings: GenerationSettings
) -> _Candidates:
    """``_get_top_k_continuations``: the top K over each item's flattened beams x vocab, with K large
    enough that N live beams remain even if every beam's best continuation is an EOS."""
    batch, beams, vocab = log_probs.shape  # (B, N, V)
    keep = max(2, 1 + len(settings.eos_token_ids)) * beams
    totals = (log_probs + state.running_scores[:, :, None]).reshape(batch, beams * vocab)  # (B, N*V)
    scores, flat = _top_k(totals, keep)  # (B, K)
    parents, tokens = flat // vocab, flat % vocab
    sequences = np.take_along_axis(state.running, parents[:, :, None], axis=1)  # (B, K, T)
    sequences[:, :, length] = tokens
    stopped = np.isin(tokens, settings.eos_token_ids) | (length + 1 >= settings.max_total_length)
    rows = parents + (np.arange(batch) * beams)[:, None]
    return _Candidates(scores, sequences, rows, stopped)


def _keep_running(state: _Beams, candidates: _Candidates) -> None:
    """``_get_running_beams_for_next_iteration``: the N best candidates that did not stop live on."""
    alive_scores = candidates.scores + candidates.stopped.astype(np.float32) * NO_SCORE  # (B, K)
    survivors = _top_k(alive_scores, state.running.shape[1])[1]  # (B, N)
    state.running = np.take_along_axis(candidates.sequences, survivors[:, :, None], axis=1)
    state.running_scores = np.take_along_axis(alive_scores, survivors, axis=1)
    state.running_rows = np.take_along_axis(candidates.rows, survivors, axis=1)


def _file_finished(state: _Beams, candidates: _Candidates, length: int, settings: GenerationSettings) -> None:
    """``_update_finished_beams``: those of the top N candidates that stopped compete, length-penalised,
    with the finished hypotheses for the N slots. The other K - N are spares for the running beams.

    An item whose slots are all full (early_stopping True) or that cannot improve any more takes no
    new hypotheses. The penalties are added one by one, as transformers does, so float32 rounds alike.
    """
    beams = state.running.shape[1]
    just_finished = candidates.stopped.copy()  # (B, K)
    just_finished[:, beams:] = False
    generated = length + 1 - PROMPT_LENGTH  # the candidates' tokens after the decoder start
    scored = candidates.scores / np.float32(generated**settings.length_penalty)  # float32, as torch
    full = state.is_finished.all(axis=1, keepdims=True) & (settings.early_stopping is True)  # (B, 1)
    scored = scored + full.astype(np.float32) * NO_SCORE
    scored = scored + (~state.improvable[:, None]).astype(np.float32) * NO_SCORE
    scored = scored + (~just_finished).astype(np.float32) * NO_SCORE
    merged_scores = np.concatenate([state.finished_scores, scored], axis=1)  # (B, N+K)
    best = _top_k(merged_scores, beams)[1]  # (B, N)
    state.finished = _pick(state.finished, candidates.sequences, best)
    state.finished_scores = np.take_along_axis(merged_scores, best, axis=1)
    new_lengths = np.full(just_finished.shape, length + 1, dtype=np.int64)
    state.finished_lengths = _pick(state.finished_lengths, new_lengths, best)
    state.is_finished = _pick(state.is_finished, just_finished, best)


def _pick(kept: np.ndarray, new: np.ndarray, best: np.ndarray) -> np.ndarray:
    """(B, N, ...) kept and (B, K, ...) new -> the (B, N, ...) at columns ``best`` (B, N) of both together."""
    merged = np.concatenate([kept, new], axis=1)
    index = best.reshape(best.shape + (1,) * (merged.ndim - 2))
    return np.take_along_axis(merged, index, axis=1)


def _update_improvable(state: _Beams, length: int, settings: GenerationSettings) -> None:
    """``_check_early_stop_heuristic``: can the best live beam still beat the worst finished one?

    early_stopping False or True (and "never" with length_penalty <= 0) penalise the best live score
    at the current length; "never" with a positive penalty at the longest possible length. Sticky:
    an item that cannot improve stays done.
    """
    penalty = settings.length_penalty
    if settings.early_stopping == "never" and penalty > 0.0:
        best_length = settings.max_total_length - PROMPT_LENGTH
    else:
        best_length = length - PROMPT_LENGTH
    best_running = state.running_scores[:, :1] / np.float32(best_length**penalty)  # (B, 1)
    worst = state.finished_scores.min(axis=1, keepdims=True)  # (B, 1)
    # An empty slot counts as -1e9, which any live beam beats: nothing stops before N have finished.
    worst_per_slot = np.where(state.is_finished, worst, NO_SCORE)  # (B, N)
    state.improvable &= (best_running > worst_per_slot).any(axis=1)


def _top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest float32 values of each row, largest first: (R, k) values and their (R, k) columns.

    Exact ties go to the lower column. torch.topk leaves their order unspecified (its CPU kernel
    partial-sorts or nth_elements, neither stable), so equality with torch holds where the values
    competing for the k places differ. In beam search exact ties arise among -1e9-penalised or
    -inf candidates, which never reach the output, or between identical beams (after forced BOS),
    whose order does not matter. NaN ranks above everything, as in torch; -0.0 equals 0.0.
    """
    columns = values.shape[-1]
    # Unique sortable keys: float32 bits mapped so that unsigned order is value order (flip every
    # bit of a negative, the sign bit of a positive), inverted for descending, the column below.
    clean = np.where(np.isnan(values), np.float32(np.nan), values + np.float32(0.0))  # one NaN, no -0.0
    bits = clean.astype(np.float32).view(np.uint32)
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    keys = ((~ascending).astype(np.uint64) << np.uint64(32)) | np.arange(columns, dtype=np.uint64)
    if k < columns:
        keys = np.partition(keys, k - 1, axis=-1)[:, :k]  # O(columns): the vocabulary is large
    picked = (np.sort(keys, axis=-1) & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return np.take_along_axis(values, picked, axis=-1), picked


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """float32 log-softmax over the vocabulary in torch's order: (x - max) - log(sum(exp(x - max))).

    The sum and log run in float64 and are rounded once. That lands within an ulp of torch's
    float32 CPU result, bit-equal for about half the rows: torch's SLEEF exp/log and SIMD summation
    order are not reproducible in numpy.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (R, V) float32, as torch
    log_sum = np.log(np.exp(shifted.astype(np.float64)).sum(axis=-1, keepdims=True))  # (R, 1)
    return shifted - log_sum.astype(np.float32)


def _checked_logits(logits: np.ndarray, rows: int, settings: GenerationSettings) -> np.ndarray:
    """The decoder's logits as (rows, V) float32, or an error that says what came back."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != rows:
        raise ArtifactError(
            f"the decoder returned logits of shape {logits.shape}; expected ({rows}, vocab): one row per "
            "decoder row, for the last position only. Check the decoder graph's logits output."
        )
    highest = max(_special_ids(settings))
    if highest >= logits.shape[1]:
        raise ArtifactError(
            f"the generation settings use token id {highest}, but the decoder scores only {logits.shape[1]} "
            "tokens: the generation config does not belong to this decoder"
        )
    return logits.astype(np.float32, copy=False)


def _special_ids(settings: GenerationSettings) -> list[int]:
    optional = (settings.pad_token_id, settings.bos_token_id, settings.forced_bos_token_id)
    return [
        settings.decoder_start_token_id,
        *settings.eos_token_ids,
        *settings.forced_eos_token_ids,
        *settings.suppress_tokens,
        *(i for i in optional if i is not None),
    ]


# --- reading and checking a generation config ----------------------------------------------------

# GenerationConfig fields this module implements.
USED_KEYS = frozenset(
    {
        *("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id"),
        *("forced_bos_token_id", "forced_eos_token_id", "suppress_tokens"),
        *("num_beams", "length_penalty", "early_stopping", "no_repeat_ngram_size", "repetition_penalty"),
        *("max_new_tokens", "max_length", "min_new_tokens", "min_length"),
    }
)
# Fields that change the output unless they hold a neutral value (the last one is suggested).
NEUTRAL_VALUES: Mapping[str, tuple[Any, ...]] = {
    "do_sample": (None, False),
    "num_return_sequences": (None, 1),
    "num_beam_groups": (None, 1),
    "diversity_penalty": (None, 0.0),
    "penalty_alpha": (None, 0.0),
    "dola_layers": (None,),
    "constraints": (None,),
    "force_words_ids": (None,),
    "guidance_scale": (None, 1.0),
    "sequence_bias": (None,),
    "bad_words_ids": (None,),
    "encoder_repetition_penalty": (None, 1.0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "exponential_decay_length_penalty": (None,),
    "begin_suppress_tokens": (None, []),
    "renormalize_logits": (None, False),
    "remove_invalid_values": (None, False),
    "watermarking_config": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "low_memory": (None, False),
    "token_healing": (None, False),
    "prompt_lookup_num_tokens": (None,),
    "assistant_early_exit": (None,),
    "is_assistant": (None, False),
    "use_mtp": (None, False),
    "speculation_type": (None,),
}
# Fields that do not change greedy or beam search tokens: ignored on purpose.
IGNORED_KEYS = frozenset(
    {
        # sampling only; do_sample must be False here, and then transformers ignores them too
        *("temperature", "top_k", "top_p", "typical_p", "min_p", "epsilon_cutoff", "eta_cutoff", "top_h"),
        # assisted decoding only, which needs an assistant model
        *("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"),
        *(
            "assistant_lookbehind",
            "target_lookbehind",
            "max_matching_ngram_size",
            "assistant_ensemble_weight",
        ),
        # how transformers caches and compiles its own forward passes; a StepDecoder keeps its own cache
        *("use_cache", "cache_implementation", "cache_config", "max_cache_len", "compile_config"),
        *("disable_compile", "prefill_chunk_size", "continuous_batching_config"),
        # what transformers returns besides the tokens
        *("output_attentions", "output_hidden_states", "output_scores", "output_logits"),
        *("return_dict_in_generate", "transformers_version"),
    }
)
# The special ids a fine-tune's generation config must share with the model's text config.
SHARED_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _check_key(key: str, value: Any, *, from_overrides: bool) -> None:
    """Refuse a key whose effect this module does not reproduce; accept the used and harmless ones."""
    source = "the generate() overrides" if from_overrides else "the generation config"
    error: type[TrtDeployError] = InputValidationError if from_overrides else ArtifactError
    if key in USED_KEYS or key in IGNORED_KEYS or key.startswith("_"):  # "_from_model_config": bookkeeping
        return
    if key in NEUTRAL_VALUES:
        if _is_neutral(value, NEUTRAL_VALUES[key]):
            return
        raise error(
            f"{source} sets {key}={value!r}, which changes what generate() produces and is not implemented "
            f"here (greedy and beam search only); remove it or set it to {NEUTRAL_VALUES[key][-1]!r}"
        )
    raise error(
        f"{source} has the key {key!r}, which is not a transformers 5.24 GenerationConfig field; whether it "
        "changes the output is unknown, so it is refused. Remove it if it is not meant for generate()."
    )


def _is_neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    """``value in neutral`` without Python's True == 1 and False == 0."""
    for candidate in neutral:
        if candidate is None or isinstance(candidate, bool) or isinstance(value, bool):
            if value is candidate:
                return True
        elif value == candidate:
            return True
    return False


def _decoder_start(merged: Mapping[str, Any], text_config: Mapping[str, Any]) -> int:
    """decoder_start_token_id, else bos_token_id, as ``_prepare_special_tokens`` picks it."""
    start = merged.get("decoder_start_token_id", merged.get("bos_token_id"))
    if start is None:
        raise ArtifactError(
            "the generation config sets neither decoder_start_token_id nor bos_token_id, so there is no "
            "token to start decoding from; set decoder_start_token_id in generation_config.json "
            f"(the text config's is {text_config.get('decoder_start_token_id')!r})"
        )
    return int(start) if _is_count(start) else start  # a bad value is reported by __post_init__


def _check_against_text_config(
    ours: Mapping[str, Any], text_config: Mapping[str, Any], *, start_from_bos: bool
) -> None:
    """Fine-tunes ship generation configs whose special ids contradict the model: refuse, naming each."""
    clashes = []
    for field in SHARED_IDS:
        mine, theirs = ours[field], text_config.get(field)
        if mine is None or mine == () or theirs is None:
            continue
        if field == "eos_token_id":
            # A generation config may add stop tokens, but must keep the model's own.
            agree = set(_token_ids(theirs, field)) <= set(mine)
            mine = mine[0] if len(mine) == 1 else list(mine)
        else:
            agree = mine == theirs
        if not agree:
            origin = (
                " (taken from bos_token_id)" if field == "decoder_start_token_id" and start_from_bos else ""
            )
            clashes.append(
                f"{field} {mine!r}{origin} in the generation config vs {theirs!r} in the text config"
            )
    if clashes:
        raise ArtifactError(
            "the generation config disagrees with the model's text config: "
            + "; ".join(clashes)
            + ". The decoder was trained with the text config's ids: correct generation_config.json (or "
            "pass the right ids as overrides) so that both agree."
        )


def _check_vocabulary(settings: GenerationSettings, vocab_size: Any) -> None:
    if not _is_count(vocab_size):
        return
    outside = sorted({i for i in _special_ids(settings) if i >= vocab_size})
    if outside:
        raise ArtifactError(
            f"the generation config uses token ids {outside}, outside the text config's vocab_size "
            f"{vocab_size}: the generation config does not belong to this model"
        )


def _token_ids(value: Any, field: str) -> tuple[int, ...]:
    """An id or a list of ids (transformers takes both) as a tuple; None as ()."""
    if value is None:
        return ()
    values = value if isinstance(value, list | tuple) else [value]
    if not all(_is_count(v) for v in values):
        raise InputValidationError(
            f"{field} must be a non-negative token id or a list of them; got {value!r}"
        )
    return tuple(int(v) for v in values)


def _id_problems(s: GenerationSettings) -> list[str]:
    problems = []
    for name in ("decoder_start_token_id", "pad_token_id", "bos_token_id", "forced_bos_token_id"):
        value = getattr(s, name)
        if not _is_count(value) and not (value is None and name != "decoder_start_token_id"):
            problems.append(f"{name} must be a non-negative int; got {value!r}")
    for name in ("eos_token_ids", "forced_eos_token_ids", "suppress_tokens"):
        value = getattr(s, name)
        if not isinstance(value, tuple) or not all(_is_count(v) for v in value):
            problems.append(f"{name} must be a tuple of non-negative ints; got {value!r}")
    suppressed = set(s.suppress_tokens) if isinstance(s.suppress_tokens, tuple) else set()
    forced_bos = set() if s.forced_bos_token_id is None else {s.forced_bos_token_id}
    for name, forced in (
        ("forced_bos_token_id", forced_bos),
        ("forced_eos_token_id", set(s.forced_eos_token_ids)),
    ):
        if forced and forced <= suppressed:
            # GenerationConfig.validate raises on this too: the forcing step would leave every score -inf.
            problems.append(
                f"{name} {sorted(forced)} is also in suppress_tokens, which leaves no token to force"
            )
    return problems


def _search_problems(s: GenerationSettings) -> list[str]:
    problems = []
    if not _is_count(s.num_beams) or s.num_beams < 1:
        problems.append(f"num_beams must be an int >= 1; got {s.num_beams!r}")
    if not _is_number(s.length_penalty):
        problems.append(f"length_penalty must be a finite number; got {s.length_penalty!r}")
    if s.early_stopping not in (True, False, "never") or not isinstance(s.early_stopping, bool | str):
        problems.append(f"early_stopping must be True, False or 'never'; got {s.early_stopping!r}")
    if not _is_count(s.no_repeat_ngram_size):
        problems.append(f"no_repeat_ngram_size must be an int >= 0; got {s.no_repeat_ngram_size!r}")
    if not _is_number(s.repetition_penalty) or s.repetition_penalty <= 0:
        problems.append(f"repetition_penalty must be a number > 0 (1.0: off); got {s.repetition_penalty!r}")
    return problems


def _length_problems(s: GenerationSettings) -> list[str]:
    problems = []
    least = {
        "max_new_tokens": 1,
        "max_length": 2,
        "min_new_tokens": 0,
        "min_length": 0,
        "max_position_embeddings": 2,
    }
    for name, smallest in least.items():
        value = getattr(s, name)
        if (value is not None or name == "min_length") and (not _is_count(value) or value < smallest):
            problems.append(f"{name} must be an int >= {smallest}; got {value!r}")
    return problems


def _length_words(s: GenerationSettings, which: str) -> str:
    new, total = (
        (s.min_new_tokens, s.min_total_length) if which == "min" else (s.max_new_tokens, s.max_total_length)
    )
    given = f"{which}_new_tokens={new}, " if new is not None else ""
    return f"{given}{total} tokens with the decoder start token"


def _is_count(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and bool(value >= 0)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
