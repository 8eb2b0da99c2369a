"""`VideoLlavaCollator`: rows of `training.data` -> a model batch, with media decoded here (in DataLoader workers).

Input rows: `{"id", "messages", "images", "videos"}` (media as paths, PIL images or frame arrays).
Output: `input_ids`, `attention_mask`, `labels` (B, L), `pixel_values` (N_img, 3, H, W) and `pixel_values_videos`
(N_vid, T, 3, H, W) when the batch has any. Images and videos are batched separately, never told apart by `ndim`.

Labels (SPEC §6.3): only assistant answers and the `</s>` closing each answer are supervised; system prompt, user
turns, `ASSISTANT:` headers, visual placeholders and padding are -100. Each sample is rendered on its own so that
one bad sample costs one sample:

* missing / undecodable media -> skipped, counted and logged (`strict=True`: raise `MediaError` naming the sample);
* longer than `max_length` -> text after the last visual token is cut; a cut through a visual span, or one that
  removes every supervised token, drops the sample and reports it (never a silent zero-loss sample, USER_NEEDS a1).

A skipped sample is replaced by another sample of the same batch so batch shapes stay fixed.

Example:
    >>> collator = VideoLlavaCollator(processor, num_frames=8, max_length=4096)
    >>> batch = collator([{"id": "0", "messages": [...], "images": ["cat.jpg"], "videos": []}])
    >>> sorted(batch)
    ['attention_mask', 'input_ids', 'labels', 'pixel_values']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .media import MediaError, SkipLedger, load_image, load_video


logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def build_labels(
    input_ids: torch.Tensor,
    assistant_mask: torch.Tensor,
    media_token_ids: list[int],
    eos_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Labels for one or more rendered conversations.

    Args:
        input_ids: `(..., L)` token ids.
        assistant_mask: `(..., L)`, 1 on tokens produced inside the template's `{% generation %}` blocks.
        media_token_ids: `<image>` / `<video>` ids; never supervised even if a template marks them.
        eos_token_id: when given, the `</s>` right after an answer span is supervised too (SPEC §6.3), whether or not
            the template put it inside the generation block.
        attention_mask: `(..., L)`; padding is never supervised.
    """
    keep = torch.as_tensor(assistant_mask, dtype=torch.bool).clone()
    if eos_token_id is not None:
        after_answer = torch.zeros_like(keep)
        after_answer[..., 1:] = keep[..., :-1] & ~keep[..., 1:]
        keep |= after_answer & (input_ids == eos_token_id)
    for token_id in media_token_ids:
        keep &= input_ids != token_id
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return torch.where(keep, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


@dataclass
class VideoLlavaCollator:
    """Decode, render, mask and pad a list of rows (see the module docstring).

    Args:
        processor: the Video-LLaVA processor (`apply_chat_template` with `{% generation %}` markers,
            `image_token_id`, `video_token_id`, `tokenizer`).
        num_frames: frames decoded per video (the video tower's `num_frames`).
        max_length: token budget per sample after visual expansion; `None` = no truncation.
        strict: raise on the first bad sample instead of skipping it.
        ledger: where skips are counted / logged (`SkipLedger(output_dir, max_skipped_fraction)`).
    """

    processor: Any
    num_frames: int = 8
    max_length: int | None = None
    strict: bool = False
    ledger: SkipLedger = field(default_factory=SkipLedger)

    def __post_init__(self) -> None:
        self.media_token_ids = [self.processor.image_token_id, self.processor.video_token_id]
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_token_id = tokenizer.eos_token_id

    # ---- one sample ---------------------------------------------------------------------------------------------
    def _conversation(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        images = [load_image(x) for x in row.get("images") or []]
        videos = [load_video(x, self.num_frames) for x in row.get("videos") or []]
        conversation = []
        for message in row["messages"]:
            content = []
            for block in message["content"]:
                kind = block["type"]
                if kind == "image":
                    content.append({"type": "image", "image": images.pop(0)})
                elif kind == "video":
                    content.append({"type": "video", "video": videos.pop(0)})
                else:
                    content.append({"type": "text", "text": block.get("text") or ""})
            conversation.append({"role": message["role"], "content": content})
        if images or videos:
            raise MediaError(f"{len(images)} image(s) / {len(videos)} video(s) have no placeholder")
        return conversation

    def encode(self, row: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Render one row -> `input_ids`/`labels` (L,) and its pixel tensors; raises `MediaError` / `ValueError`."""
        out = self.processor.apply_chat_template(
            [self._conversation(row)],
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs={"padding": False, "add_special_tokens": False},
        )
        input_ids = torch.as_tensor(out["input_ids"])[0]
        assistant = torch.as_tensor(out["assistant_masks"])[0]
        labels = build_labels(input_ids, assistant, self.media_token_ids, self.eos_token_id)
        sample = {"input_ids": input_ids, "labels": labels}
        for key in ("pixel_values", "pixel_values_videos"):
            if out.get(key) is not None and len(out[key]):
                sample[key] = torch.as_tensor(out[key])
        return self._truncate(sample, row)

    def _truncate(self, sample: dict[str, torch.Tensor], row: dict[str, Any]) -> dict[str, torch.Tensor]:
        n = len(sample["input_ids"])
        if self.max_length is None or n <= self.max_length:
            if not (sample["labels"] != IGNORE_INDEX).any():
                raise ValueError("no assistant tokens to train on")
            return sample
        media = torch.isin(sample["input_ids"], torch.tensor(self.media_token_ids))
        last_media = int(media.nonzero().max()) if media.any() else -1
        if last_media >= self.max_length:
            raise ValueError(f"{n} tokens > max_length={self.max_length} and the cut would fall inside its visual "
                             f"tokens (last at {last_media}); raise max_length or use fewer frames")
        kept = sample["labels"][: self.max_length]
        if not (kept != IGNORE_INDEX).any():
            raise ValueError(f"{n} tokens > max_length={self.max_length}: truncation removes every answer token")
        logger.debug("sample %s truncated from %d to %d tokens", row.get("id"), n, self.max_length)
        return sample | {"input_ids": sample["input_ids"][: self.max_length], "labels": kept}

    # ---- batch --------------------------------------------------------------------------------------------------
    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        samples: list[dict[str, torch.Tensor] | None] = []
        for row in rows:
            self.ledger.see()
            try:
                samples.append(self.encode(row))
            except (MediaError, ValueError) as err:
                kind = "media" if isinstance(err, MediaError) else "length"
                if self.strict:
                    raise type(err)(f"sample {row.get('id')} ({row.get('source', '?')}): {err}") from err
                self.ledger.skip(row.get("id", "?"), str(err), kind=kind)
                samples.append(None)
        good = [s for s in samples if s is not None]
        if not good:
            ids = [row.get("id") for row in rows]
            raise MediaError(f"every sample of a batch was skipped ({ids}); see the warnings above")
        samples = [s if s is not None else good[i % len(good)] for i, s in enumerate(samples)]
        return self.pad(samples)

    def pad(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Right-pad `input_ids`/`labels`, build `attention_mask`, concatenate pixel tensors in batch order."""
        length = max(len(s["input_ids"]) for s in samples)
        batch = {
            "input_ids": torch.full((len(samples), length), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(samples), length), dtype=torch.long),
            "labels": torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long),
        }
        for i, s in enumerate(samples):
            n = len(s["input_ids"])
            batch["input_ids"][i, :n] = s["input_ids"]
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = s["labels"]
        for key in ("pixel_values", "pixel_values_videos"):
            parts = [s[key] for s in samples if key in s]
            if parts:
                batch[key] = torch.cat(parts)
        return batch
