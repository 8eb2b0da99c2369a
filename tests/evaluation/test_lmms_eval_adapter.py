"""The lmms-eval adapter: called the way lmms-eval calls a model (unit tests), and through the REAL `python -m
lmms_eval` CLI (lmms-eval 0.7.3, installed by .ci/run) on the local task made from the shipped samples, whose every
prediction must equal `videollava chat`'s answer at batch sizes 1, 2 and auto."""

import glob
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from evaluation import lmms_eval_adapter
from evaluation.lmms_eval_adapter import (EvaluationAborted, VideoLlavaLB, parse_batch_size, resolve_device,
                                          settings_from_gen_kwargs)
from tests.chat_answers import chat_answers, sample_questions
from videollava.loading import DEFAULT_MODEL


REPO = Path(__file__).resolve().parents[2]
needs_lmms_eval = pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None,
                                     reason="lmms-eval is not installed (.ci/run installs it)")


@dataclass
class FakeInstance:
    """The fields of `lmms_eval.api.instance.Instance` that models read."""

    request_type: str
    arguments: tuple
    idx: int = 0
    metadata: dict = field(default_factory=dict)

    @property
    def args(self) -> tuple:
        return self.arguments


def test_gen_kwargs_are_honoured():
    s = settings_from_gen_kwargs({"max_new_tokens": 16, "temperature": 0, "top_p": None, "num_beams": 1})
    assert (s.max_new_tokens, s.do_sample, s.temperature) == (16, False, None)
    s = settings_from_gen_kwargs({"max_new_tokens": 5, "temperature": 0.2})
    assert s.do_sample and s.temperature == 0.2
    assert settings_from_gen_kwargs({"max_gen_toks": 7}).max_new_tokens == 7


def test_generate_until_batches_multi_visual_docs_in_order(monkeypatch, tmp_path):
    calls: list[tuple[list, Any]] = []

    def fake_generate(model, processor, batch, settings):
        calls.append(([(s.prompt, [k for k, _ in s.media]) for s in batch], settings))
        return [f"answer {s.id}. extra" for s in batch]

    monkeypatch.setattr(lmms_eval_adapter, "generate_answers", fake_generate)
    image = Image.new("RGB", (8, 8))
    docs = {"t": {"test": [{"v": ["a.mp4", image]}, {"v": [image, image]}, {"v": ["b.mkv"]}]}}
    model = VideoLlavaLB(model=object(), processor=object(), batch_size=2)
    model.task_dict = docs
    greedy = {"max_new_tokens": 8, "temperature": 0, "until": ["."]}
    requests = [
        FakeInstance("generate_until", ("<video>\nWhat happens?", greedy, lambda d: d["v"], 0, "t", "test")),
        FakeInstance("generate_until", ("Compare the images.", {"max_new_tokens": 3}, lambda d: d["v"], 1, "t", "test")),
        FakeInstance("generate_until", ("Describe.", greedy, lambda d: d["v"], 2, "t", "test")),
    ]
    out = model.generate_until(requests)
    assert out == ["answer t/test/0", "answer t/test/1. extra", "answer t/test/2"]  # order kept, `until` applied
    (first, s1), (second, s2) = calls
    assert first == [("What happens?", ["video", "image"]), ("Describe.", ["video"])]  # batch of 2, same kwargs
    assert second == [("Compare the images.", ["image", "image"])]
    assert s1.max_new_tokens == 8 and not s1.do_sample and s2.max_new_tokens == 3


def test_plugin_table_points_at_the_adapter():
    from evaluation.lmms_plugin.models import AVAILABLE_MODELS
    from evaluation.lmms_plugin.models.videollava_lb import VideoLlavaLB as Plugged

    assert AVAILABLE_MODELS == {"videollava_lb": "VideoLlavaLB"} and Plugged is VideoLlavaLB


