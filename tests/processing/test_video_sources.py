"""Media from `data:` and `http(s)://` URLs: the same frames / pixels as from the file, a size cap, a timeout, and
errors that name the source briefly (never the payload). HTTP sources are served by a real `http.server` on
127.0.0.1."""

import base64
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processing import LanguageBindImageProcessor, VideoDecodeError, load_video
from processing.video_sources import MediaSourceError, describe_source, fetch_bytes, fetch_source, load_image_source
from tests.processing.media import make_video


@contextlib.contextmanager
def serve_directory(root: Path, delay_s: float = 0.0) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (a free port) from a thread; yields the base URL. `/slow/NAME` waits `delay_s`."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            if self.path.startswith("/slow/"):
                time.sleep(delay_s)
                self.path = self.path[len("/slow"):]
            super().do_GET()

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # clients that give up early (timeout and size-cap tests) close the connection mid-answer

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    make_video(root / "clip.mp4", num_frames=20, size=(48, 32))
    (root / "broken.mp4").write_bytes((root / "clip.mp4").read_bytes()[:300])
    Image.fromarray(np.arange(32 * 24 * 3, dtype=np.uint8).reshape(24, 32, 3)).save(root / "pic.png")
    (root / "notes.txt").write_text("not media\n")
    return root


@pytest.fixture(scope="module")
def base_url(media) -> Iterator[str]:
    with serve_directory(media, delay_s=3.0) as url:
        yield url


def _same_clip(a, b) -> None:
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.timestamps, b.timestamps)


################
# Videos
################
def test_data_url_video_equals_the_file(media):
    _same_clip(load_video(data_url(media / "clip.mp4", "video/mp4"), 8), load_video(media / "clip.mp4", 8))


def test_http_video_equals_the_file(media, base_url):
    _same_clip(load_video(f"{base_url}/clip.mp4", 8, fps=10.0), load_video(media / "clip.mp4", 8, fps=10.0))


def test_percent_encoded_data_url():
    assert fetch_bytes("data:text/plain,a%20b") == b"a b"


@pytest.mark.parametrize("url,reason", [
    ("data:video/mp4;base64AAAA", "no ','"),
    ("data:video/mp4;base64,@@@@", "invalid base64"),
    ("data:video/mp4;base64,", "empty payload"),
])
def test_bad_data_urls_raise_video_decode_error(url, reason):
    with pytest.raises(VideoDecodeError, match=reason) as info:
        load_video(url, 8)
    assert info.value.source.startswith("'data:video/mp4")


def test_undecodable_payload_names_the_data_url_not_the_payload(media):
    url = data_url(media / "broken.mp4", "video/mp4")
    with pytest.raises(VideoDecodeError) as info:
        load_video(url, 8)
    message = str(info.value)
    assert "data:video/mp4;base64 (300 B)" in message
    assert url[30:60] not in message and len(message) < 300, message


def test_size_cap(media, base_url, monkeypatch):
    monkeypatch.setenv("VIDEOLLAVA_MAX_MEDIA_BYTES", "1000")
    with pytest.raises(VideoDecodeError, match="over the 1.0 kB cap"):
        load_video(data_url(media / "clip.mp4", "video/mp4"), 8)
    with pytest.raises(VideoDecodeError, match="over the 1.0 kB cap"):
        load_video(f"{base_url}/clip.mp4", 8)
    assert len(load_video(media / "clip.mp4", 8)) == 8  # the cap is on URLs, not on local files


def test_http_errors_name_the_url(base_url):
    with pytest.raises(VideoDecodeError, match=r"HTTP 404") as info:
        load_video(f"{base_url}/missing.mp4", 8)
    assert f"{base_url}/missing.mp4" in str(info.value)
    with pytest.raises(VideoDecodeError, match="cannot connect"):
        load_video("http://127.0.0.1:9/clip.mp4", 8)  # the discard port: nothing listens
    with pytest.raises(VideoDecodeError, match="no video stream|Invalid data|InvalidData"):
        load_video(f"{base_url}/notes.txt", 8)


def test_timeout(base_url, monkeypatch):
    monkeypatch.setenv("VIDEOLLAVA_MEDIA_TIMEOUT", "0.5")
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match="no answer within 0.5 s"):
        load_video(f"{base_url}/slow/clip.mp4", 8)
    assert time.monotonic() - start < 2.5


def test_other_sources_pass_through_unchanged(media):
    path = media / "clip.mp4"
    for source in (path, str(path), b"bytes", np.zeros((2, 4, 4, 3), np.uint8)):
        assert fetch_source(source) is source
    buffer = fetch_source("data:video/mp4;base64,AAAA")
    assert buffer.read() == b"\0\0\0" and buffer.name == "data:video/mp4;base64 (3 B)"


def test_describe_source_is_short():
    payload = "A" * 100_000
    assert describe_source("data:video/mp4;base64," + payload) == "data:video/mp4;base64 (75.0 kB)"
    assert len(describe_source("http://example.com/" + payload)) < 130
    assert describe_source(Path("/a/b.mp4")) == "/a/b.mp4"


################
# Images
################
def test_images_from_urls_equal_the_file(media, base_url):
    expected = np.asarray(Image.open(media / "pic.png").convert("RGB"))
    for source in (media / "pic.png", data_url(media / "pic.png", "image/png"), f"{base_url}/pic.png"):
        np.testing.assert_array_equal(np.asarray(load_image_source(source).convert("RGB")), expected)


def test_image_processor_reads_urls(media, base_url):
    processor = LanguageBindImageProcessor()
    pixels = [processor(images=s, return_tensors="pt")["pixel_values"]
              for s in (str(media / "pic.png"), data_url(media / "pic.png", "image/png"), f"{base_url}/pic.png")]
    assert pixels[0].shape == (1, 3, 224, 224)
    for other in pixels[1:]:
        np.testing.assert_array_equal(other.numpy(), pixels[0].numpy())


@pytest.mark.parametrize("name,reason", [("notes.txt", "not an image"), ("missing.png", "file not found")])
def test_bad_images_name_the_source(media, name, reason):
    with pytest.raises(MediaSourceError, match=reason) as info:
        load_image_source(media / name)
    assert str(media / name) in str(info.value)
    url = data_url(media / "notes.txt", "image/png")
    with pytest.raises(MediaSourceError, match="not an image") as info:
        load_image_source(url)
    assert "data:image/png;base64 (" in str(info.value) and len(str(info.value)) < 200


def test_hub_folders_ship_video_sources(tmp_path):
    """`video_io` and the image processor import it, so a saved processor folder must carry it, unchanged."""
    import processing
    from processing import build_processor
    from tests.tiny import tiny_config, tiny_tokenizer

    build_processor(tiny_config(), tiny_tokenizer()).save_pretrained(tmp_path)
    source = Path(processing.__file__).parent / "video_sources.py"
    assert (tmp_path / "video_sources.py").read_bytes() == source.read_bytes()
