"""Launch paths: `videollava train`, kill + resume, 2-process CPU DDP via accelerate, fresh-process Hub load."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tests.fresh_process import run_fresh
from tests.training.fakes import save_tiny_model, write_llava_json


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
ENV |= {"HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    write_llava_json(str(root), n=16)
    save_tiny_model(str(root / "tiny"))
    return root


def _argv(root, out, *extra):
    return ["--config", f"{ROOT}/training/configs/tiny_cpu.yaml", "--model_name_or_path", str(root / "tiny"),
            "--dataset", str(root / "train.json"), "--image_folder", str(root / "images"),
            "--video_folder", str(root / "videos"), "--output_dir", str(out), "--disable_tqdm", "true", *extra]


def _losses(out):
    state = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").exists() else None
    if state is None:
        last = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        state = json.loads((last / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}, state["global_step"]


def test_videollava_train_cli(setup, tmp_path):
    from videollava.cli import main

    out = tmp_path / "cli"
    assert main(["train", *_argv(setup, out, "--max_steps", "2", "--save_strategy", "no")]) == 0
    assert (out / "model.safetensors").exists() and (out / "processor_config.json").exists()
    assert (out / "chat_template.jinja").exists() or "chat_template" in (out / "processor_config.json").read_text()


# Loaded by the killed run only (PYTHONPATH): the weights save of one checkpoint stalls, so the kill lands mid-save.
STALL_SAVE = textwrap.dedent(
    """
    import os, time
    import safetensors.torch as st
    _save_file = st.save_file
    def save_file(tensors, filename, *args, **kwargs):
        if os.path.basename(os.path.dirname(str(filename))) == os.environ["STALL_IN"]:
            open(os.environ["STALL_MARKER"], "w").close()
            time.sleep(600)
        return _save_file(tensors, filename, *args, **kwargs)
    st.save_file = save_file
    """
)


def _card_loss(out):
    return next(line for line in (out / "README.md").read_text().splitlines() if "final train loss" in line)


def test_kill_during_a_save_resumes_from_the_newest_complete_checkpoint(setup, tmp_path):
    """A real `videollava train` is SIGKILLed while writing checkpoint-4 (config and code written, no weights, no
    trainer state); the rerun skips it, says why, resumes from checkpoint-2 and continues bit-identically."""
    steps = ["--max_steps", "12", "--save_steps", "2", "--per_device_train_batch_size", "2"]
    from training.cli import main

    reference = tmp_path / "reference"
    main(_argv(setup, reference, *steps))
    ref_losses, ref_steps = _losses(reference)

    out, hook = tmp_path / "killed", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STALL_SAVE)
    marker = tmp_path / "stalled"
    cmd = [sys.executable, "-m", "videollava.cli", "train", *_argv(setup, out, *steps)]
    env = ENV | {"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "STALL_IN": "checkpoint-4", "STALL_MARKER": str(marker)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert marker.exists(), stderr[-3000:]
    half = out / "checkpoint-4"
    assert (half / "config.json").exists() and not (half / "trainer_state.json").exists()
    assert not list(half.glob("*.safetensors")) and (out / "checkpoint-2" / "trainer_state.json").exists()

    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-2'} (the newest complete checkpoint" in result.stderr
    assert f"{half}: no trainer_state.json (the save was cut short)" in result.stderr
    losses, global_step = _losses(out)
    assert global_step == ref_steps == 12 and (half / "trainer_state.json").exists()
    assert sorted(losses) == sorted(ref_losses) == list(range(1, 13))
    for step, loss in losses.items():  # same data order and state => same losses after the resume point
        assert loss == pytest.approx(ref_losses[step], rel=1e-4, abs=1e-5), (step, losses, ref_losses)
    # the card's final loss comes from the logged history (steps before the resume included), not this run's mean
    assert _card_loss(out) == _card_loss(reference) == f"| final train loss | {round(ref_losses[12], 4)} (step 12) |"


def test_two_process_cpu_ddp_trains_and_saves(setup, tmp_path):
    out = tmp_path / "ddp"
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "training", *_argv(setup, out, "--max_steps", "2", "--save_strategy", "no",
                                    "--per_device_train_batch_size", "2")]
    bin_dir = os.path.dirname(sys.executable)
    env = ENV | {"ACCELERATE_USE_CPU": "true", "PATH": bin_dir + os.pathsep + ENV.get("PATH", "")}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").exists() else None
    assert (out / "model.safetensors").exists()
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.world_size == 2, args.world_size
    del state


FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    path = sys.argv[1]
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    messages = [{"role": "user", "content": [{"type": "video", "video": frames},
                                             {"type": "image", "image": Image.new("RGB", (28, 28), "red")},
                                             {"type": "text", "text": "what colour ?"}]}]
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                           add_generation_prompt=True)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    print(json.dumps({"module": type(model).__module__, "new": out.shape[1] - inputs["input_ids"].shape[1]}))
    """
)


def test_exported_folder_loads_in_fresh_process_and_generates(setup, tmp_path):
    from training.cli import main

    out = tmp_path / "export"
    main(_argv(setup, out, "--max_steps", "1", "--save_strategy", "no"))
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"} | {"HF_HOME": str(tmp_path / "hf")}
    result = run_fresh(FRESH, out, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.") and loaded["new"] == 3
