"""Train the tiny Video-LLaVA that `videollava chat` answers with by default, end to end on CPU.

1. data: `synthetic_shapes.py` (seed 0): 2000 training images / 8-frame clips with captions and QA, 200 held-out;
2. init: a random tiny Video-LLaVA (both LanguageBind towers with temporal attention, projector, Llama) and the
   closed-vocabulary tokenizer of `tiny_tokenizer.py`;
3. stage 1 (captions) and stage 2 (QA) with the training pipeline: `videollava train --config
   examples/default_model/stage{1,2}.yaml`. Unlike Video-LLaVA-7B, whose towers and LLM start pretrained, the tiny
   model starts random: the towers stay frozen at their seeded initialisation (as in 7B), while the projector and the
   LLM train in both stages;
4. held-out accuracy by question type (`shapes_accuracy.py`), sample media with their questions, the model card;
5. `--install`: copy weights, config, processor, chat template and card into `videollava/default_model/`, add the
   Hub code files (`videollava.hub_folder`), and copy the samples into `videollava/samples/`.

Run as:
    python examples/train_default_model.py --out out/default_model --install    # about 15 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import synthetic_shapes  # noqa: E402
from shapes_accuracy import evaluate  # noqa: E402
from tiny_tokenizer import build_tokenizer  # noqa: E402


SEED = 0
NUM_TRAIN, NUM_HELDOUT = 2000, 200
PRESETS = HERE / "default_model"
# 64 px images, 16 px patches -> 16 patches (+ CLS for video frames) per frame; 8 frames -> 136 video tokens.
TOWER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64,
             patch_size=16)
# initializer_range 0.1 (Llama default 0.02): with 0.02 the near-uniform attention of a random 2-layer LLM never
# learned to read the visual tokens within our CPU budget (the loss stalled at the language prior).
TEXT = dict(model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=1024, initializer_range=0.1)
SHIPPED = ("config.json", "generation_config.json", "model.safetensors", "processor_config.json",
           "chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "README.md")
# (sample file, held-out scene kind); neutral names, so nothing in a file name gives an answer away
SAMPLE_KINDS = (("moving.mp4", "motion"), ("colour_change.mp4", "change"), ("appearing.mp4", "appear"),
                ("shapes.png", "image"))


def build_init(folder: Path) -> None:
    """A seeded random tiny Video-LLaVA + tokenizer + processor, saved as the stage-1 starting point."""
    from modeling_videollava import LanguageBindVideoLlavaConfig, LanguageBindVideoLlavaForConditionalGeneration
    from processing import build_processor

    tokenizer = build_tokenizer()
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    config = LanguageBindVideoLlavaConfig(
        image_config=dict(TOWER, num_frames=1),
        video_config=dict(TOWER, num_frames=8, add_time_attn=True),
        text_config=dict(TEXT, vocab_size=len(tokenizer), **ids),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
    )
    torch.manual_seed(SEED)
    LanguageBindVideoLlavaForConditionalGeneration(config).save_pretrained(folder)
    build_processor(config, tokenizer).save_pretrained(folder)


def train_stage(preset: str, model: Path, dataset: Path, output: Path) -> float:
    """One `videollava train` run in its own process; returns its wall time in seconds."""
    shutil.rmtree(output, ignore_errors=True)  # never resume a stale run: the result must be reproducible
    command = [sys.executable, "-m", "videollava.cli", "train", "--config", str(PRESETS / preset),
               "--model_name_or_path", str(model), "--dataset", str(dataset), "--image_folder", str(dataset.parent),
               "--video_folder", str(dataset.parent), "--output_dir", str(output)]
    print("+", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    with open(f"{output}.log", "w") as log:  # the trainer's log lines, for the card's final loss
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
    if process.wait() != 0:
        raise SystemExit(f"{preset} failed (exit {process.returncode}); see {output}.log")
    return time.perf_counter() - start


def last_loss(log: Path) -> float:
    """The last `'loss': 'x'` the trainer logged."""
    losses = re.findall(r"'loss': '([0-9.]+)'", log.read_text()) if log.exists() else []
    return float(losses[-1]) if losses else float("nan")


def pick_samples(data: Path, out: Path) -> list[dict]:
    """The first held-out item of each kind in SAMPLE_KINDS, re-drawn to get all of its questions, copied to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    samples, scratch = [], data / "scratch"
    wanted = dict((kind, name) for name, kind in SAMPLE_KINDS)
    for index in range(NUM_HELDOUT):
        _, item, scene = synthetic_shapes.build_sample(SEED, "heldout", index, scratch)
        if scene.kind not in wanted:
            continue
        name = wanted.pop(scene.kind)
        shutil.copy(scratch / item["video" if scene.is_video else "image"], out / name)
        rng = np.random.default_rng(np.random.SeedSequence([SEED, 99, index]))
        qa = synthetic_shapes.questions(scene, rng)
        qa.sort(key=lambda q: q[2] != "static")  # static questions first
        samples.append({"file": name, "source": f"heldout_{index:06d}", "description": synthetic_shapes.caption(scene),
                        "questions": [{"question": q, "answer": a, "question_type": t} for q, a, t in qa]})
        if not wanted:
            break
    shutil.rmtree(scratch)
    return sorted(samples, key=lambda s: [n for n, _ in SAMPLE_KINDS].index(s["file"]))


