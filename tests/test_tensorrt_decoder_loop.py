"""Florence-2's generation loop on the TensorRT runner (with the stand-ins for tensorrt and cuda-python).

A toy two-graph decoder with the Florence-2 interface (decoder_init, decoder_with_past with
``beam_idx`` and a self-attention past that grows by one position a step) runs as fake plans behind
TrtEngine and, beside it, as plain numpy engines. Greedy and beam search must give the same tokens
on both, and after the first step the KV cache must never cross between host and device: the only
device-to-host copies of a with-past step are its logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import FakeCuda, FakeTensorRT, Network

from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.engine_cache import EngineCache, PlanKey
from trtdeploy.runtime.florence2_decoder import EngineStepDecoder, past_name, present_name
from trtdeploy.runtime.generation import GenerationSettings, generate
from trtdeploy.runtime.specs import DimRange, IOSpec, TensorSpec
from trtdeploy.runtime.tensorrt_options import TrtBuildOptions

VOCAB = 7  # the toy's tokens; its keys are one-hot tokens, so head size = VOCAB
EOS = 6
DIMS = {
    "rows": DimRange(1, 3, 8),
    "target": DimRange(1, 1, 4),
    "encoder_sequence": DimRange(2, 5, 10),
    "past": DimRange(1, 4, 16),
    "present": DimRange(2, 5, 17),
}


def _kv(prefix: str, attention: str, length: str) -> list[TensorSpec]:
    return [
        TensorSpec(f"{prefix}.0.{attention}.{k}", "float32", ("rows", 1, length, VOCAB))
        for k in ("key", "value")
    ]


INIT_IO = IOSpec(
    inputs=(
        TensorSpec("decoder_input_ids", "int64", ("rows", "target")),
        TensorSpec("encoder_hidden_states", "float32", ("rows", "encoder_sequence", VOCAB)),
        TensorSpec("encoder_attention_mask", "int64", ("rows", "encoder_sequence")),
    ),
    outputs=(
        TensorSpec("logits", "float32", ("rows", "target", VOCAB)),
        *_kv("present", "decoder", "target"),
        *_kv("present", "encoder", "encoder_sequence"),
    ),
    dims={k: DIMS[k] for k in ("rows", "target", "encoder_sequence")},
)
STEP_IO = IOSpec(
    inputs=(
        TensorSpec("input_ids", "int64", ("rows", 1)),
        TensorSpec("encoder_attention_mask", "int64", ("rows", "encoder_sequence")),
        TensorSpec("beam_idx", "int64", ("rows",)),
        *_kv("past", "decoder", "past"),
        *_kv("past", "encoder", "encoder_sequence"),
    ),
    outputs=(TensorSpec("logits", "float32", ("rows", 1, VOCAB)), *_kv("present", "decoder", "present")),
    dims={k: DIMS[k] for k in ("rows", "encoder_sequence", "past", "present")},
)


def _logits(keys: np.ndarray, encoder_values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(R, V): the masked mean of the encoder values plus the tokens seen so far, rolled by one
    (a toy whose next token depends on the whole cache, so a wrong reorder changes the answer)."""
    weights = mask.astype(np.float32)[:, None, :, None]  # (R, 1, T, 1)
    context = (encoder_values * weights).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))  # (R, V)
    seen = keys.sum(axis=(1, 2))  # (R, V)
    return (context + 0.37 * np.roll(seen, 1, axis=-1) - 0.21 * seen).astype(np.float32)


