"""Benchmark registry: where each benchmark's files come from, how they are laid out, how a sample is prompted.

Every loader returns `Sample`s; every task names the metric (`evaluation.metrics`) that scores its predictions.
Layouts (`--data DIR`) are the files as distributed by the benchmark / by Video-LLaVA's eval bundle:

* Video QA (msvd_qa, msrvtt_qa, tgif_qa, activitynet_qa): Video-LLaVA's `eval/GPT_Zero_Shot_QA/<X>_Zero_Shot_QA/`
  (see Video-LLaVA `TRAIN_AND_VALIDATE.md`, itself from Video-ChatGPT's quantitative-evaluation bundle):
  `DIR/test_q.json` `[{"video_name", "question", "question_id"}]`, `DIR/test_a.json` `[{"answer", "question_id"}]`,
  `DIR/videos/<video_name>.<mp4|avi|mkv|mov|webm|gif>` (ActivityNet: `v_<video_name>.*`, as the original `_act.py`).
* pope: `DIR/coco_pope_{random,popular,adversarial}.json` (jsonl `{"question_id", "image", "text", "label"}`, from
  github.com/AoiDragon/POPE `output/coco/`), images `DIR/val2014/` (COCO val2014).
* scienceqa_img: ScienceQA release (github.com/lupantech/ScienceQA): `DIR/problems.json`, `DIR/pid_splits.json`,
  `DIR/images/test/<pid>/image.png`; the test split, questions with an image only.
* mmbench: the MMBench dev TSV (github.com/open-compass/MMBench), `DIR/*.tsv` with base64 images.
* vqav2: `DIR/v2_OpenEnded_mscoco_val2014_questions.json`, `DIR/v2_mscoco_val2014_annotations.json`,
  `DIR/val2014/` (visualqa.org; test-dev needs the EvalAI server, score val or a val subset here).
* gqa: `DIR/testdev_balanced_questions.json`, `DIR/images/` (cs.stanford.edu/people/dorarad/gqa).
* textvqa: `DIR/TextVQA_0.5.1_val.json`, `DIR/train_images/` (textvqa.org).
* vizwiz: `DIR/val.json`, `DIR/val/` (vizwiz.org, VQA task).
* shapes: our synthetic set: one LLaVA-style JSON file (`DIR/*.json` or `--data FILE`), media relative to it.
"""

import base64
import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .metrics import (
    choice_accuracy,
    exact_match_metrics,
    gqa_accuracy,
    pope_metrics,
    video_qa_metrics,
    vqa_soft_accuracy,
)
from .metrics.choice import LETTER_SUFFIX, OPTION_LETTERS


logger = logging.getLogger(__name__)

