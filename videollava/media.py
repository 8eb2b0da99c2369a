"""Media of a conversation: decoding (`Medium`, `load_medium`, `load_media`) and the engine's bounded LRU of encoded
media (`MediaCache`).

Every medium gets a content key when it is decoded: the SHA-256 of the file's bytes (memoised per path + size +
mtime, so a file is hashed once while it is unchanged), or of the pixels for an in-memory image, plus the frame
count for videos. The key is what `MediaCache` is indexed by, so the same clip asked about again — in a new
conversation, uploaded again under another temporary name — costs no tower call.

`MediaCache(max_bytes)` keeps projected tower outputs (`(L, D)` tensors on the model's device) and evicts the least
recently used entry when the bytes held would exceed `max_bytes` (0 disables caching). Its size is the sum of
`tensor.nbytes`: one Video-LLaVA-7B video (8 × 257 tokens × 4096 × 2 bytes in bf16) is 16.8 MB, one image 2.1 MB;
the default bound of 512 MiB holds about 30 videos. Counters: `hits`, `misses`, `evictions`, `bytes`.

Every failure a user can fix raises `ChatError` (from `videollava.loading`) with a one-line message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from .loading import ChatError, first_line, resolve_sample


logger = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 512
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of the bytes
_DIGESTS_LOCK = threading.Lock()


@dataclass
class Medium:
    """One image or video, decoded once. `key` identifies its content (see the module docstring)."""

    kind: str  # "image" | "video"
    source: str
    data: Any  # PIL image or `VideoClip`
    key: str | None = None


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes, memoised on (path, size, mtime) so an unchanged file is read once."""
    stat = os.stat(path)
    memo = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    with _DIGESTS_LOCK:
        if memo in _DIGESTS:
            return _DIGESTS[memo]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with _DIGESTS_LOCK:
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def guess_kind(path: str) -> str | None:
    """`"image"` / `"video"` from the file name (a `.gif` counts as an image), `None` when unknown."""
    suffix = os.path.splitext(path)[1].lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def load_medium(processor, kind: str, source: Any, num_frames: int | None = None) -> Medium:
    """Decode one image or video (a path, `sample:NAME`, or a PIL image); raises `ChatError` naming the file."""
    from PIL import Image

    if kind == "image" and isinstance(source, Image.Image):
        image = source.convert("RGB")
        key = "image:" + hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()
        return Medium("image", f"<image {image.size[0]}x{image.size[1]}>", image, key)
    name = str(source)
    path = resolve_sample(name)
    if not os.path.isfile(path):
        raise ChatError(f"cannot read {kind} {name}: file not found")
    if kind == "video":
        try:
            if hasattr(processor, "load_video"):  # ours: LanguageBind's frame sampling, returns a `VideoClip`
                clip = processor.load_video(path, num_frames=num_frames)
            else:
                from transformers.video_utils import load_video

                clip = load_video(path, num_frames=num_frames or 8)[0]
        except Exception as exc:  # noqa: BLE001 - VideoDecodeError, or anything PyAV raises
            raise ChatError(f"cannot read video {name}: {getattr(exc, 'reason', first_line(exc))}") from exc
        frames = len(getattr(clip, "frames", clip))
        return Medium("video", name, clip, f"video:{file_digest(path)}:{frames}")
    if kind != "image":
        raise ChatError(f"cannot read {name}: unknown media kind {kind!r} (use image or video)")
    try:
        with Image.open(path) as image:
            data = image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL.UnidentifiedImageError, truncated files, ...
        raise ChatError(f"cannot read image {name}: {first_line(exc)}") from exc
    return Medium("image", name, data, f"image:{file_digest(path)}")


def load_media(processor, images: list[str], videos: list[str], num_frames: int | None) -> list[Medium]:
    """Decode every medium up front (videos first, as `videollava chat` places them), one clear error per file."""
    return ([load_medium(processor, "video", v, num_frames) for v in videos]
            + [load_medium(processor, "image", i) for i in images])


class MediaCache:
    """A thread-safe LRU of encoded media (`key -> (L, D)` tensor), bounded by the bytes it holds."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_MB * 2**20):
        if max_bytes < 0:
            raise ValueError(f"the media cache bound must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.hits = self.misses = self.evictions = 0
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return sum(t.nbytes for t in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str | None) -> torch.Tensor | None:
        """The cached features (now the most recent entry), or `None`; counts a hit or a miss."""
        with self._lock:
            if key is not None and key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            return None

    def put(self, key: str | None, features: torch.Tensor) -> None:
        """Store `features`, evicting least recently used entries beyond the bound (an entry over it is not kept)."""
        if key is None or features.nbytes > self.max_bytes:
            return
        with self._lock:
            self._entries[key] = features
            self._entries.move_to_end(key)
            while self.bytes > self.max_bytes:
                old, _ = self._entries.popitem(last=False)
                self.evictions += 1
                logger.debug("media cache: evicted %s", old)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "bytes": self.bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}


__all__ = ["DEFAULT_CACHE_MB", "MediaCache", "Medium", "file_digest", "guess_kind", "load_media", "load_medium"]