def init_compute(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids, hidden, mask = a["decoder_input_ids"], a["encoder_hidden_states"], a["encoder_attention_mask"]
    keys = np.eye(VOCAB, dtype=np.float32)[ids][:, None]  # (R, 1, S, V)
    encoder = hidden[:, None].astype(np.float32)  # (R, 1, T, V)
    logits = np.stack([_logits(keys[:, :, : s + 1], encoder, mask) for s in range(ids.shape[1])], axis=1)
    return {
        "logits": logits,
        present_name(0, "decoder", "key"): keys,
        present_name(0, "decoder", "value"): keys * 2,
        present_name(0, "encoder", "key"): encoder,
        present_name(0, "encoder", "value"): encoder,
    }


def step_compute(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = a["beam_idx"]
    new = np.eye(VOCAB, dtype=np.float32)[a["input_ids"]][:, None]  # (R, 1, 1, V)
    keys = np.concatenate([a[past_name(0, "decoder", "key")][order], new], axis=2)
    values = np.concatenate([a[past_name(0, "decoder", "value")][order], new * 2], axis=2)
    logits = _logits(keys, a[past_name(0, "encoder", "value")], a["encoder_attention_mask"])
    return {
        "logits": logits[:, None],
        present_name(0, "decoder", "key"): keys,
        present_name(0, "decoder", "value"): values,
    }


def _network(io: IOSpec, compute: object) -> Network:
    def output_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        sizes = {d: v for spec in io.inputs for d, v in zip(spec.shape, shapes[spec.name], strict=True)}
        if "past" in sizes:
            sizes["present"] = sizes["past"] + 1
        return {s.name: tuple(d if isinstance(d, int) else sizes[d] for d in s.shape) for s in io.outputs}

    return Network(
        inputs={s.name: s.dtype for s in io.inputs},
        outputs={s.name: s.dtype for s in io.outputs},
        profile={n: tuple(shape) for n, shape in io.profile_shapes().items()},  # type: ignore[misc]
        output_shapes=output_shapes,
        compute=compute,  # type: ignore[arg-type]
    )


class NumpyEngine(Engine):
    """The same toy in plain numpy: the answer the TensorRT runner must reproduce."""

    def __init__(self, name: str, io: IOSpec, compute: object) -> None:
        super().__init__(name, io)
        self.compute = compute

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.compute(feeds)  # type: ignore[operator,no-any-return]


def _trt_engine(trt: FakeTensorRT, cache: EngineCache, name: str, io: IOSpec, compute: object) -> Engine:
    from trtdeploy.runtime.tensorrt_backend import TrtEngine, TrtEngineSettings

    plan = f"fake-plan-{name}".encode()
    trt.networks[plan] = _network(io, compute)
    key = PlanKey(
        component=name,
        onnx_sha256="0" * 64,
        weights_sha256="1" * 64,
        profiles={n: [list(s) for s in v] for n, v in io.profile_shapes().items()},
        builder_options=TrtBuildOptions().key_json(),
        tensorrt_version=trt.__version__,
        gpu_name="Fake GPU",
        compute_capability="8.7",
    )
    record = cache.write_plan(key, plan)
    cache.commit(record)
    return TrtEngine(name, io, plan, record, TrtEngineSettings())


def _generate(init: Engine, step: Engine, num_beams: int) -> list[list[int]]:
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((2, 5, VOCAB)).astype(np.float32)  # (B, T, D): two items
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.int64)
    decoder = EngineStepDecoder(init, step, hidden, mask, layers=1)
    settings = GenerationSettings(
        decoder_start_token_id=0,
        eos_token_ids=(EOS,),
        num_beams=num_beams,
        max_new_tokens=9,
        min_new_tokens=3,
    )
    return [row.tolist() for row in generate(decoder, 2, settings).tokens]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_on_tensorrt_keeps_the_cache_on_the_device(
    fakes: tuple[FakeTensorRT, FakeCuda], tmp_path: Path, num_beams: int
) -> None:
    trt, cuda = fakes
    cache = EngineCache(tmp_path)
    init = _trt_engine(trt, cache, "decoder_init", INIT_IO, init_compute)
    step = _trt_engine(trt, cache, "decoder_with_past", STEP_IO, step_compute)
    expected = _generate(
        NumpyEngine("decoder_init", INIT_IO, init_compute), NumpyEngine("s", STEP_IO, step_compute), num_beams
    )
    assert all(len(row) > 4 for row in expected), expected  # the loop ran several steps
    cuda.copies.clear()
    produced = _generate(init, step, num_beams)
    assert produced == expected
    d2h = [nbytes for kind, nbytes in cuda.copies if kind == cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost]
    rows = 2 * num_beams
    logits_step = rows * VOCAB * 4
    # decoder_init runs once per item (2 rows) and hands back its logits and K/V once (the cross
    # K/V are repeated over the beams on the host and uploaded once); every with-past step after
    # that copies only its logits back: the self-attention past never leaves the device.
    init_copies = len(INIT_IO.outputs)
    assert d2h[init_copies:] and all(n == logits_step for n in d2h[init_copies:]), d2h
    init.close()
    step.close()
