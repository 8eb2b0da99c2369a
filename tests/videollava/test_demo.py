"""`videollava demo`: the real command serves on 127.0.0.1; `gradio_client` gets the same answers as `videollava chat`
(one-shot and multi-turn), bad files answer with one warning and the session goes on, and a real headless Chromium
uploads moving.mp4, asks, finds the answer on the page and saves a screenshot."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from videollava.demo import WARNING, history_turns
from videollava.loading import DEFAULT_MODEL, SAMPLES_DIR

pytest.importorskip("gradio", reason="needs the [demo] extra (CI installs it)")
REPO = Path(__file__).resolve().parents[2]
SAMPLES = json.loads((SAMPLES_DIR / "samples.json").read_text())
MOVING = str(SAMPLES_DIR / "moving.mp4")
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    """`videollava demo` on the embedded default model, in its own process; stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "videollava.cli", "demo", "--port", str(port)], cwd=REPO,
                                env=ENV, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"the demo did not start:\n{log.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _chat_cli(*args: str, stdin: str | None = None) -> list[str]:
    """What `videollava chat ARGS` prints (in this process, to save a Python start-up per call)."""
    import contextlib
    import io

    from videollava.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), mock.patch("sys.stdin", io.StringIO(stdin or "")):
        assert main(["chat", *args]) == 0
    return [line.removeprefix("ASSISTANT: ") for line in out.getvalue().strip().splitlines()]


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)  # one client = one browser session (its own chat history)


def test_gradio_client_answers_the_samples_like_videollava_chat(demo_url):
    from gradio_client import handle_file

    for sample in SAMPLES:
        flag = "--video" if sample["file"].endswith(".mp4") else "--image"
        question = sample["questions"][0]["question"]
        expected = _chat_cli(flag, f"sample:{sample['file']}", question)
        files = [handle_file(str(SAMPLES_DIR / sample["file"]))]
        answer = _client(demo_url).predict({"text": question, "files": files}, api_name="/chat")
        assert [answer] == expected, (sample["file"], question)


def test_multi_turn_and_time_to_first_token(demo_url):
    from gradio_client import handle_file

    questions = ["Which way does the shape move?", "What colour is the shape?"]
    expected = _chat_cli("--video", "sample:moving.mp4", stdin="\n".join(questions) + "\n")
    client = _client(demo_url)
    start = time.perf_counter()
    job = client.submit({"text": questions[0], "files": [handle_file(MOVING)]}, api_name="/chat")
    first = next(iter(job))  # the first streamed update
    first_token_s = time.perf_counter() - start
    answers = [job.result(), client.predict({"text": questions[1], "files": []}, api_name="/chat")]
    assert first and answers == expected
    print(json.dumps({"demo_time_to_first_token_s": round(first_token_s, 3)}))


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_bad_files_answer_with_a_warning_and_the_session_goes_on(demo_url, tmp_path):
    from gradio_client import handle_file

    (tmp_path / "corrupt.mp4").write_bytes(b"\x00not a video" * 64)
    (tmp_path / "notes.txt").write_text("hello")
    bad = {"corrupt.mp4": "cannot read video", "audio_only.mp4": "cannot read video", "notes.txt": "not an image"}
    _audio_only(tmp_path / "audio_only.mp4")
    client = _client(demo_url)
    for name, needle in bad.items():
        answer = client.predict({"text": "What is it?", "files": [handle_file(str(tmp_path / name))]},
                                api_name="/chat")
        assert answer.startswith(WARNING) and needle in answer and name in answer and "\n" not in answer, answer
    question = "Which way does the shape move?"
    answer = client.predict({"text": question, "files": [handle_file(MOVING)]}, api_name="/chat")
    assert [answer] == _chat_cli("--video", "sample:moving.mp4", question)


def test_history_turns_reads_gradio_messages_and_skips_warnings():
    history = [{"role": "user", "content": [{"path": "/a.mp4"}, "q1"]}, {"role": "assistant", "content": "a1"},
               {"role": "user", "content": {"path": "/bad.txt"}}, {"role": "user", "content": "q2"},
               {"role": "assistant", "content": WARNING + "cannot use bad.txt"},
               {"role": "user", "content": [{"type": "text", "text": "q3"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "a3"}]}]
    assert history_turns(history) == [("q1", ["/a.mp4"], "a1"), ("q3", [], "a3")]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (CI installs it with apt-get)")
def test_headless_chromium_uploads_a_video_and_reads_the_answer(demo_url, tmp_path):
    from playwright.sync_api import sync_playwright

    sample = next(s for s in SAMPLES if s["file"] == "moving.mp4")
    question = "Which way does the shape move?"
    expected = next(q["model_answer"] for q in sample["questions"] if q["question"] == question)
    follow_up = next(q for q in sample["questions"] if q["question"] == "What colour is the shape?")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(demo_url, wait_until="domcontentloaded")
            page.wait_for_selector("textarea", timeout=120_000)
            page.locator("input[type=file]").first.set_input_files(MOVING)
            page.wait_for_selector("video, [data-testid=file-preview], .thumbnail-item", timeout=60_000)
            page.locator("textarea").first.fill("Which way does the shape move?")
            page.keyboard.press("Enter")
            bot = page.locator("[data-testid=bot]")
            bot.first.wait_for(timeout=120_000)
            page.wait_for_function("n => document.querySelectorAll('[data-testid=bot]').length >= n && "
                                   "!document.querySelector('.generating, .pending')", arg=1, timeout=120_000)
            assert bot.last.inner_text().strip() == expected
            page.locator("textarea").first.fill(follow_up["question"])  # a follow-up about the same video
            page.keyboard.press("Enter")
            page.wait_for_function("n => document.querySelectorAll('[data-testid=bot]').length >= n", arg=2,
                                   timeout=120_000)
            page.wait_for_function("() => !document.querySelector('.generating, .pending')", timeout=120_000)
            assert bot.last.inner_text().strip() == follow_up["model_answer"]
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("VIDEOLLAVA_DEMO_SCREENSHOT"):  # how docs/demo.png was made
        shutil.copy(shot, os.environ["VIDEOLLAVA_DEMO_SCREENSHOT"])


def test_demo_cli_errors_are_one_line(capfd):
    from videollava.cli import main

    assert main(["demo", "--load-4bit", "--load-8bit"]) == 1
    assert capfd.readouterr().err.strip().splitlines() == [
        "error: --load-4bit and --load-8bit exclude each other; pick one"]
    assert DEFAULT_MODEL.is_dir()
