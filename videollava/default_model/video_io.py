"""Video loading for Video-LLaVA: sampling rules, argument checks and the `load_video` entry point.

`load_video` accepts a path, bytes, a binary file object, a (T, H, W, 3) / (T, H, W) array or a list of PIL images /
arrays, samples frames with LanguageBind's rule `np.linspace(0, N - 1, num_frames).astype(int)` (SPEC §7.3) or by
time (`fps`), and returns a `VideoClip` with the frames, their source indices and their timestamps. Files are
decoded by `video_decode` (PyAV, seeking to the frames it needs). Uploaded as Hub custom code: imports only its
siblings and installed libraries.
"""

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from .video_decode import VideoDecodeError, decode_file, describe
from .video_sources import fetch_source


logger = logging.getLogger(__name__)

VideoSource = str | os.PathLike | bytes | bytearray | BinaryIO | np.ndarray | list

# A request whose frames would need more memory than this is refused before anything is decoded.
MAX_CLIP_BYTES = 8 << 30


class VideoRequestError(ValueError):
    """The request, not the file, is unusable (invalid arguments, too many frames); never a `VideoDecodeError`."""


@dataclass
class VideoClip:
    """Sampled frames of one video.

    Attributes:
        frames (`np.ndarray` of shape `(T, H, W, 3)`, uint8): the sampled frames, rotation applied.
        indices (`np.ndarray` of shape `(T,)`): source frame indices (presentation order).
        timestamps (`np.ndarray` of shape `(T,)`): seconds from the first frame; NaN for arrays without a clock.
        num_source_frames (`int`): frames in the source (or in the `start`/`end` window).
        repeated (`bool`): some frames were repeated because the source has fewer than requested.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    num_source_frames: int
    repeated: bool = False

    def __len__(self) -> int:
        return len(self.frames)


def sample_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """LanguageBind's rule: `np.linspace(0, N - 1, num_frames).astype(int)`, e.g. N=100, 8 -> [0, 14, ..., 99]."""
    if num_source_frames <= 0:
        raise ValueError("cannot sample from a video without frames")
    return np.linspace(0, num_source_frames - 1, num_frames).astype(int)


