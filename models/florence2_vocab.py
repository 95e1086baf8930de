"""A Florence-2 tokenizer in BART's id layout, built offline from the CLIP BPE vocabulary.

Florence-2 checkpoints use BART's byte-level BPE (50265 tokens, fairseq's order), which no PyPI
package ships. Random-weight presets need a real BPE tokenizer all the same, with every id where the
checkpoints have it: generation starts from </s>=2, forces <s>=0, stops at 2, and the parsers read
<loc_N>=50269+N. So this takes the vocabulary that does ship, CLIP's (open_clip_torch's
bpe_simple_vocab_16e6.txt.gz, read as models/clip_vocab.py reads it), and re-indexes it:

    <s>=0 <pad>=1 </s>=2 <unk>=3 | CLIP's 49406 BPE tokens 4..49409 | fillers 49410..50263 | <mask>=50264
    Florence-2's task tokens 50265..51288 (<od> </od> <ocr> </ocr> <loc_0>..<loc_999> <cap> ... <and>)
    <image>=51289                                                                 51290 tokens in all

Text is normalised and split as CLIP does (NFC, whitespace runs to one space, lowercase, CLIP's
word pattern), and BPE marks word ends with `</w>`, so decoding writes a space after each word. The
decoder drops that space before an added token, so "car<loc_1><loc_2><loc_3><loc_4>" round-trips and
answers read as Florence-2's parsers expect. The post-processor wraps text as <s> ... </s>.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, processors

from trtdeploy.models.clip_vocab import clip_bpe_vocab_path, write_clip_tokenizer_json
from trtdeploy.runtime.florence2_tasks import (
    BART_SPECIAL_TOKENS,
    IMAGE_TOKEN,
    LOCATION_TOKENS,
    TASK_VOCABULARY,
)

BOS, PAD, EOS, UNK, MASK = BART_SPECIAL_TOKENS
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
MASK_ID = 50264  # BART's last id; everything Florence-2 adds comes after it
FIRST_TASK_TOKEN_ID = MASK_ID + 1  # <od>
FIRST_LOCATION_ID = FIRST_TASK_TOKEN_ID + TASK_VOCABULARY.index(LOCATION_TOKENS[0])  # <loc_0> = 50269
IMAGE_TOKEN_ID = FIRST_TASK_TOKEN_ID + len(TASK_VOCABULARY)  # 51289
VOCAB_SIZE = IMAGE_TOKEN_ID + 1  # 51290
CLIP_BPE_TOKEN_COUNT = 49406  # 256 bytes, 256 bytes + </w>, 48894 merges
FIRST_FILLER_ID = 4 + CLIP_BPE_TOKEN_COUNT  # 49410
MAX_LENGTH = 1024  # BART's positions
WORD_END = "</w>"
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")  # CLIP's own; BART's specials replace them


def florence2_bart_tokenizer() -> Tokenizer:
    """The tokenizer described above, as a `tokenizers.Tokenizer`."""
    clip, vocab_json = _clip_tokenizer()
    bpe_tokens = [
        t for t, _ in sorted(vocab_json["vocab"].items(), key=lambda kv: kv[1]) if t not in CLIP_SPECIALS
    ]
    tokens = [BOS, PAD, EOS, UNK, *bpe_tokens]
    # Fillers hold BART's ids that CLIP has no token for; no merge ever produces them.
    tokens += [f"<filler_{i}>" for i in range(len(tokens), MASK_ID)] + [MASK]
    merges = [(a, b) for a, b in vocab_json["merges"]]  # saved as [left, right] pairs
    tokenizer = Tokenizer(
        models.BPE(
            {t: i for i, t in enumerate(tokens)},
            merges,
            unk_token=UNK,
            end_of_word_suffix=WORD_END,
            fuse_unk=False,
        )
    )
    tokenizer.normalizer = clip.normalizer
    tokenizer.pre_tokenizer = clip.pre_tokenizer
    added = [*BART_SPECIAL_TOKENS, *TASK_VOCABULARY, IMAGE_TOKEN]
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in added])
    tokenizer.decoder = _decoder(added)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",  # BART's pair layout
        special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)],
    )
    _check_layout(tokenizer)
    return tokenizer


def write_florence2_tokenizer(folder: Path) -> str:
    """Write tokenizer.json and tokenizer_config.json into ``folder``; return their provenance.

    The config makes transformers load it as a fast tokenizer with BART's named special tokens, the
    1024 task tokens as extra special tokens (as Florence-2's processor registers them) and
    `image_token` = <image>, which Florence2Processor reads.
    """
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=florence2_bart_tokenizer(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        image_token=IMAGE_TOKEN,
        extra_special_tokens=list(TASK_VOCABULARY),
        model_max_length=MAX_LENGTH,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wrapped.save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(Path(tmp) / name, folder / name)
    return provenance()


def provenance() -> str:
    """One line for the bundle manifest: where the vocabulary came from and how it was laid out."""
    path = clip_bpe_vocab_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    version = importlib.metadata.version("open_clip_torch")
    return (
        f"CLIP BPE from open_clip_torch {version} ({path.name}, sha256 {digest}...) re-indexed into BART's "
        f"layout: <s>=0 <pad>=1 </s>=2 <unk>=3, CLIP's {CLIP_BPE_TOKEN_COUNT} BPE tokens 4..{FIRST_FILLER_ID - 1}, "
        f"fillers {FIRST_FILLER_ID}..{MASK_ID - 1}, "
        f"<mask>={MASK_ID}, Florence-2 task tokens {FIRST_TASK_TOKEN_ID}..{IMAGE_TOKEN_ID - 1} "
        f"(<loc_0>={FIRST_LOCATION_ID}), <image>={IMAGE_TOKEN_ID}; {VOCAB_SIZE} tokens; "
        "lowercased, CLIP pre-tokenizer, not BART's byte-level vocabulary"
    )


def _clip_tokenizer() -> tuple[Tokenizer, dict[str, Any]]:
    """CLIP's tokenizer as clip_vocab writes it: its normaliser and pre-tokenizer, its vocab and merges."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        write_clip_tokenizer_json(path)
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
        return Tokenizer.from_file(str(path)), model


def _decoder(added: list[str]) -> decoders.Sequence:
    """Bytes back to text, `</w>` to a space, except right before an added token and at the end."""
    names = [*sorted({re.escape(t[1:-1]) for t in added if t not in LOCATION_TOKENS}), r"loc_\d+"]
    # Oniguruma's \z is the end of the string ($ would also match before a line break). A Strip
    # decoder would do for the end, but tokenizers 0.23's panics on an empty sequence.
    no_space = re.escape(WORD_END) + "(?=<(?:" + "|".join(names) + r")>|\z)"
    return decoders.Sequence(
        [
            decoders.ByteLevel(),  # joins the tokens into one string, so the next steps see neighbours
            decoders.Replace(Regex(no_space), ""),
            decoders.Replace(WORD_END, " "),
        ]
    )


def _check_layout(tokenizer: Tokenizer) -> None:
    """The ids Florence-2 models and parsers rely on; a wrong one is a bug here, not a user error."""
    expected = {
        BOS: BOS_ID,
        PAD: PAD_ID,
        EOS: EOS_ID,
        UNK: UNK_ID,
        MASK: MASK_ID,
        "<od>": FIRST_TASK_TOKEN_ID,
    }
    expected |= {
        LOCATION_TOKENS[0]: FIRST_LOCATION_ID,
        "<and>": IMAGE_TOKEN_ID - 1,
        IMAGE_TOKEN: IMAGE_TOKEN_ID,
    }
    expected[f"<filler_{FIRST_FILLER_ID}>"] = FIRST_FILLER_ID  # CLIP's tokens fill exactly 4..49409
    found = {token: tokenizer.token_to_id(token) for token in expected}
    if found != expected or tokenizer.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise RuntimeError(f"Florence-2 BART layout broken: expected {expected}, found {found}")
