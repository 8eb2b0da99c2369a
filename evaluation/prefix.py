"""Shared-prefix token plans: the questions about one medium as one prefix (system prompt + media + the text before
the question) and one suffix per question, split at the token level.

`plan_prefix` renders the first question exactly as the per-question path does (`processor.apply_chat_template`,
tokenized, which decodes and preprocesses the media once) and every question's prompt as text only; it expands the
media placeholders with the processor's own `replace_image_token` / `replace_video_token`, tokenizes, and checks
that the first question's ids are identical to the processor's. The prefix is the longest run of ids common to all
the questions, stopping at least one token before the shortest one ends (`generate` takes that token), so prefix +
suffix is, id for id, the prompt the per-question path feeds the model. A plan is refused
(`None`) when a suffix would hold a media placeholder, i.e. the prompts differ before the media end.
"""

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .tasks import Sample


logger = logging.getLogger(__name__)


@dataclass
class PrefixPlan:
    """Token plan of a group of questions about the same media.

    Attributes:
        prefix: ids `(P,)` shared by every question; all the media placeholders are inside.
        suffixes: per question the ids `(L_i,)` after the prefix, `L_i >= 1`, no media placeholders.
        media_inputs: the processor's pixel tensors for the media (`pixel_values`, `pixel_values_videos`).
    """

    prefix: torch.Tensor
    suffixes: list[torch.Tensor]
    media_inputs: dict[str, torch.Tensor]


def expand_placeholders(processor: Any, text: str, media_inputs: dict[str, torch.Tensor]) -> str:
    """`text` with each `<image>` and `<video>` replaced as the processor replaces them before tokenizing
    (`replace_image_token` / `replace_video_token` on the pixel tensors of `media_inputs`)."""
    image, video = processor.image_token, processor.video_token
    videos = media_inputs.get("pixel_values_videos")
    num_videos = 0 if videos is None else videos.shape[0]  # (N_vid, T, 3, H, W)
    pieces, images_seen, videos_seen = [], 0, 0
    for piece in re.split(f"({re.escape(image)}|{re.escape(video)})", text):
        if piece == image:
            piece = processor.replace_image_token(media_inputs, images_seen)
            images_seen += 1
        elif piece == video:
            if videos_seen == num_videos:
                raise ValueError(f"the prompt has more {video} placeholders than the {num_videos} videos")
            piece = processor.replace_video_token(media_inputs, videos_seen)
            videos_seen += 1
        pieces.append(piece)
    return "".join(pieces)


def tokenize_expanded(processor: Any, text: str) -> torch.Tensor:
    """Ids `(S,)` of an expanded prompt, special tokens as the processor's `apply_chat_template` adds them."""
    tokenizer = processor.tokenizer
    bos = tokenizer.bos_token
    ids = tokenizer(text, add_special_tokens=not (bos is not None and text.startswith(bos)))["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def common_prefix_length(rows: Sequence[torch.Tensor]) -> int:
    """Length of the longest common prefix of `rows`, at most `min(len) - 1` (every suffix keeps a token)."""
    shortest = min(len(r) for r in rows)
    n = shortest - 1
    first = rows[0][:n]
    for row in rows[1:]:
        same = (row[:n] == first).long().cumprod(0)  # 1 up to the first difference
        n = int(same.sum())
        first = first[:n]
    return n


def plan_prefix(processor: Any, samples: Sequence[Sample]) -> PrefixPlan | None:
    """The shared prefix and per-question suffixes of `samples` (same media, in the same order), or `None` when the
    prompts cannot share one (a placeholder after the first difference, or a tokenization the processor disagrees
    with; the caller answers those questions one by one)."""
    from .runner import build_conversation

    conversations = [build_conversation(s) for s in samples]
    reference = processor.apply_chat_template(conversations[:1], add_generation_prompt=True, tokenize=True,
                                              return_dict=True, return_tensors="pt")
    texts = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    texts = [texts] if isinstance(texts, str) else list(texts)
    media = {k: v for k, v in reference.items() if k in ("pixel_values", "pixel_values_videos")}
    rows = [tokenize_expanded(processor, expand_placeholders(processor, t, media)) for t in texts]
    expected = reference["input_ids"][0]
    if not torch.equal(rows[0], expected):
        logger.warning("prefix cache: the rendered ids of %s differ from the processor's (%d vs %d tokens); answering "
                       "its group question by question", samples[0].id, len(rows[0]), len(expected))
        return None
    n = common_prefix_length(rows)
    visual = torch.tensor([processor.image_token_id, processor.video_token_id])
    if any(torch.isin(r[n:], visual).any() for r in rows):
        logger.info("prefix cache: the questions of %s differ before their media end; answering them one by one",
                    samples[0].id)
        return None
    return PrefixPlan(rows[0][:n], [r[n:] for r in rows], media)