def _count(name: str, value: Any, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        hint = " or None" if optional else " (or pass fps= to sample by time)" if name == "num_frames" else ""
        raise VideoRequestError(f"{name} must be a positive integer{hint}, got {value!r}")
    return int(value)


def _seconds(name: str, value: Any, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite number" if positive else "a finite number of seconds"
        raise VideoRequestError(f"{name} must be {kind}, got {value!r}")
    return float(value)


@dataclass
class _Request:
    """Validated sampling arguments of one `load_video` call."""

    num_frames: int | None
    fps: float | None
    start: float | None
    end: float | None
    max_frames: int | None

    @classmethod
    def check(cls, num_frames: Any, fps: Any, start: Any, end: Any, max_frames: Any) -> "_Request":
        fps = _seconds("fps", fps, positive=True)
        request = cls(_count("num_frames", num_frames, optional=fps is not None), fps, _seconds("start", start),
                      _seconds("end", end), _count("max_frames", max_frames, optional=True))
        if request.start is not None and request.end is not None and request.end < request.start:
            raise VideoRequestError(f"end={end} is before start={start}")
        return request

    def describe(self) -> str:
        return f"fps={self.fps:g}" if self.fps is not None else f"num_frames={self.num_frames}"

    def refuse_if_too_big(self, source: Any, count: int, height: int, width: int) -> None:
        need = count * height * width * 3
        if need > MAX_CLIP_BYTES:
            raise VideoRequestError(f"{describe(source)}: {self.describe()} asks for {count} frames of "
                                    f"{width}x{height} ({need / 2**30:.1f} GiB, over the "
                                    f"{MAX_CLIP_BYTES / 2**30:g} GiB limit); pass max_frames= or sample fewer frames")

    def select(self, times: np.ndarray, height: int, width: int, source: Any) -> tuple[np.ndarray, int]:
        """Frame indices picked from per-frame times (seconds, sorted); returns (indices, frames in the window)."""
        window = np.arange(len(times))
        if self.start is not None or self.end is not None:
            lo = -np.inf if self.start is None else self.start
            hi = np.inf if self.end is None else self.end
            window = window[(times >= lo) & (times <= hi)]
            if len(window) == 0:
                raise VideoRequestError(f"{describe(source)}: no frame between start={self.start} and "
                                        f"end={self.end} (video spans 0-{times[-1]:.3f} s)")
        if self.fps is None:
            count = min(self.num_frames, self.max_frames or self.num_frames)
            self.refuse_if_too_big(source, count, height, width)
            picked = window[sample_indices(len(window), count)]
        else:
            picked = window[_on_screen(times[window], self.fps)]
        if self.max_frames is not None and len(picked) > self.max_frames:
            picked = picked[sample_indices(len(picked), self.max_frames)]
        self.refuse_if_too_big(source, len(picked), height, width)
        return picked, len(window)


def _on_screen(times: np.ndarray, fps: float) -> np.ndarray:
    """Positions of the frames on screen at t0, t0 + 1/fps, ... <= t_last, each frame once (O(N), VFR-safe).

    Frame j is on screen at grid time g when times[j] <= g < times[j + 1] (1 ns tolerance); it is picked when some
    grid time falls in that interval, so a grid denser than the frames never repeats a frame.
    """
    t0, eps = times[0], 1e-9
    last = np.floor((times[-1] - t0) * fps + eps)
    first_grid = np.maximum(np.ceil((times - eps - t0) * fps), 0)  # (N,) first grid index at or after each frame
    shown_until = np.append(times[1:], np.inf)  # (N,) next frame's time
    return np.flatnonzero((first_grid <= last) & (t0 + first_grid / fps + eps < shown_until))


def _make_clip(frames: np.ndarray, indices: np.ndarray, times: np.ndarray, window: int, requested: int | None,
               source: Any) -> VideoClip:
    repeated = len(np.unique(indices)) < len(indices)
    if repeated:
        logger.info("Video %s has %d frames, fewer than %s: frames are repeated.", describe(source), window, requested)
    return VideoClip(frames, indices.astype(np.int64), times.astype(np.float64), window, repeated)


def _frames_from_arrays(source: Any) -> np.ndarray:
    """(T, H, W, 3) uint8 from an array, or from a list of PIL images / arrays."""
    if isinstance(source, np.ndarray) and source.ndim not in (3, 4):
        raise ValueError(f"a video array must be (T, H, W) or (T, H, W, C), got shape {source.shape}")
    out = []
    for frame in source:
        if isinstance(frame, Image.Image):
            frame = np.asarray(frame.convert("RGB"))
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            frame = np.clip(frame * 255 if np.issubdtype(frame.dtype, np.floating) else frame, 0, 255).astype(np.uint8)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=-1)
        if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
            raise ValueError(f"a frame must be (H, W), (H, W, 3) or (H, W, 4), got shape {frame.shape}")
        out.append(frame[..., :3])
    if not out:
        raise ValueError("zero frames")
    if len({f.shape for f in out}) > 1:
        raise ValueError(f"frames of one video differ in size: {sorted({f.shape for f in out})}")
    return np.stack(out)


def _load_arrays(source: Any, request: _Request) -> VideoClip:
    if request.fps is not None:
        raise VideoRequestError("fps= needs timestamps; decoded frame arrays have none, use num_frames=")
    try:
        frames = _frames_from_arrays(source)
    except ValueError as err:
        raise VideoDecodeError(source, str(err)) from err
    indices, window = request.select(np.arange(len(frames), dtype=np.float64), *frames.shape[1:3], source)
    return _make_clip(frames[indices], indices, np.full(len(indices), np.nan), window, request.num_frames, source)


def _load_file(source: Any, request: _Request) -> VideoClip:
    import av

    window = []

    def select(times: np.ndarray, height: int, width: int) -> np.ndarray:
        indices, count = request.select(times, height, width, source)
        window.append(count)
        return indices

    try:
        frames, indices, times = decode_file(source, select)
    except (VideoDecodeError, VideoRequestError):
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError, IndexError, KeyError, RuntimeError) as err:
        raise VideoDecodeError(source, f"{type(err).__name__}: {err}") from err
    return _make_clip(frames, indices, times[indices], window[-1], request.num_frames if request.fps is None else None,
                      source)


def load_video(
    source: VideoSource,
    num_frames: int | None = 8,
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
) -> VideoClip:
    """Load and sample a video.

    Args:
        source: a path, bytes, a binary file object, a `(T, H, W, 3)` / `(T, H, W)` array or a list of PIL images or
            arrays (already-decoded frames).
        num_frames (`int`, defaults to 8): frames to sample uniformly with `linspace(0, N - 1, num_frames)`.
            Videos with fewer frames repeat frames (`VideoClip.repeated` is set); they are never padded with black.
            Ignored (may be None) when `fps` is given.
        fps (`float`, *optional*): sample by time instead: the frame on screen at every `1 / fps` seconds (real
            timestamps), each source frame at most once, so a rate above the video's returns every frame.
        start, end (`float`, *optional*): keep only frames within `[start, end]` seconds.
        max_frames (`int`, *optional*): cap on the number of frames returned (uniform subsample).

    Returns:
        `VideoClip` with `frames` (T, H, W, 3) uint8, `indices` and `timestamps`.

    Raises:
        `VideoDecodeError` (a `ValueError`): missing, empty, truncated, corrupt, audio-only or zero-frame input.
        `ValueError`: invalid arguments, or a request needing more than `MAX_CLIP_BYTES` of frames.
    """
    request = _Request.check(num_frames, fps, start, end, max_frames)
    source = fetch_source(source, VideoDecodeError)  # data: / http(s):// URLs -> in-memory file (video_sources.py)
    if isinstance(source, (np.ndarray, list, tuple)):
        return _load_arrays(source, request)
    return _load_file(source, request)


__all__ = ["MAX_CLIP_BYTES", "VideoClip", "VideoDecodeError", "load_video", "sample_indices"]
