"""Video loading for Video-LLaVA: PyAV decoding that seeks to the frames it needs.

`load_video` accepts a path, bytes, a binary file object, a (T, H, W, 3) / (T, H, W) array or a list of PIL images /
arrays, samples frames with LanguageBind's rule `np.linspace(0, N - 1, num_frames).astype(int)` (SPEC §7.3), and
returns a `VideoClip` with the frames, their source indices and their timestamps.

For files, the frame table (presentation timestamps and keyframes) comes from demuxing packets, which is cheap and
does not trust container metadata. Frames are then decoded only from the keyframe before each target onwards. When
timestamps are missing or the decoder disagrees with the packet table, it falls back to a counted decode of every
frame, which is exact but slow. Uploaded as Hub custom code: imports only installed libraries.
"""

import io
import logging
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from .video_sources import fetch_source


logger = logging.getLogger(__name__)

VideoSource = str | os.PathLike | bytes | bytearray | BinaryIO | np.ndarray | list


class VideoDecodeError(ValueError):
    """A video could not be decoded; the message names the source and the reason."""

    def __init__(self, source: Any, reason: str):
        self.source = _describe(source)
        self.reason = reason
        super().__init__(f"Cannot decode video {self.source}: {reason}")


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


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>" if getattr(source, "name", None) is None else repr(source.name)


def sample_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """LanguageBind's rule: `np.linspace(0, N - 1, num_frames).astype(int)`, e.g. N=100, 8 -> [0, 14, ..., 99]."""
    if num_source_frames <= 0:
        raise ValueError("cannot sample from a video without frames")
    return np.linspace(0, num_source_frames - 1, num_frames).astype(int)


def _select(times: np.ndarray, num_frames: int, fps: float | None, start: float | None, end: float | None,
            max_frames: int | None) -> tuple[np.ndarray, int]:
    """Pick frame indices from per-frame times (seconds, sorted); returns (indices, frames in the window)."""
    window = np.arange(len(times))
    if start is not None or end is not None:
        lo = -np.inf if start is None else start
        hi = np.inf if end is None else end
        window = window[(times >= lo) & (times <= hi)]
        if len(window) == 0:
            raise ValueError(f"no frame between start={start} and end={end} (video spans 0-{times[-1]:.3f} s)")
    if fps is None:
        picked = window[sample_indices(len(window), num_frames)]
    else:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        t0, t1 = times[window[0]], times[window[-1]]
        grid = t0 + np.arange(int(np.floor((t1 - t0) * fps + 1e-9)) + 1) / fps
        # the frame on screen at each grid time: last frame with time <= t (real timestamps, so VFR-safe)
        pos = np.searchsorted(times[window], grid + 1e-9, side="right") - 1
        picked = window[np.clip(pos, 0, len(window) - 1)]
    if max_frames is not None and len(picked) > max_frames:
        picked = picked[sample_indices(len(picked), max_frames)]
    return picked, len(window)


def _make_clip(frames: np.ndarray, indices: np.ndarray, times: np.ndarray, window: int, requested: int | None,
               source: Any) -> VideoClip:
    repeated = len(np.unique(indices)) < len(indices)
    if repeated:
        logger.info("Video %s has %d frames, fewer than %s: frames are repeated.", _describe(source), window, requested)
    return VideoClip(frames, indices.astype(np.int64), times.astype(np.float64), window, repeated)


def _frames_from_arrays(source: Any) -> np.ndarray:
    """(T, H, W, 3) uint8 from an array, or from a list of PIL images / arrays."""
    if isinstance(source, np.ndarray) and source.ndim not in (3, 4):
        raise ValueError(f"a video array must be (T, H, W) or (T, H, W, C), got shape {source.shape}")
    frames = source
    out = []
    for frame in frames:
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


@dataclass
class _FrameTable:
    pts: np.ndarray  # (N,) presentation timestamps in stream time_base, sorted
    keyframes: np.ndarray  # (K,) pts of keyframes, sorted
    time_base: float
    start: int

    @property
    def frame_step(self) -> int:
        """Typical pts distance between consecutive frames."""
        return int(np.median(np.diff(self.pts))) if len(self.pts) > 1 else 1


def _open(source: Any):
    import av

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise VideoDecodeError(source, "file not found")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(source, "file is empty")
    return av.open(source, mode="r", metadata_errors="ignore")


