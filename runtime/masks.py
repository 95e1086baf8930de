"""Binary masks as run lengths, so ground-truth masks fit in a bundle's pipeline.json.

A mask is flattened row by row and written as the lengths of alternating runs, starting with a run
of False (which may be 0 long): COCO's uncompressed RLE, in row-major order. A 128 x 128 shape mask
takes a few hundred numbers instead of 16,384 booleans, and the JSON stays readable and diffable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_mask(mask: np.ndarray) -> list[int]:
    """Run lengths of a boolean (H, W) mask, row-major, beginning with the False run."""
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"expected a boolean (H, W) mask; got {mask.dtype} {mask.shape}")
    flat = mask.reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # positions where a new run starts
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def decode_mask(runs: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) boolean mask that ``encode_mask`` wrote as ``runs``."""
    lengths = np.asarray(runs, dtype=np.int64)
    if lengths.ndim != 1 or np.any(lengths < 0) or int(lengths.sum()) != shape[0] * shape[1]:
        raise ValueError(
            f"run lengths must be non-negative and add up to {shape[0]} x {shape[1]} = "
            f"{shape[0] * shape[1]} pixels; got {len(lengths)} runs summing to {int(lengths.sum())}"
        )
    values = np.arange(len(lengths)) % 2 == 1  # runs alternate False, True, False, ...
    return np.repeat(values, lengths).reshape(shape)
