"""A word-level tokenizer covering the synthetic shapes vocabulary and the Vicuna-v1 prompt, for a tiny Video-LLaVA.

Ids: `<unk>`=0, `<s>`=1, `</s>`=2, then the sorted words (generator `VOCAB` + Vicuna system prompt words + `USER`,
`ASSISTANT`, `:`), then `\\n`, then the added special tokens `<image>`, `<video>`, `<pad>` (the pad token).
Whitespace splits words and is dropped; `\\n`, `. , ? : '` and `<image>`/`<video>` are tokens of their own. The
decoder joins words with spaces and glues punctuation back on (`red .` -> `red.`, `user ' s` -> `user's`, `USER :`
-> `USER:`); a word after `\\n` keeps a leading space.

Run as:
    python examples/tiny_tokenizer.py OUT_DIR   # saves tokenizer.json + tokenizer_config.json
"""

from __future__ import annotations

import re
import sys

from synthetic_shapes import VOCAB
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ROLES: tuple[str, ...] = ("USER", "ASSISTANT", ":")
SPECIAL: tuple[str, ...] = ("<unk>", "<s>", "</s>")
ADDED_SPECIAL: tuple[str, ...] = ("<image>", "<video>", "<pad>")
SPLIT_PATTERN = r"\n|[.,?:']|<image>|<video>"


def words(text: str) -> list[str]:
    """The pre-tokenizer's split in plain Python: whitespace dropped, `\\n`, punctuation and media tokens isolated."""
    return [w for w in re.split(rf"[ \t]+|({SPLIT_PATTERN})", text) if w]


def tokenizer_words() -> list[str]:
    """Sorted word list: the generator vocabulary plus the Vicuna-v1 system prompt and role words."""
    return sorted(set(VOCAB) | set(words(SYSTEM_PROMPT)) | set(ROLES))


def build_tokenizer(media_tokens: bool = True) -> PreTrainedTokenizerFast:
    """WordLevel `PreTrainedTokenizerFast` over `tokenizer_words()`; see the module docstring for the id layout.

    `media_tokens=False` leaves out `<image> <video> <pad>`, like an LLM's own tokenizer (Vicuna's), for
    `videollava convert --from languagebind` to append."""
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL) + tokenizer_words() + ["\n"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        ]
    )
    # Mark every token except punctuation, "\n" and the "s" of "'s" with a leading "▁", then turn marks into spaces.
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace(Regex(r"^(?![.,?:'\n]$|s$)"), "▁"),
            decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    if media_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(ADDED_SPECIAL[:2])})
        tok.add_special_tokens({"pad_token": ADDED_SPECIAL[2]})
    return tok


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tiny_tokenizer"
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)
    print(f"saved {len(tokenizer)} tokens to {out}")
