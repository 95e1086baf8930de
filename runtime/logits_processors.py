"""The logits processors transformers' ``generate()`` applies in greedy and beam search, in numpy.

Each one mirrors a class of transformers 5.24 ``generation/logits_process.py`` and is applied in the
order ``GenerationMixin._get_logits_processor`` builds them (``generation/utils.py``):
repetition penalty, no-repeat n-gram, minimum length, forced BOS, forced EOS, suppressed tokens.
Greedy search runs them on the raw float32 logits, beam search on the float32 log-softmax scores;
the caller decides which. Every function works on all rows at once: ``ids`` (R, L) int64 is the
decoder sequence so far (decoder start token included), ``scores`` (R, V) float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

NEG_INF = np.float32(-np.inf)  # transformers bans a token with -inf, never with a large negative number


@dataclass(frozen=True)
class LogitsProcessors:
    """The processors one ``generate()`` call uses; a field at its neutral value turns its processor off.

    Lengths are totals with the decoder start token included, as transformers counts them after
    ``_prepare_generated_length`` (so ``min_new_tokens=5`` arrives here as ``min_length=6``).
    """

    eos_token_ids: tuple[int, ...] = ()
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_length: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_ids: tuple[int, ...] = ()
    max_length: int = 0  # only read by forced EOS, which fires when the sequence is one short of it
    suppress_tokens: tuple[int, ...] = ()

    def __call__(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """ids (R, L) int64, scores (R, V) float32 -> processed scores (R, V) float32 (a new array)."""
        scores = scores.copy()
        length = ids.shape[1]
        if self.repetition_penalty != 1.0:
            penalise_repeated_tokens(ids, scores, self.repetition_penalty)
        if self.no_repeat_ngram_size > 0:
            ban_repeated_ngrams(ids, scores, self.no_repeat_ngram_size)
        # MinLengthLogitsProcessor and MinNewTokensLengthLogitsProcessor: transformers adds both when
        # min_new_tokens is set, and with min_length = min_new_tokens + 1 they ban EOS on the same steps.
        if self.eos_token_ids and length < self.min_length:
            scores[:, list(self.eos_token_ids)] = NEG_INF
        if self.forced_bos_token_id is not None and length == 1:
            force_tokens(scores, (self.forced_bos_token_id,))
        if self.forced_eos_token_ids and length == self.max_length - 1:
            force_tokens(scores, self.forced_eos_token_ids)
        if self.suppress_tokens:
            scores[:, list(self.suppress_tokens)] = NEG_INF
        return scores


def penalise_repeated_tokens(ids: np.ndarray, scores: np.ndarray, penalty: float) -> None:
    """RepetitionPenaltyLogitsProcessor, in place: every token already in a row's sequence (the
    decoder start token too) has its score multiplied by ``penalty`` where negative, divided where not."""
    rows = np.arange(ids.shape[0])[:, None]  # (R, 1)
    seen = scores[rows, ids]  # (R, L); a token seen twice reads the same score twice
    # float32 array op Python float: the float is rounded to float32 first, as torch does.
    scores[rows, ids] = np.where(seen < 0, seen * penalty, seen / penalty)


def ban_repeated_ngrams(ids: np.ndarray, scores: np.ndarray, size: int) -> None:
    """NoRepeatNGramLogitsProcessor, in place: a token that would complete an n-gram the row already
    holds gets -inf. An n-gram can only be completed if its first n-1 tokens equal the row's last n-1."""
    length = ids.shape[1]
    if length < size:
        return
    windows = sliding_window_view(ids, size, axis=1)  # (R, W, n): every n-gram of each row
    suffix = ids[:, length + 1 - size :]  # (R, n-1)
    matches = (windows[..., :-1] == suffix[:, None, :]).all(axis=-1)  # (R, W)
    rows, starts = np.nonzero(matches)
    scores[rows, windows[rows, starts, -1]] = NEG_INF


def force_tokens(scores: np.ndarray, token_ids: tuple[int, ...]) -> None:
    """ForcedBOS/ForcedEOSTokenLogitsProcessor, in place: every score -inf but the forced ones, 0."""
    scores[:] = NEG_INF
    scores[:, list(token_ids)] = 0.0
