"""Held-out accuracy of a Video-LLaVA on the synthetic shapes QA, by question type (static vs temporal).

Every question of every held-out item is asked on its own, as the first user turn with the item's image or video,
greedy, and scored by exact match (case and surrounding spaces ignored) against the generator's answer. Types come
from the item's `question_type` / `question_types` (SPEC-free: see `examples/synthetic_shapes.py`).

Run as:
    python examples/shapes_accuracy.py --model videollava/default_model --data data/shapes/heldout.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch


COLOUR_OR_SHAPE = {"red", "green", "blue", "yellow", "square", "circle", "triangle"}  # grouped out of patterns


def questions(item: dict) -> list[tuple[str, str, str]]:
    """(question, answer, type) for every QA turn of a LLaVA-JSON item, placeholders stripped."""
    turns = item["conversations"]
    types = item.get("question_types") or [item.get("question_type", "untyped")]
    asked = [t["value"].replace("<video>", "").replace("<image>", "").strip() for t in turns[0::2]]
    return [(q, a["value"], ty) for q, a, ty in zip(asked, turns[1::2], types)]


def _summary(counts: list[int]) -> dict:
    """[correct, total] -> {"correct", "total", "accuracy"} (4 digits)."""
    correct, total = counts
    return {"correct": correct, "total": total, "accuracy": round(correct / total, 4) if total else 0.0}


def _answer(model, processor, kind: str, source: str, question: str, max_new_tokens: int) -> str:
    """The model's greedy answer to `question` about one image or video, lower-cased and stripped."""
    content = [{"type": kind, kind: source}, {"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt").to(model.device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip().lower()


@torch.inference_mode()
def describe(model, processor, data: Path, limit: int | None = None, max_new_tokens: int = 32) -> dict:
    """Held-out captions (`heldout_captions.json`: "Describe the image/video." -> the generator's caption): exact
    match per medium, `{"image": {"correct", "total", "accuracy"}, "video": ..., "all": ...}`."""
    items = json.loads(Path(data).read_text())[:limit]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item in items:
        kind = "video" if "video" in item else "image"
        question, answer, _ = questions(item)[0]
        ok = int(_answer(model, processor, kind, str(Path(data).parent / item[kind]), question, max_new_tokens)
                 == answer.strip().lower())
        for key in (kind, "all"):
            counts[key][0] += ok
            counts[key][1] += 1
    return {key: _summary(c) for key, c in sorted(counts.items())}


@torch.inference_mode()
def evaluate(model, processor, data: Path, limit: int | None = None, max_new_tokens: int = 8) -> dict:
    """`{"static": {"correct", "total", "accuracy"}, "temporal": {...}, "all": {...}, "by_medium": {"image": ...,
    "video": ..., "video static": ..., "video temporal": ...}, "by_question": {...}}`."""
    items = json.loads(Path(data).read_text())[:limit]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_medium: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_question: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item in items:
        kind = "video" if "video" in item else "image"
        source = str(Path(data).parent / item[kind])
        for question, answer, qtype in questions(item):
            ok = int(_answer(model, processor, kind, source, question, max_new_tokens) == answer.strip().lower())
            for key in (qtype, "all"):
                counts[key][0] += ok
                counts[key][1] += 1
            for key in ((kind, f"{kind} {qtype}") if kind == "video" else (kind,)):
                per_medium[key][0] += ok
                per_medium[key][1] += 1
            pattern = " ".join(w for w in question.rstrip("?").split() if w not in COLOUR_OR_SHAPE)
            per_question[f"{qtype}: {pattern}"][0] += ok
            per_question[f"{qtype}: {pattern}"][1] += 1

    result = {key: _summary(c) for key, c in sorted(counts.items())}
    result["by_medium"] = {key: _summary(c) for key, c in sorted(per_medium.items())}
    result["by_question"] = {key: _summary(c) for key, c in sorted(per_question.items())}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="heldout.json written by synthetic_shapes.py")
    p.add_argument("--limit", type=int, default=None, help="first N items only")
    a = p.parse_args()
    from videollava.chat import load_model, load_processor

    config, processor = load_processor(a.model)
    model = load_model(a.model, config, torch.device("cpu"), "float32")
    print(json.dumps(evaluate(model, processor, Path(a.data), a.limit), indent=1))


if __name__ == "__main__":
    main()
