"""Small synthetic media for the processing tests, encoded with PyAV (no files are checked in)."""

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


# Prelude of subprocess scripts: the processing Hub files alone, imported the way a Hub folder is (no torch import).
HUB_PRELUDE = f"""
import sys, types
package = types.ModuleType("hub_processing")
package.__path__ = [{str(Path(__file__).resolve().parents[2] / "processing")!r}]
sys.modules["hub_processing"] = package
"""


def pattern(index: int, height: int, width: int) -> np.ndarray:
    """A frame whose content depends on its index (moving bars + noise seeded by the index), (H, W, 3) uint8."""
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 64, (height, width, 3), dtype=np.uint8)
    frame[:, (index * 3) % width] = 255
    frame[(index * 2) % height, :, 1] = 200
    frame[: height // 4, : width // 4, 2] = (index * 37) % 256
    return frame


def make_video(
    path: Path,
    num_frames: int = 30,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    fps: int = 25,
    gop: int = 250,
    vfr: bool = False,
    rotation: int | None = None,
    audio: bool = False,
    pix_fmt: str = "yuv420p",
    b_frames: bool = False,
    faststart: bool = False,
) -> Path:
    """Encode `num_frames` pattern frames of `size` = (W, H); `vfr` gives irregular timestamps (ms time base).

    `b_frames` makes libx264 use B-frames (some of them references, b-pyramid), and mpeg4 / mpeg2video use two
    B-frames between references; `faststart` writes an MP4's index (moov) before the frames.
    """
    width, height = size
    with av.open(str(path), mode="w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"keyint_min": str(gop), "sc_threshold": "0",
                              "preset": "medium" if b_frames else "ultrafast"}
        if codec == "libx265":
            stream.options = {"preset": "ultrafast", "x265-params": f"keyint={gop}:min-keyint={gop}:log-level=none"}
        if codec in ("mpeg4", "mpeg2video") and b_frames:
            stream.codec_context.max_b_frames = 2
        if codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        if vfr:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if audio:
            astream = container.add_stream("aac", rate=16000)
        t = 0
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, height, width), format="rgb24")
            if vfr:
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                t += 20 if i % 3 else 90
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio:
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 16000), dtype=np.float32), format="flt", layout="mono")
            samples.sample_rate = 16000
            for packet in astream.encode(samples):
                container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return Path(path)


def make_audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 16000), dtype=np.float32), format="fltp", layout="mono")
        samples.sample_rate = 16000
        for packet in stream.encode(samples):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def count_frames(path: Path) -> int:
    """Frames PyAV decodes from the file (every frame, from the start)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def recipe_frames(path: Path, indices) -> np.ndarray:
    """Reference: transformers' documented PyAV recipe (`read_video_pyav` in the Video-LLaVA docs), (T, H, W, 3).

    Decode every frame from the start up to the last index and convert only the sampled ones to RGB. The recipe
    ignores the display rotation, which `load_video` applies, so it is applied here too; repeated indices (short
    videos) are decoded once and repeated.
    """
    unique, inverse = np.unique(np.asarray(indices), return_inverse=True)
    wanted = set(unique.tolist())
    frames = []
    with av.open(str(path)) as container:
        container.seek(0)
        for i, frame in enumerate(container.decode(video=0)):
            if i > unique[-1]:
                break
            if i >= unique[0] and i in wanted:
                frames.append(frame)
    arrays = []
    for frame in frames:
        array = frame.to_ndarray(format="rgb24")
        turns = int(round((frame.rotation or 0) / 90)) % 4
        arrays.append(np.rot90(array, k=turns) if turns else array)
    return np.stack(arrays)[inverse]


def trim_edit_list(path: Path, keep: float) -> Path:
    """Shorten the first edit (`elst` entry) of an MP4 to `keep` of its length, as editors do when cutting without
    re-encoding: the frames stay in the file, the player shows only the edit."""
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"elst")
    assert at > 0 and data[at + 4] == 0, "expected a version-0 edit list"
    duration = struct.unpack(">I", data[at + 12: at + 16])[0]
    data[at + 12: at + 16] = struct.pack(">I", int(duration * keep))
    Path(path).write_bytes(bytes(data))
    return Path(path)
