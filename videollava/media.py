"""Media of a conversation: decoding (`Medium`, `load_medium`, `load_media`) and the engine's bounded LRU of encoded
media (`MediaCache`).

Sources: a path, `sample:NAME`, a PIL image, or a `data:` / `http(s)://` URL (read into memory with a size cap and a
timeout by `processing.video_sources`; `VIDEOLLAVA_MAX_MEDIA_BYTES`, `VIDEOLLAVA_MEDIA_TIMEOUT`). Every medium gets a
content key: the SHA-256 of its bytes (a file's memoised per path + size + mtime, so it is hashed once while it is
unchanged; a URL's of the bytes fetched), or of the pixels for an in-memory image, plus the frame count for videos.
The key is what `MediaCache` is indexed by, so the same clip asked about again — in a new conversation, uploaded again
under another temporary name, sent as a path, a `data:` URL or an `http://` URL — costs no tower call, and when
`load_medium` is given the cache and it already holds the key, the medium is not even decoded (`Medium.decoded()`
decodes it later if the entry was evicted in between).

`MediaCache(max_bytes)` keeps projected tower outputs (`(L, D)` tensors on the model's device) and evicts the least
recently used entry when the bytes held would exceed `max_bytes` (0 disables caching). Its size is the sum of
`tensor.nbytes`: one Video-LLaVA-7B video (8 × 257 tokens × 4096 × 2 bytes in bf16) is 16.8 MB, one image 2.1 MB;
the default bound of 512 MiB holds about 30 videos. Counters: `hits`, `misses`, `evictions`, `bytes`.

Every failure a user can fix raises `ChatError` (from `videollava.loading`) with a one-line message; unreadable media
raise its subclass `MediaError`, which names the source briefly (never a `data:` payload) and keeps the `reason`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from processing.video_sources import MediaSourceError, describe_source, fetch_bytes, is_url, load_image_source

from .loading import ChatError, first_line, resolve_sample


logger = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 512
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of the bytes
_DIGESTS_LOCK = threading.Lock()


class MediaError(ChatError):
    """An image or video that cannot be read: `source` is its short description, `reason` what went wrong."""

    def __init__(self, kind: str, source: Any, reason: str):
        self.kind, self.source, self.reason = kind, describe_source(source), reason
        super().__init__(f"cannot read {kind} {self.source}: {reason}")


@dataclass
class Medium:
    """One image or video, decoded at most once. `key` identifies its content (see the module docstring)."""

    kind: str  # "image" | "video"
    source: str  # as given; a URL shortened by `describe_source`
    data: Any = None  # PIL image or `VideoClip`; None while decoding is deferred (use `decoded()`)
    key: str | None = None
    frames: int | None = None  # videos: frames sampled (the placeholder span is frames x tokens per frame)
    _decode: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def decoded(self) -> Any:
        """The decoded image / clip; decodes it now if `load_medium` deferred that (its features were cached)."""
        if self.data is None and self._decode is not None:
            self.data, self._decode = self._decode(), None
        return self.data


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


def _decode(processor, kind: str, opened: Any, name: str, num_frames: int | None) -> Any:
    """A PIL image (RGB) or a clip from a path or an in-memory file; `MediaError` naming `name` otherwise."""
    from processing.image_processing_videollava import to_rgb

    try:
        if kind == "image":  # as the image processor reads a path: EXIF orientation, alpha on the background
            return to_rgb(load_image_source(opened))
        if hasattr(processor, "load_video"):  # ours: LanguageBind's frame sampling, returns a `VideoClip`
            return processor.load_video(opened, num_frames=num_frames)
        from transformers.video_utils import load_video

        return load_video(opened, num_frames=num_frames or 8)[0]
    except Exception as exc:  # noqa: BLE001 - VideoDecodeError, MediaSourceError, anything PyAV / PIL raises
        raise MediaError(kind, name, getattr(exc, "reason", None) or first_line(exc)) from exc


def _buffer(data: bytes, name: str) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = name  # decode errors name the source, never the payload
    return buffer


def _read(kind: str, name: str) -> tuple[str, Any, Callable[[], Any]]:
    """`(sha256 of the bytes, what to decode now, () -> what to decode later)` for a path, `sample:NAME` or URL."""
    if is_url(name):
        try:
            data = fetch_bytes(name)
        except MediaSourceError as err:
            raise MediaError(kind, name, err.reason) from None
        shown = describe_source(name)
        if name[:5].lower() == "data:":  # the URL holds the bytes already: decode it again rather than keep a copy
            return hashlib.sha256(data).hexdigest(), _buffer(data, shown), lambda: _buffer(fetch_bytes(name), shown)
        return hashlib.sha256(data).hexdigest(), _buffer(data, shown), lambda: _buffer(data, shown)
    path = resolve_sample(name)
    if not os.path.isfile(path):
        raise MediaError(kind, name, "file not found")
    digest = file_digest(path)

    def unchanged() -> str:
        if os.path.isfile(path) and file_digest(path) == digest:
            return path
        raise MediaError(kind, name, "the file changed or vanished since it was first read")

    return digest, path, unchanged


def load_medium(processor, kind: str, source: Any, num_frames: int | None = None,
                cache: MediaCache | None = None) -> Medium:
    """Read one image or video: a path, `sample:NAME`, a `data:` / `http(s)://` URL or a PIL image.

    With `cache`, a medium whose key it already holds is not decoded now (`Medium.decoded()` does it on demand).

    Raises:
        `MediaError` (a `ChatError`) naming the source briefly: file not found, URL unreadable, not decodable.
    """
    from PIL import Image

    from processing.image_processing_videollava import to_rgb

    if kind not in ("image", "video"):
        raise ChatError(f"cannot read {describe_source(str(source))}: unknown media kind {kind!r} (image or video)")
    if kind == "image" and isinstance(source, Image.Image):
        image = to_rgb(source)
        key = "image:" + hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()
        return Medium("image", f"<image {image.size[0]}x{image.size[1]}>", image, key)
    name = str(source)
    digest, now, later = _read(kind, name)
    shown = describe_source(name) if is_url(name) else name  # a data: URL is shown by type and size only
    frames = (num_frames or getattr(processor, "num_frames", None)) if kind == "video" else None
    key = f"video:{digest}:{frames}" if kind == "video" else f"image:{digest}"
    if cache is not None and key in cache:  # its features are cached: decode only if they are evicted before use
        return Medium(kind, shown, None, key, frames, lambda: _decode(processor, kind, later(), name, frames))
    data = _decode(processor, kind, now, name, frames)
    if kind == "video":
        frames = len(getattr(data, "frames", data))
        key = f"video:{digest}:{frames}"
    return Medium(kind, shown, data, key, frames)


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


__all__ = ["DEFAULT_CACHE_MB", "MediaCache", "MediaError", "Medium", "file_digest", "guess_kind", "load_media",
           "load_medium"]