SHORT_SUFFIX = "Answer the question using a single word or phrase."
VIZWIZ_SUFFIX = "When the provided information is insufficient, respond with 'Unanswerable'.\n" + SHORT_SUFFIX
VIDEO_EXTENSIONS = ("", ".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".MP4")
Kind = Literal["video_qa", "pope", "choice", "vqa", "gqa", "exact"]


class DataLayoutError(FileNotFoundError):
    """A benchmark file or media file is missing or malformed; the message names it."""


@dataclass
class Sample:
    """One benchmark question.

    Args:
        id: unique id within the task (the resume key).
        prompt: user text *without* media placeholders; the processor's chat template inserts them.
        media: `[("video", path)]`, `[("image", path_or_PIL)]`, ... in prompt order.
        answer: ground truth (string; letter for multiple choice).
        extra: fields copied into the prediction record (category, options, answers, question_type).
    """

    id: str
    prompt: str
    media: list[tuple[str, Any]]
    answer: str
    question: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DataLayoutError(f"missing benchmark file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataLayoutError(f"{path}: not valid JSON ({e})") from e


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise DataLayoutError(f"missing benchmark file {path}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataLayoutError(f"{path}:{n}: not valid JSON ({e})") from e
    return rows


def _media_path(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataLayoutError(f"{what}: missing media file {path}")
    return path


def load_video_qa(data: Path, prefix: str = "") -> list[Sample]:
    questions, answers = _read_json(data / "test_q.json"), _read_json(data / "test_a.json")
    gt = {str(a["question_id"]): a["answer"] for a in answers}
    samples = []
    for q in questions:
        qid = str(q["question_id"])
        stem = data / "videos" / f"{prefix}{q['video_name']}"
        video = next((Path(f"{stem}{ext}") for ext in VIDEO_EXTENSIONS if Path(f"{stem}{ext}").is_file()), None)
        if video is None:
            raise DataLayoutError(f"question {qid}: no video {stem}.* (tried {', '.join(VIDEO_EXTENSIONS[1:])})")
        if qid not in gt:
            raise DataLayoutError(f"question {qid}: no answer in {data / 'test_a.json'}")
        samples.append(Sample(qid, q["question"], [("video", str(video))], str(gt[qid]), question=q["question"]))
    return samples


def load_pope(data: Path) -> list[Sample]:
    samples = []
    files = [data / f"coco_pope_{c}.json" for c in ("random", "popular", "adversarial")]
    if not any(f.exists() for f in files):
        raise DataLayoutError(f"no coco_pope_{{random,popular,adversarial}}.json in {data}")
    for path in (f for f in files if f.exists()):
        category = path.stem.removeprefix("coco_pope_")
        for row in _read_jsonl(path):
            sid = f"{category}-{row['question_id']}"
            image = _media_path(data / "val2014" / row["image"], f"POPE {sid}")
            samples.append(
                Sample(sid, f"{row['text']}\n{SHORT_SUFFIX}", [("image", str(image))], str(row["label"]),
                       question=row["text"], extra={"category": category})
            )  # fmt: skip
    return samples


def _choice_prompt(question: str, context: str, options: Sequence[str]) -> str:
    # LLaVA `convert_sqa_to_llava.py` format "CQM-A" + the `--single-pred-prompt` suffix.
    choices = " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(options))
    return f"Context: {context}\nQuestion: {question}\nOptions: {choices}\n{LETTER_SUFFIX}"


def load_scienceqa(data: Path) -> list[Sample]:
    problems, splits = _read_json(data / "problems.json"), _read_json(data / "pid_splits.json")
    samples = []
    for pid in splits["test"]:
        prob = problems[str(pid)]
        if not prob.get("image"):
            continue
        image = _media_path(data / "images" / "test" / str(pid) / prob["image"], f"ScienceQA {pid}")
        context = (prob.get("hint") or "").strip() or "N/A"
        prompt = _choice_prompt(prob["question"], context, prob["choices"])
        answer = OPTION_LETTERS[int(prob["answer"])]
        samples.append(
            Sample(str(pid), prompt, [("image", str(image))], answer, prob["question"], {"options": prob["choices"]})
        )
    return samples


def load_mmbench(data: Path) -> list[Sample]:
    from PIL import Image

    tsvs = sorted(data.glob("*.tsv")) if data.is_dir() else [data]
    if not tsvs:
        raise DataLayoutError(f"no MMBench .tsv file in {data}")
    samples = []
    with tsvs[0].open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            options = [row[c] for c in "ABCD" if row.get(c) and row[c].lower() != "nan"]
            hint = row.get("hint") or ""
            question = f"{hint}\n{row['question']}" if hint and hint.lower() != "nan" else row["question"]
            for letter, option in zip(OPTION_LETTERS, options):
                question += f"\n{letter}. {option}"
            image = Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB")
            samples.append(
                Sample(str(row["index"]), f"{question}\n{LETTER_SUFFIX}", [("image", image)], row["answer"].strip(),
                       row["question"], {"options": options, "category": row.get("category", "")})
            )  # fmt: skip
    return samples


def _vqa_sample(qid: str, question: str, image: Path, answers: list[str], suffix: str = SHORT_SUFFIX) -> Sample:
    top = Counter(answers).most_common(1)[0][0] if answers else ""
    image = _media_path(image, f"question {qid}")
    return Sample(qid, f"{question}\n{suffix}", [("image", str(image))], top, question, {"answers": answers})


def load_vqav2(data: Path) -> list[Sample]:
    qs = _read_json(data / "v2_OpenEnded_mscoco_val2014_questions.json")["questions"]
    anns = {a["question_id"]: a for a in _read_json(data / "v2_mscoco_val2014_annotations.json")["annotations"]}
    return [
        _vqa_sample(str(q["question_id"]), q["question"], data / "val2014" / f"COCO_val2014_{q['image_id']:012d}.jpg",
                    [a["answer"] for a in anns[q["question_id"]]["answers"]])
        for q in qs
    ]  # fmt: skip


def load_textvqa(data: Path) -> list[Sample]:
    rows = _read_json(data / "TextVQA_0.5.1_val.json")["data"]
    return [
        _vqa_sample(str(r["question_id"]), r["question"], data / "train_images" / f"{r['image_id']}.jpg", r["answers"])
        for r in rows
    ]


def load_vizwiz(data: Path) -> list[Sample]:
    rows = _read_json(data / "val.json")
    return [
        _vqa_sample(r["image"], r["question"], data / "val" / r["image"], [a["answer"] for a in r["answers"]],
                    VIZWIZ_SUFFIX)
        for r in rows
    ]  # fmt: skip


def load_gqa(data: Path) -> list[Sample]:
    rows = _read_json(data / "testdev_balanced_questions.json")
    return [
        _vqa_sample(qid, r["question"], data / "images" / f"{r['imageId']}.jpg", [r["answer"]])
        for qid, r in rows.items()
    ]


def load_shapes(data: Path) -> list[Sample]:
    path = data
    if data.is_dir():
        candidates = sorted(data.glob("*.json"))
        if len(candidates) != 1:
            raise DataLayoutError(f"expected exactly one .json in {data}, found {[c.name for c in candidates]}")
        path = candidates[0]
    samples = []
    for n, row in enumerate(_read_json(path)):
        turns = row.get("conversations") or []
        if len(turns) < 2:
            raise DataLayoutError(f"{path} item {n} ({row.get('id')}): needs a human and a gpt turn")
        media = [(kind, str(_media_path(path.parent / row[kind], f"{path} item {row['id']}")))
                 for kind in ("video", "image") if row.get(kind)]  # fmt: skip
        pairs = list(zip(turns[0::2], turns[1::2]))
        types = row.get("question_types") or [row.get("question_type", "untyped")] * len(pairs)
        if len(types) != len(pairs):
            raise DataLayoutError(f"{path} item {n} ({row['id']}): {len(types)} question_types for {len(pairs)} QA pairs")
        for k, ((human, gpt), kind) in enumerate(zip(pairs, types)):  # each question asked alone with its media
            question = human["value"].replace("<video>", "").replace("<image>", "").strip()
            sample_id = str(row["id"]) if len(pairs) == 1 else f"{row['id']}#{k}"
            samples.append(Sample(sample_id, question, media, gpt["value"], question, {"question_type": kind}))
    return samples


@dataclass(frozen=True)
class Task:
    """A benchmark: loader, metric kind, default generation length and where it sits in the paper's tables."""

    name: str
    kind: Kind
    loader: Callable[[Path], list[Sample]]
    max_new_tokens: int
    paper_column: str | None = None


def _pope_scores(records: Sequence[Mapping]) -> dict[str, Any]:
    by_cat: dict[str, list[Mapping]] = {}
    for r in records:
        by_cat.setdefault(str(r.get("category", "all")), []).append(r)
    per = {cat: pope_metrics(rs) for cat, rs in sorted(by_cat.items())}
    mean = {k: sum(m[k] for m in per.values()) / len(per) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
    return {**mean, "count": len(records), "categories": per}


SCORERS: dict[str, Callable[[Sequence[Mapping]], dict[str, Any]]] = {
    "pope": _pope_scores,
    "choice": choice_accuracy,
    "vqa": vqa_soft_accuracy,
    "gqa": gqa_accuracy,
    "exact": exact_match_metrics,
    "video_qa": video_qa_metrics,  # over judgements, not predictions
}

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        # Video QA: the original generated up to 1024 tokens (run_inference_video_qa.py).
        Task("msvd_qa", "video_qa", load_video_qa, 1024, "MSVD-QA"),
        Task("msrvtt_qa", "video_qa", load_video_qa, 1024, "MSRVTT-QA"),
        Task("tgif_qa", "video_qa", load_video_qa, 1024, "TGIF-QA"),
        Task("activitynet_qa", "video_qa", lambda d: load_video_qa(d, prefix="v_"), 1024, "ActivityNet-QA"),
        # Image benchmarks: model_vqa_loader uses 128 new tokens, model_vqa_science / mmbench 1024.
        Task("pope", "pope", load_pope, 128, "POPE"),
        Task("scienceqa_img", "choice", load_scienceqa, 1024, "SciQA-IMG"),
        Task("mmbench", "choice", load_mmbench, 1024, "MMBench"),
        Task("vqav2", "vqa", load_vqav2, 128, "VQAv2"),
        Task("gqa", "gqa", load_gqa, 128, "GQA"),
        Task("textvqa", "vqa", load_textvqa, 128, "TextVQA"),
        Task("vizwiz", "vqa", load_vizwiz, 128, "VizWiz"),
        Task("shapes", "exact", load_shapes, 32, None),
    ]
}


def get_task(name: str) -> Task:
    """Look a task up by name, with the list of known ones in the error."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def headline(task: Task, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The number(s) the paper reports for this task: accuracy in %, plus the judge score for video QA.

    POPE: the mean F1 over the categories present, in % (the paper's single POPE number).
    """
    if task.kind == "video_qa":
        return {"accuracy": 100 * metrics["accuracy"], "score": metrics["average_score"]}
    if task.kind == "pope":
        return {"f1": 100 * metrics["f1"]}
    return {"accuracy": 100 * metrics["accuracy"]}
