"""Fault injection for load_video (issue 13, defects 6, 8 and 16): truncated and damaged files written with PyAV,
unbounded `fps` requests in a memory-capped process, invalid arguments through real calls."""

import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from processing import VideoDecodeError, load_video, video_decode
from processing.video_io import _on_screen
from tests.processing.media import HUB_PRELUDE, make_video, recipe_frames
from tests.training.fakes import real_processor, write_llava_json
from training.collator import VideoLlavaCollator
from training.data import DataSource, load_training_data
from training.media import SkipLedger, read_skip_log



# Containers that declare their length: MP4 with the index first (frame count, track duration), Matroska / WebM
# (per-track DURATION tag), AVI (frame count in the header).
TRUNCATABLE = {
    "faststart.mp4": dict(faststart=True),
    "faststart_bframes.mp4": dict(faststart=True, b_frames=True),
    "matroska.mkv": dict(gop=10),
    "vp9.webm": dict(codec="libvpx-vp9", gop=10),
    "mpeg4.avi": dict(codec="mpeg4", gop=12),
}


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("intact")
    return {name: make_video(root / name, num_frames=40, size=(96, 64), **kw) for name, kw in TRUNCATABLE.items()}


def cut(path: Path, keep: float, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


@pytest.mark.parametrize("name", sorted(TRUNCATABLE))
def test_truncated_files_raise_naming_file_and_reason(intact, tmp_path, name):
    clip = load_video(intact[name], 8)  # the intact file passes the same checks
    np.testing.assert_array_equal(clip.frames, recipe_frames(intact[name], clip.indices))
    for keep in (0.3, 0.5, 0.7, 0.9):
        path = cut(intact[name], keep, tmp_path / f"cut{int(keep * 100)}_{name}")
        with pytest.raises(VideoDecodeError) as info:
            load_video(path, 8)
        reason = info.value.reason  # the container declares more than the file holds, or (AVI at 30 %) won't open
        assert path.name in str(info.value) and (reason.startswith("truncated: the container declares")
                                                 or reason.startswith("InvalidDataError") and keep < 0.5), reason


def test_issue_case_faststart_cut_to_70_percent(intact, tmp_path):
    path = cut(intact["faststart.mp4"], 0.7, tmp_path / "cut.mp4")
    with pytest.raises(VideoDecodeError, match=r"cut.mp4': truncated: the container declares 40 frames, only \d+ "):
        load_video(path, 40)
    with av.open(str(path)) as container:  # what used to be sampled from silently: a shorter video
        assert container.streams.video[0].frames == 40
        assert 0 < sum(1 for packet in container.demux(video=0) if packet.size) < 40


def test_incomplete_last_packet_is_truncation(intact, tmp_path):
    path = tmp_path / "minus_one_byte.mp4"
    path.write_bytes(intact["faststart.mp4"].read_bytes()[:-1])  # all 40 packets listed, the last one short
    with pytest.raises(VideoDecodeError, match="last of 40 frames is incomplete"):
        load_video(path, 8)


def damage(source: Path, frame: int, out: Path) -> Path:
    """Overwrite the payload of one frame's packet with random bytes (same size: nothing looks truncated)."""
    with av.open(str(source)) as container:
        packet = [p for p in container.demux(video=0) if p.size][frame]
        pos, size = packet.pos, packet.size
    data = bytearray(source.read_bytes())
    data[pos + 4: pos + size] = np.random.default_rng(frame).integers(0, 256, size - 4, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("frame,workers", [(39, 1), (33, 3)])
def test_decode_errors_are_not_hidden(tmp_path, monkeypatch, frame, workers):
    """A damaged frame only the decoder notices. Frame threading swallowed the error of the last one; with GOP
    workers, frame 33's GOP is decoded in a worker thread and its error must reach the caller just the same."""
    monkeypatch.setattr(video_decode, "DECODE_WORKERS", workers)
    source = make_video(tmp_path / "gops.mp4", num_frames=40, size=(96, 64), gop=5, faststart=True)
    path = damage(source, frame, tmp_path / f"damaged_{frame}.mp4")  # 8 targets: 0, 5, 11, 16, 22, 27, 33, 39
    with pytest.raises(VideoDecodeError, match=rf"damaged_{frame}.mp4.*decoding failed near {frame * 0.04:.2f} s"):
        load_video(path, 8)


def test_training_skips_and_counts_a_truncated_video(intact, tmp_path):
    rows = load_training_data([DataSource(write_llava_json(str(tmp_path), n=2), f"{tmp_path}/images",
                                          f"{tmp_path}/videos")])
    truncated = cut(intact["faststart.mp4"], 0.7, tmp_path / "videos/truncated.mp4")
    ledger = SkipLedger(str(tmp_path / "out"), max_skipped_fraction=1.0)
    batch = VideoLlavaCollator(real_processor(), num_frames=2, ledger=ledger)(
        [rows[0], dict(rows[1]) | {"videos": [str(truncated)]}])
    assert batch["input_ids"].shape[0] == 2 and ledger.skipped["media"] == 1
    assert "truncated" in str(read_skip_log(str(tmp_path / "out"))[0])


# ---- defect 8: fps sampling is bounded ----------------------------------------------------------------------------

def test_fps_never_repeats_a_source_frame(tmp_path):
    path = make_video(tmp_path / "eight.mp4", num_frames=8)  # 8 frames at 25 fps: 0 .. 0.28 s
    for fps in (25, 50, 2e4, 1e9):
        clip = load_video(path, fps=fps)
        assert clip.indices.tolist() == list(range(8)) and not clip.repeated, fps
    assert load_video(path, fps=12.5).indices.tolist() == [0, 2, 4, 6]
    assert load_video(path, fps=2e4, max_frames=3).indices.tolist() == [0, 3, 7]


def test_on_screen_equals_the_grid_rule_without_the_grid():
    """The O(N) rule picks exactly the distinct frames the explicit grid (last frame with time <= t) picks."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        times = np.cumsum(np.r_[0, rng.choice([0.01, 0.02, 0.04, 0.09, 0.5], int(rng.integers(1, 60)))])
        fps = float(rng.choice([0.5, 1, 3, 7.5, 10, 25, 30, 60, 1000]))
        grid = times[0] + np.arange(int(np.floor((times[-1] - times[0]) * fps + 1e-9)) + 1) / fps
        expected = np.unique(np.searchsorted(times, grid + 1e-9, side="right") - 1)
        np.testing.assert_array_equal(_on_screen(times, fps), expected)


CAPPED = HUB_PRELUDE + textwrap.dedent(
    """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a regression fails here instead of OOM-killing
    from hub_processing.video_io import load_video
    clip = load_video(sys.argv[1], fps=1e9)
    print("frames", len(clip), sorted(set(clip.indices.tolist())) == list(range(8)))
    print("capped", load_video(sys.argv[1], 10 ** 12, max_frames=3).indices.tolist())
    for kwargs in ({"num_frames": 10 ** 12}, {"num_frames": 10 ** 7}):
        try:
            load_video(sys.argv[1], **kwargs)
        except ValueError as err:
            print("refused:", err)
    """
)


def test_absurd_requests_refused_before_allocating(tmp_path):
    path = make_video(tmp_path / "eight.mp4", num_frames=8)
    result = subprocess.run([sys.executable, "-c", CAPPED, str(path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[:2] == ["frames 8 True", "capped [0, 3, 7]"]
    assert len(lines) == 4 and all("eight.mp4" in line and "GiB limit" in line for line in lines[2:]), lines


# ---- defect 16: invalid arguments get clear errors ---------------------------------------------------------------

INVALID = [
    (dict(num_frames=None), "num_frames must be a positive integer"),
    (dict(num_frames=2.5), "num_frames must be a positive integer.*got 2.5"),
    (dict(num_frames=0), "num_frames must be a positive integer.*got 0"),
    (dict(num_frames=True), "num_frames must be a positive integer"),
    (dict(num_frames="8"), "num_frames must be a positive integer.*got '8'"),
    (dict(max_frames=0), "max_frames must be a positive integer or None, got 0"),
    (dict(max_frames=-1), "max_frames must be a positive integer or None, got -1"),
    (dict(fps=2, max_frames=2.5), "max_frames must be a positive integer or None, got 2.5"),
    (dict(fps=0), "fps must be a positive finite number, got 0"),
    (dict(fps=float("nan")), "fps must be a positive finite number, got nan"),
    (dict(fps=float("inf")), "fps must be a positive finite number, got inf"),
    (dict(start=float("nan")), "start must be a finite number of seconds"),
    (dict(start=1.0, end=0.5), "end=0.5 is before start=1.0"),
]


@pytest.mark.parametrize("kwargs,message", INVALID, ids=[str(k) for k, _ in INVALID])
def test_invalid_arguments_raise_clear_value_errors(tmp_path, kwargs, message):
    path = make_video(tmp_path / "clip.mp4", num_frames=8)
    for source in (path, np.zeros((8, 12, 16, 3), np.uint8)):
        if "fps" in kwargs and not isinstance(source, Path):
            continue  # arrays have no clock
        with pytest.raises(ValueError, match=message) as info:
            load_video(source, **kwargs)
        assert not isinstance(info.value, VideoDecodeError)  # the request is wrong, not the file


def test_num_frames_may_be_none_with_fps(tmp_path):
    path = make_video(tmp_path / "clip.mp4", num_frames=8)
    assert len(load_video(path, None, fps=25)) == 8
