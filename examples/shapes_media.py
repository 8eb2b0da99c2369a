"""Rendering and encoding for the synthetic shapes data: scenes of coloured shapes -> PNG images and H.264 MP4 clips.

A scene is a list of `Obj`s; each object knows, per frame, where it is, whether it is visible and which colour it
has. `render_frames` draws every frame with numpy masks (no anti-aliasing, so colours stay pure), `save_png` and
`save_mp4` write them (PyAV, libx264, yuv420p, lossless qp=0, one thread). Lossy x264 output was seen to vary from
process to process for identical input; lossless coding makes the decoded pixels a pure function of the frames
(and, at this size, the files smaller). Lossless 4:2:0 H.264 uses the High 4:4:4 Predictive profile: FFmpeg/PyAV
decode it, some browsers do not.

Run as:
    python examples/shapes_media.py OUT_DIR   # writes demo.png and demo.mp4 (a red square moving left)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 70, 235),
    "yellow": (235, 215, 30),
}
BACKGROUND: tuple[int, int, int] = (0, 0, 0)
FPS = 8


@dataclass(frozen=True)
class Obj:
    """One shape. Positions are centres in pixels; the object lerps from `start` to `end` over the clip."""

    shape: str  # "square" | "circle" | "triangle"
    colour: str
    start: tuple[float, float]
    end: tuple[float, float]
    appear: int = 0  # first visible frame
    vanish: int | None = None  # first frame where it is no longer visible (None: never)
    new_colour: str | None = None  # colour from frame `change_at` on
    change_at: int | None = None

    def centre(self, t: int, num_frames: int) -> tuple[float, float]:
        a = t / max(num_frames - 1, 1)
        return (self.start[0] + a * (self.end[0] - self.start[0]), self.start[1] + a * (self.end[1] - self.start[1]))

    def visible(self, t: int) -> bool:
        return t >= self.appear and (self.vanish is None or t < self.vanish)

    def colour_at(self, t: int) -> str:
        if self.new_colour is not None and self.change_at is not None and t >= self.change_at:
            return self.new_colour
        return self.colour

    @property
    def direction(self) -> str:
        """'left' | 'right' | 'up' | 'down' | 'none' (image rows grow downwards)."""
        dx, dy = self.end[0] - self.start[0], self.end[1] - self.start[1]
        if abs(dx) < 1e-6 and abs(dy) < 1e-6:
            return "none"
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"


def shape_mask(shape: str, cx: float, cy: float, half: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a shape of half-extent `half` centred at (cx, cy)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xs - cx, ys - cy
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "triangle":  # apex up, base at the bottom of the bounding square
        frac = (dy + half) / (2 * half)
        return (frac >= 0) & (frac <= 1) & (np.abs(dx) <= half * frac)
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(objs: list[Obj], num_frames: int, size: int, half: float) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 frames; later objects are drawn over earlier ones."""
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    for t in range(num_frames):
        for obj in objs:
            if obj.visible(t):
                cx, cy = obj.centre(t, num_frames)
                frames[t][shape_mask(obj.shape, cx, cy, half, size)] = PALETTE[obj.colour_at(t)]
    return frames


def save_png(frame: np.ndarray, path: Path) -> None:
    """Write one RGB frame as a PNG (no metadata, so bytes depend on pixels only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame, "RGB").save(path, format="PNG", optimize=False)


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> planar yuv420p, stacked as (H * 3 / 2, W) as PyAV expects.

    Done in numpy rather than by swscale, whose output was seen to vary between processes for the same input.
    """
    rgb = frame.astype(np.float64)
    h, w = frame.shape[:2]
    y = 16 + rgb @ np.array([65.481, 128.553, 24.966]) / 255
    cb = 128 + rgb @ np.array([-37.797, -74.203, 112.0]) / 255
    cr = 128 + rgb @ np.array([112.0, -93.786, -18.214]) / 255
    sub = [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).reshape(h // 4, w) for c in (cb, cr)]
    return np.clip(np.round(np.concatenate([y] + sub)), 0, 255).astype(np.uint8)


def save_mp4(frames: np.ndarray, path: Path, fps: int = FPS) -> None:
    """Write RGB frames (even height and width) as an H.264 yuv420p MP4 with PyAV; same frames -> same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"qp": "0", "preset": "veryfast", "threads": "1", "flags": "+bitexact"}
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(arr), format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_mp4(path: Path) -> np.ndarray:
    """Decode every frame of a video to (T, H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    demo = [Obj("square", "red", (48.0, 32.0), (16.0, 32.0))]
    clip = render_frames(demo, 8, 64, 8.0)
    save_png(clip[0], out / "demo.png")
    save_mp4(clip, out / "demo.mp4")
    print(f"wrote {out / 'demo.png'} and {out / 'demo.mp4'}; decoded {read_mp4(out / 'demo.mp4').shape}")