def test_batch_size_and_device_arguments(monkeypatch):
    assert parse_batch_size(2) == (2, False) and parse_batch_size("3") == (3, False)
    assert parse_batch_size("auto") == (8, True) and parse_batch_size("auto", 32) == (32, True)
    assert parse_batch_size("auto:4") == (4, True)
    for bad in ("0", "-1", "two", "auto:x"):
        with pytest.raises(ValueError, match="batch_size"):
            parse_batch_size(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_device(None) == resolve_device("cuda") == resolve_device("cuda:0") == "cuda:3"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda:1") == "cuda:1"


def test_rank_world_size_and_device_attributes(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    model = VideoLlavaLB(model=object(), processor=object(), batch_size="auto")
    assert (model.rank, model.world_size, model.device, model.batch_size) == (1, 2, "cpu", 8)


def test_auto_batch_size_halves_on_out_of_memory_and_keeps_order(monkeypatch):
    sizes: list[int] = []

    def fake_generate(model, processor, batch, settings):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [s.id for s in batch]

    monkeypatch.setattr(lmms_eval_adapter, "generate_answers", fake_generate)
    model = VideoLlavaLB(model=object(), processor=object(), batch_size="auto:8")
    model.task_dict = {"t": {"test": [{"v": []}] * 5}}
    kwargs = {"max_new_tokens": 2}
    requests = [FakeInstance("generate_until", (f"q{i}", kwargs, None, i, "t", "test")) for i in range(5)]
    assert model.generate_until(requests) == [f"t/test/{i}" for i in range(5)]
    assert sizes == [5, 4, 2, 2, 1] and list(model.batch_sizes.values()) == [2]


def test_failures_leave_lmms_eval_as_a_non_zero_exit(monkeypatch, tmp_path):
    """lmms-eval catches `Exception` around an evaluation and exits 0; ours must get through (`SystemExit`)."""
    with pytest.raises(EvaluationAborted, match=str(tmp_path / "nowhere")) as error:
        VideoLlavaLB(pretrained=str(tmp_path / "nowhere"), dtype="float32", device="cpu")
    assert not isinstance(error.value, Exception) and error.value.code.startswith("videollava_lb: cannot load")

    def broken(*args):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(lmms_eval_adapter, "generate_answers", broken)
    model = VideoLlavaLB(model=object(), processor=object())
    model.task_dict = {"t": {"test": [{}]}}
    with pytest.raises(EvaluationAborted, match="RuntimeError: decoder exploded"):
        model.generate_until([FakeInstance("generate_until", ("q", {}, None, 0, "t", "test"))])
    with pytest.raises(EvaluationAborted, match="generate_until tasks only"):
        model.loglikelihood([])


@needs_lmms_eval
def test_entry_point_names_the_adapter():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="lmms_eval.models") if e.name == "videollava_lb"]
    (manifest,) = entry.load()()
    module, _, name = manifest.simple_class_path.rpartition(".")
    assert manifest.model_id == "videollava_lb" and getattr(importlib.import_module(module), name) is VideoLlavaLB


