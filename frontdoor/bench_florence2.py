"""Florence-2's pipeline figures: what a task costs end to end and where the time goes, against
transformers' generate() on the same image, prompt, settings and threads, in the same run.

Rows (each side in its own alternating blocks, runtime/bench.py):
- end to end: one image, <CAPTION>, N new tokens (lengths forced to N, the checkpoint's beams):
  ours preprocesses, runs the vision tower, embeds, encodes and generates; eager runs
  CLIPImageProcessor (PIL) and Florence2ForConditionalGeneration.generate() as the documentation does;
- first token: the same with one new token (the vision tower and the encoder dominate it);
- decoder: N tokens from a ready encoder output (generate(encoder_outputs=...) on the eager side),
  i.e. the decoding loop alone, from which tokens/s and ms/token come;
- decoder, cache through the host: our loop with the KV cache copied to numpy and validated on
  every step (what IO binding avoids), to measure what keeping it in the backend saves.
Each row first checks the tokens: an FP32 bundle must produce generate()'s very tokens; an FP16 or
INT8 one must agree with them (FP32 eager) position by position at least as often as its budget's
generation_token_agreement, and the agreement is recorded in the row. A miss fails the bench.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from trtdeploy.bench_pipelines import PipelineBenchContext, PipelineRow
from trtdeploy.calibration.images import EVALUATION_IMAGES
from trtdeploy.runtime.engine import Engine
from trtdeploy.runtime.errors import VerificationError
from trtdeploy.runtime.executor import Executor
from trtdeploy.runtime.florence2_decoder import LOGITS, past_name, present_name
from trtdeploy.runtime.generation import generate
from trtdeploy.runtime.pipelines.florence2 import (
    DECODER_INIT,
    DECODER_WITH_PAST,
    EMBED_TOKENS,
    ENCODER,
    Florence2Pipeline,
)

NEW_TOKENS = 20
TASK = "<CAPTION>"


class HostCacheStepDecoder:
    """The decoder loop without residency: every step's KV cache comes back as numpy and goes in
    again through Engine.run, validated (NaN scan included) as any user input is."""

    def __init__(
        self, init: Engine, with_past: Engine, hidden: np.ndarray, mask: np.ndarray, layers: int
    ) -> None:
        self.init, self.with_past, self.hidden, self.mask, self.layers = init, with_past, hidden, mask, layers
        self.past: dict[str, np.ndarray] = {}

    def first(self, input_ids: np.ndarray, repeat: int) -> np.ndarray:
        self.rows_mask = np.repeat(self.mask, repeat, axis=0)
        out = self.init.run(  # once per item, repeated over the beams (as EngineStepDecoder does)
            {
                "decoder_input_ids": input_ids[::repeat].astype(np.int64),
                "encoder_hidden_states": self.hidden,
                "encoder_attention_mask": self.mask,
            }
        )
        self.past = {
            past_name(i, a, k): np.repeat(out[present_name(i, a, k)], repeat, axis=0)
            for i in range(self.layers)
            for a in ("decoder", "encoder")
            for k in ("key", "value")
        }
        return np.repeat(out[LOGITS][:, -1], repeat, axis=0)

    def next(self, input_ids: np.ndarray, beam_idx: np.ndarray) -> np.ndarray:
        out = self.with_past.run(
            {
                "input_ids": input_ids.astype(np.int64),
                "encoder_attention_mask": self.rows_mask,
                "beam_idx": beam_idx.astype(np.int64),
                **self.past,
            }
        )
        for i in range(self.layers):
            for k in ("key", "value"):
                self.past[past_name(i, "decoder", k)] = out[present_name(i, "decoder", k)]
        return out[LOGITS][:, 0]


def florence2_generation(ctx: PipelineBenchContext) -> list[PipelineRow]:
    from transformers import CLIPImageProcessorPil, GenerationConfig
    from transformers.modeling_outputs import BaseModelOutput

    from trtdeploy.models.florence2_references import generate_kwargs, trim_generated
    from trtdeploy.runtime.florence2_decoder import EngineStepDecoder
    from trtdeploy.runtime.florence2_tasks import build_prompt

    pipeline = Florence2Pipeline.from_bundle(ctx.bundle, ctx.target, threads=ctx.threads)
    layout = pipeline.layout
    model: Any = ctx.loaded.model
    image = EVALUATION_IMAGES[0].load()  # chelsea: a 451 x 300 photograph of a cat
    height, width = layout.preprocess.output_hw
    processor = CLIPImageProcessorPil(
        size={"height": height, "width": width},
        do_center_crop=False,
        resample=3 if layout.preprocess.resample == "bicubic" else 2,
        image_mean=list(layout.preprocess.mean),
        image_std=list(layout.preprocess.std),
    )
    prompt = pipeline.tokenizer([build_prompt(TASK)])
    image_id = int(model.config.image_token_id)
    input_ids = torch.tensor([[image_id] * layout.image_tokens + prompt["input_ids"][0].tolist()])

    def settings_for(tokens: int) -> dict[str, Any]:
        return {"min_new_tokens": tokens, "max_new_tokens": tokens}

    def eager_generate(tokens: int) -> torch.Tensor:
        config = GenerationConfig(
            **generate_kwargs(layout, settings_for(tokens), layout.settings(settings_for(tokens)))
        )
        with torch.inference_mode():
            pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
            return model.generate(
                input_ids=input_ids,
                pixel_values=pixels,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
            )

    minimum = (
        1.0
        if ctx.bundle.manifest.precision == "fp32"
        else ctx.bundle.manifest.budget.tasks.get("generation_token_agreement", 1.0)
    )

    def checked(produced: Any, expected: np.ndarray, name: str) -> float:
        return _checked_tokens(produced, expected, name, ctx.bundle.manifest.precision, minimum)

    def ours(tokens: int) -> tuple[int, ...]:
        return pipeline.answer([image], TASK, **settings_for(tokens))[0].tokens

    rows = []
    for tokens, name in (
        (NEW_TOKENS, f"end to end: {TASK}, 1 image, {NEW_TOKENS} new tokens"),
        (1, f"first token: {TASK}, 1 image"),
    ):
        eos = layout.settings(settings_for(tokens)).eos_token_ids
        agreement = checked(ours(tokens), trim_generated(eager_generate(tokens)[0].numpy(), eos, None), name)
        engine, reference = ctx.time(
            functools.partial(ours, tokens), functools.partial(eager_generate, tokens)
        )
        rows.append(PipelineRow(name, tokens, "tokens", engine, reference, token_agreement=agreement))

    # The decoding loop alone, from the same encoder output on both sides.
    features, _ = pipeline.image_features([image])
    run = Executor(pipeline.engines)
    embeds = run.run(EMBED_TOKENS, {"input_ids": prompt["input_ids"]})["inputs_embeds"]
    hidden = run.run(
        ENCODER,
        {"image_features": features, "inputs_embeds": embeds, "attention_mask": prompt["attention_mask"]},
    )["last_hidden_state"]
    mask = layout.encoder_mask(prompt["attention_mask"])
    settings = layout.settings(settings_for(NEW_TOKENS))
    eager_config = GenerationConfig(**generate_kwargs(layout, settings_for(NEW_TOKENS), settings))

    def eager_decode() -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=torch.from_numpy(hidden)),
                attention_mask=torch.from_numpy(mask),
                generation_config=eager_config,
            )

    def decode(step_decoder: Any) -> tuple[int, ...]:
        return tuple(int(t) for t in generate(step_decoder, 1, settings).tokens[0])

    engines = pipeline.engines
    loops = {
        f"decoder: {NEW_TOKENS} tokens from the encoder output, cache kept in the backend": EngineStepDecoder,
        f"decoder: {NEW_TOKENS} tokens, cache through the host (numpy + input checks each step)": HostCacheStepDecoder,
    }
    eos = settings.eos_token_ids
    for name, kind in loops.items():

        def loop(kind: Any = kind) -> tuple[int, ...]:
            return decode(
                kind(engines[DECODER_INIT], engines[DECODER_WITH_PAST], hidden, mask, layout.layers)
            )

        agreement = checked(loop(), trim_generated(eager_decode()[0].numpy(), eos, None), name)
        engine, reference = ctx.time(loop, eager_decode)
        rows.append(PipelineRow(name, NEW_TOKENS, "tokens", engine, reference, token_agreement=agreement))
    rows.append(_embedding_row(ctx, pipeline.engines[EMBED_TOKENS], model, prompt["input_ids"]))
    return rows


def _embedding_row(ctx: PipelineBenchContext, graph: Engine, model: Any, ids: np.ndarray) -> PipelineRow:
    """The prompt's token embedding as its graph against a host-side table lookup (numpy take on
    the shared embedding matrix): the alternative the graph could be replaced by."""
    table = model.get_input_embeddings().weight.detach().numpy()
    scale = float(getattr(model.get_input_embeddings(), "embed_scale", 1.0))
    np.testing.assert_allclose(
        graph.run({"input_ids": ids})["inputs_embeds"], np.take(table, ids, axis=0) * scale, rtol=0, atol=1e-6
    )
    engine, reference = ctx.time(
        lambda: graph.run({"input_ids": ids}), lambda: np.take(table, ids, axis=0) * scale
    )
    return PipelineRow(
        f"prompt embedding ({ids.shape[1]} tokens): graph vs host table (numpy take)",
        ids.shape[1],
        "tokens",
        engine,
        reference,
    )


def _checked_tokens(ours: Any, theirs: np.ndarray, name: str, precision: str, minimum: float) -> float:
    """Position-by-position agreement of our tokens with eager FP32's; below ``minimum`` fails."""
    produced, expected = [int(t) for t in ours], theirs.tolist()
    same = sum(int(a == b) for a, b in zip(produced, expected, strict=False))
    agreement = same / max(len(produced), len(expected), 1)
    if agreement < minimum:
        raise VerificationError(
            f"{name}: our {precision} tokens {produced[:12]}… agree with generate()'s {expected[:12]}… at "
            f"{agreement:.3f} of positions; this bundle's budget asks for {minimum}."
        )
    return agreement
