"""`videollava chat`: the shipped model answers a shipped sample, multi-turn sessions over a pseudo-terminal encode the
media once, KV-cache reuse matches recomputing, and every user error is one line with a non-zero exit."""

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from processing import build_processor
from tests.processing.media import make_video
from tests.tiny import tiny_config, tiny_tokenizer
from videollava import chat
from videollava.cli import main


REPO = Path(__file__).resolve().parents[2]
SAMPLES = json.loads((chat.SAMPLES_DIR / "samples.json").read_text()) if (chat.SAMPLES_DIR / "samples.json").exists() \
    else []
needs_default = pytest.mark.skipif(
    not (chat.DEFAULT_MODEL / "config.json").exists() or not SAMPLES, reason="no embedded default model / samples"
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A random tiny Video-LLaVA saved the way users get models: weights, config, processor, chat template."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_model")
    config = tiny_config(num_frames=2)
    LanguageBindVideoLlavaForConditionalGeneration(config).save_pretrained(path)
    build_processor(config, tiny_tokenizer()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", num_frames=12, size=(40, 32))


def _cli(*args: str, stdin: str | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videollava.cli", *args], cwd=REPO, input=stdin, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


################
# The embedded default model
################
def _answered(sample: dict) -> list[dict]:
    """The sample's questions that the model answered correctly when it was trained (recorded in samples.json)."""
    return [qa for qa in sample["questions"] if qa["model_answer"] == qa["answer"]]


@needs_default
def test_default_model_answers_a_shipped_sample():
    sample = next(s for s in SAMPLES if s["file"].endswith(".mp4") and _answered(s))
    qa = _answered(sample)[0]
    result = _cli("chat", "--video", f"sample:{sample['file']}", qa["question"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == qa["answer"], (qa, result.stdout)
    assert result.stderr == ""


@needs_default
def test_list_samples(capsys):
    assert main(["chat", "--list-samples"]) == 0
    listing = capsys.readouterr().out
    for sample in SAMPLES:
        assert f"sample:{sample['file']}" in listing


@needs_default
def test_default_model_is_small_and_documented():
    files = {p.name: p.stat().st_size for p in chat.DEFAULT_MODEL.iterdir()}
    assert files["model.safetensors"] < 8 * 2**20
    for name in ("config.json", "processor_config.json", "chat_template.jinja", "tokenizer.json", "README.md"):
        assert name in files, name
    card = (chat.DEFAULT_MODEL / "README.md").read_text()
    assert re.search(r"static\D+\d", card) and re.search(r"temporal\D+\d", card)
    assert not (chat.DEFAULT_MODEL / "__init__.py").exists()  # not a Python package: `find:` must skip it


################
# Multi-turn sessions
################
def _read_until(fd: int, pattern: str, buffer: list[str], timeout: float = 180) -> str:
    """Read the pty until the accumulated output contains `pattern` (regex) at least once more than before."""
    deadline = time.monotonic() + timeout
    seen = len(re.findall(pattern, "".join(buffer)))
    while len(re.findall(pattern, "".join(buffer))) <= seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {pattern!r}; output so far:\n{''.join(buffer)}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096).decode(errors="replace")
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            buffer.append(chunk)
    return "".join(buffer)


def _pty_session(args: list[str], questions: list[str]) -> tuple[str, int]:
    """Run `videollava -v chat ARGS` on a pseudo-terminal, ask `questions` one by one, then `exit`."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the terminal is its stdin, stdout and stderr
        os.chdir(REPO)
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "videollava.cli", "-v", "chat", *args])
    buffer: list[str] = []
    try:
        for question in questions:
            _read_until(fd, r"USER: ", buffer)
            os.write(fd, (question + "\n").encode())
        _read_until(fd, r"USER: ", buffer)
        os.write(fd, b"exit\n")
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        os.close(fd)
    return "".join(buffer).replace("\r\n", "\n"), os.waitstatus_to_exitcode(status)


def test_interactive_two_turns_over_a_pty_encode_the_video_once(tiny_dir, clip):
    output, code = _pty_session(["--model", str(tiny_dir), "--video", str(clip), "--max-new-tokens", "3"],
                                ["what is in this video ?", "what colour ?"])
    assert code == 0, output
    assert output.count("ASSISTANT: ") == 2, output
    assert len(re.findall(r"video tower: encoded", output)) == 1, output
    turns = re.findall(r"turn (\d): (\d+) prompt tokens, (\d+) prefilled", output)
    assert [t[0] for t in turns] == ["1", "2"], output
    (_, prompt_1, prefilled_1), (_, prompt_2, prefilled_2) = turns
    assert prefilled_1 == prompt_1 and int(prefilled_2) < int(prompt_2) - int(prompt_1) + 8, output
    assert "Traceback" not in output


@needs_default
def test_interactive_default_model_over_a_pty():
    sample = next(s for s in SAMPLES if s["file"].endswith(".mp4") and _answered(s))
    first = _answered(sample)[0]
    second = next(qa for qa in sample["questions"] if qa is not first)
    output, code = _pty_session(["--video", f"sample:{sample['file']}"], [first["question"], second["question"]])
    assert code == 0, output
    answers = re.findall(r"ASSISTANT: (.*)\n", output)
    assert answers[0].strip() == first["answer"], output
    assert len(answers) == 2 and len(re.findall(r"video tower: encoded", output)) == 1, output


def test_session_reuses_the_cache_and_matches_recomputing(tiny_dir, clip):
    config, processor = chat.load_processor(str(tiny_dir))
    model = chat.load_model(str(tiny_dir), config, torch.device("cpu"), "float32").double()
    counts = chat.log_tower_calls(model)
    media = chat.load_media(processor, [], [str(clip)], None)
    session = chat.ChatSession(model, processor, media, max_new_tokens=4)
    session.ask("what is in this video ?")
    session.ask("what colour ?")
    assert counts == {"image": 0, "video": 1}
    assert session.last_stats.prefilled_tokens < session.last_stats.prompt_tokens // 2
    # the same conversation rendered from scratch and generated without a cache gives the same answer
    messages = session.messages[:-1]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    fresh = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    expected = processor.tokenizer.decode(fresh[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert session.messages[-1]["content"] == expected.strip()
    assert counts["video"] == 2  # the fresh run above encoded again; the session did not
    # placeholders only in the first user turn (SPEC §6.2)
    rendered = processor.apply_chat_template(session.messages)
    assert rendered.count("<video>") == 1 and rendered.index("<video>") < rendered.index("what is in this video")


def test_image_and_video_in_one_session(tiny_dir, clip, tmp_path):
    from PIL import Image

    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "red.png")
    config, processor = chat.load_processor(str(tiny_dir))
    model = chat.load_model(str(tiny_dir), config, torch.device("cpu"), "auto")
    counts = chat.log_tower_calls(model)
    media = chat.load_media(processor, [str(tmp_path / "red.png")], [str(clip)], None)
    session = chat.ChatSession(model, processor, media, max_new_tokens=2, temperature=0.7)
    for question in ("describe it", "what colour ?", "what shape ?"):
        session.ask(question)
    assert counts == {"image": 1, "video": 1}


################
# Errors: one line, non-zero exit
################
def _one_error_line(capfd, code: int, expected: int, needle: str) -> None:
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == expected, captured
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--video", "/no/such/clip.mp4"], "cannot read video /no/such/clip.mp4: file not found"),
        (["--image", "/no/such/image.png"], "cannot read image /no/such/image.png: file not found"),
        (["--video", "sample:nope.mp4"], "no shipped sample named 'nope.mp4'"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["--device", "banana"], "--device 'banana' is not a device"),
    ],
)
def test_user_errors_are_one_line(tiny_dir, capfd, args, needle):
    _one_error_line(capfd, main(["chat", "--model", str(tiny_dir), *args, "hi"]), 1, needle)


def test_corrupt_media_is_one_line(tiny_dir, tmp_path, capfd):
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    _one_error_line(capfd, main(["chat", "--model", str(tiny_dir), "--video", str(tmp_path / "bad.mp4"), "hi"]), 1,
                    "cannot read video")
    _one_error_line(capfd, main(["chat", "--model", str(tiny_dir), "--image", str(tmp_path / "bad.png"), "hi"]), 1,
                    "cannot read image")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(tiny_dir, capfd):
    _one_error_line(capfd, main(["chat", "--model", str(tiny_dir), "--device", "cuda", "hi"]), 1,
                    "no CUDA device is available")


@pytest.mark.parametrize("args, needle", [(["--dtype", "float8"], "invalid choice"),
                                          (["--frobnicate"], "unrecognized arguments: --frobnicate")])
def test_unsupported_options_are_one_line(capfd, args, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", *args, "hi"])
    _one_error_line(capfd, exit_info.value.code, 2, needle)


def test_bad_model_path_subprocess_no_traceback(tmp_path):
    result = _cli("chat", "--model", str(tmp_path / "missing"), "hi")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load a model from {tmp_path / 'missing'}"), lines


def test_folder_without_a_model_is_one_line(tmp_path, capfd):
    (tmp_path / "config.json").write_text("{}")
    _one_error_line(capfd, main(["chat", "--model", str(tmp_path), "hi"]), 1, "cannot load a model from")


def test_a_bad_turn_reports_and_keeps_the_session(tiny_dir, clip):
    """Issue 13 #11: a non-UTF-8 line and a turn longer than the model's context each print one `error:` line; the
    conversation goes on and the next question is answered with the earlier turns intact."""
    stdin = (b"what is in this video ?\n" + b"red \xff\xfe green\n" + ("red " * 600).encode() + b"\n"
             + b"what colour ?\n")
    result = subprocess.run([sys.executable, "-m", "videollava.cli", "chat", "--model", str(tiny_dir), "--video",
                             str(clip), "--max-new-tokens", "3"], cwd=REPO, input=stdin, capture_output=True,
                            timeout=240, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"})
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode == 0, err
    assert len(err) == 2 and all(line.startswith("error: ") for line in err), err
    assert "not valid UTF-8 text (byte b'\\xff' at character 5)" in err[0] and "goes on" in err[0]
    assert "the model takes at most 512" in err[1]
    assert len(result.stdout.decode().splitlines()) == 2  # both good questions answered
    assert "Traceback" not in result.stderr.decode()
