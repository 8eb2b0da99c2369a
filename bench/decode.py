"""Decode benchmark: 8 frames from a 60 s 1280x720 H.264 file (GOP 250) and a 10 s 640x360 file, both made here.

Four ways to get the same 8 frames (LanguageBind's `linspace(0, N - 1, 8)` indices), each opening the file itself:

- `ours`: `processing.load_video` (packet table, integrity checks, seek + NONREF skipping, drain per GOP);
- `recipe`: transformers' documented PyAV recipe (`read_video_pyav` in the Video-LLaVA docs): decode every frame
  from the start, convert only the sampled ones to RGB;
- `plain_seek`: the plain loop "seek to the keyframe before each target, decode forward" with PyAV defaults; it is
  given the keyframe positions for free (computed before timing) and keeps decoding forward inside a GOP;
- `decord`: `decord.VideoReader(...).get_batch(indices)` (skipped with a reason when not installed).

Variants run interleaved (A B C D, B C D A, ... for `--rounds` rounds after one warm-up round), so drift on a shared
machine lands on every variant; ratios are computed per round and reported as median with min/max. Frames are
compared with the recipe's. Prints JSON.

Run as:
    python bench/decode.py [--workdir /tmp/videollava_bench] [--rounds 7] [--output bench.json]
"""

import argparse
import json
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processing import load_video, sample_indices  # noqa: E402


def make_file(path: Path, seconds: int, width: int, height: int, gop: int, fps: int = 25) -> Path:
    """A synthetic clip (moving gradient + light grain) encoded with libx264, keyframe every `gop` frames."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"keyint_min": str(gop), "sc_threshold": "0", "preset": "superfast"}
        stream.codec_context.time_base = Fraction(1, fps)
        noise = rng.integers(0, 6, (height, width, 3), dtype=np.uint8)
        for i in range(seconds * fps):
            frame = (np.roll(base, i * 4, axis=1) + np.roll(noise, i, axis=0)).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_pts(path: Path) -> tuple[list[int], list[int]]:
    """Presentation timestamps of all frames and of the keyframes (demuxed once, outside any timing)."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    return sorted(p.pts for p in packets), sorted(p.pts for p in packets if p.is_keyframe)


def ours(path: Path, indices: np.ndarray, context: dict) -> np.ndarray:
    return load_video(path, len(indices)).frames


def recipe(path: Path, indices: np.ndarray, context: dict) -> np.ndarray:
    """transformers' documented recipe: decode from the start up to the last index, convert only sampled frames."""
    with av.open(str(path)) as container:
        container.seek(0)
        wanted = set(indices.tolist())
        frames = []
        for i, frame in enumerate(container.decode(video=0)):
            if i > indices[-1]:
                break
            if i >= indices[0] and i in wanted:
                frames.append(frame)
        return np.stack([frame.to_ndarray(format="rgb24") for frame in frames])


def plain_seek(path: Path, indices: np.ndarray, context: dict) -> np.ndarray:
    """Seek to the keyframe before each target (positions known), decode forward; continue inside a GOP."""
    all_pts, keyframes = context["pts"], np.asarray(context["keyframes"])
    out, frame, gop = [], None, None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = None
        for index in indices.tolist():
            target = all_pts[index]
            key = int(keyframes[np.searchsorted(keyframes, target, side="right") - 1])
            if frames is None or key != gop or frame.pts > target:
                container.seek(key, stream=stream)
                frames, gop, frame = container.decode(stream), key, None
            while frame is None or frame.pts < target:
                frame = next(frames)
            out.append(frame.to_ndarray(format="rgb24"))
    return np.stack(out)


def decord_batch(path: Path, indices: np.ndarray, context: dict) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    return reader.get_batch(indices.tolist()).asnumpy()


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def bench_file(path: Path, num_frames: int, rounds: int) -> dict:
    pts, keyframes = frame_pts(path)
    indices = sample_indices(len(pts), num_frames)
    context = {"pts": pts, "keyframes": keyframes}
    variants = {"ours": ours, "recipe": recipe, "plain_seek": plain_seek, "decord": decord_batch}
    row: dict = {"frames": len(pts), "keyframes": len(keyframes), "indices": indices.tolist()}
    try:
        import decord  # noqa: F401

        row["decord_version"] = decord.__version__
    except ImportError as err:
        variants.pop("decord")
        row["decord"] = f"skipped: {err}"
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs = {}
    for r in range(rounds + 1):  # round 0 warms the page cache and imports, and is not counted
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            outputs[name] = variants[name](path, indices, context)
            if r:
                times[name].append(time.perf_counter() - start)
    row["seconds"] = {name: spread(times[name]) for name in names}
    ratio = lambda a, b: spread([x / y for x, y in zip(times[a], times[b])])  # noqa: E731 - per-round ratios
    row["ours_over_plain_seek"] = ratio("ours", "plain_seek")
    row["recipe_over_ours"] = ratio("recipe", "ours")
    if "decord" in times:
        row["decord_over_ours"] = ratio("decord", "ours")
    row["identical_to_recipe"] = {name: bool(np.array_equal(outputs[name], outputs["recipe"])) for name in names}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/videollava_bench")
    parser.add_argument("--output")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = {
        "60s_1280x720_h264_gop250": make_file(workdir / "60s_1280x720_gop250.mp4", 60, 1280, 720, 250),
        "10s_640x360_h264_gop250": make_file(workdir / "10s_640x360.mp4", 10, 640, 360, 250),
    }
    report = {
        "num_frames": args.num_frames,
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in os.getloadavg()],
                    "pyav": av.__version__},
        "target": "ours_over_plain_seek <= 1.15, decord_over_ours > 1, identical_to_recipe",
    }
    for name, path in files.items():
        report[name] = bench_file(path, args.num_frames, args.rounds)
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
