"""`videollava.media`: media as paths, `data:` URLs and loopback `http://` URLs share one content key (the hash of the
bytes) and decode to the same frames; bad URLs are one short line; a medium whose features are cached is not decoded
until it is needed; `videollava chat` takes URLs and answers as for the file."""

import base64
import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from tests.processing.media import make_video
from tests.processing.test_video_sources import serve_directory
from videollava.cli import main
from videollava.loading import DEFAULT_MODEL, SAMPLES_DIR, load_model, load_processor
from videollava.media import MediaCache, MediaError, load_medium


pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").exists(), reason="no embedded default model")
SAMPLES = json.loads((SAMPLES_DIR / "samples.json").read_text())


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def processor():
    return load_processor(str(DEFAULT_MODEL))[1]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_video(root / "clip.mp4", num_frames=20, size=(64, 48))
    shutil.copy(SAMPLES_DIR / "shapes.png", root / "shapes.png")
    return root


@pytest.fixture(scope="module")
def http(media_dir):
    with serve_directory(media_dir) as url:
        yield url


def _sources(media_dir: Path, http: str, name: str, mime: str) -> list[str]:
    return [str(media_dir / name), _data_url(media_dir / name, mime), f"{http}/{name}"]


@pytest.mark.parametrize("kind,name,mime", [("video", "clip.mp4", "video/mp4"), ("image", "shapes.png", "image/png")])
def test_path_data_and_http_sources_share_one_key_and_content(processor, media_dir, http, kind, name, mime):
    media = [load_medium(processor, kind, source) for source in _sources(media_dir, http, name, mime)]
    assert len({m.key for m in media}) == 1 and media[0].key.startswith(f"{kind}:")
    pixels = [np.asarray(m.data.frames if kind == "video" else m.data) for m in media]
    assert all(np.array_equal(pixels[0], p) for p in pixels[1:])
    if kind == "video":
        assert [m.frames for m in media] == [processor.num_frames] * 3
    assert media[1].source.startswith(f"data:{mime};base64 (") and len(media[1].source) < 60  # never the payload
    other = make_video(media_dir / "other.mp4", num_frames=20, size=(48, 64)) if kind == "video" else None
    if other is not None:
        assert load_medium(processor, "video", f"{http}/other.mp4").key != media[0].key


@pytest.mark.parametrize("source,reason", [
    ("data:video/mp4;base64,not base64!", "invalid base64"),
    ("data:video/mp4;base64," + "QUJD" * 20000, "Invalid data"),
    ("HTTP/missing.mp4", "HTTP 404"),
    ("http://127.0.0.1:9/clip.mp4", "cannot connect"),
])
def test_bad_urls_are_one_short_line(processor, http, source, reason):
    with pytest.raises(MediaError) as info:
        load_medium(processor, "video", source.replace("HTTP", http))
    message = str(info.value)
    assert message.startswith("cannot read video ") and reason in message and info.value.reason in message
    assert "\n" not in message and len(message) < 300, message


def test_a_cached_medium_is_decoded_only_when_needed(processor, media_dir, http):
    eager = load_medium(processor, "video", str(media_dir / "clip.mp4"))
    cache = MediaCache()
    cache.put(eager.key, torch.zeros(2, 3))
    with mock.patch.object(type(processor), "load_video", autospec=True,
                           side_effect=type(processor).load_video) as decode:
        lazy = [load_medium(processor, "video", s, cache=cache)
                for s in _sources(media_dir, http, "clip.mp4", "video/mp4")]
        assert decode.call_count == 0
        assert all(m.data is None and m.key == eager.key and m.frames == eager.frames for m in lazy)
        for medium in lazy:  # evicted before use: decoded then, to the same frames
            assert np.array_equal(medium.decoded().frames, eager.data.frames)
        assert decode.call_count == 3
    changed = media_dir / "changing.mp4"
    shutil.copy(media_dir / "clip.mp4", changed)
    medium = load_medium(processor, "video", str(changed), cache=cache)
    assert medium.data is None
    make_video(changed, num_frames=10, size=(32, 32))
    with pytest.raises(MediaError, match="changed or vanished since it was first read"):
        medium.decoded()


def test_engine_encodes_the_same_bytes_once_whatever_the_source(media_dir, http):
    """Two conversations about one clip (a path, then its loopback URL and a data: URL): one tower call, equal
    answers."""
    from videollava.chat import log_tower_calls
    from videollava.engine import Engine, GenerationSettings

    config, processor = load_processor(str(DEFAULT_MODEL))
    model = load_model(str(DEFAULT_MODEL), config, "cpu")
    calls = log_tower_calls(model)
    engine = Engine(model, processor, settings=GenerationSettings(max_new_tokens=8))
    answers = [engine.conversation().answer("Which way does the shape move?", [engine.load("video", source)])
               for source in _sources(media_dir, http, "clip.mp4", "video/mp4")]
    assert len(set(answers)) == 1 and calls == {"image": 0, "video": 1}
    assert engine.media_cache.stats()["hits"] == 2


def test_chat_cli_answers_about_urls_as_about_files(capfd):
    sample = next(s for s in SAMPLES if s["file"] == "moving.mp4")
    qa = sample["questions"][0]
    with serve_directory(SAMPLES_DIR) as url:
        for source in (f"{url}/moving.mp4", _data_url(SAMPLES_DIR / "moving.mp4", "video/mp4")):
            assert main(["chat", "--video", source, qa["question"]]) == 0
            assert capfd.readouterr().out.strip() == qa["model_answer"]
        assert main(["chat", "--image", f"{url}/missing.png", "What is it?"]) == 1
        err = capfd.readouterr().err
    assert err.startswith(f"error: cannot read image {url}/missing.png: HTTP 404") and len(err.splitlines()) == 1
