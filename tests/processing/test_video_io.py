"""load_video: LanguageBind sampling, seeking == transformers' documented recipe on unusual files, inputs, errors,
fuzzing."""

import io
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processing import VideoDecodeError, load_video, sample_indices
from processing import video_decode
from tests.processing.media import HUB_PRELUDE, count_frames, make_audio_only, make_video, pattern, recipe_frames, trim_edit_list


REPO = Path(__file__).resolve().parents[2]

CASES = {
    "h264_long_gop.mp4": dict(codec="libx264", num_frames=60, gop=250),
    "h264_short_gop.mp4": dict(codec="libx264", num_frames=45, gop=7),
    "vp9.webm": dict(codec="libvpx-vp9", num_frames=30, gop=10),
    "mpeg4.avi": dict(codec="mpeg4", num_frames=30, gop=12),
    "vfr.mkv": dict(codec="libx264", num_frames=30, gop=8, vfr=True),
    "odd_size.mp4": dict(codec="libx264", num_frames=20, gop=6, size=(63, 47), pix_fmt="yuv444p"),
    "rotated.mp4": dict(codec="libx264", num_frames=20, gop=6, rotation=90),
    "with_audio.mp4": dict(codec="libx264", num_frames=20, gop=6, audio=True),
    "h264_bframes.mp4": dict(codec="libx264", num_frames=60, gop=25, b_frames=True),  # b-pyramid: some B are refs
    "h264_bframes_faststart.mp4": dict(codec="libx264", num_frames=30, gop=250, b_frames=True, faststart=True),
    "hevc.mp4": dict(codec="libx265", num_frames=30, gop=10),
    "mpeg2_bframes.ts": dict(codec="mpeg2video", num_frames=30, gop=12, b_frames=True),
    "mpeg4_bframes.mp4": dict(codec="mpeg4", num_frames=30, gop=12, b_frames=True),
    "edit_list_trimmed.mp4": dict(codec="libx264", num_frames=40, gop=10, b_frames=True),  # 60 % shown, see below
}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files = {name: make_video(root / name, **kwargs) for name, kwargs in CASES.items()}
    trim_edit_list(files["edit_list_trimmed.mp4"], keep=0.6)
    return files


def test_sample_indices_is_languagebind_linspace():
    assert sample_indices(100, 8).tolist() == [0, 14, 28, 42, 56, 70, 84, 99]
    assert sample_indices(8, 8).tolist() == list(range(8))
    assert sample_indices(3, 8).tolist() == [0, 0, 0, 0, 1, 1, 1, 2]  # floor of linspace(0, 2, 8)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("num_frames", [8, 3])
def test_seeking_matches_documented_recipe(media, name, num_frames, caplog):
    total = count_frames(media[name])
    with caplog.at_level(logging.INFO, logger=video_decode.__name__):
        clip = load_video(media[name], num_frames)
    assert "decoding every frame" not in caplog.text  # the seeking path, not the fallback
    assert clip.indices.tolist() == sample_indices(total, num_frames).tolist()
    reference = recipe_frames(media[name], clip.indices)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == reference.shape
    np.testing.assert_array_equal(clip.frames, reference)
    assert clip.num_source_frames == total and not clip.repeated
    assert clip.timestamps[0] == 0 and np.all(np.diff(clip.timestamps) > 0)


def test_edit_list_shows_only_the_edit(media):
    clip = load_video(media["edit_list_trimmed.mp4"], 40)  # 40 frames stored, the edit shows 24
    assert clip.num_source_frames == 24 == count_frames(media["edit_list_trimmed.mp4"]) and clip.repeated


@pytest.mark.parametrize("workers", [1, 3])
def test_gop_parallel_decoding_matches_recipe(media, monkeypatch, workers):
    monkeypatch.setattr(video_decode, "DECODE_WORKERS", workers)
    for name in ("h264_short_gop.mp4", "h264_bframes.mp4", "mpeg2_bframes.ts", "vp9.webm"):
        for source in (media[name], media[name].read_bytes(), io.BytesIO(media[name].read_bytes())):
            clip = load_video(source, 8)
            np.testing.assert_array_equal(clip.frames, recipe_frames(media[name], clip.indices))


@pytest.mark.parametrize("name", ["vp9.webm", "h264_bframes.mp4", "mpeg2_bframes.ts"])
def test_counted_fallback_matches_recipe(media, monkeypatch, name):
    monkeypatch.setattr(video_decode, "scan", lambda container, stream, source: None)
    clip = load_video(media[name], 8)
    np.testing.assert_array_equal(clip.frames, recipe_frames(media[name], clip.indices))


