"""`videollava serve`: a real server process on 127.0.0.1 serving the embedded model, called over HTTP. Its answers on
the shipped samples equal `videollava chat`'s (recorded in samples.json, and one multi-media request checked against
the real `videollava chat` command); plain JSON and server-sent events; media as paths, `data:` URLs and loopback
`http://` URLs; a bad part is a 400 naming it, another model a 404."""

import base64
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processing.media import make_video
from tests.processing.test_video_sources import serve_directory
from videollava.loading import DEFAULT_MODEL, SAMPLES_DIR


for module in ("fastapi", "uvicorn", "openai"):
    pytest.importorskip(module, reason="videollava serve needs the serve extra (pip install -e '.[serve]')")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = json.loads((SAMPLES_DIR / "samples.json").read_text()) if (SAMPLES_DIR / "samples.json").exists() else []
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").exists() or not SAMPLES,
                                reason="no embedded default model / samples")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
NAME = "videollava/default_model"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """`videollava serve` in its own process on a free port; stopped (SIGINT, then kill) after the module."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "videollava.cli", "serve", "--port", str(port)], cwd=REPO,
                            env=ENV, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"videollava serve exited with {proc.returncode}:\n{log.read()}")
            try:
                urllib.request.urlopen(f"{base}/v1/models", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail("videollava serve did not answer within 240 s")
                time.sleep(0.5)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def http_samples() -> str:
    with serve_directory(SAMPLES_DIR) as url:
        yield url


def _post(base: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _message(*parts: tuple[str, str], question: str) -> list[dict]:
    content = [{"type": kind, kind: {"url": url}} for kind, url in parts]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def _answer(base: str, *parts: tuple[str, str], question: str, **extra) -> str:
    status, body = _post(base, {"model": NAME, "messages": _message(*parts, question=question), **extra})
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == NAME
    assert body["choices"][0]["finish_reason"] == "stop", body
    return body["choices"][0]["message"]["content"]


def _kind(file: str) -> str:
    return "video_url" if file.endswith(".mp4") else "image_url"


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


################
# Answers
################
def test_models_lists_the_served_model(server):
    with urllib.request.urlopen(f"{server}/v1/models", timeout=30) as response:
        listing = json.load(response)
    assert listing["object"] == "list" and [m["id"] for m in listing["data"]] == [NAME]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["file"] for s in SAMPLES])
def test_answers_on_shipped_samples_equal_chat(server, sample):
    """Every recorded question (image and video), the medium given as a local path."""
    path = str(SAMPLES_DIR / sample["file"])
    for qa in sample["questions"]:
        assert _answer(server, (_kind(sample["file"]), path), question=qa["question"]) == qa["model_answer"], qa


def test_streamed_video_answer(server):
    sample = next(s for s in SAMPLES if s["file"].endswith(".mp4"))
    qa = sample["questions"][0]
    body = {"model": NAME, "stream": True,
            "messages": _message(("video_url", str(SAMPLES_DIR / sample["file"])), question=qa["question"])}
    request = urllib.request.Request(f"{server}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for raw in response
                  if (line := raw.decode().strip()).startswith("data: ")]
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == NAME for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == qa["model_answer"]
    assert events[-1]["choices"][0]["finish_reason"] == "stop" and events[-1]["usage"]["completion_tokens"] >= 1
    assert len(events) >= 3  # role, at least one content delta, the finish


def test_loopback_http_and_data_urls(server, http_samples):
    for sample in SAMPLES:
        file, qa = sample["file"], sample["questions"][-1]
        mime = "video/mp4" if file.endswith(".mp4") else "image/png"
        for url in (f"{http_samples}/{file}", _data_url(SAMPLES_DIR / file, mime)):
            assert _answer(server, (_kind(file), url), question=qa["question"]) == qa["model_answer"], (file, url[:40])


def test_several_media_in_one_message_equal_chat(server, http_samples, tmp_path):
    """Two videos (one of 40 frames with an audio track: 8 frames from the config are used, no audio is decoded)
    and an image in one message, as `videollava chat --video A --video B --image C` asks them."""
    from videollava.loading import load_processor

    long_clip = make_video(tmp_path / "long.mp4", num_frames=40, size=(64, 48), audio=True)
    question = "What colour is the shape?"
    chat = subprocess.run([sys.executable, "-m", "videollava.cli", "chat", "--video", "sample:moving.mp4",
                           "--video", str(long_clip), "--image", "sample:shapes.png", question], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr
    parts = [("video_url", f"{http_samples}/moving.mp4"), ("video_url", _data_url(long_clip, "video/mp4")),
             ("image_url", str(SAMPLES_DIR / "shapes.png"))]
    status, body = _post(server, {"model": NAME, "messages": _message(*parts, question=question)})
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == chat.stdout.strip()
    _, processor = load_processor(str(DEFAULT_MODEL))
    local = [("video", str(SAMPLES_DIR / "moving.mp4")), ("video", str(long_clip)),
             ("image", str(SAMPLES_DIR / "shapes.png"))]
    content = [{"type": kind, kind: source} for kind, source in local]
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]
    expected = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert processor.num_frames == 8
    assert body["usage"]["prompt_tokens"] == len(expected["input_ids"][0])


def test_openai_client(server):
    """The official `openai` client: plain, streamed, and a 404 whose message it shows."""
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [NAME]
    sample = next(s for s in SAMPLES if s["file"].endswith(".mp4"))
    qa = sample["questions"][-1]
    messages = _message(("video_url", f"sample:{sample['file']}"), question=qa["question"])
    answer = client.chat.completions.create(model=NAME, messages=messages, temperature=0)
    assert answer.choices[0].message.content == qa["model_answer"]
    chunks = client.chat.completions.create(model=NAME, messages=messages, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == qa["model_answer"]
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="other", messages=messages)


################
# Errors
################
@pytest.mark.parametrize("part,reason", [
    (("video_url", "/nonexistent/clip.mp4"), "file not found"),
    (("video_url", "data:video/mp4;base64," + "QUJD" * 5000), "Invalid data"),
    (("video_url", "data:video/mp4;base64,not base64!"), "invalid base64"),
    (("video_url", "HTTP/missing.mp4"), "HTTP 404"),
    (("video_url", str(SAMPLES_DIR / "samples.json")), "no video stream"),
    (("image_url", "HTTP/moving.mp4"), "not an image"),
    (("image_url", ""), "give the image as"),
])
def test_bad_media_is_400_naming_the_part(server, http_samples, part, reason):
    kind, url = part[0], part[1].replace("HTTP", http_samples)
    messages = _message(("image_url", str(SAMPLES_DIR / "shapes.png")), (kind, url), question="What is it?")
    status, body = _post(server, {"model": NAME, "messages": messages})
    assert status == 400, body
    assert body["detail"].startswith(f"messages[0].content[1] ({kind})") and reason in body["detail"], body
    assert len(body["detail"]) < 400, body  # never the whole payload
    assert body["error"] == {"message": body["detail"], "type": "invalid_request_error",
                             "param": "messages[0].content[1]", "code": "invalid_request"}  # what OpenAI clients read


def test_unsupported_part_and_malformed_messages_are_400(server):
    status, body = _post(server, {"model": NAME, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]})
    assert status == 400 and body["detail"].startswith("messages[0].content[1]: content part type 'input_audio'")
    status, body = _post(server, {"model": NAME, "messages": []})
    assert status == 400 and "messages" in body["detail"]


def test_unknown_model_is_404(server):
    status, body = _post(server, {"model": "someone/other-model", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 404 and "someone/other-model" in body["detail"] and NAME in body["detail"]
    assert body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    for model in (str(DEFAULT_MODEL), None):  # the served folder's path and no `model` name the served model too
        status, body = _post(server, {"model": model, "messages": [{"role": "user", "content": "What shape is it?"}]})
        assert status == 200 and body["model"] == NAME, body


def test_cli_errors_are_one_line(tmp_path, capsys):
    from videollava.cli import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    with taken:
        for args, reason in ((["--model", str(tmp_path / "missing"), "--port", "0"], "no such folder"),
                             (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
                             (["--port", port], f"cannot listen on 127.0.0.1:{port}: Address already in use")):
            assert main(["serve", *args]) == 1
            err = capsys.readouterr().err
            assert err.startswith("error: ") and reason in err and len(err.strip().splitlines()) == 1, err


################
# The hooks into transformers' serving stack (version-pinned)
################
def test_hooks_are_pinned_to_transformers_5_23():
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.utils import BaseHandler

    from videollava.serve_app import ServeError, check_transformers_version

    check_transformers_version()
    with pytest.raises(ServeError, match="5.23"):
        check_transformers_version("5.24.0")

    def params(fn) -> list[str]:
        return list(inspect.signature(fn).parameters)[1:]

    # the private methods we override or call keep the signatures our subclasses were written against
    assert params(ModelManager._load_model) == ["model_id_and_revision", "tqdm_class", "progress_callback",
                                                "gguf_file"]
    assert params(ModelManager._load_processor) == ["model_id_and_revision", "gguf_file"]
    assert params(BaseHandler._resolve_model) == ["body"]
    assert params(ChatCompletionHandler._streaming) == ["request_id", "model", "processor", "model_id", "inputs",
                                                        "gen_config", "gen_manager", "tools"]
    assert params(ChatCompletionHandler._non_streaming) == params(ChatCompletionHandler._streaming)
