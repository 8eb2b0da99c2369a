"""`videollava serve`: a real server process on 127.0.0.1 serving the embedded model, called over HTTP. Its answers on
the shipped samples equal `videollava chat`'s (recorded in samples.json, and one multi-media request checked against
the real `videollava chat` command); plain JSON and server-sent events; media as paths, `data:` URLs and loopback
`http://` URLs; a bad part is a 400 naming it, another model a 404."""

import base64
import contextlib
import importlib.util
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
from collections.abc import Iterator
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


@contextlib.contextmanager
def _servers(flag_sets: list[list[str]], log_dir: Path) -> Iterator[list[str]]:
    """`videollava serve FLAGS` in their own processes on free ports, started together; stopped (SIGINT, then kill)
    on exit. Yields the base URLs once each answers `/v1/models`."""
    procs, logs, bases = [], [], []
    try:
        for i, flags in enumerate(flag_sets):
            port = _free_port()
            logs.append((log_dir / f"serve{i}.log").open("w+"))
            procs.append(subprocess.Popen([sys.executable, "-m", "videollava.cli", "serve", "--port", str(port),
                                           *flags], cwd=REPO, env=ENV, stdout=logs[-1], stderr=subprocess.STDOUT,
                                          text=True))
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 240
        for proc, log, base in zip(procs, logs, bases):
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
        yield bases
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


QUANTIZED = {4: ["--load-4bit"], 8: ["--load-8bit", "--media-cache-mb", "0"]}


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> dict:
    """The servers of this module, started together (start-up is mostly imports): the embedded model with default
    flags (key None) and, when bitsandbytes is installed, 4-bit and 8-bit ones (keys 4, 8)."""
    flags = {None: [], **(QUANTIZED if importlib.util.find_spec("bitsandbytes") else {})}
    with _servers(list(flags.values()), tmp_path_factory.mktemp("serve")) as bases:
        yield dict(zip(flags, bases))


@pytest.fixture(scope="module")
def server(servers) -> str:
    return servers[None]


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


def _stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/videollava/stats", timeout=30) as response:
        return json.load(response)


def _streamed_text(base: str, messages: list[dict], **extra) -> str:
    body = {"model": NAME, "stream": True, "messages": messages, **extra}
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        events = [json.loads(line[len("data: "):]) for raw in response
                  if (line := raw.decode().strip()).startswith("data: ")]
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length"), events[-1]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events)


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


def test_several_media_in_one_message_equal_chat_and_are_encoded_once(server, http_samples, tmp_path):
    """Two videos (one of 40 frames with an audio track: 8 frames from the config are used, no audio is decoded)
    and an image in one message, as `videollava chat --video A --video B --image C` asks them. Asked again with each
    medium from another source (same bytes), plain and streamed: no tower call, the cache hit, the same answer."""
    from videollava.loading import load_processor

    long_clip = make_video(tmp_path / "long.mp4", num_frames=40, size=(64, 48), audio=True)
    question = "What colour is the shape?"
    chat = subprocess.run([sys.executable, "-m", "videollava.cli", "chat", "--video", "sample:moving.mp4",
                           "--video", str(long_clip), "--image", "sample:shapes.png", question], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr
    before = _stats(server)
    parts = [("video_url", f"{http_samples}/moving.mp4"), ("video_url", _data_url(long_clip, "video/mp4")),
             ("image_url", str(SAMPLES_DIR / "shapes.png"))]
    status, body = _post(server, {"model": NAME, "messages": _message(*parts, question=question)})
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == chat.stdout.strip()
    first = _stats(server)
    assert 1 <= first["tower_calls"]["video"] - before["tower_calls"]["video"] <= 2  # the new clip at least
    with serve_directory(tmp_path) as http_tmp:
        again = [("video_url", str(SAMPLES_DIR / "moving.mp4")), ("video_url", f"{http_tmp}/long.mp4"),
                 ("image_url", _data_url(SAMPLES_DIR / "shapes.png", "image/png"))]
        status, repeat = _post(server, {"model": NAME, "messages": _message(*again, question=question)})
        assert status == 200 and repeat["choices"][0]["message"]["content"] == chat.stdout.strip(), repeat
        assert _streamed_text(server, _message(*again, question=question)) == chat.stdout.strip()
    second = _stats(server)
    assert second["tower_calls"] == first["tower_calls"]
    assert second["media_cache"]["hits"] - first["media_cache"]["hits"] == 6
    assert second["media_cache"]["misses"] == first["media_cache"]["misses"]
    _, processor = load_processor(str(DEFAULT_MODEL))
    local = [("video", str(SAMPLES_DIR / "moving.mp4")), ("video", str(long_clip)),
             ("image", str(SAMPLES_DIR / "shapes.png"))]
    content = [{"type": kind, kind: source} for kind, source in local]
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]
    expected = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert processor.num_frames == 8
    assert body["usage"]["prompt_tokens"] == repeat["usage"]["prompt_tokens"] == len(expected["input_ids"][0])


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
# 4-bit / 8-bit serving, the media cache bound
################
# recorded on CPU (bitsandbytes 0.50.2), as in tests/videollava/test_loading.py: answers equal to full precision
MIN_AGREEMENT = {8: 17, 4: 14}


