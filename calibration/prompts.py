"""Built-in prompt lists, split like the images: evaluation prompts are never calibration prompts."""

from __future__ import annotations

# One prompt per evaluation image subject, plus distractors, so zero-shot top-1 has a right answer
# with trained weights and a non-trivial argmax with random ones.
EVALUATION_PROMPTS = (
    "a photo of a cat",
    "a cup of coffee",
    "a photo of an astronaut",
    "a rocket launch",
    "a photo of a motorcycle",
    "a man holding a camera",
    "a portrait of a woman in uniform",
    "a photo of a dog",
    "a city street at night",
    "a bowl of fresh fruit",
)

# Segmentation evaluation prompts (CLIPSeg): short names of things that are, or could be, in the
# evaluation images, as CLIPSeg is prompted; never calibration prompts either.
SEGMENTATION_PROMPTS = (
    "a cat",
    "a coffee cup",
    "an astronaut",
    "a rocket",
    "a motorcycle",
    "a camera",
    "a face",
    "the sky",
)

CALIBRATION_PROMPTS = (
    "a photo of a horse",
    "a close-up photo of old coins",
    "galaxies in the night sky",
    "a brick wall",
    "a field of green grass",
    "a page of printed text",
    "a chessboard",
    "the surface of the moon",
    "a microscope image of a cell",
    "a wall clock",
    "a colourful logo",
    "a photo of a red car",
    "a person riding a bicycle",
    "a plate of pasta",
    "a mountain lake at sunrise",
    "two children playing football",
)