def answer_samples(model, processor, samples: list[dict], folder: Path) -> None:
    """Record the model's own answer next to every sample question (shown in the card and `--list-samples`)."""
    from videollava.chat import ChatSession, load_media

    for sample in samples:
        kind = "video" if sample["file"].endswith(".mp4") else "image"
        path = str(folder / sample["file"])
        media = load_media(processor, [path] if kind == "image" else [], [path] if kind == "video" else [], None)
        for qa in sample["questions"]:
            qa["model_answer"] = ChatSession(model, processor, media, max_new_tokens=8).ask(qa["question"])


def card(summary: dict, accuracy: dict, samples: list[dict], params: int, size: int) -> str:
    def row(name: str) -> str:
        a = accuracy[name]
        return f"| {name} | {a['correct']} / {a['total']} | {100 * a['accuracy']:.1f} % |"

    per_question = "\n".join(
        f"| {k} | {v['correct']} / {v['total']} | {100 * v['accuracy']:.0f} % |"
        for k, v in accuracy["by_question"].items()
    )
    sample_rows = "\n".join(
        f"| `sample:{s['file']}` | {qa['question']} | {qa['answer']} | {qa['model_answer']} | {qa['question_type']} |"
        for s in samples for qa in s["questions"]
    )
    t = summary["seconds"]
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [video-llava, languagebind, tiny, synthetic]
---

# Tiny Video-LLaVA (synthetic shapes) — the default model of `videollava chat`

A {params / 1e6:.2f} M-parameter Video-LLaVA ({size / 2**20:.1f} MiB of float32 safetensors) with the full
architecture of Video-LLaVA-7B at toy scale: a LanguageBind image tower and a LanguageBind video tower with divided
temporal attention in every layer (width {TOWER['hidden_size']}, {TOWER['num_hidden_layers']} layers, features from
`hidden_states[-2]`, random and frozen, see below; {TOWER['image_size']} px inputs, {TOWER['patch_size']} px
patches, 8 frames), the shared 2-layer GELU projector and a Llama language model (width {TEXT['hidden_size']},
{TEXT['num_hidden_layers']} layers, a {summary['vocab']}-token word-level vocabulary). An image is
{summary['image_tokens']} tokens, a video {summary['video_tokens']} (8 frames x (16 patches + CLS)). Prompts use the
Vicuna-v1 chat template.

It only knows a toy world: one to three red, green, blue or yellow squares, circles and triangles on black, which
move, change colour, appear or disappear. It is shipped so that `videollava chat` works offline, with no GPU, on a
fresh install, and as a runnable reference for the training pipeline. It knows nothing about real images or videos.

## Held-out accuracy

{accuracy['all']['total']} questions on {NUM_HELDOUT} held-out items (other seeds; every moving shape uses a
(shape, colour, direction) combination never seen in training), each asked alone with its image or video, greedy,
exact match. Measured by `examples/shapes_accuracy.py` at the end of training.

| question type | correct | accuracy |
|---|---|---|
{row('static')}
{row('temporal')}
{row('all')}

Static questions are answerable from one frame (colour, shape, count, "is there ..."); temporal ones need motion or
order (direction, colour change, what appeared / disappeared, counts at the start / end).

<details><summary>By question</summary>

| question | correct | accuracy |
|---|---|---|
{per_question}

</details>

## Samples shipped with the package

`videollava chat --list-samples` lists them; all are held-out items. The model's answers were recorded at training
time.

| medium | question | truth | model | type |
|---|---|---|---|---|
{sample_rows}

## How it was made

```bash
python examples/train_default_model.py --out out/default_model --install
```

| step | what | wall time |
|---|---|---|
| data | `synthetic_shapes.py --seed {SEED} --num-train {NUM_TRAIN} --num-heldout {NUM_HELDOUT}` | {t['data']:.0f} s |
| stage 1 | captions, `videollava train --config examples/default_model/stage1.yaml` | {t['stage1']:.0f} s |
| stage 2 | QA, `videollava train --config examples/default_model/stage2.yaml` | {t['stage2']:.0f} s |
| evaluation + samples | `shapes_accuracy.py` on held-out | {t['eval']:.0f} s |
| total | {summary['machine']} | {t['total']:.0f} s |