@pytest.mark.parametrize("bits", sorted(QUANTIZED))
def test_quantized_serving_answers_like_full_precision(servers, bits):
    """`--load-4bit` / `--load-8bit` over HTTP: only the LLM's linear layers are bitsandbytes layers, the answers to
    the 17 sample questions agree with full precision as in-process quantized loading does."""
    pytest.importorskip("bitsandbytes", reason="needs the [quant] extra (CI installs it)")
    base = servers[bits]
    stats = _stats(base)
    quantized = stats["quantized_layers"]
    assert quantized["language_model"] > 0 and quantized["language_model"] % 7 == 0, quantized  # q k v o gate up down
    assert quantized["image_tower"] == quantized["video_tower"] == quantized["projector"] == 0, quantized
    answers, expected = [], []
    for sample in SAMPLES:
        for qa in sample["questions"]:
            status, body = _post(base, {"model": NAME, "max_tokens": 8, "messages": _message(
                (_kind(sample["file"]), f"sample:{sample['file']}"), question=qa["question"])})
            assert status == 200, body
            answers.append(body["choices"][0]["message"]["content"])
            expected.append(qa["model_answer"])
    agree = sum(a == b for a, b in zip(answers, expected))
    assert agree >= MIN_AGREEMENT[bits], (agree, answers, expected)
    videos = sum(s["file"].endswith(".mp4") for s in SAMPLES)
    calls = _stats(base)["tower_calls"]["video"] - stats["tower_calls"]["video"]
    asked = sum(len(s["questions"]) for s in SAMPLES if s["file"].endswith(".mp4"))
    # --media-cache-mb 0 (the 8-bit server) encodes every video of every request; the default LRU each video once
    assert calls == (asked if bits == 8 else videos), calls


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
    status, body = _post(server, {"model": NAME, "messages": [{"role": "user", "content": "<video> what is it?"}]})
    assert status == 400 and body["detail"].startswith("messages: ") and "<video> placeholder without a video" in \
        body["detail"], body


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
                             (["--media-cache-mb", "-1"], "--media-cache-mb must be >= 0"),
                             (["--load-4bit", "--load-8bit"], "--load-4bit and --load-8bit exclude each other"),
                             (["--device", "cuda:7"], "--device cuda:7: "),
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
    from transformers.cli.serving.utils import BaseHandler, GenerateManager

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
    # the prefill runs on the model's inference thread; `generate(**inputs)` takes its KV cache from `inputs`
    assert params(GenerateManager.async_submit) == ["fn", "args", "kwargs"]
    assert "**inputs" in inspect.getsource(GenerateManager.generate_streaming)
    assert "**inputs" in inspect.getsource(GenerateManager.generate_non_streaming)
