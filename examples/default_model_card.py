"""The model card (README.md) of the embedded default model, written from the recipe's own measurements."""

from __future__ import annotations

from default_model_recipe import TEXT, TOWER


def _pct(entry: dict) -> str:
    share = entry["correct"] / entry["total"] if entry["total"] else 0.0  # not the 4-digit `accuracy`: one rounding
    return f"{entry['correct']} / {entry['total']} | {100 * share:.1f} %"


def card(summary: dict, accuracy: dict, captions: dict, retrieval: dict, samples: list[dict], params: int,
         size: int) -> str:
    """`summary`: seconds, losses, vocab, image/video tokens, machine, data sizes; `accuracy` from
    `shapes_accuracy.evaluate`; `captions` from `shapes_accuracy.describe`; `retrieval` the alignment report."""
    medium = accuracy["by_medium"]
    qa_rows = "\n".join(f"| {name} | {_pct(accuracy[name])} |" for name in ("static", "temporal", "all"))
    medium_rows = "\n".join(f"| {name} | {_pct(entry)} |" for name, entry in medium.items())
    caption_rows = "\n".join(f"| {name} | {_pct(entry)} |" for name, entry in captions.items())
    per_question = "\n".join(
        f"| {k} | {v['correct']} / {v['total']} | {100 * v['accuracy']:.0f} % |"
        for k, v in accuracy["by_question"].items()
    )
    weakest = ", ".join(f"{k} ({v['correct']} / {v['total']})" for k, v in accuracy["by_question"].items()
                        if v["accuracy"] < 0.4)
    sample_rows = "\n".join(
        f"| `sample:{s['file']}` | {qa['question']} | {qa['answer']} | {qa['model_answer']} | {qa['question_type']} |"
        for s in samples for qa in s["questions"]
    )
    describe_rows = "\n".join(
        f"| `sample:{s['file']}` | {s['description']} | {s['model_description']} |" for s in samples
    )
    r = retrieval
    retrieval_rows = "\n".join(
        f"| {name} | {100 * r[m]['aligned'][key]:.1f} % | {100 * r[m]['random'][key]:.1f} % | "
        f"{100 * r[m]['chance'][key]:.1f} % |"
        for name, m, key in (("text -> image", "image", "text_to_image_r1"),
                             ("image -> text", "image", "image_to_text_r1"),
                             ("text -> video", "video", "text_to_video_r1"),
                             ("video -> text", "video", "video_to_text_r1"))
    )
    from_image = r["video"]["from_image_tower"]["text_to_video_r1"]
    way = accuracy["by_question"]["temporal: Which way does the shape move"]
    direction = f"{way['correct']} / {way['total']} times ({100 * way['accuracy']:.0f} %)"
    t = summary["seconds"]
    n = summary["data"]
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [video-llava, languagebind, tiny, synthetic]
---

# Tiny Video-LLaVA (synthetic shapes) — the default model of `videollava chat`

A {params / 1e6:.2f} M-parameter Video-LLaVA ({size / 2**20:.1f} MiB of float32 safetensors) made the way the paper
makes Video-LLaVA-7B, at toy scale: *alignment before projection*. A LanguageBind image tower and a LanguageBind video
tower with divided temporal attention in every layer (width {TOWER['hidden_size']}, {TOWER['num_hidden_layers']}
layers, features from `hidden_states[-2]`; {TOWER['image_size']} px inputs, {TOWER['patch_size']} px patches, 8
frames) are first aligned to one text encoder, then frozen; the shared 2-layer GELU projector and a Llama language
model (width {TEXT['hidden_size']}, {TEXT['num_hidden_layers']} layers, a {summary['vocab']}-token word-level
vocabulary) learn on top. An image is {summary['image_tokens']} tokens, a video {summary['video_tokens']} (8 frames x
(16 patches + CLS)). Prompts use the Vicuna-v1 chat template.

It only knows a toy world: one to three red, green, blue or yellow squares, circles and triangles on black, which
move, change colour, appear or disappear. It is shipped so that `videollava chat` works offline, with no GPU, on a
fresh install, and as a runnable reference for the whole pipeline. It knows nothing about real images or videos.

## Held-out accuracy

{accuracy['all']['total']} questions on {n['heldout']} held-out items (other seeds; every moving shape uses a
(shape, colour, direction) combination never seen in training), each asked alone with its image or video, greedy,
exact match. Measured by `examples/shapes_accuracy.py` at the end of training.