def _video_stream(container, source: Any):
    if not container.streams.video:
        raise VideoDecodeError(source, "no video stream (audio-only or not a video file)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _frame_table(container, stream) -> _FrameTable | None:
    """Presentation timestamps of every frame from the packets (no decoding); None when timestamps are missing."""
    pts, keys = [], []
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        t = packet.pts if packet.pts is not None else packet.dts
        if t is None:
            return None
        pts.append(t)
        if packet.is_keyframe:
            keys.append(t)
    if not pts or not keys or len(set(pts)) != len(pts):
        return None
    pts_arr = np.sort(np.asarray(pts, dtype=np.int64))
    return _FrameTable(pts_arr, np.sort(np.asarray(keys, dtype=np.int64)), float(stream.time_base), int(pts_arr[0]))


def _to_rgb(frame) -> np.ndarray:
    array = frame.to_ndarray(format="rgb24")
    turns = int(round((frame.rotation or 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(array, k=turns)) if turns else array


# Frames before a target decoded with `skip_frame="NONREF"` (non-reference frames are not decoded). The margin covers
# the decoder's reorder and threading delay, so the target itself is always fully decoded; if it was not, the pts
# check below fails and the caller falls back to a counted decode.
SKIP_MARGIN_FRAMES = 16


def _decode_seeking(container, stream, table: _FrameTable, wanted: np.ndarray) -> dict[int, np.ndarray] | None:
    """Decode only the GOPs holding `wanted` pts (sorted, unique); None when the decoder disagrees with the table."""
    found: dict[int, np.ndarray] = {}
    frames = None
    last = None  # pts of the last decoded frame
    codec = stream.codec_context
    if codec is None:
        return None
    margin = SKIP_MARGIN_FRAMES * table.frame_step
    for target in wanted:
        key = table.keyframes[np.searchsorted(table.keyframes, target, side="right") - 1]
        if frames is None or last is None or key > last:
            container.seek(int(key), backward=True, any_frame=False, stream=stream)
            frames = container.decode(stream)
            last = None
        # Fast-forward without decoding frames nothing refers to; decode everything again near the target.
        codec.skip_frame = "NONREF" if target - (key if last is None else last) > margin else "DEFAULT"
        for frame in frames:
            if frame.pts is None:
                return None
            last = frame.pts
            if target - last <= margin:
                codec.skip_frame = "DEFAULT"
            if frame.pts >= target:
                break
        else:
            return None
        if last != target:
            return None
        found[int(target)] = _to_rgb(frame)
    return found


def _decode_counted(source: Any, num_frames: int, fps, start, end, max_frames) -> VideoClip:
    """Exact fallback: decode every frame once to count and time them, then once more to keep the sampled ones."""
    with _open(source) as container:
        stream = _video_stream(container, source)
        times = []
        for i, frame in enumerate(container.decode(stream)):
            times.append(frame.time if frame.time is not None else i / float(stream.average_rate or 1))
    if not times:
        raise VideoDecodeError(source, "zero decodable frames")
    times_arr = np.asarray(times, dtype=np.float64) - times[0]
    indices, window = _select(times_arr, num_frames, fps, start, end, max_frames)
    keep = set(indices.tolist())
    kept: dict[int, np.ndarray] = {}
    with _open(source) as container:
        stream = _video_stream(container, source)
        for i, frame in enumerate(container.decode(stream)):
            if i in keep:
                kept[i] = _to_rgb(frame)
            if i >= indices.max():
                break
    frames = np.stack([kept[i] for i in indices.tolist()])
    return _make_clip(frames, indices, times_arr[indices], window, num_frames if fps is None else None, source)


def _load_file(source: Any, num_frames: int, fps, start, end, max_frames) -> VideoClip:
    if hasattr(source, "seek"):
        source.seek(0)
    with _open(source) as container:
        stream = _video_stream(container, source)
        table = _frame_table(container, stream)
        if table is not None:
            times = (table.pts - table.start) * table.time_base
            indices, window = _select(times, num_frames, fps, start, end, max_frames)
            wanted = np.unique(table.pts[indices])
            found = _decode_seeking(container, stream, table, wanted)
            if found is not None:
                frames = np.stack([found[int(p)] for p in table.pts[indices]])
                requested = num_frames if fps is None else None
                return _make_clip(frames, indices, times[indices], window, requested, source)
    logger.info("Video %s: no reliable frame table, decoding every frame.", _describe(source))
    if hasattr(source, "seek"):
        source.seek(0)
    return _decode_counted(source, num_frames, fps, start, end, max_frames)


def load_video(
    source: VideoSource,
    num_frames: int = 8,
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
        fps (`float`, *optional*): sample by time instead, one frame every `1 / fps` seconds (real timestamps).
        start, end (`float`, *optional*): keep only frames within `[start, end]` seconds.
        max_frames (`int`, *optional*): cap on the number of frames returned by `fps` sampling (uniform subsample).

    Returns:
        `VideoClip` with `frames` (T, H, W, 3) uint8, `indices` and `timestamps`.

    Raises:
        `VideoDecodeError` (a `ValueError`): missing, empty, truncated, corrupt, audio-only or zero-frame input.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    source = fetch_source(source, VideoDecodeError)  # data: / http(s):// URLs -> in-memory file (video_sources.py)
    if isinstance(source, (np.ndarray, list, tuple)):
        try:
            frames = _frames_from_arrays(source)
            if fps is not None:
                raise ValueError("fps= needs timestamps; decoded frame arrays have none, use num_frames=")
            indices, window = _select(np.arange(len(frames), dtype=np.float64), num_frames, None, start, end,
                                      max_frames)
        except ValueError as err:
            raise VideoDecodeError(source, str(err)) from err
        return _make_clip(frames[indices], indices, np.full(len(indices), np.nan), window, num_frames, source)
    import av

    try:
        return _load_file(source, num_frames, fps, start, end, max_frames)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError, IndexError, KeyError, RuntimeError) as err:
        raise VideoDecodeError(source, f"{type(err).__name__}: {err}") from err


__all__ = ["VideoClip", "VideoDecodeError", "load_video", "sample_indices"]
