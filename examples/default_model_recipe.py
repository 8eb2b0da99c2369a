"""The steps of the embedded default model's recipe, shared by `train_default_model.py` and `ablations.py`.

    data     `synthetic_shapes.generate`: images / 8-frame clips with captions (stage 1) and QA (stage 2, held-out)
    towers   LanguageBind-style pre-alignment (`training.alignment.align_towers`): an image tower trained CLIP-style
             against a tiny text encoder on image captions, then a video tower initialised from it with temporal
             attention added, trained on video captions while the text encoder keeps learning, held to the images
             by their captions against the frozen image tower (`AlignConfig.video_stage_text`); saved as LanguageBind
             checkpoint folders. For the "separated" ablation the image tower is instead pretrained by masked-patch
             reconstruction (`training.mae.pretrain_mae`), same size.
    init     a random tiny Llama + the word-level tokenizer (without media tokens, like Vicuna), joined with the two
             towers by the real converter: `videollava convert --from languagebind` (fresh projector, media tokens
             appended, processor written)
    stage 1  captions; stage 2  QA mixed with the same captions ("Describe the video." / "Describe the image."), so
             the model both answers in a word and describes in a sentence. Towers frozen in both (as Video-LLaVA-7B).
    eval     held-out QA accuracy by question type and by medium, and held-out caption exact match.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch


HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import synthetic_shapes  # noqa: E402
from tiny_tokenizer import build_tokenizer  # noqa: E402


PRESETS = HERE / "default_model"
# 64 px images, 16 px patches -> 16 patches (+ CLS for video frames) per frame; 8 frames -> 136 video tokens.
TOWER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64,
             patch_size=16)
# initializer_range 0.1 (Llama default 0.02): with 0.02 the near-uniform attention of a random 2-layer LLM never
# learned to read the visual tokens within our CPU budget (the loss stalled at the language prior).
TEXT = dict(model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=1024, initializer_range=0.1)
KINDS = ("image", "video")


@dataclass
class RecipeOptions:
    """What one run of the recipe varies: the ablations switch `media` and `image_tower`, and scale the steps."""

    seed: int = 0  # LLM / projector initialisation and data order of both stages
    media: tuple[str, ...] = KINDS  # media kinds of the stage-1/2 training data: ("image", "video") or ("video",)
    image_tower: str = "aligned"  # "aligned" (united with the video tower) or "mae" (separated)
    stage1_steps: int | None = None  # None: the preset's max_steps
    stage2_steps: int | None = None

    def __post_init__(self) -> None:
        if not self.media or set(self.media) - set(KINDS):
            raise ValueError(f"RecipeOptions.media must be a non-empty subset of {KINDS}, got {self.media!r}")
        if self.image_tower not in ("aligned", "mae"):
            raise ValueError(f"RecipeOptions.image_tower must be 'aligned' or 'mae', got {self.image_tower!r}")


def make_data(folder: Path, seed: int, num_train: int, num_heldout: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    synthetic_shapes.generate(folder, seed=seed, num_train=num_train, num_heldout=num_heldout, workers=2)


def align(data: Path, out: Path, seed: int = 0, quiet: bool = False) -> dict:
    """`videollava align`: pre-aligned LanguageBind towers in `out/image`, `out/video` (+ `out/report.json`, with
    held-out retrieval R@1 against random towers and chance); returns the report."""
    tokenizer = out / "tokenizer"
    build_tokenizer().save_pretrained(tokenizer)
    tower = [f"--tower-{k.replace('_', '-')}={v}" for k, v in TOWER.items()]
    command = [sys.executable, "-m", "videollava.cli", "align", "--train", str(data / "stage1.json"), "--heldout",
               str(data / "heldout_captions.json"), "--media-root", str(data), "--tokenizer", str(tokenizer),
               "--output", str(out), "--seed", str(seed), *tower]
    print("+", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=quiet, text=True)
    if done.returncode != 0:
        raise SystemExit(f"videollava align failed (exit {done.returncode}): {(done.stderr or '').strip()[-500:]}")
    return json.loads((out / "report.json").read_text())


def mae_tower(data: Path, out: Path, seed: int = 0) -> dict:
    """A masked-patch-reconstruction image tower of the same size, in `out` (the "separated" ablation)."""
    from training.mae import MaeConfig, pretrain_mae

    images = sorted((data / "images").glob("train_*.png"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny towers train faster on one thread than on two shared cores
    try:
        return pretrain_mae(images, dict(TOWER), out, MaeConfig(seed=seed))
    finally:
        torch.set_num_threads(threads)


def build_llm(folder: Path, seed: int) -> None:
    """A seeded random tiny Llama and the tokenizer without `<image> <video> <pad>` (the converter appends them, as
    for Vicuna)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(media_tokens=False)
    config = LlamaConfig(**{k: v for k, v in TEXT.items() if k != "model_type"}, vocab_size=len(tokenizer),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def convert_init(image_tower: Path, video_tower: Path, llm: Path, out: Path) -> None:
    """`videollava convert --from languagebind`: towers + LLM -> the stage-1 starting point (a complete folder)."""
    from videollava.cli import main

    shutil.rmtree(out, ignore_errors=True)
    status = main(["convert", "--from", "languagebind", "--image-tower", str(image_tower), "--video-tower",
                   str(video_tower), "--input", str(llm), "--output", str(out), "--num-frames", "8"])
    if status != 0:
        raise SystemExit(f"videollava convert --from languagebind failed (exit {status}) for {image_tower}, "
                         f"{video_tower}, {llm}")


def stage_data(data: Path, out: Path, media: tuple[str, ...]) -> tuple[Path, Path]:
    """The stage-1 (captions) and stage-2 (QA + captions) training files for the media kinds in `media`."""
    captions = [r for r in json.loads((data / "stage1.json").read_text()) if any(k in r for k in media)]
    qa = [r for r in json.loads((data / "stage2.json").read_text()) if any(k in r for k in media)]
    out.mkdir(parents=True, exist_ok=True)
    stage1, stage2 = out / "stage1.json", out / "stage2.json"
    stage1.write_text(json.dumps(captions, indent=1) + "\n")
    stage2.write_text(json.dumps(qa + captions, indent=1) + "\n")
    return stage1, stage2


def train_stage(preset: str, model: Path, dataset: Path, media_root: Path, output: Path, seed: int,
                max_steps: int | None, quiet: bool = False) -> float:
    """One `videollava train` run in its own process; returns its wall time in seconds (log in `output`.log)."""
    shutil.rmtree(output, ignore_errors=True)  # never resume a stale run: the result must be reproducible
    command = [sys.executable, "-m", "videollava.cli", "train", "--config", str(PRESETS / preset),
               "--model_name_or_path", str(model), "--dataset", str(dataset), "--image_folder", str(media_root),
               "--video_folder", str(media_root), "--output_dir", str(output), "--seed", str(seed),
               "--data_seed", str(seed)]
    if max_steps is not None:
        command += ["--max_steps", str(max_steps)]
    print("+", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    # One thread: at this size a second thread gains little on a quiet machine, and when the other core is busy
    # (a second run, a test suite) the threads wait on each other and a step gets many times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(f"{output}.log", "w") as log:  # the trainer's log lines, for the card's final loss
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=env)
        for line in process.stdout:
            if not quiet:
                sys.stdout.write(line)
            log.write(line)
    if process.wait() != 0:
        raise SystemExit(f"{preset} failed (exit {process.returncode}); see {output}.log")
    return time.perf_counter() - start


def last_loss(log: Path) -> float:
    """The last `'loss': 'x'` the trainer logged."""
    losses = re.findall(r"'loss': '([0-9.]+)'", log.read_text()) if log.exists() else []
    return float(losses[-1]) if losses else float("nan")


def prepare(data: Path, towers: Path, out: Path, options: RecipeOptions, mae: Path | None = None) -> dict:
    """The stage-1 starting point `out/init` (the LLM of `options.seed`, the image tower `options.image_tower`, the
    aligned video tower) and the training files for `options.media`; returns their paths."""
    if options.image_tower == "mae" and mae is None:
        raise ValueError("RecipeOptions(image_tower='mae') needs the MAE tower folder (mae=...)")
    image_tower = towers / "image" if options.image_tower == "aligned" else mae
    build_llm(out / "llm", options.seed)
    convert_init(image_tower, towers / "video", out / "llm", out / "init")
    stage1, stage2 = stage_data(data, out / "data", options.media)
    return {"init": out / "init", "stage1": stage1, "stage2": stage2}


def run(data: Path, towers: Path, out: Path, options: RecipeOptions, mae: Path | None = None,
        quiet: bool = False) -> dict:
    """`prepare`, then stage 1 and stage 2; the trained model ends in `out/stage2`. Returns wall times per step."""
    start = time.perf_counter()
    paths = prepare(data, towers, out, options, mae)
    times = {"init": time.perf_counter() - start}
    times["stage1"] = train_stage("stage1.yaml", paths["init"], paths["stage1"], data, out / "stage1", options.seed,
                                  options.stage1_steps, quiet)
    times["stage2"] = train_stage("stage2.yaml", out / "stage1", paths["stage2"], data, out / "stage2", options.seed,
                                  options.stage2_steps, quiet)
    return times
