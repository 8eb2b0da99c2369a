"""Data for tower alignment (`training.alignment`): captions per medium, the processor's pixels, caption token ids.

Caption files use the stage-1 LLaVA layout of `examples/synthetic_shapes.py` (`stage1.json`,
`heldout_captions.json`): `{"id", "image" | "video": relative path, "conversations": [human, gpt]}`, the caption
being the first gpt turn. Pixels are computed exactly as `LanguageBindVideoLlavaProcessor` computes them (same image
processor settings as `from_config`, same `load_video` sampling and `transform_video`), so the aligned towers see
the pixels the VLM will see.

Example:
    >>> sets = read_captions(Path("data/stage1.json"), Path("data"))
    >>> pixels = MediaPixels(image_size=64, num_frames=8)
    >>> pixels.images(sets["image"].paths[:2]).shape   # (2, 3, 64, 64)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .media import MediaError, load_image, resolve_media_path


logger = logging.getLogger(__name__)

KINDS = ("image", "video")


class AlignmentDataError(ValueError):
    """A caption file that cannot be used for alignment; the message names the file."""


@dataclass
class CaptionSet:
    """The media of one kind in a caption file: resolved `paths` and their `captions` (aligned lists)."""

    kind: str
    paths: list[str]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def unique_captions(self) -> list[str]:
        """Distinct captions, in first-seen order."""
        return list(dict.fromkeys(self.captions))


def read_captions(path: Path, media_root: Path, require: tuple[str, ...] = KINDS) -> dict[str, CaptionSet]:
    """`{"image": CaptionSet, "video": CaptionSet}` from a stage-1 caption file.

    Raises:
        AlignmentDataError: the file is missing or not a JSON list of caption items, an item has no medium or no
            caption, or a kind in `require` has no captions.
    """
    path = Path(path)
    if not path.is_file():
        raise AlignmentDataError(f"{path}: caption file not found")
    try:
        items = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AlignmentDataError(f"{path}: not JSON ({err})") from err
    if not isinstance(items, list):
        raise AlignmentDataError(f"{path}: expected a JSON list of caption items, got {type(items).__name__}")
    sets = {kind: CaptionSet(kind, [], []) for kind in KINDS}
    for n, item in enumerate(items):
        name = item.get("id", n) if isinstance(item, dict) else n
        kinds = [k for k in KINDS if isinstance(item, dict) and k in item]
        if len(kinds) != 1:
            raise AlignmentDataError(f"{path}: item {name} needs exactly one of 'image' / 'video'")
        turns = item.get("conversations") or []
        answers = [t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"]
        if not answers or not isinstance(answers[0], str) or not answers[0].strip():
            raise AlignmentDataError(f"{path}: item {name} has no caption (a 'gpt' turn)")
        try:
            sets[kinds[0]].paths.append(resolve_media_path(media_root, item[kinds[0]]))
        except MediaError as err:
            raise AlignmentDataError(f"{path}: item {name}: {err}") from err
        sets[kinds[0]].captions.append(answers[0].strip())
    for kind in require:
        if not sets[kind].paths:
            raise AlignmentDataError(f"{path}: no {kind} captions (no item has a '{kind}' key)")
    return sets


def encode_captions(tokenizer, captions: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> caption </s>` token ids, right-padded: `input_ids`, `attention_mask` of shape (N, L), L <= max_length.

    The text encoder pools at the `</s>` position (`attention_mask.sum(1) - 1`)."""
    rows = [[tokenizer.bos_token_id, *tokenizer(c, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            for c in captions]
    unknown = [c for c, ids in zip(captions, rows) if tokenizer.unk_token_id in ids[1:-1]]
    if unknown:
        logger.warning("%d captions contain words outside the tokenizer's vocabulary, e.g. %r", len(unknown),
                       unknown[0])
    longest = max(len(r) for r in rows)
    if longest > max_length:
        worst = captions[max(range(len(rows)), key=lambda i: len(rows[i]))]
        raise AlignmentDataError(f"a caption has {longest} tokens, more than the text encoder's {max_length} "
                                 f"positions (text_max_positions): {worst!r}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


class MediaPixels:
    """Images -> `(N, 3, S, S)` and videos -> `(N, T, 3, S, S)` float32, as the Video-LLaVA processor makes them.

    Videos are decoded once and kept as uint8 frames (4x smaller than float); the float transform runs per batch.
    """

    def __init__(self, image_size: int, num_frames: int) -> None:
        from processing import LanguageBindImageProcessor

        self.image_processor = LanguageBindImageProcessor.for_image_size(image_size)
        self.num_frames = num_frames

    def images(self, paths: list[str]) -> torch.Tensor:
        """Processed images `(N, 3, S, S)`; raises `MediaError` naming an unreadable file."""
        out = self.image_processor([load_image(p) for p in paths], return_tensors="pt")
        return out["pixel_values"]

    def decode_videos(self, paths: list[str]) -> np.ndarray:
        """Sampled frames `(N, T, H, W, 3)` uint8, with the processor's `load_video` sampling."""
        from processing import load_video

        clips = []
        for p in paths:
            try:
                clips.append(load_video(p, self.num_frames).frames)
            except Exception as err:  # noqa: BLE001 -- decoders raise anything from OSError to av.error.*
                raise MediaError(f"cannot decode video {p!r}: {type(err).__name__}: {err}") from err
        return np.stack(clips)

    def transform_videos(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 `(N, T, H, W, 3)` -> processed `(N, T, 3, S, S)`, the processor's `transform_video`.

        All frames go through in one call: every step of the transform is per frame, so this equals the processor's
        clip-by-clip result exactly (tested) at a fraction of the per-call overhead."""
        from processing import transform_video

        n, t = frames.shape[:2]
        crop, ip = self.image_processor.crop_size, self.image_processor
        flat = transform_video(frames.reshape(n * t, *frames.shape[2:]), crop["height"], ip.image_mean, ip.image_std)
        return flat.view(n, t, *flat.shape[1:])  # (N*T, 3, S, S) -> (N, T, 3, S, S)

    def videos(self, paths: list[str]) -> torch.Tensor:
        """Processed videos `(N, T, 3, S, S)`."""
        return self.transform_videos(self.decode_videos(paths))