| question type | correct | accuracy |
|---|---|---|
{qa_rows}

| medium | correct | accuracy |
|---|---|---|
{medium_rows}

Static questions are answerable from one frame (colour, shape, count, "is there ..."); temporal ones need motion or
order (direction, colour change, what appeared / disappeared, counts at the start / end).

Weakest (below 40 %): {weakest}. Every held-out moving shape moves in a direction never seen for its shape and colour
in training; on "Which way does the shape move" the model is right {direction}, about what picking one of the four
directions at random gives (25 %): it does not carry a direction over to a combination it never saw moving that way.

Descriptions ("Describe the video." / "Describe the image."), the whole sentence exact-matching the generator's
caption of each held-out item:

| medium | exact | accuracy |
|---|---|---|
{caption_rows}

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

| medium | caption (truth) | "Describe the video." / "Describe the image." (model) |
|---|---|---|
{describe_rows}

## How it was made

```bash
python examples/train_default_model.py --out out/default_model --install
```

| step | what | wall time |
|---|---|---|
| data | `synthetic_shapes.py --seed {summary['seed']} --num-train {n['train']} --num-heldout {n['heldout']}` | {t['data']:.0f} s |
| towers | LanguageBind-style alignment, `videollava align` (image, then video from image) | {t['align']:.0f} s |
| init | random tiny Llama + `videollava convert --from languagebind` (fresh projector) | {t['init']:.0f} s |
| stage 1 | captions, `videollava train --config examples/default_model/stage1.yaml` | {t['stage1']:.0f} s |
| stage 2 | QA + captions, `videollava train --config examples/default_model/stage2.yaml` | {t['stage2']:.0f} s |
| evaluation + samples | `shapes_accuracy.py` on held-out | {t['eval']:.0f} s |
| total | {summary['machine']} | {t['total']:.0f} s |

**Towers.** As LanguageBind does, the image tower is trained CLIP-style (symmetric InfoNCE) against a tiny
`CLIPTextModel` on the image captions; the video tower starts as a copy of the image tower with LanguageBind's
temporal attention added at zero (so it starts equal to the image tower frame by frame) and is trained on the video
captions. LanguageBind keeps the text encoder frozen there, but its text encoder (OpenCLIP's) knows every word; ours
had only seen image captions, so "A red square moves left / right / up / down." embedded at cosine 0.997 and no
video tower could learn direction against it. So in the video stage the text encoder keeps learning as well, held to
the images by an image-caption loss against the image tower frozen at its first-stage weights; both towers end bound
to that one text encoder (`videollava align --video-stage-text frozen` is LanguageBind's exact recipe). Held-out retrieval
R@1 ({r['items']['heldout_images']} images with {r['items']['heldout_image_captions']} distinct captions,
{r['items']['heldout_videos']} videos with {r['items']['heldout_video_captions']} distinct captions; a hit is a
retrieved item with the query's caption, and chance follows the same rule; the video tower copied from the image
tower, before its own stage, reaches {100 * from_image:.1f} % text -> video):

| retrieval R@1 | aligned towers | random towers (same size) | chance |
|---|---|---|---|
{retrieval_rows}

The two towers are saved as LanguageBind checkpoints (`vision_model.*`, `text_model.*`, projections, logit scale)
and turned into the stage-1 model by the same converter that builds from `LanguageBind_Image` +
`LanguageBind_Video_merge`.

**Stages.** As in Video-LLaVA-7B the towers stay frozen in both stages. Projector and LLM train in both stages,
since the tiny Llama starts random too (7B's stage 1 trains only the projector). Stage 2 mixes the stage-1
captions into the QA data, so the model describes in a sentence and answers in a word. Llama `initializer_range` is
0.1 instead of 0.02 (with 0.02 the LLM never learned to read the visual tokens within the CPU budget).
Hyper-parameters are in the two preset files; the final logged training losses were
{summary['losses']['stage1']:.3f} (stage 1) and {summary['losses']['stage2']:.3f} (stage 2).

## Use

```bash
videollava chat --video sample:moving.mp4 "What colour is the shape?"
videollava chat --video sample:moving.mp4 "Describe the video."
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
pipe(text=messages, max_new_tokens=8, return_full_text=False)[0]["generated_text"]   # "{summary['pipeline_answer']}"
```
"""
