"""Small synthetic media for the processing tests, encoded with PyAV (no files are checked in)."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


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
) -> Path:
    """Encode `num_frames` pattern frames of `size` = (W, H); `vfr` gives irregular timestamps (ms time base)."""
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"keyint_min": str(gop), "sc_threshold": "0", "preset": "ultrafast"}
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


def decode_all(path: Path) -> np.ndarray:
    """Reference: decode every frame (rotation applied like `load_video`), (N, H, W, 3)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            array = frame.to_ndarray(format="rgb24")
            turns = int(round((frame.rotation or 0) / 90)) % 4
            frames.append(np.rot90(array, k=turns) if turns else array)
    return np.stack(frames)
