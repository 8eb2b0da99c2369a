"""Train the tiny Video-LLaVA that `videollava chat` answers with by default, end to end on CPU.

The steps are those of `default_model_recipe.py` (data, LanguageBind-style tower alignment, `convert --from
languagebind`, stage 1 captions, stage 2 QA + captions); this script runs them with the default options, evaluates
(held-out accuracy by question type and medium, held-out descriptions), picks the sample media, writes the card and,
with `--install`, copies weights, config, processor, chat template and card into `videollava/default_model/` (plus
the Hub code files, `videollava.hub_folder`) and the samples into `videollava/samples/`.

Run as:
    python examples/train_default_model.py --out out/default_model --install    # about 28 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import default_model_recipe as recipe
import numpy as np
import synthetic_shapes
import torch
from default_model_card import card
from shapes_accuracy import describe, evaluate


REPO = recipe.REPO
SEED = 0
NUM_TRAIN, NUM_HELDOUT = 2000, 200
SHIPPED = ("config.json", "generation_config.json", "model.safetensors", "processor_config.json",
           "chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "README.md")
# (sample file, held-out scene kind); neutral names, so nothing in a file name gives an answer away
SAMPLE_KINDS = (("moving.mp4", "motion"), ("colour_change.mp4", "change"), ("appearing.mp4", "appear"),
                ("shapes.png", "image"))


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
        request = f"Describe the {kind}."
        sample["model_description"] = ChatSession(model, processor, media, max_new_tokens=32).ask(request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/default_model"))
    parser.add_argument("--install", action="store_true", help="copy the result into videollava/default_model")
    parser.add_argument("--reuse", action="store_true",
                        help="keep OUT's data, towers and trained stages (and their recorded times); redo evaluation "
                             "and card")
    args = parser.parse_args()
    out, times = args.out.resolve(), {}
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data, towers = out / "data", out / "towers"

    if args.reuse:
        times = json.loads((out / "times.json").read_text())
        start -= sum(times[k] for k in ("data", "align", "init", "stage1", "stage2"))
    else:
        recipe.make_data(data, SEED, NUM_TRAIN, NUM_HELDOUT)
        times["data"] = time.perf_counter() - start
        t0 = time.perf_counter()
        recipe.align(data, towers, SEED)
        times["align"] = time.perf_counter() - t0
        times.update(recipe.run(data, towers, out, recipe.RecipeOptions(seed=SEED)))
        (out / "times.json").write_text(json.dumps(times, indent=1) + "\n")

    from videollava.chat import ChatSession, load_media, load_model, load_processor

    t0 = time.perf_counter()
    final = out / "stage2"
    config, processor = load_processor(str(final))
    model = load_model(str(final), config, torch.device("cpu"), "float32")
    accuracy = evaluate(model, processor, data / "heldout.json")
    captions = describe(model, processor, data / "heldout_captions.json")
    samples = pick_samples(data, out / "samples")
    answer_samples(model, processor, samples, out / "samples")
    (out / "samples" / "samples.json").write_text(json.dumps(samples, indent=1) + "\n")
    (out / "accuracy.json").write_text(json.dumps({"qa": accuracy, "captions": captions}, indent=1) + "\n")
    moving = load_media(processor, [], [str(out / "samples" / "moving.mp4")], None)
    pipeline_answer = ChatSession(model, processor, moving, max_new_tokens=8).ask("Which way does the shape move?")
    times["eval"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - start

    losses = {stage: recipe.last_loss(out / f"{stage}.log") for stage in ("stage1", "stage2")}
    summary = {
        "seconds": times, "losses": losses, "vocab": len(processor.tokenizer), "seed": SEED,
        "data": {"train": NUM_TRAIN, "heldout": NUM_HELDOUT}, "pipeline_answer": pipeline_answer,
        "image_tokens": config.image_seq_length, "video_tokens": config.video_seq_length,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
    }
    retrieval = json.loads((towers / "report.json").read_text())
    params = sum(p.numel() for p in model.parameters())
    size = (final / "model.safetensors").stat().st_size
    (final / "README.md").write_text(card(summary, accuracy, captions, retrieval, samples, params, size))
    print(json.dumps({"seconds": {k: round(v) for k, v in times.items()}, "captions": captions,
                      **{k: accuracy[k] for k in ("static", "temporal", "all", "by_medium")}}, indent=1))

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