def test_rotation_is_honoured(media):
    clip = load_video(media["rotated.mp4"], 2)
    assert clip.frames.shape[1:] == (64, 48, 3)  # stored 64x48 (W x H), displayed rotated by 90 degrees
    stored = load_video(media["odd_size.mp4"], 2).frames.shape[1:]
    assert stored == (47, 63, 3)


def test_vfr_uses_real_timestamps(media):
    clip = load_video(media["vfr.mkv"], 30)
    steps = np.round(np.diff(clip.timestamps), 3)
    assert set(steps.tolist()) == {0.02, 0.09}  # the irregular spacing written by make_video
    by_time = load_video(media["vfr.mkv"], fps=10)
    times = np.round(clip.timestamps, 3)
    for index, t in zip(by_time.indices, np.arange(len(by_time)) / 10):
        assert times[index] <= t + 1e-6 and (index + 1 == len(times) or times[index + 1] > t + 1e-6)


def test_fps_start_end_max_frames(media):
    path = media["h264_long_gop.mp4"]  # 60 frames at 25 fps: 0 .. 2.36 s
    assert load_video(path, fps=5).indices.tolist() == list(range(0, 60, 5))
    window = load_video(path, 4, start=1.0, end=2.0)
    assert window.indices.tolist() == [25, 33, 41, 50] and window.num_source_frames == 26
    assert len(load_video(path, fps=25, max_frames=6)) == 6


def test_short_video_repeats_frames(media):
    path = media["odd_size.mp4"]  # 20 frames
    clip = load_video(path, 32)
    assert clip.repeated and len(clip) == 32 and clip.frames.max() > 0
    np.testing.assert_array_equal(clip.frames, recipe_frames(path, clip.indices))


def test_bytes_file_object_and_arrays(media):
    path = media["h264_short_gop.mp4"]
    expected = load_video(path, 4).frames
    np.testing.assert_array_equal(load_video(path.read_bytes(), 4).frames, expected)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(load_video(handle, 4).frames, expected)
    np.testing.assert_array_equal(load_video(io.BytesIO(path.read_bytes()), 4).frames, expected)
    array = np.stack([pattern(i, 12, 16) for i in range(10)])
    clip = load_video(array, 4)
    assert clip.indices.tolist() == [0, 3, 6, 9] and np.isnan(clip.timestamps).all()
    np.testing.assert_array_equal(clip.frames, array[[0, 3, 6, 9]])
    gray = load_video(array[..., 0], 2).frames
    assert gray.shape == (2, 12, 16, 3)
    pil = load_video([Image.fromarray(f) for f in array], 4).frames
    np.testing.assert_array_equal(pil, array[[0, 3, 6, 9]])


def test_errors_name_source_and_reason(tmp_path, media):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(media["h264_long_gop.mp4"].read_bytes()[:300])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    audio = make_audio_only(tmp_path / "audio.m4a")
    zero = tmp_path / "zero.mp4"
    make_video(zero, num_frames=0)
    cases = {
        tmp_path / "missing.mp4": "not found",
        empty: "empty",
        truncated: "",
        garbage: "",
        audio: "no video stream",
        zero: "",
    }
    for source, reason in cases.items():
        with pytest.raises(VideoDecodeError, match=reason or None) as info:
            load_video(source)
        assert source.name in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(VideoDecodeError, match="zero frames"):
        load_video([])


FUZZ = HUB_PRELUDE + textwrap.dedent(
    """
    import numpy as np
    from hub_processing.video_io import VideoDecodeError, load_video
    rng = np.random.default_rng(0)
    variants = []
    for path in sys.argv[1:]:
        data = open(path, "rb").read()
        variants += [data[:n] for n in (0, 8, 64, 500, len(data) // 3, len(data) // 2, len(data) - 10)]
        for _ in range(24):
            buf = bytearray(data)
            for pos in rng.integers(0, len(buf), int(rng.integers(1, 40))):
                buf[pos] = int(rng.integers(0, 256))
            variants.append(bytes(buf))
    for i, variant in enumerate(variants):
        try:
            clip = load_video(variant, 4)
            assert clip.frames.shape[0] == 4
        except VideoDecodeError:
            pass
    print("survived", len(variants))
    """
)


def test_fuzz_corrupted_bytes_never_hangs_or_crashes(media):
    """In a subprocess, so that a crash of the interpreter fails the test instead of killing the session."""
    start = time.monotonic()
    files = [str(media[name]) for name in ("h264_short_gop.mp4", "vp9.webm", "mpeg4.avi")]
    result = subprocess.run([sys.executable, "-c", FUZZ, *files], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "survived 93" in result.stdout
    assert time.monotonic() - start < 60
