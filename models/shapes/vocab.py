"""Word-level tokenizers for the shapes vocabulary, saved as tokenizer.json for the `tokenizers` library.

Both lowercase, split on spaces and punctuation, and map whole words to ids (a Metaspace "▁" marks
the start of each word, so decoding rebuilds spaced text). Two vocabularies, because the two model
families read ids differently:

- CLIP / CLIPSeg: <|startoftext|>=0, <|endoftext|>=1 (also padding), <unk>=2, then the words. The
  end id must not be 2: transformers' CLIP text model pools at argmax(input_ids) when eos is 2 (the
  legacy checkpoints), and at the first end token otherwise, which is what a small vocabulary needs.
- Florence-2: BART's special ids <s>=0, <pad>=1, </s>=2, <unk>=3 (generation starts from 2, forces 0
  and stops at 2), the words of the shapes captions and of the task prompts, the 1000 location tokens
  <loc_0>..<loc_999>, then <image>, the placeholder the processor repeats once per image feature.
  Location tokens are added tokens, so they decode without spaces: "circle<loc_1><loc_2>...", the
  form Florence-2's post-processing parses.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from trtdeploy.calibration.shapes import COLOURS, SHAPES
from trtdeploy.runtime.locations import LOCATION_BINS

# Florence2Processor's prompts for the two tasks the tiny model learns; a task token becomes its
# prompt before tokenization, exactly as the processor does for the real checkpoints.
FLORENCE_TASK_PROMPTS = {
    "<CAPTION>": "What does the image describe?",
    "<OD>": "Locate the objects with category name in the image.",
}
CAPTION_WORDS = ("a", "and", "the", *COLOURS, *SHAPES)
WORD_START = "▁"

CLIP_BOS, CLIP_EOS, CLIP_UNK = "<|startoftext|>", "<|endoftext|>", "<unk>"
CLIP_SPECIALS = (CLIP_BOS, CLIP_EOS, CLIP_UNK)
CLIP_BOS_ID, CLIP_EOS_ID = 0, 1
CLIP_MAX_LENGTH = 16  # the longest caption is 11 words + start and end

BART_BOS, BART_PAD, BART_EOS, BART_UNK = "<s>", "<pad>", "</s>", "<unk>"
BART_SPECIALS = (BART_BOS, BART_PAD, BART_EOS, BART_UNK)
IMAGE_TOKEN = "<image>"
FLORENCE_MAX_LENGTH = 64  # prompts and answers; the longest answer is 3 x (1 + 4) + 2 tokens


def prompt_words() -> tuple[str, ...]:
    """Words and punctuation of the Florence-2 task prompts, lowercased, in first-seen order."""
    splitter = pre_tokenizers.Punctuation("isolated")
    words: list[str] = []
    for prompt in FLORENCE_TASK_PROMPTS.values():
        for piece in prompt.lower().split():
            words += [w for w, _ in splitter.pre_tokenize_str(piece) if w not in words]
    return tuple(words)


def clip_tokenizer() -> Tokenizer:
    words = _unique(CAPTION_WORDS)
    tokenizer = _word_level(CLIP_SPECIALS, words, unk=CLIP_UNK)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS} $A {CLIP_EOS}", special_tokens=[(CLIP_BOS, CLIP_BOS_ID), (CLIP_EOS, CLIP_EOS_ID)]
    )
    return tokenizer


def florence2_tokenizer() -> Tokenizer:
    words = _unique((*CAPTION_WORDS, *prompt_words()))
    tokenizer = _word_level(BART_SPECIALS, words, unk=BART_UNK)
    tokenizer.add_special_tokens([AddedToken(f"<loc_{i}>", normalized=False) for i in range(LOCATION_BINS)])
    tokenizer.add_special_tokens([AddedToken(IMAGE_TOKEN, normalized=False)])
    # BART's tokenizer wraps text in <s> ... </s>, which is the layout Florence-2's prompts use.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BART_BOS} $A {BART_EOS}",
        special_tokens=[
            (BART_BOS, token_id(tokenizer, BART_BOS)),
            (BART_EOS, token_id(tokenizer, BART_EOS)),
        ],
    )
    return tokenizer


def token_id(tokenizer: Tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise KeyError(f"the tokenizer has no {token} token; is it the shapes tokenizer for this model?")
    return int(found)


def location_token_id(tokenizer: Tokenizer, bin_index: int) -> int:
    return token_id(tokenizer, f"<loc_{bin_index}>")


def save_tokenizer(tokenizer: Tokenizer, folder: Path, *, specials: dict[str, str], max_length: int) -> None:
    """Write tokenizer.json and tokenizer_config.json, so AutoTokenizer loads the folder too."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, **specials)
    wrapped.save_pretrained(str(folder))


def _word_level(specials: tuple[str, ...], words: tuple[str, ...], *, unk: str) -> Tokenizer:
    vocab = {token: i for i, token in enumerate((*specials, *(WORD_START + w for w in words)))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Punctuation("isolated"),
            pre_tokenizers.Metaspace(WORD_START, prepend_scheme="always"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(WORD_START, prepend_scheme="always")
    tokenizer.add_special_tokens(list(specials))
    return tokenizer


def _unique(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(words))
