"""`videollava chat`'s one-shot answers to every question of the shipped samples: the reference that the other
surfaces (Auto classes, `pipeline`, lmms-eval) must reproduce."""

import contextlib
import functools
import io
import json

from videollava.cli import main
from videollava.loading import SAMPLES_DIR


def sample_questions() -> list[dict]:
    """One row per shipped question: file, kind (image / video), path, question, truth, recorded model answer."""
    rows = []
    for sample in json.loads((SAMPLES_DIR / "samples.json").read_text()):
        kind = "video" if sample["file"].endswith(".mp4") else "image"
        for qa in sample["questions"]:
            rows.append({"file": sample["file"], "kind": kind, "path": str(SAMPLES_DIR / sample["file"]),
                         "question": qa["question"], "answer": qa["answer"], "model_answer": qa["model_answer"]})
    return rows


@functools.lru_cache(maxsize=1)
def chat_answers() -> tuple[str, ...]:
    """`videollava chat --image|--video sample:FILE QUESTION` (the real command, in-process) for every row."""
    answers = []
    for row in sample_questions():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(["chat", f"--{row['kind']}", f"sample:{row['file']}", row["question"]])
        assert status == 0, (row, out.getvalue())
        answers.append(out.getvalue().strip())
    return tuple(answers)