################
# The real lmms-eval CLI
################
def _lmms_eval(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(REPO),
           "LMMS_EVAL_PLUGINS": "evaluation.lmms_plugin"}
    return subprocess.run([sys.executable, "-m", "lmms_eval", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


@needs_lmms_eval
def test_real_lmms_eval_cli_equals_videollava_chat_at_batch_sizes_1_2_and_auto(tmp_path):
    """One `python -m lmms_eval --config runs.yaml` process running the README command three times (a config list
    holds the same flags), on the 17 questions about the shipped 3 videos and 1 image."""
    import yaml

    runs = [{"model": "videollava_lb", "model_args": f"pretrained={DEFAULT_MODEL},dtype=float32",
             "tasks": "videollava_samples", "include_path": "evaluation/lmms_plugin/tasks", "batch_size": size,
             "log_samples": True, "output_path": str(tmp_path / f"bs_{size}")} for size in (1, 2, "auto")]
    (tmp_path / "runs.yaml").write_text(yaml.safe_dump(runs))
    result = _lmms_eval(tmp_path, "--config", str(tmp_path / "runs.yaml"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Error during evaluation" not in result.stdout + result.stderr
    rows, expected = sample_questions(), list(chat_answers())
    assert {r["kind"] for r in rows} == {"image", "video"}
    for size, used in ((1, [1]), (2, [2]), ("auto", [8])):
        (results_file,) = glob.glob(str(tmp_path / f"bs_{size}" / "*" / "*_results.json"))
        results = json.loads(Path(results_file).read_text())
        assert results["config"]["batch_sizes"] == used
        (samples_file,) = glob.glob(str(tmp_path / f"bs_{size}" / "*" / "*_samples_videollava_samples.jsonl"))
        records = sorted(map(json.loads, Path(samples_file).read_text().splitlines()), key=lambda r: r["doc_id"])
        assert [r["filtered_resps"] for r in records] == expected, size
        truth = sum(a == r["answer"] for a, r in zip(expected, rows)) / len(rows)
        assert results["results"]["videollava_samples"]["exact_match,none"] == pytest.approx(truth)


BROKEN_TASK = """
task: videollava_broken
dataset_path: json
dataset_kwargs:
  data_files:
    test: docs.json
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: question
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
BROKEN_UTILS = """
import os
def doc_to_visual(doc):
    return [os.path.join(os.path.dirname(__file__), doc["file"])]
def process_results(doc, results):
    return {"exact_match": 0.0}
"""


@needs_lmms_eval
def test_real_lmms_eval_cli_exits_non_zero_when_evaluation_crashes(tmp_path):
    """A corrupt video fails generation: lmms-eval would log it and exit 0; the adapter makes it exit 1."""
    task = tmp_path / "tasks" / "videollava_broken"
    task.mkdir(parents=True)
    (task / "videollava_broken.yaml").write_text(BROKEN_TASK)
    (task / "utils.py").write_text(BROKEN_UTILS)
    (task / "docs.json").write_text(json.dumps([{"file": "broken.mp4", "question": "What happens?", "answer": "x"}]))
    (task / "broken.mp4").write_bytes(b"not a video at all" * 100)
    result = _lmms_eval(tmp_path, "--model", "videollava_lb", "--model_args",
                        f"pretrained={DEFAULT_MODEL},dtype=float32", "--tasks", "videollava_broken",
                        "--include_path", str(tmp_path / "tasks"), "--batch_size", "2", "--output_path",
                        str(tmp_path / "out"))
    assert result.returncode == 1, (result.stdout + result.stderr)[-4000:]
    assert "videollava_lb: generation failed" in result.stderr and "broken.mp4" in result.stderr
    assert not glob.glob(str(tmp_path / "out" / "*" / "*_results.json"))


@pytest.mark.slow
@needs_lmms_eval
def test_real_lmms_eval_cli_with_two_processes_on_cpu(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` with gloo on CPU: lmms-eval reads `lm.device`, shards the
    documents by `rank` / `world_size` and gathers them; the answers are still `videollava chat`'s (~1 min)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "PYTHONPATH": str(REPO), "LMMS_EVAL_PLUGINS": "evaluation.lmms_plugin"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lmms_eval",
               "--model", "videollava_lb", "--model_args", f"pretrained={DEFAULT_MODEL},dtype=float32",
               "--tasks", "videollava_samples", "--include_path", "evaluation/lmms_plugin/tasks",
               "--batch_size", "2", "--log_samples", "--output_path", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Running on rank 1 (local rank 1)" in result.stdout + result.stderr
    (samples_file,) = glob.glob(str(tmp_path / "out" / "*" / "*_samples_videollava_samples.jsonl"))
    records = sorted(map(json.loads, Path(samples_file).read_text().splitlines()), key=lambda r: r["doc_id"])
    assert [r["filtered_resps"] for r in records] == list(chat_answers())
