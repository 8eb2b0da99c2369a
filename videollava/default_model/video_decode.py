"""PyAV decoding for `video_io.load_video`: a frame table from the packets, integrity checks, seeking decode.

The frame table (presentation timestamps and keyframes) comes from demuxing packets, which is cheap and does not
trust container metadata; it is compared with what the container declares (frame count, duration) so that a
truncated file is an error, not a shorter video. Frames are then decoded only from the keyframe before each target:
packets that are not targets are decoded with `skip_frame="NONREF"` (frames nothing refers to are skipped), targets
fully, and the decoder is drained after the last target of a GOP. GOPs are independent, so for paths, bytes and
`io.BytesIO` they are shared out among `DECODE_WORKERS` threads, each with its own container. When timestamps are
missing or the decoder disagrees with the table, a counted decode of every frame is the exact but slow fallback.
Slice threading inside the decoder, never frame threading ("AUTO"): that hides the decode error of a damaged last
frame. Uploaded as Hub custom code: imports only installed libraries.
"""

import io
import itertools
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np


logger = logging.getLogger(__name__)

# Frame count and duration may fall short of the declaration by this much (rounding in muxers), no more.
FRAME_SLACK, FRAME_SLACK_FRACTION = 1, 0.01
DURATION_SLACK_FRAMES, DURATION_SLACK_FRACTION = 2, 0.005
# Threads decoding GOPs in parallel for paths and bytes (other file objects cannot be read from two places at once).
DECODE_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
Selector = Callable[[np.ndarray, int, int], np.ndarray]  # (times (N,), height, width) -> frame indices (T,)
_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


class VideoDecodeError(ValueError):
    """A video could not be decoded; the message names the source and the reason."""

    def __init__(self, source: Any, reason: str):
        self.source = describe(source)
        self.reason = reason
        super().__init__(f"Cannot decode video {self.source}: {reason}")


