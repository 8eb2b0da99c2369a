"""Decode benchmark: 8 frames from a 60 s 1280x720 H.264 file (GOP 250) and a 10 s 640x360 file, both made here.

Compares `processing.load_video` (seek + decode only the needed GOPs) with a decode-every-frame PyAV baseline and
decord (when installed), one run each, plus a whole processor call (video + prompt -> tensors). Prints JSON.

Run as:
    python bench/decode.py [--workdir /tmp/videollava_bench] [--output bench.json]
"""

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processing import build_processor, load_video, sample_indices  # noqa: E402


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


def decode_every_frame(path: Path, num_frames: int) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return np.stack([frames[i] for i in sample_indices(len(frames), num_frames)])


def decode_decord(path: Path, num_frames: int) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    return reader.get_batch(sample_indices(len(reader), num_frames).tolist()).asnumpy()


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def bench_file(path: Path, num_frames: int) -> dict:
    ours_s, clip = timed(load_video, path, num_frames)
    every_s, reference = timed(decode_every_frame, path, num_frames)
    row = {
        "ours_s": round(ours_s, 3),
        "decode_every_frame_s": round(every_s, 3),
        "speedup_vs_every_frame": round(every_s / ours_s, 2),
        "identical_to_every_frame": bool(np.array_equal(clip.frames, reference)),
    }
    try:
        decord_s, frames = timed(decode_decord, path, num_frames)
        row.update(decord_s=round(decord_s, 3), ours_vs_decord=round(decord_s / ours_s, 2))
    except ImportError:
        row["decord_s"] = "not installed"
    return row


def bench_processor(path: Path) -> dict:
    from transformers import AutoTokenizer  # noqa: F401  (imported here so the decode timings exclude it)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from modeling_videollava import LanguageBindVideoLlavaConfig
    from tests.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = LanguageBindVideoLlavaConfig(  # full-size towers: 8 frames of 224 px, 2056 video tokens
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
    )
    processor = build_processor(config, tokenizer)
    messages = [{"role": "user", "content": [{"type": "video", "video": str(path)}, {"type": "text", "text": "what ?"}]}]
    seconds, out = timed(
        lambda: processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
    )
    return {
        "processor_call_s": round(seconds, 3),
        "input_ids": list(out["input_ids"].shape),
        "pixel_values_videos": list(out["pixel_values_videos"].shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/videollava_bench")
    parser.add_argument("--output")
    parser.add_argument("--num-frames", type=int, default=8)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    long_file = make_file(workdir / "60s_1280x720_gop250.mp4", 60, 1280, 720, 250)
    short_file = make_file(workdir / "10s_640x360.mp4", 10, 640, 360, 250)
    report = {
        "num_frames": args.num_frames,
        "60s_1280x720_h264_gop250": bench_file(long_file, args.num_frames),
        "10s_640x360_h264": bench_file(short_file, args.num_frames),
        "processor_60s_file": bench_processor(long_file),
    }
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