As in Video-LLaVA-7B the towers stay frozen in both stages, but here at their seeded random initialisation (there
are no pretrained LanguageBind towers at this size): random ViT features already carry colour and position frame by
frame, and the LLM reads motion and order from the frame-major sequence of visual tokens. Projector and LLM train in
both stages, since the tiny Llama starts random too (7B's stage 1 trains only the projector). Two settings matter:
Llama `initializer_range` 0.1 instead of 0.02 (with 0.02 the LLM never learned to read the visual tokens within the
CPU budget), and frozen towers (trained at this learning rate, the patch embedding grew a large constant component
that drowned the image content after the pre-LayerNorm). Hyper-parameters are in the two preset files; the final
logged training losses were {summary['losses']['stage1']:.3f} (stage 1) and {summary['losses']['stage2']:.3f}
(stage 2).

## Use

```bash
videollava chat --video sample:moving.mp4 "What colour is the shape?"
videollava chat --video my_clip.mp4            # interactive; any video decodes, but the model only knows shapes
```

```python
from videollava.chat import DEFAULT_MODEL, load_model, load_processor
config, processor = load_processor(str(DEFAULT_MODEL))
model = load_model(str(DEFAULT_MODEL), config, torch.device("cpu"), "float32")
```

The folder is a complete Hub folder: weights, config, tokenizer, processor, chat template and the model and
processor code (`*.py`, identical to this package's sources), so it also loads where this package is not installed,
through the Auto classes or `pipeline` with `trust_remote_code=True`:

```python
from transformers import pipeline
pipe = pipeline("image-text-to-text", model="videollava/default_model", trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "video", "video": "moving.mp4"}},
                                         {{"type": "text", "text": "Which way does the shape move?"}}]}}]
pipe(text=messages, max_new_tokens=8, return_full_text=False)[0]["generated_text"]   # " up"
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/default_model"))
    parser.add_argument("--install", action="store_true", help="copy the result into videollava/default_model")
    parser.add_argument("--reuse", action="store_true",
                        help="keep OUT's data and trained stages (and their recorded times); redo evaluation and card")
    args = parser.parse_args()
    out, times = args.out.resolve(), {}
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = out / "data"

    if args.reuse:
        times = json.loads((out / "times.json").read_text())
        start -= times["data"] + times["stage1"] + times["stage2"]
    else:
        shutil.rmtree(data, ignore_errors=True)
        synthetic_shapes.generate(data, seed=SEED, num_train=NUM_TRAIN, num_heldout=NUM_HELDOUT, workers=2)
        build_init(out / "init")
        times["data"] = time.perf_counter() - start
        times["stage1"] = train_stage("stage1.yaml", out / "init", data / "stage1.json", out / "stage1")
        times["stage2"] = train_stage("stage2.yaml", out / "stage1", data / "stage2.json", out / "stage2")
        (out / "times.json").write_text(json.dumps(times, indent=1) + "\n")

    from videollava.chat import load_model, load_processor

    t0 = time.perf_counter()
    final = out / "stage2"
    config, processor = load_processor(str(final))
    model = load_model(str(final), config, torch.device("cpu"), "float32")
    accuracy = evaluate(model, processor, data / "heldout.json")
    samples = pick_samples(data, out / "samples")
    answer_samples(model, processor, samples, out / "samples")
    (out / "samples" / "samples.json").write_text(json.dumps(samples, indent=1) + "\n")
    (out / "accuracy.json").write_text(json.dumps(accuracy, indent=1) + "\n")
    times["eval"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - start

    losses = {stage: last_loss(out / f"{stage}.log") for stage in ("stage1", "stage2")}
    summary = {
        "seconds": times, "losses": losses, "vocab": len(processor.tokenizer),
        "image_tokens": config.image_seq_length, "video_tokens": config.video_seq_length,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
    }
    params = sum(p.numel() for p in model.parameters())
    size = (final / "model.safetensors").stat().st_size
    (final / "README.md").write_text(card(summary, accuracy, samples, params, size))
    print(json.dumps({"seconds": {k: round(v) for k, v in times.items()},
                      **{k: accuracy[k] for k in ("static", "temporal", "all")}}, indent=1))

    if args.install:
        target = REPO / "videollava" / "default_model"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in SHIPPED:
            shutil.copy(final / name, target / name)
        from videollava.hub_folder import complete_hub_folder

        complete_hub_folder(target)  # + the model / processor code files: loadable where our package is not
        samples_dir = REPO / "videollava" / "samples"
        shutil.rmtree(samples_dir, ignore_errors=True)
        shutil.copytree(out / "samples", samples_dir)
        print(f"installed into {target} and {samples_dir}")


if __name__ == "__main__":
    main()