def describe(source: Any) -> str:
    """A short name for a source in messages: the path, `<N bytes>` or the file object's name."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>" if getattr(source, "name", None) is None else repr(source.name)


@dataclass
class FrameTable:
    pts: np.ndarray  # (N,) presentation timestamps of the shown frames, stream time_base, sorted
    keyframes: np.ndarray  # (K,) pts of keyframes (seek points, discarded pre-roll included), sorted
    keyframe_dts: np.ndarray  # (K,) their decoding timestamps (some demuxers seek by dts)
    time_base: float

    @property
    def frame_step(self) -> int:
        """Typical pts distance between consecutive frames."""
        return int(np.median(np.diff(self.pts))) if len(self.pts) > 1 else 1

    def seconds(self, pts: int | None) -> float:
        """Seconds from the first shown frame to `pts` (0 when unknown), for messages."""
        return 0.0 if pts is None else float((pts - self.pts[0]) * self.time_base)

    def times(self) -> np.ndarray:
        """(N,) seconds from the first shown frame."""
        return (self.pts - self.pts[0]) * self.time_base


def open_container(source: Any):
    import av

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif isinstance(source, io.BytesIO):  # a reader of its own (no copy): GOP workers read the same bytes at once
        source = io.BytesIO(source.getvalue())
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise VideoDecodeError(source, "file not found")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(source, "file is empty")
    elif hasattr(source, "seek"):
        source.seek(0)
    return av.open(source, mode="r", metadata_errors="ignore")


def video_stream(container, source: Any):
    if not container.streams.video:
        raise VideoDecodeError(source, "no video stream (audio-only or not a video file)")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    return stream


def _declared(container, stream) -> tuple[int, float | None]:
    """(frame count, seconds) the container declares for the stream; 0 / None where it declares nothing."""
    tags = {k.upper(): v for k, v in (stream.metadata or {}).items()}
    frames = int(stream.frames or 0) or int(tags.get("NUMBER_OF_FRAMES", "0") or 0)
    seconds = None
    match = _DURATION_TAG.match(tags.get("DURATION", "").strip())
    if match:  # Matroska / WebM per-track duration
        seconds = int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])
    elif "mp4" in container.format.name and stream.duration:  # MP4 / MOV: the track header's duration
        seconds = float(stream.duration * stream.time_base)
    return frames, seconds


def scan(container, stream, source: Any) -> FrameTable | None:
    """Demux every packet of the stream (no decoding) into a frame table, checking it against the declaration.

    Returns None when timestamps are missing or repeated (then only a counted decode is exact); raises
    `VideoDecodeError` when the file holds fewer frames or less time than its container declares.
    """
    pts, keys, ends = [], [], []
    present = corrupt = 0
    usable, last_corrupt = True, False
    for packet in container.demux(stream):
        t = packet.pts if packet.pts is not None else packet.dts
        if packet.size == 0:
            present += t is not None  # an empty packet with a time is a declared, dropped frame (AVI)
            continue
        present += 1
        last_corrupt = packet.is_corrupt
        corrupt += last_corrupt
        if t is None:
            usable = False
            continue
        if packet.is_keyframe:
            keys.append((t, t if packet.dts is None else packet.dts))
        if not packet.is_discard:  # discarded: decoding pre-roll outside the edit list, never shown
            pts.append(t)
            ends.append(t + (packet.duration or 0))
    declared_frames, declared_seconds = _declared(container, stream)
    if declared_frames and present < declared_frames - max(FRAME_SLACK, FRAME_SLACK_FRACTION * declared_frames):
        raise VideoDecodeError(source, f"truncated: the container declares {declared_frames} frames, "
                                       f"only {present} are in the file")
    if last_corrupt:
        raise VideoDecodeError(source, f"truncated: the last of {present} frames is incomplete")
    if corrupt:
        logger.warning("Video %s: %d packets are flagged corrupt; decoding them anyway.", describe(source), corrupt)
    if not usable or not pts:
        if usable:
            raise VideoDecodeError(source, "zero frames")
        return None
    keys = sorted(keys)
    table = FrameTable(np.sort(np.asarray(pts, dtype=np.int64)), np.asarray([k for k, _ in keys], dtype=np.int64),
                       np.asarray([d for _, d in keys], dtype=np.int64), float(stream.time_base))
    if declared_seconds:
        step = table.frame_step * table.time_base
        end = max(max(ends), int(table.pts[-1]) + table.frame_step) * table.time_base
        covered = end - min(table.pts[0] * table.time_base, 0.0)
        if declared_seconds - covered > max(DURATION_SLACK_FRAMES * step, DURATION_SLACK_FRACTION * declared_seconds):
            raise VideoDecodeError(source, f"truncated: the container declares {declared_seconds:.2f} s, "
                                           f"the frames in the file end at {covered:.2f} s")
    if not keys or len(np.unique(table.pts)) != len(table.pts):
        return None
    return table


def _frame_size(stream) -> tuple[int, int]:
    """(height, width) the stream declares; (0, 0) when it has no decoder (the decode then fails and says why)."""
    codec = stream.codec_context
    return (codec.height or 0, codec.width or 0) if codec is not None else (0, 0)


def to_rgb(frame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame, its display rotation applied."""
    array = frame.to_ndarray(format="rgb24")
    turns = int(round((frame.rotation or 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(array, k=turns)) if turns else array


def _decode(codec, packet, source: Any, at: float) -> list:
    import av

    try:
        return codec.decode(packet)
    except av.FFmpegError as err:
        raise VideoDecodeError(source, f"decoding failed near {at:.2f} s: {err}") from err


def _seek(container, stream, table: FrameTable, key: int):
    """Packets from the keyframe `key` (or an earlier one) on; None when no seek lands there.

    MP4 and Matroska seek by pts, MPEG-TS by dts: try the pts, then the dts, then the first keyframe, and accept a
    landing only on a keyframe at or before `key`.
    """
    for ts in dict.fromkeys((key, int(table.keyframe_dts[np.searchsorted(table.keyframes, key)]),
                             int(table.keyframe_dts[0]))):
        container.seek(ts, backward=True, any_frame=False, stream=stream)
        packets = container.demux(stream)
        first = next(packets, None)
        t = None if first is None else first.pts if first.pts is not None else first.dts
        if t is not None and t <= key and first.is_keyframe:
            return itertools.chain([first], packets)
    return None


def _decode_gops(container, stream, table: FrameTable, gops: list[tuple[int, set[int]]],
                 source: Any) -> dict[int, np.ndarray] | None:
    """RGB frames for the target pts of each (keyframe, targets) GOP; None when the decoder disagrees with the table.

    Per GOP: seek to its keyframe, send packets with `skip_frame="NONREF"` except the targets themselves, drain the
    decoder once every target of the GOP was sent.
    """
    codec = stream.codec_context
    if codec is None:
        return None
    found: dict[int, np.ndarray] = {}
    for key, batch in gops:
        unsent = set(batch)
        packets = _seek(container, stream, table, key)
        if packets is None:
            return None
        for packet in packets:
            t = packet.pts if packet.pts is not None else packet.dts
            if packet.size == 0 and t is not None:  # a dropped frame (AVI): sending it would drain the decoder
                continue
            if packet.size == 0:  # end of the stream
                frames = _decode(codec, None, source, table.seconds(key))
            else:
                codec.skip_frame = "DEFAULT" if t is None or t in batch else "NONREF"
                frames = _decode(codec, packet, source, table.seconds(t))
                unsent.discard(t)
                if not unsent:  # every target is in the decoder: take them out without decoding further
                    frames = frames + _decode(codec, None, source, table.seconds(t))
            for frame in frames:
                if frame.pts in batch and frame.pts not in found:
                    found[frame.pts] = to_rgb(frame)
            if not unsent or packet.size == 0:
                break
        codec.skip_frame = "DEFAULT"
        if not batch.issubset(found):
            return None
    return found


def decode_seeking(container, stream, table: FrameTable, wanted: np.ndarray, source: Any,
                   workers: int = 1) -> dict[int, np.ndarray] | None:
    """RGB frames for `wanted` pts (sorted, unique), decoding only the GOPs that hold them.

    With `workers` > 1 the GOPs are shared out (longest first, to the least loaded) among that many threads, each
    with its own container; PyAV releases the GIL while decoding. None when the decoder disagrees with the table.
    """
    keys = table.keyframes[np.searchsorted(table.keyframes, wanted, side="right") - 1]
    gops = [(int(k), {int(t) for t in wanted[keys == k]}) for k in np.unique(keys)]
    workers = max(1, min(workers, len(gops)))
    if workers == 1:
        return _decode_gops(container, stream, table, gops, source)
    cost = {k: np.searchsorted(table.pts, max(b)) - np.searchsorted(table.pts, k) for k, b in gops}  # frames
    shares: list[list[tuple[int, set[int]]]] = [[] for _ in range(workers)]
    for gop in sorted(gops, key=lambda g: -cost[g[0]]):
        min(shares, key=lambda share: sum(cost[k] for k, _ in share)).append(gop)

    def decode_share(share: list[tuple[int, set[int]]]) -> dict[int, np.ndarray] | None:
        with open_container(source) as own:
            return _decode_gops(own, video_stream(own, source), table, share, source)

    with ThreadPoolExecutor(workers - 1) as pool:
        others = pool.map(decode_share, shares[1:])
        parts = [_decode_gops(container, stream, table, shares[0], source), *others]
    if any(part is None for part in parts):
        return None
    return {pts: frame for part in parts for pts, frame in part.items()}


def decode_counted(source: Any, select: Selector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact fallback: decode every frame once to count and time them, then once more to keep the sampled ones.

    Returns (frames, indices, times of every frame in seconds).
    """
    with open_container(source) as container:
        stream = video_stream(container, source)
        (height, width), times = _frame_size(stream), []
        for i, frame in enumerate(_frames(container, stream, source)):
            times.append(frame.time if frame.time is not None else i / float(stream.average_rate or 1))
    if not times:
        raise VideoDecodeError(source, "zero decodable frames")
    times_arr = np.asarray(times, dtype=np.float64) - times[0]
    indices = select(times_arr, height, width)
    keep = set(indices.tolist())
    kept: dict[int, np.ndarray] = {}
    with open_container(source) as container:
        stream = video_stream(container, source)
        for i, frame in enumerate(_frames(container, stream, source)):
            if i in keep:
                kept[i] = to_rgb(frame)
            if i >= indices.max():
                break
    return np.stack([kept[i] for i in indices.tolist()]), indices, times_arr


def _frames(container, stream, source: Any):
    import av

    try:
        yield from container.decode(stream)
    except av.FFmpegError as err:
        raise VideoDecodeError(source, f"decoding failed: {err}") from err


def decode_file(source: Any, select: Selector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the frames `select(times, height, width)` picks from a path, bytes or binary file object.

    `select` maps per-frame times (seconds, sorted) and the frame size to frame indices, or refuses the request
    before anything is decoded. Returns (frames (T, H, W, 3) uint8, indices (T,), times (N,) of every frame).
    """
    with open_container(source) as container:
        stream = video_stream(container, source)
        table = scan(container, stream, source)
        if table is not None:
            times = table.times()
            indices = select(times, *_frame_size(stream))
            wanted = np.unique(table.pts[indices])
            workers = DECODE_WORKERS if isinstance(source, (str, os.PathLike, bytes, bytearray, io.BytesIO)) else 1
            found = decode_seeking(container, stream, table, wanted, source, workers)
            if found is not None:
                return np.stack([found[int(p)] for p in table.pts[indices]]), indices, times
    logger.info("Video %s: no reliable frame table, decoding every frame.", describe(source))
    return decode_counted(source, select)
